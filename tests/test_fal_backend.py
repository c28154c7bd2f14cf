"""The fal backend end to end against our faithful local fal server (tests/fal_server.py) on 127.0.0.1.

The real client, uploads, queue, SSE, result and download run; only fal itself is replaced (no
internet or fal key here).
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re
import threading
import time

import pytest

from clips import clip
from fal_server import FakeFal
from ltx_outpaint.backends import Interrupted, Progress, run_outpaint
from ltx_outpaint.fal.backend import FalBackend, FalConfig, recover
from ltx_outpaint.media.canvas import CanvasSpec
from ltx_outpaint.errors import InputError
from ltx_outpaint.fal.journal import Journal
from ltx_outpaint.request import ImageSize, LoraSpec, OutpaintRequest
from ltx_outpaint.media.decode import DecodeOptions, decode_video

KEY = "test-key-id:test-key-secret"


@pytest.fixture
def fal(tmp_path, monkeypatch):
    monkeypatch.setenv("LTX_OUTPAINT_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FAL_KEY", KEY)
    for var in ("FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(var, raising=False)
    with FakeFal(max_side=64, queue_seconds=0.1, run_seconds=0.3) as fake:
        monkeypatch.setenv("LTX_OUTPAINT_FAL_QUEUE_URL", fake.queue_url)
        monkeypatch.setenv("LTX_OUTPAINT_FAL_REST_URL", fake.rest_url)
        monkeypatch.setenv("LTX_OUTPAINT_FAL_CDN_URL", fake.cdn_url)
        yield fake


@pytest.fixture(scope="module")
def source_path():
    return clip("fal_src.mp4", width=96, height=160, frames=12, fps=24)


def run(tmp_path, source_path, request=None, config=None, progress=None, opts=DecodeOptions()):
    request = request or OutpaintRequest(prompt="a wide beach", num_frames=9, seed=5)
    config = config or FalConfig(output_dir=str(tmp_path / "out"))
    return run_outpaint(request, decode_video(source_path, opts), CanvasSpec(request.resolution), config,
                        progress)


def submit_bodies(fake):
    return [r.json for r in fake.requests if r.method == "POST" and r.path.endswith("/outpaint/lora")]


def test_run_saves_mp4_and_sidecar_and_sends_the_request_model(fal, tmp_path, source_path):
    req = OutpaintRequest(prompt="a wide beach", num_frames=9, frames_per_second=12, seed=5,
                          resolution=ImageSize(640, 360),
                          loras=(LoraSpec("https://example.com/style.safetensors", 0.7, "video"),))
    res = run(tmp_path, source_path, req)
    assert res.backend == "fal" and res.seed == 5 and res.video_path and os.path.exists(res.video_path)
    assert res.frames.shape[0] == 9 and res.fps == pytest.approx(12)
    side = json.load(open(res.video_path + ".json"))
    rid = side["request_id"]
    assert side["endpoint_id"] == "fal-ai/ltx-2.3-quality/outpaint/lora"
    assert side["billable_units"] == 3 and side["cost_estimate_usd"] == pytest.approx(3 * 0.0024075)
    # the body on the wire is exactly the request model's fields (+ the uploaded video URL)
    (body,) = submit_bodies(fal)
    expected = {**req.to_fal_input(), "video_url": body["video_url"]}
    assert body == expected and body["video_url"].startswith(fal.cdn_url)
    assert side["request"] == body
    assert fal.submits == 1 and Journal().get(rid).state == "saved"
    # the source was uploaded untouched
    uploaded = [r for r in fal.requests if r.method == "POST" and r.path.endswith("/files/upload")]
    assert len(uploaded) == 1 and uploaded[0].body_length == os.path.getsize(source_path)


def test_upload_cache_and_changed_frames(fal, tmp_path, source_path):
    run(tmp_path, source_path)
    run(tmp_path, source_path)
    uploads = lambda: [r for r in fal.requests if "/files/upload" in r.path]  # noqa: E731
    assert len(uploads()) == 1  # same content: uploaded once
    run(tmp_path, source_path, opts=DecodeOptions(frame_load_cap=6))  # frames changed: re-encoded
    assert len(uploads()) == 2 and uploads()[-1].body_length != os.path.getsize(source_path)
    assert fal.submits == 3


@pytest.mark.parametrize("route,fault", [("submit", "429"), ("submit", "ingress_503"), ("status", "429"),
                                         ("stream", "drop"), ("result", "429"), ("download", "drop"),
                                         ("upload", "drop"), ("token", "ingress_503"), ("status", "drop")])
def test_transient_faults_still_succeed_with_one_billable_submit(fal, tmp_path, source_path, route, fault):
    fal.inject(route, fault)
    res = run(tmp_path, source_path)
    assert os.path.getsize(res.video_path) == fal.jobs[json.load(open(res.video_path + ".json"))[
        "request_id"]].result_size
    assert res.frames.shape[0] == 9
    assert fal.submits == 1


def test_submit_answered_5xx_with_a_request_id_is_followed_to_its_result(fal, tmp_path, source_path):
    """Ambiguous submit #1: fal created the job but answered 503 naming it; one job, followed and saved."""
    fal.inject("submit", "503_after_create")
    res = run(tmp_path, source_path)
    (rid,) = fal.jobs
    assert json.load(open(res.video_path + ".json"))["request_id"] == rid
    assert fal.submits == 1 and len(submit_bodies(fal)) == 1
    assert Journal().get(rid).state == "saved"
    assert any("HTTP 503" in n and rid in n for n in res.notes), res.notes


