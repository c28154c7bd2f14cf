"""Shipped workflows: node types exist, links are type-consistent, widget values fit our schemas — all
against the real /object_info of the running ComfyUI — they are listed as the pack's templates, and the
free preview workflow runs."""
from __future__ import annotations

import glob
import json
import os
import shutil
import urllib.error
import urllib.request

import pytest

from clips import clip
from workflow_format import FRONTEND_ONLY, check_widget, socket_inputs, to_api_prompt, widgets

pytestmark = pytest.mark.comfyui

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
EXPECTED = {"ltx-outpaint-preview-free", "ltx-outpaint-fal-lora", "ltx-outpaint-local-quality-lora",
            "ltx-outpaint-vertical-to-16x9-fal", "ltx-outpaint-local-vs-fal"}


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_the_five_workflows_ship_with_thumbnails():
    names = {os.path.splitext(os.path.basename(p))[0] for p in WORKFLOWS}
    assert names == EXPECTED
    for name in names:
        thumb = os.path.join(ROOT, "workflows", name + ".jpg")
        assert os.path.getsize(thumb) < 150_000
        with open(thumb, "rb") as f:
            assert f.read(3) == b"\xff\xd8\xff"  # a JPEG


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
    assert ours and set(ours[0]) == EXPECTED
    pack = next(k for k, v in templates.items() if set(v) & EXPECTED)
    url = f"{comfyui.base_url}/api/workflow_templates/{pack}/ltx-outpaint-preview-free.json"
    with urllib.request.urlopen(url, timeout=30) as r:
        assert json.load(r)["version"] == 0.4


def test_free_preview_workflow_runs(comfyui):
    wf = _load(os.path.join(ROOT, "workflows", "ltx-outpaint-preview-free.json"))
    name = next(n["widgets_values"][0] for n in wf["nodes"] if n["type"] == "LTXOutpaintLoadVideo")
    shutil.copyfile(clip("wf_src.mp4", width=90, height=160, frames=12, fps=12), os.path.join(comfyui.input_dir, name))
    prompt = to_api_prompt(wf, comfyui.object_info())
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
