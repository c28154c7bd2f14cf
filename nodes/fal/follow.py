"""Follow a submitted fal job until its result is saved; interrupts and deadlines always cancel it.

Rules, so that a paid result is never lost and a stopped job is never left running:
- every progress report goes through :class:`LatchedProgress`: an exception raised by the sink (ComfyUI's
  progress hook raises InterruptProcessingException *and clears its flag*) is remembered as a stop request,
  so whichever task sees the interrupt first, the job is cancelled;
- any BaseException while the job runs (interrupt, deadline, CancelledError, KeyboardInterrupt, a broken
  status stream) first stops following (no request is sent after the cancel), then cancels the job in a
  shielded task, unless fal already finished it with an error;
- when fal finished the job first (cancel answers ALREADY_COMPLETED, or the stop came during the download),
  the paid result is saved anyway (shielded) and the stop is reported after;
- the journal says what happened: saved, cancelled (why), failed (fal's error) or recoverable (billed, not
  saved: use Recover fal Result with the request id). fal removes a queued job but only signals a running
  one, which may finish (and be billed) anyway: a cancelled job is journaled `may_still_run` (listed as
  pending; a long-clip or batch re-run follows it) and the message says how to recover it. No request is
  sent after the cancel;
- `detach=True` (batches): an interrupt, Ctrl-C or task cancellation stops following WITHOUT cancelling the
  job; the journal keeps it "submitted" (with why), so re-running the batch picks it up by its id.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass

from ..backends import Interrupted, Progress
from ..errors import InputError
from .errors import FalCancelled, FalError, FalJobError, FalTimeout, FalValidationError
from .journal import Journal, JournalEntry

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often the interrupt flag and the deadline are checked
CANCEL_WAIT_S = 10.0
#: Errors that mean fal itself finished the job (nothing left to cancel).
ENDED = (FalJobError, FalCancelled, FalValidationError)
#: Exceptions that must propagate unchanged (task cancellation, Ctrl-C, exit).
PASS_THROUGH = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)


@dataclass(frozen=True)
class Saved:
    """A downloaded fal result: the MP4 path, fal's output JSON and `x-fal-billable-units`."""

    path: str
    data: dict
    billed: int | None


class LatchedProgress(Progress):
    """Wraps a Progress; an exception from `report()` or a True `interrupted()` is latched as `stop`."""

    def __init__(self, inner: Progress):
        self.inner = inner
        self.stop: BaseException | None = None

    def report(self, done, total, text=None) -> None:
        if self.stop is not None:
            return  # reporting again could raise again; the stop is already known
        try:
            self.inner.report(done, total, text)
        except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
            raise
        except BaseException as exc:  # noqa: BLE001 - ComfyUI's hook raises its interrupt here (a BaseException
            # since ComfyUI 0.4: InterruptProcessingException)
            log.info("stop requested while reporting progress (%s)", type(exc).__name__)
            self.stop = exc

    def interrupted(self) -> bool:
        if self.stop is None:
            try:
                if self.inner.interrupted():
                    self.stop = Interrupted("interrupted by the user")
            except Exception as exc:  # noqa: BLE001
                self.stop = exc
        return self.stop is not None

    def note(self, text: str) -> None:
        try:
            self.inner.note(text)
        except Exception:  # noqa: BLE001 - the note is also logged
            log.warning("%s", text)


async def follow_and_save(client, handle, entry: JournalEntry, progress: Progress, *, output_dir: str,
                          use_sse: bool = True, deadline_s: float = 3600.0, detach: bool = False) -> Saved:
    """Wait for the job, then download its result (+ sidecar) before anything else can fail.

    Raises fal's error when the job failed, :class:`Interrupted` after an interrupt (the job cancelled, or
    its paid result saved; with `detach` left running), :class:`FalTimeout` after the deadline (the job
    cancelled).
    """
    guard = progress if isinstance(progress, LatchedProgress) else LatchedProgress(progress)
    started = time.monotonic()
    try:
        await _follow(client, handle, entry, guard, use_sse, deadline_s, started)
    except BaseException as exc:
        if detach and (isinstance(exc, DETACH_ON) or guard.stop is not None or _is_comfy_interrupt(exc)):
            _detached(handle, exc, guard)
            raise
        state, outcome = await _shielded(client, _stop(client, handle, entry, guard, exc, output_dir))
        _raise_stopped(exc, state, outcome, handle, deadline_s, guard.stop is not None)
    saved = await _shielded(client, _save(client, handle, entry, guard, output_dir))
    if guard.interrupted():
        text = (f"interrupted after fal finished: the paid result of fal request {handle.request_id} was saved "
                f"to {saved.path}")
        guard.note(text)
        raise Interrupted(text) from guard.stop
    return saved