def test_job_error_shows_fal_message_and_error_type(fal, tmp_path, source_path):
    fal.inject("submit", "job_error", error_type="runner_scheduling_failure", message="no runner available")
    with pytest.raises(Exception) as e:
        run(tmp_path, source_path)
    assert "runner_scheduling_failure" in str(e.value) and "no runner available" in str(e.value)
    assert [e.state for e in Journal().pending()] == []  # marked failed, not left pending
    (rid,) = fal.jobs
    entry = Journal().get(rid)
    assert entry.state == "failed" and "no runner available" in entry.error and entry.error == str(e.value)
    assert not any(r.path.endswith("/cancel") for r in fal.requests)  # fal ended it: nothing to cancel


def test_stuck_queue_hits_the_deadline_and_is_cancelled(fal, tmp_path, source_path):
    fal.inject("submit", "stuck")
    t0 = time.monotonic()
    with pytest.raises(Exception) as e:
        run(tmp_path, source_path, config=FalConfig(output_dir=str(tmp_path / "out"), deadline_s=1.5))
    (rid,) = fal.jobs
    assert str(e.value) == (f"fal request {rid} did not finish within 1.5 s; it was cancelled; if fal had already "
                            f"started it, it may finish anyway and be billed: Recover fal Result then loads it "
                            f"(request id {rid})")
    assert time.monotonic() - t0 < 10
    assert any(r.method == "PUT" and r.path.endswith("/cancel") for r in fal.requests)
    entry = Journal().get(rid)
    assert entry.state == "cancelled" and entry.error == "deadline" and fal.jobs[rid].cancelled


class InterruptWhenRunning(Progress):
    def __init__(self):
        self.running_at = None

    def report(self, done, total, text=None):
        if text and "in progress" in text and self.running_at is None:
            self.running_at = time.monotonic()

    def interrupted(self):
        return self.running_at is not None


@pytest.mark.parametrize("use_sse", [True, False])
def test_interrupt_cancels_the_job_and_stops_polling(fal, tmp_path, source_path, use_sse):
    fal.run_seconds = 30
    progress = InterruptWhenRunning()
    with pytest.raises(Interrupted):
        run(tmp_path, source_path, progress=progress,
            config=FalConfig(output_dir=str(tmp_path / "out"), use_sse=use_sse))
    cancels = [r for r in fal.requests if r.method == "PUT" and r.path.endswith("/cancel")]
    assert len(cancels) == 1 and cancels[0].time - progress.running_at < 1.0
    n = len(fal.requests)
    time.sleep(1.0)
    assert len(fal.requests) == n  # no further polling / streaming
    (job,) = fal.jobs.values()
    assert job.cancelled
    entry = Journal().get(job.request_id)
    assert entry.state == "cancelled" and entry.error == "interrupted by the user"


