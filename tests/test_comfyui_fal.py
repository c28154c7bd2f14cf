"""The fal backend inside the real ComfyUI backend, pointed at our local fal server (no internet here)."""
from __future__ import annotations

import collections
import json
import os
import random
import time

import httpx
import pytest

from clips import bad_file, clip
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
SEED = int(os.environ.get("LTX_OUTPAINT_TEST_SEED", "20260510"))  # set it to try other moments


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


# ---------------------------------------------------------------- Save MP4 keeps fal's frames, adds metadata


def test_save_mp4_remuxes_the_fal_result_with_prompt_and_workflow_metadata(comfyui, fal_in_comfy):
    import av

    g = fal_graph(comfyui, prefix="fal_meta/out")
    workflow = {"nodes": [{"id": 5, "type": "LTXOutpaint"}], "note": "from the test"}
    entry = comfyui.run(g, timeout=120, extra_data={"extra_pnginfo": {"workflow": workflow}})
    assert entry["status"]["status_str"] == "success", entry["status"]
    f = saved_files(entry)[0]
    saved = os.path.join(comfyui.output_dir, f["subfolder"], f["filename"])
    (rid,) = fal_in_comfy.jobs
    fal_file = os.path.join(comfyui.output_dir, "ltx-outpaint", "fal", f"fal_{rid}.mp4")

    def packets(path):
        with av.open(path) as c:
            return [(p.stream.type, p.pts, bytes(p)) for p in c.demux() if p.dts is not None], dict(c.metadata)

    fal_packets, _ = packets(fal_file)
    saved_packets, meta = packets(saved)
    assert saved_packets == fal_packets and len(fal_packets) > 9  # the same encoded frames and audio: no re-encode
    stored = json.loads(meta["prompt"])
    assert {k: (v["class_type"], v["inputs"]) for k, v in stored.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in g.items()}
    assert json.loads(meta["workflow"]) == workflow
    assert comfyui.base_dir not in meta["prompt"]  # the fingerprints ComfyUI stores name no server path


# ---------------------------------------------------------------- error texts as ComfyUI shows them


def test_five_error_texts_verbatim_as_comfyui_reports_them(comfyui, fal_in_comfy):
    """exception_message of the history's execution_error (what the UI shows), exception_type LTXOutpaintError."""
    # 1. fal cannot download a LoRA URL (422 file_download_error from the runner)
    g = fal_graph(comfyui, prefix="err1/out")
    g["3"]["inputs"]["path_or_url"] = fal_in_comfy.cdn_url + "/files/gone.safetensors"
    assert error_message(comfyui.run(g)) == (
        "path_or_url (LoRA Stack #1): fal could not download the file: Failed to download the file. Please check if "
        "the URL is accessible.")
    # 2. the job fails on fal
    fal_in_comfy.inject("submit", "job_error", error_type="runner_scheduling_failure", message="no runner available")
    before = set(fal_in_comfy.jobs)
    text = error_message(comfyui.run(fal_graph(comfyui, prefix="err2/out")))
    (rid,) = set(fal_in_comfy.jobs) - before
    assert text == f"fal request {rid} failed: HTTP 500 (runner_scheduling_failure): no runner available"
    # 3. the deadline passes: the job is cancelled
    fal_in_comfy.inject("submit", "stuck")
    before = set(fal_in_comfy.jobs)
    text = error_message(comfyui.run(fal_graph(comfyui, prefix="err3/out", deadline_minutes=0.05)))
    (rid,) = set(fal_in_comfy.jobs) - before
    assert text == (f"fal request {rid} did not finish within 3 s; it was cancelled; if fal had already started it, "
                    f"it may finish anyway and be billed: Recover fal Result then loads it (request id {rid})")
    assert fal_in_comfy.jobs[rid].cancelled
    # 4. the cost guard refuses before anything is uploaded
    n = len(fal_in_comfy.requests)
    g = fal_graph(comfyui, prefix="err4/out")
    g["4"]["inputs"]["max_cost_usd"] = 0.001
    assert error_message(comfyui.run(g)) == (
        "max_cost_usd (Outpaint Backend: fal.ai): estimated cost ~$0.0072 (3 MP, estimate) is above the limit of "
        "$0.0010 per run; raise the limit or use a smaller canvas / fewer num_frames")
    assert len(fal_in_comfy.requests) == n
    # 5. a file that is not a video
    g = fal_graph(comfyui, prefix="err5/out")
    g["1"]["inputs"]["video"] = put_input(comfyui, bad_file("notes.mp4", b"hello, I am text\n" * 100))
    assert error_message(comfyui.run(g)) == (
        "video (Load Video): notes.mp4 is not a video PyAV can read (truncated or not a media file)")


# ---------------------------------------------------------------- interrupts at random moments


def test_twenty_random_interrupts_through_comfyui_cancel_or_save_every_job(comfyui):
    """POST /interrupt at random moments from queue to download while fal sends a status event every 50 ms."""
    rng = random.Random(SEED)
    with FakeFal(keys={KEY}, max_side=64, queue_seconds=0.2, run_seconds=0.5, tick_s=0.05,
                 download_seconds=0.3) as fake:
        point_settings_at(comfyui, fake)
        assert httpx.post(comfyui.base_url + "/ltx_outpaint/fal_key", json={"key": KEY}).status_code == 200
        fal_dir = os.path.join(comfyui.output_dir, "ltx-outpaint", "fal")
        journal_dir = os.path.join(comfyui.base_dir, "user", "ltx_outpaint", "journal")
        outcomes = collections.Counter()
        t0 = time.monotonic()
        for i in range(20):
            g = fal_graph(comfyui, prefix=f"fal_rand/out{i}")
            g["5"]["inputs"]["seed"] = 1000 + i  # a new request each round (no cached output)
            before = set(fake.jobs)
            status, body = comfyui.queue(g)
            assert status == 200, body
            deadline = time.monotonic() + 30
            while not set(fake.jobs) - before:
                assert time.monotonic() < deadline, "no job was submitted"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 1.1))  # queue 0.2 + run 0.5 + download 0.3 (+ 0.1)
            comfyui.interrupt()
            entry = comfyui.wait(body["prompt_id"], timeout=60)
            (rid,) = set(fake.jobs) - before
            job = fake.wait_job(rid, timeout=10)
            with open(os.path.join(journal_dir, f"{rid}.json")) as f:
                state = json.load(f)["state"]
            saved = os.path.exists(os.path.join(fal_dir, f"fal_{rid}.mp4"))
            if job.cancelled:
                assert state == "cancelled" and not saved and entry["status"]["status_str"] != "success"
                assert f"fal request {rid} cancelled (interrupted by the user)" in comfyui.log_text()
                reqs = [r for r in fake.requests if rid in r.path]
                cancel = [r for r in reqs if r.path.endswith("/cancel") and r.status == 202][0]
                assert all(r.time <= cancel.time for r in reqs), "a request followed the cancel"
                outcomes["cancelled"] += 1
            elif job.result is not None and job.result_delivered and saved:
                assert state == "saved"
                outcomes["saved" if entry["status"]["status_str"] != "success" else "finished before"] += 1
            else:
                outcomes["lost" if job.result is not None else "other"] += 1
        took = time.monotonic() - t0
    print(f"ComfyUI: {dict(outcomes)} over 20 interrupts in {took:.0f} s (seed {SEED})")
    assert outcomes["lost"] == 0 and outcomes["other"] == 0, dict(outcomes)
    assert fake.billed_unsaved() == []
    assert outcomes["cancelled"] >= 5 and outcomes["cancelled"] + outcomes["saved"] + outcomes["finished before"] == 20