async def _follow(client, handle, entry: JournalEntry, guard: LatchedProgress, use_sse: bool, deadline_s: float,
                  started: float) -> None:
    """Return when fal says COMPLETED without error; the status stream is closed before this returns."""

    async def watch() -> None:
        async for update in client.watch(handle, use_sse=use_sse):
            elapsed = time.monotonic() - started
            if update.status == "IN_QUEUE":
                text, done = f"fal: in queue (position {update.queue_position}), {elapsed:.0f} s", 25
            else:
                last = (update.logs or [{}])[-1].get("message", "") if update.logs else ""
                text = f"fal: {update.status.lower().replace('_', ' ')}, {elapsed:.0f} s" + (f" - {last}" if last else "")
                done = 50 if update.status == "IN_PROGRESS" else 80
            guard.report(done, 100, f"{text}; estimate ${entry.cost_estimate_usd or 0:.4f}")

    task = asyncio.create_task(watch())
    try:
        while True:
            finished, _ = await asyncio.wait({task}, timeout=POLL_S)
            if finished:
                task.result()  # fal's job error, if any
                return
            if guard.interrupted():
                raise Interrupted("interrupted by the user")
            if time.monotonic() - started > deadline_s:
                raise FalTimeout(f"fal request {handle.request_id} did not finish within {deadline_s:g} s",
                                 request_id=handle.request_id)
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # nothing more is sent for this job


#: What stops following without cancelling the job when `detach` is on.
DETACH_ON = (asyncio.CancelledError, KeyboardInterrupt, Interrupted)


def _detached(handle, exc: BaseException, guard: LatchedProgress) -> None:
    """Journal a job left running at fal (state stays "submitted"): a re-run collects it by its id."""
    rid = handle.request_id
    text = (f"fal request {rid} left running at fal ({_why(exc, guard)}); re-run the same command to collect its "
            f"result (it is billed when it completes; fal keeps a result about an hour), or load it with Recover "
            f"fal Result, request id {rid}")
    try:
        Journal().update(rid, state="submitted", error=text)
    except (OSError, KeyError) as jexc:  # the id is still in the log line below
        log.warning("could not journal the detach of %s: %s", rid, jexc)
    log.warning("%s", text)


def _is_comfy_interrupt(exc: BaseException) -> bool:
    """ComfyUI's interrupt (comfy.model_management.InterruptProcessingException), without importing ComfyUI."""
    return type(exc).__name__ == "InterruptProcessingException"


def _why(exc: BaseException, guard: LatchedProgress) -> str:
    if isinstance(exc, FalTimeout):
        return "deadline"
    if isinstance(exc, Interrupted) or guard.stop is not None or _is_comfy_interrupt(exc):
        return "interrupted by the user"
    if isinstance(exc, asyncio.CancelledError):
        return "the run was cancelled"
    if isinstance(exc, KeyboardInterrupt):
        return "Ctrl-C"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _stop(client, handle, entry: JournalEntry, guard: LatchedProgress, exc: BaseException,
                output_dir: str) -> tuple[str, str]:
    """Stop the job after `exc` and journal the truth; returns (journal state, what happened or "")."""
    rid = handle.request_id
    journal = Journal()
    if isinstance(exc, ENDED) or isinstance(exc, InputError):  # fal finished the job with an error
        state = "cancelled" if isinstance(exc, FalCancelled) else "failed"
        journal.update(rid, state=state, error=str(exc)[:1000] or type(exc).__name__, may_still_run=False)
        return state, ""
    why = _why(exc, guard)
    try:
        accepted = await asyncio.wait_for(client.cancel(handle), CANCEL_WAIT_S)
    except Exception as cexc:  # noqa: BLE001 - say so, and keep the id for Recover
        detail = str(cexc) or type(cexc).__name__
        journal.update(rid, state="recoverable", error=f"{why}; the cancel was not confirmed: {detail}")
        text = (f"fal request {rid} may still be running (the cancel was not confirmed: {detail}); if it "
                f"completes it is billed: load it with Recover fal Result, request id {rid}")
        guard.note(text)
        return "recoverable", text
    if accepted:
        # fal removes a queued job but only signals a running one, and the job may have started after the
        # last status seen: until fal says otherwise it may still finish (and be billed); the journal keeps
        # it pending and no request is sent for it now
        journal.update(rid, state="cancelled", error=why, may_still_run=True)
        text = f"fal request {rid} cancelled ({why}); {may_still_run_hint(rid)}"
        guard.note(text)
        return "cancelled", text
    log.info("fal request %s had already finished when it was cancelled; saving its result", rid)
    try:
        saved = await _save(client, handle, entry, guard, output_dir)
    except ENDED as jexc:
        return "failed", f"fal request {rid} had already finished with an error: {jexc}"
    except Exception as sexc:  # noqa: BLE001 - _save journaled it as recoverable
        text = (f"fal request {rid} finished before the cancel (billed) but its result could not be saved "
                f"({sexc}); load it with Recover fal Result, request id {rid}")
        guard.note(text)
        return "recoverable", text
    text = f"fal request {rid} had already finished; its paid result was saved to {saved.path}"
    guard.note(text)
    return "saved", text