def test_a_running_job_that_ignores_the_cancel_stays_pending_and_its_paid_result_is_recovered(fal, tmp_path,
                                                                                                source_path):
    """fal removes a queued job but only signals a running one: a runner may finish it (billed) anyway."""
    import asyncio

    fal.running_cancel_is_ignored = True
    fal.run_seconds = 1.5
    with pytest.raises(Interrupted) as e:
        run(tmp_path, source_path, progress=InterruptWhenRunning())
    (job,) = fal.jobs.values()
    rid = job.request_id
    assert str(e.value) == (f"interrupted: fal request {rid} cancelled (interrupted by the user); if fal had already "
                            f"started it, it may finish anyway and be billed: Recover fal Result then loads it "
                            f"(request id {rid})")
    entry = Journal().get(rid)
    assert (entry.state, entry.may_still_run) == ("cancelled", True) and entry in Journal().pending()
    job = fal.wait_job(rid, timeout=10)
    assert job.cancelled_in == "IN_PROGRESS" and job.error is None and fal.billed_unsaved() == [rid]
    res = asyncio.run(recover(rid, FalConfig(output_dir=str(tmp_path / "rec"))))
    assert os.path.exists(res.video_path) and fal.billed_unsaved() == [] and fal.submits == 1
    entry = Journal().get(rid)
    assert (entry.state, entry.may_still_run) == ("saved", False) and entry not in Journal().pending()


def test_recovering_a_job_fal_did_cancel_says_so_and_leaves_nothing_pending(fal, tmp_path, source_path):
    import asyncio

    from ltx_outpaint.fal.errors import FalCancelled

    fal.run_seconds = 30
    with pytest.raises(Interrupted):
        run(tmp_path, source_path, progress=InterruptWhenRunning())
    (rid,) = fal.jobs
    assert Journal().get(rid).may_still_run
    with pytest.raises(FalCancelled, match=f"fal request {rid} was cancelled"):
        asyncio.run(recover(rid, FalConfig(output_dir=str(tmp_path / "rec"))))
    entry = Journal().get(rid)
    assert (entry.state, entry.may_still_run) == ("cancelled", False) and Journal().pending() == []


@pytest.mark.parametrize("node_limit,settings_limit,refused", [
    (0.0, 0.001, True), (1000.0, 0.001, True),  # a workflow cannot raise the settings' limit
    (0.001, 0.0, True), (0.001, 1000.0, True), (1000.0, 0.0, False), (0.0, 0.0, False)])
def test_the_lower_of_the_node_and_settings_cost_limits_applies(fal, tmp_path, source_path, node_limit,
                                                                settings_limit, refused):
    from ltx_outpaint.settings import Settings

    Settings(fal_max_cost_usd=settings_limit).save()
    config = FalConfig(output_dir=str(tmp_path / "out"), max_cost_usd=node_limit)
    if refused:
        with pytest.raises(InputError, match=r"is above the limit of \$0.0010 per run"):
            run(tmp_path, source_path, config=config)
        assert fal.requests == []
    else:
        run(tmp_path, source_path, config=config)
        assert fal.submits == 1


@pytest.mark.parametrize("field,config", [
    ("max_cost_usd", dict(max_cost_usd=float("nan"))), ("max_cost_usd", dict(max_cost_usd=float("inf"))),
    ("deadline_minutes", dict(deadline_s=float("nan"))), ("deadline_minutes", dict(deadline_s=0.0))])
