"""Shipped workflows (templates): node types exist, links are type-consistent, widget values fit our schemas —
all against the real /object_info of the running ComfyUI — they are listed as the pack's templates with
distinct titles and thumbnails, the sample clip they load is in ComfyUI's input folder from start-up, the free
preview workflow runs as shipped, and a missing file is one validation message. (tests/test_browser.py opens
and runs every template in the frontend.)"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import pytest

from make_workflows import FIT_VIEW, SAMPLE, SAMPLE_SPEC, node_rects, overlaps, WORKFLOWS as SPECS
from workflow_format import FRONTEND_ONLY, check_widget, socket_inputs, to_api_prompt, widgets

pytestmark = pytest.mark.comfyui

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
EXPECTED = {"LTX Outpaint - Free preview (no AI)", "LTX Outpaint - fal.ai with a LoRA",
            "LTX Outpaint - Local GPU with a LoRA", "LTX Outpaint - Vertical clip to 16x9 (fal.ai)",
            "LTX Outpaint - Local GPU vs fal.ai"}
SAMPLE_PATH = os.path.join(ROOT, "workflows", SAMPLE)


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_the_five_workflows_ship_with_distinct_titles_and_thumbnails():
    names = {os.path.splitext(os.path.basename(p))[0] for p in WORKFLOWS}
    assert names == EXPECTED == set(SPECS)
    assert len({n.lower() for n in names}) == len(names)
    digests = set()
    for name in names:
        thumb = os.path.join(ROOT, "workflows", name + ".jpg")
        assert os.path.getsize(thumb) < 150_000
        with open(thumb, "rb") as f:
            data = f.read()
        assert data[:3] == b"\xff\xd8\xff"  # a JPEG
        digests.add(hashlib.sha256(data).hexdigest())
    assert len(digests) == len(names)
    for a in names:  # not near-identical either: the pictures differ in a good share of their pixels
        for b in names:
            if a < b:
                assert _pixel_difference(a, b) > 0.05, (a, b)


def _pixel_difference(a: str, b: str) -> float:
    import numpy as np
    from PIL import Image

    def load(name):
        img = Image.open(os.path.join(ROOT, "workflows", name + ".jpg")).convert("RGB").resize((96, 54))
        return np.asarray(img, dtype=np.float32) / 255

    return float((np.abs(load(a) - load(b)).max(axis=2) > 0.2).mean())


def test_the_sample_clip_ships_small_and_decodes():
    from ltx_outpaint.media.decode import decode_video

    assert os.path.getsize(SAMPLE_PATH) < 150_000
    clip = decode_video(SAMPLE_PATH)
    assert (clip.width, clip.height, clip.num_frames) == (SAMPLE_SPEC["width"], SAMPLE_SPEC["height"],
                                                          SAMPLE_SPEC["frames"])
    assert clip.height > clip.width and not clip.audio.silent  # portrait, with sound: what outpainting is for
    for path in WORKFLOWS:
        loads = [n for n in _load(path)["nodes"] if n["type"] == "LTXOutpaintLoadVideo"]
        assert [n["widgets_values"][0] for n in loads] == [SAMPLE], path


def test_layout_has_room_and_the_view_is_stored():
    for name, spec in SPECS.items():
        assert overlaps(node_rects(spec, grown=True)) == [], name
        ds = _load(os.path.join(ROOT, "workflows", name + ".json"))["extra"]["ds"]
        assert 0.4 < ds["scale"] < 1.0
        x0 = min(r[0] for r in node_rects(spec))
        y0 = min(r[1] for r in node_rects(spec))
        # the top-left node's title lands under the frontend's top bar and beside its side bar
        assert (x0 + ds["offset"][0]) * ds["scale"] >= FIT_VIEW["left"]
        assert (y0 + ds["offset"][1]) * ds["scale"] >= FIT_VIEW["top"]
        x1 = max(r[0] + r[2] for r in node_rects(spec))
        y1 = max(r[1] + r[3] for r in node_rects(spec))
        assert (x1 + ds["offset"][0]) * ds["scale"] <= FIT_VIEW["width"]
        assert (y1 + ds["offset"][1]) * ds["scale"] <= FIT_VIEW["height"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: os.path.basename(p))
def test_workflow_matches_the_live_schema(comfyui, path):
    info = comfyui.object_info()
    wf = _load(path)
    assert wf["version"] == 0.4
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert any(n["type"] == "Note" and n["widgets_values"][0].strip() for n in wf["nodes"]), "no note node"
    problems = []
    for node in wf["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        if node["type"] not in info:
            problems.append(f"node {node['id']}: unknown type {node['type']}")
            continue
        spec = widgets(info[node["type"]])
        values = node.get("widgets_values", [])
        if len(values) != len(spec):
            problems.append(f"{node['type']}: {len(values)} widget values for {len(spec)} widgets")
        for (name, kind, opts), value in zip(spec, values):
            why = check_widget(kind, opts, value)
            if why:
                problems.append(f"{node['type']}.{name}: {why}")
        required = {n for n in info[node["type"]]["input"].get("required", {})}
        linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
        for name, _kind in socket_inputs(info[node["type"]]):
            if name in required and name not in linked:
                problems.append(f"{node['type']}.{name}: required input not connected")
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        out_type = info[nodes[src]["type"]]["output"][src_slot]
        dst_name = nodes[dst]["inputs"][dst_slot]["name"]
        in_type = dict(socket_inputs(info[nodes[dst]["type"]]))[dst_name]
        if not (out_type == kind == in_type or "*" in (out_type, in_type)):
            problems.append(f"link {link_id}: {out_type} -> {dst_name} ({in_type}), labelled {kind}")
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
    assert not problems, "\n".join(problems)
    text = json.dumps(wf).lower()
    assert "fal_key" not in text and "api_key" not in text


def test_workflows_are_the_packs_templates(comfyui):
    with urllib.request.urlopen(comfyui.base_url + "/api/workflow_templates", timeout=30) as r:
        templates = json.load(r)
    ours = [v for k, v in templates.items() if set(v) & EXPECTED]
    assert ours and set(ours[0]) == EXPECTED  # the file names are the card titles
    pack = next(k for k, v in templates.items() if set(v) & EXPECTED)
    for name in EXPECTED:  # the frontend fetches <name>.json and the thumbnail <name>.jpg
        base = f"{comfyui.base_url}/api/workflow_templates/{pack}/{urllib.parse.quote(name)}"
        with urllib.request.urlopen(base + ".json", timeout=30) as r:
            assert json.load(r)["version"] == 0.4
        with urllib.request.urlopen(base + ".jpg", timeout=30) as r:
            assert r.read(3) == b"\xff\xd8\xff"


def test_the_sample_clip_is_in_the_input_folder_from_start_up(comfyui):
    copied = os.path.join(comfyui.input_dir, SAMPLE)
    with open(copied, "rb") as a, open(SAMPLE_PATH, "rb") as b:
        assert a.read() == b.read()
    assert SAMPLE in comfyui.object_info("LTXOutpaintLoadVideo")["LTXOutpaintLoadVideo"]["input"]["required"][
        "video"][1]["options"]
    assert "copied the templates' sample clip" in comfyui.log_text()


def test_a_missing_video_is_one_validation_message(comfyui):
    wf = _load(os.path.join(ROOT, "workflows", "LTX Outpaint - Free preview (no AI).json"))
    prompt = to_api_prompt(wf, comfyui.object_info())
    load = next(k for k, v in prompt.items() if v["class_type"] == "LTXOutpaintLoadVideo")
    prompt[load]["inputs"]["video"] = "not-uploaded.mp4"
    status, body = comfyui.queue(prompt)
    assert status == 400
    errors = body["node_errors"][load]["errors"]
    assert len(errors) == 1, errors
    assert "not-uploaded.mp4" in errors[0]["details"] and "input, output or temp folder" in errors[0]["details"]
    assert errors[0]["extra_info"]["input_name"] == "video"


def test_free_preview_workflow_runs_as_shipped(comfyui):
    wf = _load(os.path.join(ROOT, "workflows", "LTX Outpaint - Free preview (no AI).json"))
    prompt = to_api_prompt(wf, comfyui.object_info())  # no clip copied here: the pack put the sample there
    out = next(k for k, v in prompt.items() if v["class_type"] == "LTXOutpaint")
    prompt[out]["inputs"]["num_frames"] = 9  # keep the CI run short
    entry = comfyui.run(prompt, timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    save = next(k for k, v in prompt.items() if v["class_type"] == "LTXOutpaintSaveMP4")
    saved = entry["outputs"][save]["images"][0]
    assert saved["filename"].endswith(".mp4")
    assert os.path.getsize(os.path.join(comfyui.output_dir, saved["subfolder"], saved["filename"])) > 0


def _post(comfyui, path, body):
    req = urllib.request.Request(comfyui.base_url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_constants_and_settings_routes(comfyui):
    from ltx_outpaint.web_constants import constants  # ComfyUI-free (the adapter needs ComfyUI)

    with urllib.request.urlopen(comfyui.base_url + "/ltx_outpaint/constants", timeout=30) as r:
        assert json.load(r) == json.loads(json.dumps(constants()))  # the JS gets exactly the Python constants
    assert _post(comfyui, "/ltx_outpaint/settings", {"default_backend": "cloud"})[0] == 400
    assert _post(comfyui, "/ltx_outpaint/settings", {"fal_key": "x"})[0] == 400  # never a settings field
    assert _post(comfyui, "/ltx_outpaint/settings", {"fal_queue_url": "ftp://example"})[0] == 400
    status, body = _post(comfyui, "/ltx_outpaint/settings", {"default_backend": "preview", "fal_cdn_url": ""})
    assert status == 200 and body["default_backend"] == "preview"