def may_still_run_hint(rid: str) -> str:
    """What a user must know after fal accepted a cancel (it only signals a running job)."""
    return f"if fal had already started it, it may finish anyway and be billed: Recover fal Result then loads it " \
           f"(request id {rid})"


def _raise_stopped(exc: BaseException, state: str, outcome: str, handle, deadline_s: float, stopped: bool):
    """Re-raise after `_stop`, with what happened to the job in the message."""
    if isinstance(exc, PASS_THROUGH) or not outcome:
        raise exc
    if isinstance(exc, FalTimeout):
        tail = f"it was cancelled; {may_still_run_hint(handle.request_id)}" if state == "cancelled" else outcome
        raise FalTimeout(f"fal request {handle.request_id} did not finish within {deadline_s:g} s; {tail}",
                         request_id=handle.request_id) from None
    if isinstance(exc, Interrupted) or stopped:
        raise Interrupted(f"interrupted: {outcome}") from exc
    if isinstance(exc, FalError):
        exc.args = (f"{exc}; {outcome}",)
        exc.message = exc.args[0]
    raise exc


async def _save(client, handle, entry: JournalEntry, guard: LatchedProgress, output_dir: str) -> Saved:
    """Download the MP4 and write its JSON sidecar; journal "saved", else "failed" / "recoverable"."""
    rid = handle.request_id

    def downloaded(done: int, total: int | None) -> None:
        guard.report(85 + (10 * done / total if total else 0), 100, f"fal: downloading the result "
                                                                      f"{done / 2**20:.1f} MiB")

    try:
        saved = await save_result(client, handle, entry, output_dir, downloaded)
    except BaseException as exc:
        if isinstance(exc, ENDED):
            Journal().update(rid, state="failed", error=str(exc)[:1000])
        else:
            why = str(exc) or type(exc).__name__
            Journal().update(rid, state="recoverable", error=f"completed at fal (billed) but not saved: {why}; "
                                                               f"load it with Recover fal Result ({rid})")
            if isinstance(exc, FalError):  # say so in the error the user sees
                exc.args = (f"{exc}; fal request {rid} finished (billed) but its result was not saved: load it "
                            f"with Recover fal Result, request id {rid}",)
                exc.message = exc.args[0]
        raise
    guard.report(95, 100, f"fal: result saved to {saved.path}; decoding")
    return saved


async def save_result(client, handle, entry: JournalEntry, output_dir: str, on_progress=None) -> Saved:
    """Fetch the output, download the MP4 to `output_dir/fal_<id>.mp4` and write the JSON sidecar."""
    result = await client.result(handle)
    data = result.data
    video = data.get("video") or {}
    if not video.get("url"):
        raise FalJobError(f"fal request {handle.request_id} returned no video: {str(data)[:300]}",
                          request_id=handle.request_id)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, f"fal_{handle.request_id}.mp4")
    await client.download(video["url"], path, expected_size=video.get("file_size"), on_progress=on_progress)
    response = json.loads(json.dumps(data))
    if str(response["video"]["url"]).startswith("data:"):
        response["video"]["url"] = f"<data URI, {len(video['url'])} chars>"
    sidecar = {
        "request_id": handle.request_id, "endpoint_id": entry.endpoint_id, "request": entry.request,
        "response": response, "seed": data.get("seed"), "prompt": data.get("prompt"),
        "cost_estimate_usd": entry.cost_estimate_usd, "billable_units": result.billable_units,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "video_path": path,
    }
    with open(path + ".json", "w", encoding="utf-8") as f:
        json.dump(sidecar, f, indent=2)
    Journal().update(handle.request_id, state="saved", result_path=path)
    log.info("fal result %s saved to %s", handle.request_id, path)
    return Saved(path, data, result.billable_units)


async def _shielded(client, coro):
    """Run `coro` to its end even if the caller is cancelled meanwhile; `client` stays open until it ends."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(_consume)
    keep_open = getattr(client, "keep_open_for", None)
    if keep_open is not None:
        keep_open(task)
    return await asyncio.shield(task)


def _consume(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("shielded fal task ended with %r", task.exception())
