"""Batches and long clips against the fake fal server (tests/fal_server.py): concurrency, the total cost cap,
resume after a kill (SIGINT and SIGKILL of a real CLI process), a failing clip, and long clips on fal
(chunks cross-faded, joins listed, saved chunks reused)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fal_server import FakeFal
from long_clips import write_long_clip
from ltx_outpaint.backends import Interrupted, Progress
from ltx_outpaint.batch.inputs import list_inputs
from ltx_outpaint.batch.progress import BatchProgress
from ltx_outpaint.batch.runner import run_batch
from ltx_outpaint.batch.state import MANIFEST, SUMMARY_JSON
from ltx_outpaint.errors import InputError
from ltx_outpaint.fal.backend import FalConfig
from ltx_outpaint.fal.journal import Journal
from ltx_outpaint.long.runner import LongOptions, run_long
from ltx_outpaint.media.canvas import CanvasSpec
from ltx_outpaint.media.sample import write_sample
from ltx_outpaint.request import ImageSize, OutpaintRequest

KEY = "test-key-id:test-key-secret"
REQUEST = OutpaintRequest(prompt="a wide street", seed=11, resolution=ImageSize(128, 64), source_scale=1.0)
CANVAS = CanvasSpec(ImageSize(128, 64), 1.0)
SUBMIT_PATH = "/outpaint/lora"


def env_for(fake: FakeFal, cfg: str) -> dict:
    return {"LTX_OUTPAINT_CONFIG_DIR": cfg, "FAL_KEY": KEY, "LTX_OUTPAINT_FAL_QUEUE_URL": fake.queue_url,
            "LTX_OUTPAINT_FAL_REST_URL": fake.rest_url, "LTX_OUTPAINT_FAL_CDN_URL": fake.cdn_url}


@pytest.fixture
def fal(tmp_path, monkeypatch):
    with FakeFal(max_side=128, queue_seconds=0.05, run_seconds=0.4) as fake:
        for k, v in env_for(fake, str(tmp_path / "cfg")).items():
            monkeypatch.setenv(k, v)
        for var in ("FAL_KEY_ID", "FAL_KEY_SECRET"):
            monkeypatch.delenv(var, raising=False)
        yield fake


def make_clips(folder, count: int = 12, frames: int = 24) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    return [write_sample(os.path.join(folder, f"clip{i:02d}.mp4"), 64, 48, frames, 24.0, seed=i)
            for i in range(count)]


def submits(fake) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path.endswith(SUBMIT_PATH) and r.status == 200)


def test_twelve_clips_three_at_a_time(fal, tmp_path):
    clips = make_clips(tmp_path / "in")
    summary = run_batch(list_inputs([str(tmp_path / "in")]), str(tmp_path / "out"), REQUEST, CANVAS,
                        FalConfig(), concurrency=3)
    assert fal.submits == 12 and fal.peak_in_flight == 3  # never more than 3, and 3 were used
    assert [r.status for r in summary.records] == ["done"] * 12
    for clip, rec in zip(clips, summary.records):
        assert rec.input == clip and os.path.isfile(rec.output) and rec.cost_estimate_usd > 0
    data = json.load(open(summary.summary_json))
    assert [c["status"] for c in data["clips"]] == ["done"] * 12 and data["totals"]["done"] == 12
    rows = open(summary.summary_csv).read().splitlines()
    assert rows[0].startswith("input,status,output,seconds,cost_estimate_usd") and len(rows) == 13
    # the same command again: everything skipped, nothing uploaded or submitted
    before = len(fal.requests)
    again = run_batch(list_inputs([str(tmp_path / "in")]), str(tmp_path / "out"), REQUEST, CANVAS, FalConfig(),
                      concurrency=3)
    assert [r.status for r in again.records] == ["skipped"] * 12 and len(fal.requests) == before


def test_total_cap_refuses_before_any_upload(fal, tmp_path):
    make_clips(tmp_path / "in", 4)
    events = []

    class Sink(BatchProgress):
        def overall(self, done, total, text):
            events.append(text)

    with pytest.raises(InputError, match=r"max_total_cost_usd.*above the cap of \$0\.0010; nothing was uploaded"):
        run_batch(list_inputs([str(tmp_path / "in")]), str(tmp_path / "out"), REQUEST, CANVAS, FalConfig(),
                  max_total_cost_usd=0.001, sink=Sink())
    assert fal.requests == []  # no token, no upload, no submit
    assert any("fal estimate for the 4 clip(s)" in e for e in events)


def test_a_failing_clip_leaves_the_others_done(fal, tmp_path):
    clips = make_clips(tmp_path / "in", 5)
    bad = hashlib.sha256(open(clips[2], "rb").read()).hexdigest()

    def rule(params, video):
        if video is not None and hashlib.sha256(video).hexdigest() == bad:
            return [{"loc": ["body", "video_url"], "msg": "The video could not be processed.",
                     "type": "video_processing_error", "input": params["video_url"]}]
        return None

    fal.input_rule = rule
    summary = run_batch(clips, str(tmp_path / "out"), REQUEST, CANVAS, FalConfig(), concurrency=2)
    status = {os.path.basename(r.input): r for r in summary.records}
    assert status["clip02.mp4"].status == "failed" and "could not be processed" in status["clip02.mp4"].error
    assert [r.status for r in summary.records if r.input != clips[2]] == ["done"] * 4
    data = json.load(open(summary.summary_json))
    failed = [c for c in data["clips"] if c["status"] == "failed"]
    assert [os.path.basename(c["input"]) for c in failed] == ["clip02.mp4"] and failed[0]["error"]
    assert "clip02.mp4" in summary.text() and "failed" in summary.text()


def _manifest(out: str) -> dict:
    try:
        return json.load(open(os.path.join(out, MANIFEST)))["clips"]
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_batch_resumes_without_submitting_twice(tmp_path, sig):
    clips = make_clips(tmp_path / "in", 12)
    out, cfg = str(tmp_path / "out"), str(tmp_path / "cfg")
    cmd = [sys.executable, "-m", "ltx_outpaint.cli", "batch", str(tmp_path / "in"), "-o", out, "--backend", "fal",
           "--concurrency", "3", "--resolution", "128x64", "--source-scale", "1.0", "--seed", "11", "--prompt", "x"]
    with FakeFal(max_side=128, queue_seconds=0.05, run_seconds=2.0) as fake:
        env = {**os.environ, **env_for(fake, cfg)}
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # wait for: some clips done, 3 running, no submit in progress
                done = [c for c in _manifest(out).values() if c["status"] == "done"]
                last_submit = max((r.time for r in fake.requests if r.path.endswith(SUBMIT_PATH)), default=0)
                if len(done) >= 3 and fake.in_flight == 3 and time.monotonic() - last_submit > 0.5:
                    break
                assert first.poll() is None, first.stdout.read().decode()
                time.sleep(0.05)
            else:
                pytest.fail("the batch never reached 3 done + 3 in flight")
            in_flight = {rid for rid, j in fake.jobs.items() if not j.done}
            first.send_signal(sig)
            log = first.communicate(timeout=60)[0].decode()
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode in ((130, 4) if sig == signal.SIGINT else (-signal.SIGKILL,)), log
        done_before = {c["input"] for c in _manifest(out).values() if c["status"] == "done"}
        assert len(done_before) >= 3 and len(in_flight) == 3
        if sig == signal.SIGINT:  # Ctrl-C left the jobs running (journaled), did not cancel them
            assert fake.count("PUT", "/cancel") == 0
            states = {e.request_id: e.state for e in Journal(os.path.join(cfg, "journal")).pending()}
            assert in_flight <= set(states)
        submits_before = fake.submits
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert second.returncode == 0, second.stdout + second.stderr
        assert fake.submits == 12, f"submitted {fake.submits} times for 12 clips (before the re-run: {submits_before})"
        summary = json.load(open(os.path.join(out, SUMMARY_JSON)))["clips"]
        by_input = {c["input"]: c for c in summary}
        assert {c["input"] for c in summary if c["status"] == "skipped"} == done_before
        assert all(c["status"] in ("done", "skipped") for c in summary)
        resumed = {rid for c in summary for rid in c["request_ids"]}
        assert in_flight <= resumed  # the jobs running at the kill were followed, not submitted again
        followed = [c for c in summary if c["recovered_chunks"] or c["reused_chunks"]]
        assert len(followed) >= len(in_flight) and all(by_input[c["input"]]["status"] == "done" for c in followed)
        assert fake.billed_unsaved() == []
        assert len(os.listdir(out)) >= 12


def test_long_clip_on_fal_crossfades_chunks_lists_joins_and_reuses_saved_chunks(fal, tmp_path):
    src = str(tmp_path / "long.mp4")
    cuts = write_long_clip(src, 30, fps=24.0, seed=5, audio=False)
    out = str(tmp_path / "wide.mp4")
    opts = LongOptions(chunk_frames=120, overlap_frames=9)
    res = run_long(src, out, REQUEST.replace(seed=None), CANVAS, FalConfig(on_stop="detach"), opts, concurrency=3)
    assert res.frames == 720 and res.backend == "fal"
    assert fal.submits == len(res.plan.chunks) and fal.peak_in_flight <= 3
    seeds = {j.params["seed"] for j in fal.jobs.values()}
    prompts = {j.params["prompt"] for j in fal.jobs.values()}
    assert len(seeds) == 1 and seeds == {res.seed} and prompts == {"a wide street"}  # same seed and prompt
    side = json.load(open(out + ".json"))
    joins = [j for j in side["joins"] if j["kind"] == "chunk_join"]
    assert joins and all(j["overlap_frames"] == 9 for j in joins)
    assert [j["frame"] for j in side["joins"] if j["kind"] == "scene_cut"] == cuts
    assert "chunk joins (cross-faded over 9 frames)" in res.summary()
    # generated audio (the source has none) runs the whole length
    from ltx_outpaint.media.decode import decode_audio

    audio = decode_audio(out)
    assert abs(audio.duration - 30.0) < 0.1 and res.audio == "generated"
    # the same command again: every chunk's saved result is reused, nothing submitted
    again = run_long(src, out, REQUEST.replace(seed=None), CANVAS, FalConfig(on_stop="detach"), opts)
    assert fal.submits == len(res.plan.chunks) and again.seed == res.seed
    assert all(c["reused"] == "saved" for c in again.chunks)


def test_long_clip_crossfade_on_fal_is_a_blend_of_both_chunks(fal, tmp_path):
    """Over a join, each output frame is the ramp-weighted mean of the two chunks' frames for it."""
    from ltx_outpaint.long.reader import FrameReader

    src = str(tmp_path / "one_scene.mp4")
    write_sample(src, 64, 48, 200, 24.0, seed=3)
    out = str(tmp_path / "o.mp4")
    res = run_long(src, out, REQUEST, CANVAS, FalConfig(), LongOptions(detect_scenes=False, chunk_frames=120,
                                                                       overlap_frames=9))
    a, b = res.chunks[0], res.chunks[1]
    ra = FrameReader(Journal().get(a["request_id"]).result_path)
    rb = FrameReader(Journal().get(b["request_id"]).result_path)
    prev = ra.read(b["start"] - a["start"], 9).astype(np.float32)
    nxt = rb.read(0, 9).astype(np.float32)
    with FrameReader(out) as r:
        got = r.read(b["start"], 9).astype(np.float32)
    w = ((np.arange(9) + 1) / 10.0)[:, None, None, None]
    want = prev * (1 - w) + nxt * w
    assert np.abs(got - want).mean() < 3.0  # H.264 re-encode error, in 0..255 levels
    # where the two chunks differ, the output follows the ramp, not either side nor the reversed ramp
    differ = np.abs(prev - nxt).max(-1, keepdims=True) > 40
    differ[:, :, :, :] &= (np.abs(w - 0.5) > 0.2)  # frames near either end of the ramp
    assert differ.sum() > 100
    err = lambda pred: np.abs(got - pred)[np.broadcast_to(differ, got.shape)].mean()  # noqa: E731
    reversed_ramp = prev * w + nxt * (1 - w)
    assert err(want) * 2 < min(err(prev), err(nxt), err(reversed_ramp))
    ra.close(), rb.close()