def test_non_finite_limits_are_refused_before_anything_is_sent(fal, tmp_path, source_path, field, config):
    """ComfyUI's range check lets NaN through (JSON NaN in an API prompt): it must not disable a limit."""
    with pytest.raises(InputError, match=rf"^{field} \(Outpaint Backend: fal.ai\): got "):
        run(tmp_path, source_path, config=FalConfig(output_dir=str(tmp_path / "out"), **config))
    assert fal.requests == []


@pytest.mark.parametrize("rid,reason", [
    ("../../x", "is not a fal request id"), ("..", "is not a fal request id"), (".", "is not a fal request id"),
    ("a b", "is not a fal request id"), ("  ", "is empty; paste a fal request id"),
    ("does-not-exist-1", "fal has no request does-not-exist-1 on fal-ai/ltx-2.3-quality/outpaint/lora")])
def test_recover_refuses_ids_that_are_not_fal_requests_and_journals_nothing(fal, tmp_path, rid, reason):
    """A shared workflow's Recover node cannot plant journal entries, send odd paths to fal or cancel anything."""
    import asyncio

    with pytest.raises(InputError, match=r"^request_id \(Recover fal Result\): " + re.escape(reason)):
        asyncio.run(recover(rid, FalConfig(output_dir=str(tmp_path / "rec"))))
    assert os.listdir(Journal().directory) == []
    assert all(r.method == "GET" and r.path.endswith("/requests/does-not-exist-1/status") for r in fal.requests)


def test_cost_guard_refuses_before_uploading(fal, tmp_path, source_path):
    with pytest.raises(InputError, match=r"^max_cost_usd \(Outpaint Backend: fal.ai\): estimated cost ~\$0.0144 "
                                         r"\(6 MP, estimate\) is above the limit of \$0.0010"):
        run(tmp_path, source_path, config=FalConfig(output_dir=str(tmp_path / "out"), max_cost_usd=0.001))
    assert fal.requests == []


def test_more_than_three_loras_refused_before_anything_is_sent(fal, tmp_path, source_path):
    loras = tuple(LoraSpec(f"https://example.com/{i}.safetensors") for i in range(4))
    with pytest.raises(InputError, match="at most 3"):
        run(tmp_path, source_path, OutpaintRequest(num_frames=9, loras=loras))
    assert fal.requests == []


@pytest.mark.parametrize("field,value,ours", [
    ("num_frames", 5000, "num_frames (LTX-2.3 Outpaint): fal rejected the value: Input should be less than or "
                         "equal to 481"),
    ("source_scale", 3.0, "source_scale (Outpaint Canvas): fal rejected the value: Input should be less than or "
                          "equal to 1"),
    ("resolution", "huge", "resolution (Outpaint Canvas): fal rejected the value: Input should be 'square_hd', "
                           "'square', 'portrait_4_3', 'portrait_16_9', 'landscape_4_3' or 'landscape_16_9'"),
    ("video_url", None, "video (Load Video): fal rejected the value: Field required"),
    ("guidance_scale", 0, "guidance_scale (LTX-2.3 Outpaint): fal rejected the value: Input should be greater than "
                          "or equal to 1"),
    ("loras", [{"path": "https://x/a.safetensors", "scale": 1, "transformer": "both"},
               {"path": "x", "scale": 9, "transformer": "both"}],
     "scale (LoRA Stack #2): fal rejected the value: Input should be less than or equal to 4"),
])
def test_422_names_our_input_once_with_its_node(fal, field, value, ours):
    import asyncio

    from ltx_outpaint.fal.client import FalClient
    from ltx_outpaint.fal.errors import FalValidationError
    from ltx_outpaint.fal.messages import validation_input_error

    payload = {**OutpaintRequest(prompt="p", num_frames=9).to_fal_input(), "video_url": "https://x/v.mp4"}
    if value is None:
        payload.pop(field)
    else:
        payload[field] = value
    backend = FalBackend(FalConfig())

    async def go():
        async with FalClient(KEY, backend.hosts()) as client:
            await client.submit(backend.config.endpoint_id, payload)

    with pytest.raises(FalValidationError) as e:
        asyncio.run(go())
    assert str(validation_input_error(e.value)) == ours


