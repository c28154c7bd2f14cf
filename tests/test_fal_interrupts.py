"""Interrupts at random moments between submit and download: every job ends cancelled or saved, none lost.

The real backend and client run against tests/fal_server.py with a status event every 50 ms (as fal sends
one log line per denoising step). Two kinds of progress sink stand in for the ComfyUI adapter:
- `HookProgress` behaves like ComfyUI's progress hook: `report()` raises when the interrupt flag is set and
  clears the flag, so `interrupted()` never sees it (the failure mode of issue 10);
- `FlagProgress` only flips `interrupted()`.
A seeded RNG picks the moments, so a failure reproduces. The same check through a real ComfyUI is in
test_comfyui_fal.py.
"""
from __future__ import annotations

import asyncio
import collections
import os
import random
import threading
import time

import pytest

from clips import clip
from fal_server import FakeFal
from ltx_outpaint.backends import Interrupted, Progress, run_outpaint, run_outpaint_async
from ltx_outpaint.fal.backend import FalConfig
from ltx_outpaint.fal.journal import Journal
from ltx_outpaint.media.canvas import CanvasSpec
from ltx_outpaint.media.decode import decode_video
from ltx_outpaint.request import OutpaintRequest

KEY = FakeFal.KEY
ROUNDS = 20
SEED = int(os.environ.get("LTX_OUTPAINT_TEST_SEED", "20260510"))  # set it to try other moments
QUEUE_S, RUN_S, DOWNLOAD_S = 0.2, 0.5, 0.3
WINDOW_S = QUEUE_S + RUN_S + DOWNLOAD_S + 0.1  # from the submit to the end of the download


class HookInterrupt(Exception):
    """Stands in for ComfyUI's InterruptProcessingException (an Exception raised by the progress hook)."""


class HookProgress(Progress):
    """ComfyUI-like: `report()` raises once the flag is set, clearing it; `interrupted()` reads the flag."""

    def __init__(self):
        self.flag = threading.Event()
        self.notes: list[str] = []

    def report(self, done, total, text=None):
        if self.flag.is_set():
            self.flag.clear()
            raise HookInterrupt()

    def interrupted(self):
        return self.flag.is_set()

    def note(self, text):
        self.notes.append(text)


class FlagProgress(HookProgress):
    """`interrupted()` turns True; `report()` never raises."""

    def report(self, done, total, text=None):
        pass


@pytest.fixture(scope="module")
def fake():
    with FakeFal(max_side=64, queue_seconds=QUEUE_S, run_seconds=RUN_S, tick_s=0.05,
                 download_seconds=DOWNLOAD_S) as f:
        yield f