class StopWhenAJobRuns(Progress):
    """Interrupts (as ComfyUI's interrupt flag does) once fal has a chunk IN_PROGRESS."""

    def __init__(self, fake: FakeFal):
        self.fake = fake

    def interrupted(self) -> bool:
        return any(j.status == "IN_PROGRESS" for j in self.fake.jobs.values())


@pytest.mark.parametrize("runner_stops", [True, False], ids=["runner stops", "runner ignores the cancel"])
def test_a_stopped_long_clip_resumes_its_cancelled_chunks_without_paying_twice(fal, tmp_path, runner_stops):
    """A stop cancels the chunks in flight, and fal only signals a running job: the re-run follows every
    cancelled chunk by its id, collects the ones fal finished anyway (billed) and submits the others again."""
    src = str(tmp_path / "long.mp4")
    write_long_clip(src, 12, fps=24.0, seed=3, audio=False)
    out = str(tmp_path / "wide.mp4")
    opts = LongOptions(chunk_frames=96, overlap_frames=9)
    fal.run_seconds, fal.running_cancel_is_ignored = 1.5, not runner_stops
    with pytest.raises(Interrupted):
        run_long(src, out, REQUEST, CANVAS, FalConfig(), opts, StopWhenAJobRuns(fal), concurrency=3)
    for rid in list(fal.jobs):
        fal.wait_job(rid, timeout=30)
    cancelled = [j for j in fal.jobs.values() if j.cancel_requests]
    finished_anyway = [j for j in cancelled if not j.cancelled]
    assert cancelled and (bool(finished_anyway) is not runner_stops), [(j.status, j.cancelled_in) for j in cancelled]
    assert all(Journal().get(j.request_id).may_still_run for j in cancelled)
    fal.running_cancel_is_ignored = False
    res = run_long(src, out, REQUEST, CANVAS, FalConfig(), opts, concurrency=3)
    assert fal.submits == len(res.plan.chunks) + sum(1 for j in cancelled if j.cancelled)  # only what fal stopped
    assert sum(1 for c in res.chunks if c["reused"] == "attached") == len(finished_anyway)
    assert fal.billed_unsaved() == [] and Journal().pending() == []