def test_no_audio_and_sync_mode(fal, tmp_path, source_path):
    res = run(tmp_path, source_path, OutpaintRequest(num_frames=9, generate_audio=False, sync_mode=True))
    assert res.audio is None
    side = json.load(open(res.video_path + ".json"))
    assert side["response"]["video"]["url"].startswith("<data URI")
    assert decode_video(res.video_path).frames.shape[0] == 9


def test_recover_by_request_id_after_a_crash(fal, tmp_path, source_path):
    fal.run_seconds = 1.0
    progress = InterruptWhenRunning()
    progress.interrupted = lambda: False  # never interrupt; we "crash" instead
    box = {}

    def crash_soon():
        try:
            run(tmp_path, source_path, progress=progress,
                config=FalConfig(output_dir=str(tmp_path / "out"), deadline_s=0.3))
        except Exception as exc:  # the deadline stands in for a crash: the job keeps running on fal
            box["exc"] = exc

    fal.cancel_is_ignored = True  # a crashed process never cancels; keep the job alive
    t = threading.Thread(target=crash_soon)
    t.start()
    t.join()
    (rid,) = fal.jobs
    import asyncio

    from ltx_outpaint.fal.errors import FalTimeout
    from ltx_outpaint.fal.journal import Journal

    # the first run failed, and said which request it left behind
    assert isinstance(box.get("exc"), FalTimeout) and rid in str(box["exc"]), box
    # the paid job is still pending on fal, and the journal kept the request it was sent
    assert fal.jobs[rid].status in ("IN_QUEUE", "IN_PROGRESS")
    entry = Journal().get(rid)
    assert entry is not None and entry.result_path is None and (entry.state, entry.error) == ("cancelled", "deadline")  # the deadline asked fal to cancel
    assert entry.request == submit_bodies(fal)[0]
    res = asyncio.run(recover(rid, FalConfig(output_dir=str(tmp_path / "rec"))))
    assert os.path.exists(res.video_path) and res.frames.shape[0] == 9
    assert fal.submits == 1
    assert (Journal().get(rid).state, Journal().get(rid).result_path) == ("saved", res.video_path)


def test_key_never_written_or_logged(fal, tmp_path, source_path, caplog):
    caplog.set_level(logging.DEBUG)
    run(tmp_path, source_path)
    fal.inject("submit", "job_error", message="boom")
    with pytest.raises(Exception) as e:
        run(tmp_path, source_path)
    secret = KEY.split(":")[1]
    assert secret not in str(e.value) and secret not in caplog.text
    for path in glob.glob(str(tmp_path / "**" / "*"), recursive=True):
        if os.path.isfile(path):
            assert secret.encode() not in open(path, "rb").read(), path


def test_missing_key_is_a_clear_error(fal, tmp_path, source_path, monkeypatch):
    monkeypatch.delenv("FAL_KEY")
    with pytest.raises(InputError, match="no fal key configured: set the FAL_KEY"):
        run(tmp_path, source_path)
    assert fal.requests == []