@pytest.fixture
def env(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("LTX_OUTPAINT_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("FAL_KEY", KEY)
    monkeypatch.setenv("LTX_OUTPAINT_FAL_QUEUE_URL", fake.queue_url)
    monkeypatch.setenv("LTX_OUTPAINT_FAL_REST_URL", fake.rest_url)
    monkeypatch.setenv("LTX_OUTPAINT_FAL_CDN_URL", fake.cdn_url)
    return tmp_path


def _wait_for_new_job(fake: FakeFal, before: set, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = set(fake.jobs) - before
        if new:
            return new.pop()
        time.sleep(0.005)
    raise AssertionError("no job was submitted")


def classify(fake: FakeFal, rid: str, out_dir: str) -> str:
    """cancelled / saved / lost (billed, not delivered) / other; checks the journal tells the same."""
    job = fake.wait_job(rid, timeout=10)
    entry = Journal().get(rid)
    saved = os.path.exists(os.path.join(out_dir, f"fal_{rid}.mp4"))
    if job.cancelled:
        assert entry.state == "cancelled" and not saved, (entry, saved)
        # fal only signals a running job, and no request follows the cancel to see which it was: the journal
        # keeps the job pending (it may finish and be billed anyway)
        assert entry.may_still_run and entry in Journal().pending(), entry
        return "cancelled"
    if job.result is not None and job.result_delivered and saved:
        assert entry.state == "saved" and entry.result_path.endswith(f"fal_{rid}.mp4"), entry
        return "saved"
    if job.result is not None:
        return "recoverable" if entry.state == "recoverable" else "lost"
    return "other"


def no_request_after_cancel(fake: FakeFal, rid: str) -> bool:
    """After fal accepted a cancel (202), nothing more was sent for that job."""
    reqs = [r for r in fake.requests if rid in r.path]
    cancels = [r for r in reqs if r.method == "PUT" and r.path.endswith("/cancel") and r.status == 202]
    return not cancels or all(r.time <= cancels[0].time for r in reqs)


@pytest.mark.parametrize("kind", [HookProgress, FlagProgress])
def test_twenty_random_interrupts_cancel_or_save_every_job(env, fake, kind):
    rng = random.Random(SEED)
    source = decode_video(clip("int_src.mp4", width=96, height=160, frames=12, fps=24))
    request = OutpaintRequest(prompt="a wide beach", num_frames=9, seed=3)
    outcomes = collections.Counter()
    for i in range(ROUNDS):
        out_dir = str(env / f"out{i}")
        progress = kind()
        before = set(fake.jobs)
        delay = rng.uniform(0.0, WINDOW_S)

        def interrupt_later():
            _wait_for_new_job(fake, before)
            time.sleep(delay)
            progress.flag.set()

        t = threading.Thread(target=interrupt_later, daemon=True)
        t.start()
        error = None
        try:
            run_outpaint(request, source, CanvasSpec(request.resolution), FalConfig(output_dir=out_dir), progress)
        except Interrupted as exc:
            error = exc
        t.join(timeout=30)
        (rid,) = set(fake.jobs) - before
        outcome = classify(fake, rid, out_dir)
        outcomes[outcome if outcome != "saved" or error else "finished before the interrupt"] += 1
        assert no_request_after_cancel(fake, rid), f"round {i}: a request followed the cancel"
        if outcome == "cancelled":
            text = (f"fal request {rid} cancelled (interrupted by the user); if fal had already started it, it "
                    f"may finish anyway and be billed: Recover fal Result then loads it (request id {rid})")
            assert error is not None and str(error) == f"interrupted: {text}", (i, error)
            assert progress.notes == [text]
        elif error is not None:  # interrupted after fal finished: the paid result was saved first
            assert "paid result" in str(error) and f"fal_{rid}.mp4" in str(error), (i, error)
    print(f"{kind.__name__}: {dict(outcomes)} over {ROUNDS} interrupts (seed {SEED})")
    assert outcomes["cancelled"] + outcomes["saved"] + outcomes["finished before the interrupt"] == ROUNDS, \
        dict(outcomes)
    assert outcomes["cancelled"] >= 5 and outcomes["saved"] >= 3, dict(outcomes)  # both paths were exercised
    assert fake.billed_unsaved() == []


def test_task_cancellation_and_ctrl_c_also_cancel_or_save(env, fake):
    """asyncio cancellation (what Ctrl-C does to asyncio.run) at random moments: cancel or save, never lost."""
    rng = random.Random(SEED + 1)
    source = decode_video(clip("int_src.mp4", width=96, height=160, frames=12, fps=24))
    request = OutpaintRequest(prompt="a wide beach", num_frames=9, seed=3)
    outcomes = collections.Counter()
    for i in range(8):
        out_dir = str(env / f"cancel{i}")
        before = set(fake.jobs)
        delay = rng.uniform(0.0, WINDOW_S)

        async def main():
            task = asyncio.ensure_future(run_outpaint_async(request, source, CanvasSpec(request.resolution),
                                                            FalConfig(output_dir=out_dir), Progress()))
            while not set(fake.jobs) - before:
                await asyncio.sleep(0.005)
            await asyncio.sleep(delay)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            while len(asyncio.all_tasks()) > 1:  # a server's loop keeps running: shielded cancels / saves finish
                await asyncio.sleep(0.02)

        asyncio.run(main())
        (rid,) = set(fake.jobs) - before
        outcome = classify(fake, rid, out_dir)
        outcomes[outcome] += 1
        assert no_request_after_cancel(fake, rid)
    assert outcomes["cancelled"] + outcomes["saved"] == 8 and outcomes["cancelled"] >= 2, dict(outcomes)
