"""The fal backend inside the real ComfyUI backend, pointed at our local fal server (no internet here)."""
from __future__ import annotations

import json
import os
import time

import httpx
import pytest

from clips import clip
from fal_server import FakeFal
from ltx_outpaint.request import FIELDS, OutpaintRequest
from ltx_outpaint.media.decode import decode_video
from test_comfyui_graph import graph, put_input, saved_files

pytestmark = pytest.mark.comfyui

KEY = "kid-LTXSECRET-7f3a91:sec-LTXSECRET-c0ffee42"


@pytest.fixture
def fal_in_comfy(comfyui):
    """A fresh local fal server; ComfyUI's pack settings point at it; the key is stored via the pack route."""
    with FakeFal(keys={KEY}, max_side=64, queue_seconds=0.1, run_seconds=0.3) as fake:
        settings_dir = os.path.join(comfyui.base_dir, "user", "ltx_outpaint")
        os.makedirs(settings_dir, exist_ok=True)
        with open(os.path.join(settings_dir, "settings.json"), "w") as f:
            json.dump({"fal_queue_url": fake.queue_url, "fal_rest_url": fake.rest_url,
                       "fal_cdn_url": fake.cdn_url}, f)
        r = httpx.post(comfyui.base_url + "/ltx_outpaint/fal_key", json={"key": KEY})
        assert r.status_code == 200 and r.json()["configured"] and KEY not in r.text
        status = httpx.get(comfyui.base_url + "/ltx_outpaint/fal_key").json()
        assert status["configured"] and status["masked"].endswith(KEY[-4:]) and KEY not in json.dumps(status)
        yield fake


def fal_graph(comfyui, *, num_frames=9, prefix="fal/out", deadline_minutes=60.0):
    name = put_input(comfyui, clip("graph_src.mp4", width=144, height=256, frames=24, fps=24), "phone.mp4")
    g = graph(name, num_frames=num_frames, prefix=prefix)
    g["4"] = {"class_type": "LTXOutpaintFalBackend",
              "inputs": {"max_cost_usd": 0.0, "deadline_minutes": deadline_minutes, "use_sse": True}}
    return g


def test_fal_graph_saves_mp4_and_sidecar_and_body_matches(comfyui, fal_in_comfy):
    g = fal_graph(comfyui)
    entry = comfyui.run(g, timeout=120)
    assert entry["status"]["status_str"] == "success", entry["status"]
    f = saved_files(entry)[0]
    out = decode_video(os.path.join(comfyui.output_dir, f["subfolder"], f["filename"]))
    assert out.frames.shape[0] == 9
    fal_dir = os.path.join(comfyui.output_dir, "ltx-outpaint", "fal")
    (sidecar,) = [p for p in os.listdir(fal_dir) if p.endswith(".json") and fal_in_comfy.jobs.get(
        p[len("fal_"):-len(".mp4.json")])]
    side = json.load(open(os.path.join(fal_dir, sidecar)))
    (body,) = [r.json for r in fal_in_comfy.requests if r.method == "POST" and r.path.endswith("/outpaint/lora")]
    ins = g["5"]["inputs"]
    fields = {k: ins[k] for k in FIELDS if k in ins}
    expected = OutpaintRequest.from_dict({
        **fields, "resolution": {"width": 640, "height": 360}, "source_scale": 0.75,
        "video_url": body["video_url"], "loras": []}).to_fal_input()
    assert body == expected
    assert side["request"] == body and side["request_id"] in fal_in_comfy.jobs


def test_interrupt_cancels_the_fal_job(comfyui, fal_in_comfy):
    fal_in_comfy.run_seconds = 60
    status, body = comfyui.queue(fal_graph(comfyui, prefix="fal_int/out"))
    assert status == 200
    deadline = time.monotonic() + 60
    while not any(j.status == "IN_PROGRESS" for j in fal_in_comfy.jobs.values()):
        assert time.monotonic() < deadline, "the fal job never started"
        time.sleep(0.1)
    t_interrupt = time.monotonic()
    comfyui.interrupt()
    entry = comfyui.wait(body["prompt_id"], timeout=60)
    cancels = [r for r in fal_in_comfy.requests if r.method == "PUT" and r.path.endswith("/cancel")]
    assert len(cancels) == 1 and cancels[0].time - t_interrupt < 1.5
    n = len(fal_in_comfy.requests)
    time.sleep(1.0)
    assert len(fal_in_comfy.requests) == n
    assert entry["status"]["status_str"] != "success"


def test_key_appears_nowhere(comfyui, fal_in_comfy):
    ok = comfyui.run(fal_graph(comfyui, prefix="fal_key/out"), timeout=120)
    assert ok["status"]["status_str"] == "success"
    fal_in_comfy.inject("submit", "job_error", message="model exploded")
    bad = comfyui.run(fal_graph(comfyui, prefix="fal_key_err/out"), timeout=120)
    assert bad["status"]["status_str"] == "error"
    texts = [json.dumps(ok), json.dumps(bad), httpx.get(comfyui.base_url + "/history").text, comfyui.log_text()]
    parts = [KEY, KEY.split(":")[0], KEY.split(":")[1]]
    for text in texts:
        for part in parts:
            assert part not in text
    key_file = os.path.realpath(os.path.join(comfyui.base_dir, "user", "ltx_outpaint", "fal_key"))
    checked = 0
    for root, _dirs, files in os.walk(comfyui.base_dir):
        if os.path.join("custom_nodes") in root:
            continue
        for name in files:
            path = os.path.realpath(os.path.join(root, name))
            if path == key_file:
                assert oct(os.stat(path).st_mode & 0o777) == "0o600"
                continue
            data = open(path, "rb").read()
            checked += 1
            for part in parts:
                assert part.encode() not in data, path
    assert checked > 3