def test_cli_fal_backend_and_recover(fal, tmp_path, source_path):
    import subprocess
    import sys

    env = {**os.environ}
    cmd = [sys.executable, "-m", "ltx_outpaint.cli"]
    r = subprocess.run(cmd + ["run", source_path, "-o", str(tmp_path / "wide.mp4"), "--prompt", "sea",
                              "--num-frames", "9", "--seed", "4"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "using the fal backend" in r.stderr and KEY.split(":")[1] not in r.stderr
    assert decode_video(str(tmp_path / "wide.mp4")).frames.shape[0] == 9
    (rid,) = fal.jobs
    r = subprocess.run(cmd + ["recover", rid, "-o", str(tmp_path / "again.mp4")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert open(tmp_path / "again.mp4", "rb").read() == open(tmp_path / "wide.mp4", "rb").read()
    assert fal.submits == 1
    fal.inject("submit", "job_error", error_type="runner_scheduling_failure", message="no runner")
    r = subprocess.run(cmd + ["run", source_path, "-o", str(tmp_path / "x.mp4"), "--num-frames", "9"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "runner_scheduling_failure" in r.stderr and "Traceback" not in r.stderr


def test_progress_covers_every_phase_with_cost_and_queue_position(fal, tmp_path, source_path):
    class Recorder(Progress):
        def __init__(self):
            self.seen = []

        def report(self, done, total, text=None):
            self.seen.append((done, text or ""))

    fal.queue_seconds = 0.6
    rec = Recorder()
    run(tmp_path, source_path, progress=rec)
    texts = " | ".join(t for _, t in rec.seen)
    for phase in ("estimated cost ~$", "uploading", "in queue (position", "in progress", "downloading the result",
                  "decoding"):
        assert phase in texts, phase
    values = [d for d, _ in rec.seen]
    assert values == sorted(values) and values[-1] >= 95


def test_422_at_run_time_names_our_input(tmp_path, source_path, monkeypatch):
    """Real fal may validate in the runner: the 422 then arrives with the result, not the submit."""
    monkeypatch.setenv("LTX_OUTPAINT_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FAL_KEY", KEY)
    with FakeFal(max_side=64, queue_seconds=0.1, run_seconds=0.2, validate_on="result") as fake:
        cfg = FalConfig(output_dir=str(tmp_path / "out"), queue_url=fake.queue_url, rest_url=fake.rest_url,
                        cdn_url=fake.cdn_url)
        import asyncio

        from ltx_outpaint.fal.client import FalClient

        backend = FalBackend(cfg)
        payload = {**OutpaintRequest(prompt="p", num_frames=9).to_fal_input(), "video_url": "https://x/v.mp4",
                   "num_frames": 5000}

        async def go():
            async with FalClient(KEY, backend.hosts()) as client:
                handle = await client.submit(cfg.endpoint_id, payload)
                from ltx_outpaint.fal.journal import JournalEntry

                entry = Journal().record(JournalEntry(handle.request_id, cfg.endpoint_id, handle.status_url,
                                                      handle.response_url, handle.cancel_url, request=payload))
                await backend.follow_and_save(client, handle, entry, Progress())

        with pytest.raises(InputError, match=r"^num_frames \(LTX-2.3 Outpaint\): fal rejected the value"):
            asyncio.run(go())


def test_local_lora_uploaded_once_and_size_capped(fal, tmp_path, source_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    from ltx_outpaint.fal import backend as fal_backend

    lora = str(tmp_path / "mine.safetensors")
    save_file({"a.lora_A.weight": torch.zeros(2, 2), "a.lora_B.weight": torch.zeros(2, 2)}, lora)
    req = OutpaintRequest(num_frames=9, loras=(LoraSpec(lora, 0.5, "audio"),))
    run(tmp_path, source_path, req)
    run(tmp_path, source_path, req)
    bodies = submit_bodies(fal)
    assert bodies[0]["loras"][0]["path"].startswith(fal.cdn_url)
    assert bodies[0]["loras"] == bodies[1]["loras"] and bodies[0]["loras"][0]["transformer"] == "audio"
    assert fal.count("POST", "/files/upload") == 2  # the clip and the LoRA, each once
    monkeypatch.setattr(fal_backend, "MAX_LORA_BYTES", 10)
    n = len(fal.requests)
    with pytest.raises(InputError, match=r"^path_or_url \(LoRA Stack #1\): mine.safetensors is .* GiB; fal "
                                         r"accepts at most 3 GiB$"):
        run(tmp_path, source_path, req)
    assert len(fal.requests) == n


def test_result_reuses_the_status_stream_connection(fal, tmp_path, source_path):
    """After COMPLETED the SSE stream is read to its end, so fetching the result needs no new connection
    (against real fal: no new TLS handshake on the critical path)."""
    run(tmp_path, source_path)
    stream = [r for r in fal.requests if r.path.endswith("/status/stream")]
    result = [r for r in fal.requests if r.method == "GET" and r.route == "result"]
    assert stream and result
    assert result[0].client_port == stream[-1].client_port


def test_submit_cut_off_after_sending_is_journaled_never_resubmitted_and_recoverable(fal, tmp_path, source_path):
    """Ambiguous submit #2: the job was created, the connection broke before the answer (no id)."""
    import asyncio

    from ltx_outpaint.fal.errors import FalSubmitUnknown

    fal.inject("submit", "drop", after=True)
    with pytest.raises(FalSubmitUnknown) as e:
        run(tmp_path, source_path)
    assert fal.submits == 1 and len(submit_bodies(fal)) == 1  # one billable job, never a second
    (entry,) = Journal().pending()
    assert entry.state == "unknown" and entry.request_id.startswith("unknown-")
    assert entry.request == submit_bodies(fal)[0]
    assert entry.error == ("the connection broke after the submit was sent (RemoteProtocolError: Server "
                           "disconnected without sending a response.)")
    msg = str(e.value)
    for part in ("fal may have created and billed this job", "it was not submitted again",
                 "fal.ai/dashboard/requests", "endpoint fal-ai/ltx-2.3-quality/outpaint/lora",
                 "Recover fal Result node, which takes its request id", f"journaled as {entry.request_id}"):
        assert part in msg, (part, msg)
    (rid,) = fal.jobs  # the id the user finds on fal's dashboard
    res = asyncio.run(recover(rid, FalConfig(output_dir=str(tmp_path / "rec"))))
    assert os.path.exists(res.video_path) and Journal().get(rid).state == "saved" and fal.submits == 1


def test_submit_answered_5xx_json_without_a_request_id_is_journaled_unknown_never_resubmitted(fal, tmp_path,
                                                                                                source_path):
    """Ambiguous submit #3: a 5xx from fal's own layers (JSON, X-Fal-Error-Type) naming no job is not the
    ingress (nginx): fal may have created the job, so it is not retried (fal-client would, billing twice)."""
    from ltx_outpaint.fal.errors import FalSubmitUnknown

    fal.inject("submit", "503_json_no_id")
    with pytest.raises(FalSubmitUnknown) as e:
        run(tmp_path, source_path)
    assert fal.submits == 1 and len(submit_bodies(fal)) == 1
    (entry,) = Journal().pending()
    assert entry.state == "unknown" and entry.error == (
        "fal answered the submit with HTTP 503 without a request id ({\"detail\": \"No runner could be scheduled\", "
        "\"error_type\": \"runner_scheduling_failure\"})")
    assert "fal may have created and billed this job" in str(e.value)


def test_result_fetch_failing_after_completion_is_retried(fal, tmp_path, source_path):
    fal.inject("result", "503_after_create", times=2)
    res = run(tmp_path, source_path)
    rid = json.load(open(res.video_path + ".json"))["request_id"]
    assert fal.count("GET", f"/requests/{rid}") - fal.count("GET", f"/requests/{rid}/status") == 3
    assert Journal().get(rid).state == "saved" and fal.submits == 1


def test_result_fetch_failing_for_good_after_completion_is_recoverable_not_failed(fal, tmp_path, source_path,
                                                                                 monkeypatch):
    import asyncio

    from ltx_outpaint.fal.errors import FalJobError
    from ltx_outpaint.fal.http import RetryPolicy

    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt, retry_after=None: 0.01)  # timing not under test
    fal.inject("result", "503_after_create", times=None)
    with pytest.raises(Exception) as e:
        run(tmp_path, source_path)
    (rid,) = fal.jobs
    assert not isinstance(e.value, FalJobError), e.value  # the job did not fail: it is done and billed
    assert str(e.value) == (f"fal request {rid}: fetching its result failed: HTTP 503 (runner_disconnected): Service "
                            f"temporarily unavailable: the runner connection was lost; fal request {rid} finished "
                            f"(billed) but its result was not saved: load it with Recover fal Result, request id {rid}")
    assert Journal().get(rid).state == "recoverable" and [x.request_id for x in Journal().pending()] == [rid]
    fal.clear_faults()
    res = asyncio.run(recover(rid, FalConfig(output_dir=str(tmp_path / "rec"))))
    assert os.path.exists(res.video_path) and Journal().get(rid).state == "saved" and fal.submits == 1


@pytest.mark.parametrize("what", ["video", "lora"])
def test_stale_cached_upload_is_dropped_uploaded_again_once_with_a_note(fal, tmp_path, source_path, what):
    import torch
    from safetensors.torch import save_file

    lora = str(tmp_path / "mine.safetensors")
    save_file({"a.lora_A.weight": torch.ones(2, 2), "a.lora_B.weight": torch.ones(2, 2)}, lora)
    req = OutpaintRequest(prompt="sea", num_frames=9, seed=2, loras=(LoraSpec(lora, 0.5, "both"),))
    run(tmp_path, source_path, req)
    first = submit_bodies(fal)[0]
    stale = first["video_url"] if what == "video" else first["loras"][0]["path"]
    fal.expire_file(stale)  # fal's CDN dropped it; our cache still has it
    uploads_before = fal.count("POST", "/files/upload")
    res = run(tmp_path, source_path, req)
    bodies = submit_bodies(fal)
    assert len(bodies) == 3  # first run, the failed job with the stale URL, the resubmit
    assert (bodies[1]["video_url"] if what == "video" else bodies[1]["loras"][0]["path"]) == stale
    fresh = bodies[2]["video_url"] if what == "video" else bodies[2]["loras"][0]["path"]
    assert fresh != stale and fal.count("POST", "/files/upload") == uploads_before + 1
    name = os.path.basename(source_path if what == "video" else lora)
    assert f"the cached upload of {name} could no longer be downloaded by fal: uploaded again and submitted once " \
           f"more (the first request failed, so it is not billed)" in res.notes
    failed_rid = [rid for rid, j in fal.jobs.items() if j.error_status == 422][0]
    assert Journal().get(failed_rid).state == "failed" and "file_download_error" not in fal.billed_unsaved()
    assert fal.jobs[failed_rid].result is None  # no output: not billed
    cache = json.load(open(os.path.join(os.environ["LTX_OUTPAINT_CONFIG_DIR"], "uploads.json")))
    assert stale not in [v["url"] for v in cache.values()] and fresh in [v["url"] for v in cache.values()]
    run(tmp_path, source_path, req)  # the new upload is reused
    assert fal.count("POST", "/files/upload") == uploads_before + 1


def test_a_url_fal_cannot_download_is_not_retried_and_named_once(fal, tmp_path, source_path):
    url = fal.cdn_url + "/files/never-uploaded.safetensors"
    req = OutpaintRequest(prompt="sea", num_frames=9, loras=(LoraSpec(url, 1.0, "both"),))
    with pytest.raises(InputError) as e:
        run(tmp_path, source_path, req)
    assert str(e.value) == ("path_or_url (LoRA Stack #1): fal could not download the file: Failed to download the "
                            "file. Please check if the URL is accessible.")
    assert fal.submits == 1


def test_a_paid_result_that_cannot_be_saved_is_journaled_recoverable_and_the_error_says_so(fal, tmp_path,
                                                                                         source_path):
    fal.inject("result", "slow", seconds=0.5)

    def expire_when_done():  # the CDN loses the file between COMPLETED and the download
        while not fal.jobs:
            time.sleep(0.01)
        job = fal.wait_job(next(iter(fal.jobs)), timeout=20)
        fal.expire_file(job.result_url)

    t = threading.Thread(target=expire_when_done)
    t.start()
    with pytest.raises(Exception) as e:
        run(tmp_path, source_path)
    t.join()
    (rid,) = fal.jobs
    assert str(e.value).endswith(f"; fal request {rid} finished (billed) but its result was not saved: load it "
                                 f"with Recover fal Result, request id {rid}"), str(e.value)
    entry = Journal().get(rid)
    assert entry.state == "recoverable" and "Recover fal Result" in entry.error
    assert [x.request_id for x in Journal().pending()] == [rid]
