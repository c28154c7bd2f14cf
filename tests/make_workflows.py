"""Write workflows/*.json (ComfyUI UI format 0.4), their thumbnails and the templates' sample clip.

    python tests/make_workflows.py                    # object_info from a ComfyUI started here
    python tests/make_workflows.py --object-info oi.json

- File names are the template titles: ComfyUI's template browser (frontends 1.32-1.58, ComfyUI 0.3.75-0.20.1)
  shows a custom-node template's file name as its title and (dashes as spaces) as its description; it reads
  no other metadata for them. The Note in each workflow says the rest.
- Widget values are the schema defaults plus the overrides below, in the frontend's widget order (from
  /object_info, see workflow_format.py).
- Load Video names SAMPLE, a small portrait clip shipped in workflows/ and copied into ComfyUI's input folder
  at start-up when it is missing (nodes/comfyui/nodes_video.py), so a template runs as opened.
- Layout: nodes sit in columns with room below Load Video (its preview grows with a portrait clip) and below
  Save (its preview appears after a run); `extra.ds` fits every node, grown, under the frontend's top bar
  and beside its side bar in a FIT_VIEW sized window (checked in the browser by tests/test_browser.py).
- Each thumbnail is a frame of a real preview-backend run (no AI) of the sample with that workflow's canvas,
  marked with what the workflow does (backend, LoRA, side by side), so the cards differ at a glance.
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

#: The sample clip every template loads (nodes/comfyui/nodes_video.py SAMPLE_VIDEO copies it into input/).
SAMPLE = "ltx-outpaint-sample.mp4"
SAMPLE_SPEC = dict(width=288, height=512, frames=48, fps=24.0, crf=30)
OUTPAINT_PROMPT = "a sunny beach with palm trees and gentle waves, handheld camera"

TITLE_H = 30  # LiteGraph.NODE_TITLE_HEIGHT: a node's title bar sits above its pos
COL = 420  # column pitch (node width 380 + gap)
#: Node sizes (width, height below the title) no smaller than frontends 1.32.9 / 1.43.18 / 1.58.1 compute
#: (the Canvas node with width / height hidden under a preset). Load Video keeps room for the preview of a
#: portrait clip (node width x 16/9 + the player's bar): frontends >= 1.43 fit a template's view to the nodes
#: as loaded, before a preview has grown them.
SIZE = {"LTXOutpaintLoadVideo": (380, 360 + 380 * 16 // 9 + 40), "LTXOutpaintCanvas": (380, 410), "LTXOutpaintLoraStack": (380, 140),
        "LTXOutpaintPreviewBackend": (380, 90), "LTXOutpaintFalBackend": (380, 140),
        "LTXOutpaintLocalBackend": (380, 330), "LTXOutpaint": (380, 590), "LTXOutpaintSaveMP4": (380, 110)}
#: How far a node grows, measured in those frontends: Save showing a 16:9 result, the others their run
#: summary; the Canvas node also when "custom" shows width / height.
GROWS = {"LTXOutpaintLoadVideo": 60, "LTXOutpaintSaveMP4": 240, "LTXOutpaintCanvas": 100, "LTXOutpaint": 110}
NOTE_SIZE = (380, 240)
#: The window the stored view is fitted to, and the frontend chrome over the graph canvas in it: at the top
#: (frontend 1.32's announcement banner, the workflow tabs, the graph's breadcrumb and the run bar) and the
#: left icon bar. The last column
#: ends well above the bottom, where frontends show their minimap. (Frontend 1.58 fits a template itself.)
FIT_VIEW = dict(width=1500, height=900, top=140, left=64, margin=16)


def _outpaint(key, col, y=0, prompt=OUTPAINT_PROMPT, **w):
    return (key, "LTXOutpaint", {"prompt": prompt, "num_frames": 97, "seed": 42, **w}, (col * COL, y))


def _save(key, col, y, prefix):
    return (key, "LTXOutpaintSaveMP4", {"filename_prefix": prefix}, (col * COL, y))


def _load():
    return ("load", "LTXOutpaintLoadVideo", {"video": SAMPLE}, (0, 0))


def _canvas(scale=0.75):
    return ("canvas", "LTXOutpaintCanvas", {"resolution": "landscape_16_9", "source_scale": scale}, (COL, 0))


BASE_LINKS = [("load", "video", "canvas", "video"), ("load", "video", "out", "video"),
              ("canvas", "canvas", "out", "canvas"), ("out", "video", "save", "video")]

# name (= title on the template card) -> nodes, links, note, note position, thumbnail marks
WORKFLOWS = {
    "LTX Outpaint - Free preview (no AI)": dict(
        note="Free preview (no AI): check framing, timing and audio before paying or using the GPU.\n\n"
             "1. Load Video: the sample clip is loaded; upload your own with 'choose file to upload'.\n"
             "2. Outpaint Canvas: target size (preset or custom), how big the source sits (source_scale) and "
             "where (placement). The preview under it is what the run uses.\n"
             "3. Run: the preview backend fills the new area with a blurred copy of the source.\n"
             "Swap the backend node for fal.ai or the local GPU to generate the new area for real.",
        nodes=[_load(), _canvas(), ("backend", "LTXOutpaintPreviewBackend", {}, (COL, 560)),
               _outpaint("out", 2, num_frames=49), _save("save", 3, 0, "ltx-outpaint/preview")],
        links=BASE_LINKS + [("backend", "backend", "out", "backend")],
        note_at=(3 * COL, 400), canvas={"resolution": "landscape_16_9", "source_scale": 0.75},
        mark=dict(label="FREE PREVIEW - no AI", colour=(70, 70, 70), fill="blur")),
    "LTX Outpaint - fal.ai with a LoRA": dict(
        note="fal.ai outpaint with a LoRA (paid: the estimate under the nodes shows the cost before you run).\n\n"
             "Set your fal key in Settings > LTX Outpaint (kept on the server, never in a workflow). "
             "Pick a LoRA from models/loras or paste a path or URL; 'transformer' picks the video stream, "
             "the audio stream or both. The result is saved to output/ltx-outpaint/fal before anything "
             "else happens; max_cost_usd stops a run that would cost more.",
        nodes=[_load(), _canvas(), ("lora", "LTXOutpaintLoraStack", {"scale": 0.8, "transformer": "video"},
                                    (COL, 560)),
               ("backend", "LTXOutpaintFalBackend", {"max_cost_usd": 1.0}, (COL, 740)),
               _outpaint("out", 2), _save("save", 3, 0, "ltx-outpaint/fal")],
        links=BASE_LINKS + [("backend", "backend", "out", "backend"), ("lora", "lora_stack", "out", "loras")],
        note_at=(3 * COL, 400), canvas={"resolution": "landscape_16_9", "source_scale": 0.75},
        mark=dict(label="fal.ai + LoRA", colour=(124, 58, 237), fill="green")),
    "LTX Outpaint - Local GPU with a LoRA": dict(
        note="Local GPU outpaint with a LoRA: LTX-2.3, the official Lightricks outpaint recipe.\n\n"
             "Needs the model files in ComfyUI's model folders (the node's error lists any that are "
             "missing and where to get them). fp8 is picked automatically on GPUs under 60 GB. "
             "Leave the prompt empty or describe the scene, not the edit.",
        nodes=[_load(), _canvas(), ("lora", "LTXOutpaintLoraStack", {"scale": 0.8, "transformer": "both"},
                                    (COL, 560)),
               ("backend", "LTXOutpaintLocalBackend", {"recipe": "official"}, (COL, 740)),
               _outpaint("out", 2), _save("save", 3, 0, "ltx-outpaint/local")],
        links=BASE_LINKS + [("backend", "backend", "out", "backend"), ("lora", "lora_stack", "out", "loras")],
        note_at=(3 * COL, 400), canvas={"resolution": "landscape_16_9", "source_scale": 0.75},
        mark=dict(label="LOCAL GPU + LoRA", colour=(22, 128, 61), fill="green")),
    "LTX Outpaint - Vertical clip to 16x9 (fal.ai)": dict(
        note="Vertical phone clip -> 16:9 on fal.ai.\n\nThe source keeps its full height (source_scale 1.0) "
             "and the model invents both sides. Phone rotation metadata is applied when the clip is loaded. "
             "Set your fal key in Settings > LTX Outpaint.",
        nodes=[_load(), _canvas(scale=1.0),
               ("backend", "LTXOutpaintFalBackend", {"max_cost_usd": 1.0}, (COL, 560)),
               _outpaint("out", 2), _save("save", 3, 0, "ltx-outpaint/vertical")],
        links=BASE_LINKS + [("backend", "backend", "out", "backend")],
        note_at=(3 * COL, 400), canvas={"resolution": "landscape_16_9", "source_scale": 1.0},
        mark=dict(label="9:16 -> 16:9 (fal.ai)", colour=(194, 65, 12), fill="green", arrows=True)),
    "LTX Outpaint - Local GPU vs fal.ai": dict(
        note="Local GPU vs fal.ai side by side: the same clip, canvas, prompt and seed on both backends "
             "(same request fields, same meaning). Compare the two saved MP4s.",
        nodes=[_load(), _canvas(), ("local", "LTXOutpaintLocalBackend", {"recipe": "official"}, (COL, 560)),
               ("fal", "LTXOutpaintFalBackend", {"max_cost_usd": 1.0}, (COL, 950)),
               _outpaint("out", 2), _outpaint("out_fal", 3),
               _save("save", 4, 0, "ltx-outpaint/compare-local"),
               _save("save_fal", 4, 410, "ltx-outpaint/compare-fal")],
        links=BASE_LINKS + [("local", "backend", "out", "backend"), ("fal", "backend", "out_fal", "backend"),
                            ("load", "video", "out_fal", "video"), ("canvas", "canvas", "out_fal", "canvas"),
                            ("out_fal", "video", "save_fal", "video")],
        note_at=(3 * COL, 770), canvas={"resolution": "landscape_16_9", "source_scale": 0.75},
        mark=dict(label="LOCAL vs fal.ai", colour=(22, 128, 61), colour2=(124, 58, 237), fill="green",
                  split=True)),
}


def node_rects(spec: dict, grown: bool = True) -> list[tuple[float, float, float, float]]:
    """(x, y, w, h) of every node's outline, title bar included; `grown`: with its video preview showing."""
    rects = []
    for _key, node_type, _w, (x, y) in spec["nodes"]:
        w, h = SIZE[node_type]
        rects.append((x, y - TITLE_H, w, h + TITLE_H + (GROWS.get(node_type, 0) if grown else 0)))
    nx, ny = spec["note_at"]
    rects.append((nx, ny - TITLE_H, NOTE_SIZE[0], NOTE_SIZE[1] + TITLE_H))
    return rects