def test_a_batch_never_overwrites_files_it_did_not_write_nor_trusts_outputs_named_elsewhere(tmp_path):
    """The manifest is a file in the output folder (anyone who can upload there can edit it): an output it
    names outside the batch's folder is ignored (no "does this file exist?" oracle), and a file the batch did
    not write is kept, the clip written next to it. Preview backend: nothing else is under test."""
    make_clips(tmp_path / "in", count=2, frames=12)
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip00_outpaint.mp4").write_bytes(b"the user's own file")
    first = run_batch(list_inputs([str(tmp_path / "in")]), str(out), REQUEST, CANVAS)
    assert [r.status for r in first.records] == ["done", "done"]
    assert (out / "clip00_outpaint.mp4").read_bytes() == b"the user's own file"
    assert [os.path.basename(r.output) for r in first.records] == ["clip00_outpaint_2.mp4", "clip01_outpaint.mp4"]
    again = run_batch(list_inputs([str(tmp_path / "in")]), str(out), REQUEST, CANVAS)
    assert [r.status for r in again.records] == ["skipped", "skipped"]  # its own outputs are recognised
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("x")
    manifest = out / MANIFEST
    data = json.load(open(manifest))
    for rec in data["clips"].values():
        rec["output"] = str(secret)  # an existing file outside the folder, "done"
    json.dump(data, open(manifest, "w"))
    forged = run_batch(list_inputs([str(tmp_path / "in")]), str(out), REQUEST, CANVAS)
    assert [r.status for r in forged.records] == ["done", "done"]  # run again, not "skipped -> secret.txt"
    assert all(os.path.dirname(r.output) == str(out) for r in forged.records) and secret.read_text() == "x"
