"""Write workflows/*.json (ComfyUI UI format 0.4) and their thumbnails.

    python tests/make_workflows.py                    # object_info from a ComfyUI started here
    python tests/make_workflows.py --object-info oi.json

Widget values are the schema defaults plus the overrides below, in the frontend's widget order (from
/object_info, see workflow_format.py). Each thumbnail is a frame of a real preview-backend run (no AI)
of the sample clip with that workflow's canvas settings.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from workflow_format import FRONTEND_ONLY, socket_inputs, widgets  # noqa: E402

CLIP = "sample_vertical.mp4"
LOAD = ("load", "LTXOutpaintLoadVideo", {"video": CLIP}, (40, 80))
OUTPAINT_PROMPT = "a sunny beach with palm trees and gentle waves, handheld camera"


def _outpaint(key, pos, prompt=OUTPAINT_PROMPT, **w):
    return (key, "LTXOutpaint", {"prompt": prompt, "num_frames": 97, "seed": 42, **w}, pos)


def _save(key, pos, prefix):
    return (key, "LTXOutpaintSaveMP4", {"filename_prefix": prefix}, pos)


CANVAS = ("canvas", "LTXOutpaintCanvas", {"resolution": "landscape_16_9", "source_scale": 0.75}, (460, 80))
BASE_LINKS = [("load", "video", "canvas", "video"), ("load", "video", "out", "video"),
              ("canvas", "canvas", "out", "canvas"), ("out", "video", "save", "video")]

WORKFLOWS = {
    "ltx-outpaint-preview-free": dict(
        note="Free preview (no AI): check framing, timing and audio before paying or using the GPU.\n"
             "Upload your clip in Load Video. The Outpaint Canvas sets the target size, the source scale "
             "and the placement; the preview backend fills the rest with a blurred copy of the source. "
             "Swap the backend node for fal or the local GPU to generate for real.",
        nodes=[LOAD, CANVAS, ("backend", "LTXOutpaintPreviewBackend", {}, (460, 620)),
               _outpaint("out", (900, 80), num_frames=49), _save("save", (1340, 80), "ltx-outpaint/preview")],
        links=BASE_LINKS + [("backend", "backend", "out", "backend")],
        canvas={"resolution": "landscape_16_9", "source_scale": 0.75}),
    "ltx-outpaint-fal-lora": dict(
        note="fal.ai outpaint with a LoRA (paid: the cost estimate is shown before you run).\n"
             "Set your fal key in the settings (never stored in the workflow). Pick a LoRA from "
             "models/loras or paste a URL; 'transformer' picks the video stream, the audio stream or both. "
             "The result is saved to output/ltx-outpaint/fal before anything else happens.",
        nodes=[LOAD, CANVAS, ("lora", "LTXOutpaintLoraStack", {"scale": 0.8, "transformer": "video"}, (460, 620)),
               ("backend", "LTXOutpaintFalBackend", {"max_cost_usd": 1.0}, (460, 820)),
               _outpaint("out", (900, 80)), _save("save", (1340, 80), "ltx-outpaint/fal")],
        links=BASE_LINKS + [("backend", "backend", "out", "backend"), ("lora", "lora_stack", "out", "loras")],
        canvas={"resolution": "landscape_16_9", "source_scale": 0.75}),
    "ltx-outpaint-local-quality-lora": dict(
        note="Local GPU outpaint, quality mode, with a LoRA (LTX-2.3 via Lightricks' ltx-core).\n"
             "Needs the model files in ComfyUI's model folders (the node's error lists any that are "
             "missing and where to get them). fp8 is picked automatically on GPUs under 60 GB. "
             "Leave the prompt empty or describe the scene, not the edit.",
        nodes=[LOAD, CANVAS, ("lora", "LTXOutpaintLoraStack", {"scale": 0.8, "transformer": "both"}, (460, 620)),
               ("backend", "LTXOutpaintLocalBackend", {"recipe": "official"}, (460, 820)),
               _outpaint("out", (900, 80)), _save("save", (1340, 80), "ltx-outpaint/local")],
        links=BASE_LINKS + [("backend", "backend", "out", "backend"), ("lora", "lora_stack", "out", "loras")],
        canvas={"resolution": "landscape_16_9", "source_scale": 0.75}),
    "ltx-outpaint-vertical-to-16x9-fal": dict(
        note="Vertical phone clip -> 16:9 on fal.ai.\nThe source keeps its full height (source_scale 1.0) "
             "and the model invents the sides. Phone rotation metadata is applied when the clip is loaded.",
        nodes=[LOAD, ("canvas", "LTXOutpaintCanvas", {"resolution": "landscape_16_9", "source_scale": 1.0},
                      (460, 80)),
               ("backend", "LTXOutpaintFalBackend", {"max_cost_usd": 1.0}, (460, 620)),
               _outpaint("out", (900, 80)), _save("save", (1340, 80), "ltx-outpaint/vertical")],
        links=BASE_LINKS + [("backend", "backend", "out", "backend")],
        canvas={"resolution": "landscape_16_9", "source_scale": 1.0}),
    "ltx-outpaint-local-vs-fal": dict(
        note="Local vs fal side by side: the same clip, canvas, prompt and seed on both backends "
             "(same request fields, same meaning). Compare the two saved MP4s.",
        nodes=[LOAD, CANVAS, ("local", "LTXOutpaintLocalBackend", {"recipe": "official"}, (460, 620)),
               ("fal", "LTXOutpaintFalBackend", {"max_cost_usd": 1.0}, (460, 820)),
               _outpaint("out", (900, 80)), _outpaint("out_fal", (900, 760)),
               _save("save", (1340, 80), "ltx-outpaint/compare-local"),
               _save("save_fal", (1340, 760), "ltx-outpaint/compare-fal")],
        links=BASE_LINKS + [("local", "backend", "out", "backend"), ("fal", "backend", "out_fal", "backend"),
                            ("load", "video", "out_fal", "video"), ("canvas", "canvas", "out_fal", "canvas"),
                            ("out_fal", "video", "save_fal", "video")],
        canvas={"resolution": "landscape_16_9", "source_scale": 0.75}),
}


def build(name: str, spec: dict, object_info: dict) -> dict:
    ids = {key: i + 1 for i, (key, *_rest) in enumerate(spec["nodes"])}
    nodes, links = [], []
    by_key = {}
    for key, node_type, overrides, pos in spec["nodes"]:
        info = object_info[node_type]
        values = []
        for wname, _kind, opts in widgets(info):
            if wname.endswith(":control_after_generate"):
                values.append("fixed")
            elif wname in overrides:
                values.append(overrides[wname])
            else:
                values.append(opts.get("default", opts.get("options", [""])[0] if "options" in opts else ""))
        unknown = set(overrides) - {w for w, _k, _o in widgets(info)}
        if unknown:
            raise KeyError(f"{name}: {node_type} has no widgets {sorted(unknown)}")
        node = {"id": ids[key], "type": node_type, "pos": list(pos), "size": [380, 260], "flags": {},
                "order": len(nodes), "mode": 0,
                "inputs": [{"name": n, "type": k, "link": None} for n, k in socket_inputs(info)],
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                            for i, (n, t) in enumerate(zip(info["output_name"], info["output"]))],
                "properties": {"Node name for S&R": node_type}, "widgets_values": values}
        nodes.append(node)
        by_key[key] = node
    for i, (src, out_name, dst, in_name) in enumerate(spec["links"], start=1):
        s, d = by_key[src], by_key[dst]
        slot = next(j for j, o in enumerate(s["outputs"]) if o["name"] == out_name)
        dslot = next(j for j, x in enumerate(d["inputs"]) if x["name"] == in_name)
        kind = s["outputs"][slot]["type"]
        s["outputs"][slot]["links"].append(i)
        d["inputs"][dslot]["link"] = i
        links.append([i, s["id"], slot, d["id"], dslot, kind])
    note_id = len(nodes) + 1
    nodes.append({"id": note_id, "type": "Note", "pos": [40, 760], "size": [380, 200], "flags": {},
                  "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                  "widgets_values": [spec["note"]]})
    return {"last_node_id": note_id, "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def thumbnail(path: str, canvas: dict, clip: str) -> None:
    """A frame of a real preview-backend run of `clip` with the workflow's canvas settings."""
    from PIL import Image

    from ltx_outpaint.backends import PreviewConfig, run_outpaint
    from ltx_outpaint.media.canvas import CanvasSpec
    from ltx_outpaint.request import OutpaintRequest
    from ltx_outpaint.media.decode import DecodeOptions, decode_video

    src = decode_video(clip, DecodeOptions(max_width=256))
    req = OutpaintRequest(prompt="preview", resolution=canvas["resolution"], source_scale=canvas["source_scale"],
                          num_frames=9, frames_per_second=src.fps, seed=1).validate()
    result = run_outpaint(req, src, CanvasSpec(req.resolution, req.source_scale), PreviewConfig())
    frame = (result.frames[4].clamp(0, 1) * 255).round().byte().numpy()
    img = Image.fromarray(frame)
    img.thumbnail((384, 384))
    img.save(path, quality=82)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--object-info", help="A saved /object_info JSON (default: start ComfyUI here).")
    p.add_argument("--out", default=os.path.join(ROOT, "workflows"))
    args = p.parse_args()
    if args.object_info:
        with open(args.object_info) as f:
            object_info = json.load(f)
    else:
        from comfyui_server import ComfyUIServer, find_comfyui_dir

        comfy, reason = find_comfyui_dir()
        if comfy is None:
            sys.exit(reason)
        server = ComfyUIServer(comfy, tempfile.mkdtemp())
        server.start(timeout=180)
        try:
            object_info = server.object_info()
        finally:
            server.stop()
    os.makedirs(args.out, exist_ok=True)
    from ltx_outpaint.media.sample import write_sample

    clip = write_sample(os.path.join(tempfile.mkdtemp(), CLIP), 180, 320, 24, 24.0)
    for name, spec in WORKFLOWS.items():
        with open(os.path.join(args.out, name + ".json"), "w") as f:
            json.dump(build(name, spec, object_info), f, indent=1)
        thumbnail(os.path.join(args.out, name + ".jpg"), spec["canvas"], clip)
        print(f"wrote {name}.json + .jpg")
    assert not set(FRONTEND_ONLY) & set(object_info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
