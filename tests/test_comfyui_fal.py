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


def error_message(entry) -> str:
    """The execution error text as ComfyUI reports it (history / websocket `exception_message`)."""
    for kind, data in entry["status"]["messages"]:
        if kind == "execution_error":
            assert data["exception_type"] == "LTXOutpaintError", data["exception_type"]
            return data["exception_message"].rstrip("\n")
    raise AssertionError(f"no execution_error in {entry['status']}")

pytestmark = pytest.mark.comfyui

KEY = "kid-LTXSECRET-7f3a91:sec-LTXSECRET-c0ffee42"


def point_settings_at(comfyui, fake) -> None:
    """Base URLs through the pack's settings route (127.0.0.1 is allowed by the server's environment)."""
    r = httpx.post(comfyui.base_url + "/ltx_outpaint/settings",
                   json={"fal_queue_url": fake.queue_url, "fal_rest_url": fake.rest_url, "fal_cdn_url": fake.cdn_url})
    assert r.status_code == 200, r.text


@pytest.fixture
def fal_in_comfy(comfyui):
    """A fresh local fal server; ComfyUI's pack settings point at it; the key is stored via the pack route."""
    with FakeFal(keys={KEY}, max_side=64, queue_seconds=0.1, run_seconds=0.3) as fake:
        point_settings_at(comfyui, fake)
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


# ---------------------------------------------------------------- the settings route cannot redirect the key


def _post_settings(comfyui, body=None, content=None):
    kw = {"json": body} if content is None else {"content": content}
    return httpx.post(comfyui.base_url + "/ltx_outpaint/settings", **kw)


@pytest.mark.parametrize("body,status,error", [
    ({"fal_queue_url": "https://attacker.example/q"}, 400,
     "fal_queue_url: attacker.example is not one of fal's hosts"),
    ({"fal_rest_url": "http://192.168.1.5:8000/rest"}, 400, "fal_rest_url: 192.168.1.5:8000 is not one of fal's"),
    ({"fal_cdn_url": "https://v3.fal.media.attacker.example"}, 400, "fal_cdn_url: v3.fal.media.attacker.example"),
    ({"fal_max_cost_usd": "abc"}, 400, "fal_max_cost_usd: expected a number of US dollars, got str"),
    ({"default_backend": False}, 400, "default_backend: got False; allowed: preview, fal, local"),
    ({"fal_queue_url": ["https://queue.fal.run"]}, 400, "fal_queue_url: expected a string"),
    ({"nope": 1}, 400, "nope: unknown setting"),
    (["x"], 400, "the body must be a JSON object"),
    (None, 400, "the body must be JSON"),
])
def test_settings_route_refuses_other_hosts_and_wrong_types_with_400(comfyui, body, status, error):
    before = httpx.get(comfyui.base_url + "/ltx_outpaint/settings").json()
    r = _post_settings(comfyui, body, content=b"{not json" if body is None else None)
    assert r.status_code == status and r.json()["error"].startswith(error), r.text
    assert httpx.get(comfyui.base_url + "/ltx_outpaint/settings").json() == before  # nothing saved


def test_settings_route_accepts_fal_hosts_and_the_hosts_the_server_environment_allows(comfyui):
    """127.0.0.1 is allowed only because the test server was started with LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS."""
    r = _post_settings(comfyui, {"fal_queue_url": "https://eu.queue.fal.run/", "fal_max_cost_usd": 2,
                                 "default_backend": "preview"})
    assert r.status_code == 200 and r.json()["fal_queue_url"] == "https://eu.queue.fal.run"
    assert r.json()["fal_max_cost_usd"] == 2.0
    r = _post_settings(comfyui, {"fal_queue_url": "http://127.0.0.1:9/queue", "fal_max_cost_usd": 0})
    assert r.status_code == 200 and r.json()["fal_queue_url"] == "http://127.0.0.1:9/queue"


def test_a_settings_file_naming_another_host_gets_no_request_and_a_clear_error(comfyui, fal_in_comfy):
    """Hand-edited settings.json pointing at a host the environment does not allow: refused before sending."""
    with FakeFal(keys={KEY}, max_side=64) as elsewhere:
        settings = os.path.join(comfyui.base_dir, "user", "ltx_outpaint", "settings.json")
        with open(settings, "w") as f:  # "localhost" is not in the server's allow-list (127.0.0.1 is)
            json.dump({"fal_queue_url": elsewhere.queue_url.replace("127.0.0.1", "localhost"),
                       "fal_rest_url": elsewhere.rest_url.replace("127.0.0.1", "localhost"),
                       "fal_cdn_url": elsewhere.cdn_url.replace("127.0.0.1", "localhost")}, f)
        entry = comfyui.run(fal_graph(comfyui, prefix="fal_elsewhere/out"), timeout=120)
        port = elsewhere.base_url.rsplit(":", 1)[1]
        assert error_message(entry) == (
            f"fal_queue_url (LTX Outpaint settings): localhost:{port} is not one of fal's hosts (https://*.fal.run, "
            "*.fal.ai, *.fal.media); the fal key is only sent there unless whoever starts the server sets "
            "LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS=1 (or a list of host[:port]) or the LTX_OUTPAINT_FAL_QUEUE_URL / "
            "LTX_OUTPAINT_FAL_REST_URL / LTX_OUTPAINT_FAL_CDN_URL variables")
        assert elsewhere.requests == [] and fal_in_comfy.requests == []