def overlaps(rects) -> list[tuple[int, int]]:
    """Index pairs of rectangles that intersect."""
    hits = []
    for i, (ax, ay, aw, ah) in enumerate(rects):
        for j in range(i + 1, len(rects)):
            bx, by, bw, bh = rects[j]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                hits.append((i, j))
    return hits


def fitted_view(rects, view=FIT_VIEW) -> dict:
    """`extra.ds` (offset in graph units, scale) showing all `rects` inside the canvas area of `view`."""
    x0, y0 = min(r[0] for r in rects), min(r[1] for r in rects)
    x1, y1 = max(r[0] + r[2] for r in rects), max(r[1] + r[3] for r in rects)
    m = view["margin"]
    scale = min(1.0, (view["width"] - view["left"] - 2 * m) / (x1 - x0),
                (view["height"] - view["top"] - 2 * m) / (y1 - y0))
    scale = int(scale * 100) / 100  # a round zoom, never larger than what fits
    return {"scale": scale, "offset": [round((view["left"] + m) / scale - x0, 1),
                                       round((view["top"] + m) / scale - y0, 1)]}


def build(name: str, spec: dict, object_info: dict) -> dict:
    if overlaps(node_rects(spec)):
        raise ValueError(f"{name}: nodes overlap: {overlaps(node_rects(spec))}")
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
        node = {"id": ids[key], "type": node_type, "pos": list(pos), "size": list(SIZE[node_type]), "flags": {},
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
    nodes.append({"id": note_id, "type": "Note", "pos": list(spec["note_at"]), "size": list(NOTE_SIZE),
                  "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                  "widgets_values": [spec["note"]]})
    return {"last_node_id": note_id, "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"ds": fitted_view(node_rects(spec))}, "version": 0.4}


def thumbnail(path: str, spec: dict, clip: str) -> None:
    """A frame of a real preview-backend run of `clip` with the workflow's canvas, marked with what it does."""
    import torch
    from PIL import Image, ImageDraw, ImageFont

    from ltx_outpaint.backends import PreviewConfig, run_outpaint
    from ltx_outpaint.media.canvas import CanvasSpec, composite, layout_canvas
    from ltx_outpaint.media.decode import DecodeOptions, decode_video
    from ltx_outpaint.request import OutpaintRequest

    canvas, mark = spec["canvas"], spec["mark"]
    src = decode_video(clip, DecodeOptions(max_width=256))
    req = OutpaintRequest(prompt="preview", resolution=canvas["resolution"], source_scale=canvas["source_scale"],
                          num_frames=9, frames_per_second=src.fps, seed=1).validate()
    cspec = CanvasSpec(req.resolution, req.source_scale)
    if mark["fill"] == "blur":  # what the free preview backend outputs
        frame = run_outpaint(req, src, cspec, PreviewConfig()).frames[4]
    else:  # what the model is given: the source on the canvas, the area to generate flat green
        lay = layout_canvas(cspec, src.width, src.height)
        frame = composite(src.frames[4:5], lay)[0]
    img = Image.fromarray((frame.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
    img = img.resize((384, 384 * img.height // img.width), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(img)
    w, h = img.size
    if mark.get("split"):  # two halves, one per backend
        draw.rectangle([w // 2 - 2, 0, w // 2 + 1, h], fill=(255, 255, 255))
    if mark.get("arrows"):  # the sides the model invents
        for x0, dx in ((20, -1), (w - 20, 1)):
            draw.polygon([(x0 + dx * 24, h // 2), (x0, h // 2 - 18), (x0, h // 2 + 18)], fill=(255, 255, 255))
    font = ImageFont.load_default(size=22)
    band = 40
    if mark.get("split"):
        draw.rectangle([0, h - band, w // 2, h], fill=mark["colour"])
        draw.rectangle([w // 2, h - band, w, h], fill=mark["colour2"])
        for text, cx in (("LOCAL GPU", w // 4), ("fal.ai", 3 * w // 4)):
            draw.text((cx, h - band // 2), text, font=font, fill=(255, 255, 255), anchor="mm")
    else:
        draw.rectangle([0, h - band, w, h], fill=mark["colour"])
        draw.text((w // 2, h - band // 2), mark["label"], font=font, fill=(255, 255, 255), anchor="mm")
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

    clip = write_sample(os.path.join(args.out, SAMPLE), **SAMPLE_SPEC)
    print(f"wrote {SAMPLE} ({os.path.getsize(clip)} bytes)")
    for old in os.listdir(args.out):
        if old.endswith((".json", ".jpg")) and os.path.splitext(old)[0] not in WORKFLOWS:
            os.unlink(os.path.join(args.out, old))
    for name, spec in WORKFLOWS.items():
        with open(os.path.join(args.out, name + ".json"), "w") as f:
            json.dump(build(name, spec, object_info), f, indent=1)
        thumbnail(os.path.join(args.out, name + ".jpg"), spec, clip)
        print(f"wrote {name}.json + .jpg")
    assert not set(FRONTEND_ONLY) & set(object_info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
