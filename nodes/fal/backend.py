"""fal backend: `fal-ai/ltx-2.3-quality/outpaint/lora` through fal's queue, over plain httpx.

Order of work, so that a paid result is never lost and never paid twice:
estimate + cost guard -> upload inputs (content-hash cache) -> submit (retried only when it certainly
created no job; an ambiguous submit is followed by its id or journaled as "unknown") -> journal entry ->
follow status (SSE, polling fallback; interrupt and deadline cancel the job, `follow.py`) -> fetch the
result -> download the MP4 into the output folder + JSON sidecar -> journal "saved" -> only then decode.

A cached upload that fal can no longer download (`file_download_error`) is dropped, uploaded again and the
request resubmitted, once (the failed job produced no output, so it is not billed).
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field

from ..backends import OutpaintJob, OutpaintResult, Progress, register
from ..cost import estimate_cost
from ..errors import InputError
from ..media.canvas import NO_SNAP
from ..media.decode import decode_video
from ..request import ENDPOINT_ID, OutpaintRequest, lora_node
from ..settings import Settings, config_dir, find_fal_key, missing_key_message
from .errors import FalError, FalSubmitUnknown, FalValidationError
from .follow import LatchedProgress, Saved, follow_and_save
from .journal import Journal, JournalEntry
from .messages import DOWNLOAD_ERROR_TYPES, OUTPAINT_NODE, validation_input_error
from .uploads import UploadCache

log = logging.getLogger(__name__)

MAX_LORA_BYTES = 3 * 2**30  # fal's limit per LoRA
SUBMIT_ANSWER_WAIT_S = 30.0  # detach mode: how long a stopped submit waits for fal's answer
BACKEND_NODE = "Outpaint Backend: fal.ai"
RECOVER_NODE = "Recover fal Result"
FIND_UNKNOWN_JOB = ("find it in fal's request list (fal.ai/dashboard/requests, endpoint {endpoint}, submitted at "
                    "{when}) and load it with the Recover fal Result node, which takes its request id")


@dataclass(frozen=True)
class FalConfig:
    """Settings of the fal backend node; empty strings / 0 fall back to the environment and the settings."""

    endpoint_id: str = ENDPOINT_ID
    max_cost_usd: float = 0.0  # per-run limit; the settings' limit, when lower, wins (0 = none)
    deadline_s: float = 3600.0
    use_sse: bool = True
    queue_url: str = ""  # explicit base URLs (code, CLI) win over the environment and the settings file
    rest_url: str = ""
    cdn_url: str = ""
    output_dir: str = ""  # where results are saved first; "" = <settings folder>/results
    #: what an interrupt / Ctrl-C does to a submitted job: "cancel" it, or "detach" (leave it running at fal,
    #: journaled; batches use this so a re-run collects it)
    on_stop: str = "cancel"
    kind: str = field(default="fal", init=False)


@dataclass
class _Inputs:
    """The request body and which of its URLs came from the upload cache (URL -> local file)."""

    payload: dict
    cached: dict


MAX_COST_USD = 1000.0
MAX_DEADLINE_S = 24 * 3600.0


def check_limits(config: FalConfig, cost_field: str = "max_cost_usd", deadline_field: str = "deadline_minutes",
                 node: str | None = BACKEND_NODE) -> None:
    """The per-run cost limit and the deadline in their ranges (NaN, which ComfyUI's range check lets through,
    included); the CLI passes its own option names."""
    if not (math.isfinite(config.max_cost_usd) and 0 <= config.max_cost_usd <= MAX_COST_USD):
        raise InputError(cost_field, f"got {config.max_cost_usd}; allowed 0 (no limit) to {MAX_COST_USD:g}",
                         node=node)
    if not (math.isfinite(config.deadline_s) and 0 < config.deadline_s <= MAX_DEADLINE_S):
        shown = (f"got {config.deadline_s:g} s; allowed more than 0 up to {MAX_DEADLINE_S:g} s"
                 if deadline_field.endswith("-s") else
                 f"got {config.deadline_s / 60:g} minutes; allowed more than 0 up to {MAX_DEADLINE_S / 60:g}")
        raise InputError(deadline_field, shown, node=node)


class FalBackend:
    name = "fal"
    snap = NO_SNAP  # fal sizes the canvas itself

    def __init__(self, config: FalConfig):
        self.config = config

    # ------------------------------------------------------------------ helpers
    def hosts(self):
        """Base URLs: explicit config > environment > settings file (only as the environment allows)."""
        from .hosts import resolve_hosts

        s = Settings.load()
        c = self.config
        return resolve_hosts({"queue": c.queue_url, "rest": c.rest_url, "cdn": c.cdn_url},
                             {"queue": s.fal_queue_url, "rest": s.fal_rest_url, "cdn": s.fal_cdn_url})

    def output_dir(self) -> str:
        path = self.config.output_dir or os.path.join(config_dir(), "results")
        os.makedirs(path, exist_ok=True)
        return path

    def key(self) -> str:
        key = find_fal_key()
        if key is None:
            raise InputError("backend", missing_key_message(), node=OUTPAINT_NODE)
        return key.value

    def check_cost(self, width: int, height: int, frames: int):
        """The estimate, refused above the lower of the node's and the settings' per-run limits (0 = none)."""
        check_limits(self.config)
        cost = estimate_cost(width, height, frames)
        limits = [x for x in (self.config.max_cost_usd, Settings.load().fal_max_cost_usd) if x > 0]
        limit = min(limits) if limits else 0.0
        if limit and cost.usd > limit:
            raise InputError("max_cost_usd", f"estimated cost {cost} is above the limit of ${limit:.4f} per run; "
                                             f"raise the limit or use a smaller canvas / fewer num_frames",
                             node=BACKEND_NODE)
        return cost

    # ------------------------------------------------------------------ the run
    async def run_async(self, job: OutpaintJob, progress: Progress) -> OutpaintResult:
        req = job.request
        with tempfile.TemporaryDirectory(prefix="ltx-outpaint-") as tmp:
            run = await self.run_to_file(req, lambda client, uploads: self._upload_video(client, job, uploads,
                                                                                         progress, tmp), progress)
        return await self.decode(run)

    async def run_file_async(self, request: OutpaintRequest, video_path: str, progress: Progress, *,
                             job_key: str = "") -> "FalRun":
        """Upload `video_path` as the request's video, submit, follow and save the result; no decoding.

        The long-clip and batch runners use this (each chunk's video is a file they wrote); `job_key` is
        journaled with the request so a re-run finds it (`Journal.find`) instead of submitting again.
        """
        async def upload(client, uploads):
            progress.report(2, 100, f"fal: uploading {os.path.basename(video_path)}")
            url, reused = await uploads.upload_info(client, video_path, progress)
            return url, reused, video_path

        return await self.run_to_file(request, upload, progress, job_key=job_key)

    async def run_to_file(self, request: OutpaintRequest, upload_video, progress: Progress, *,
                          job_key: str = "") -> "FalRun":
        """Every check, then upload (`upload_video(client, uploads)` -> (url, from_cache, file)), submit, follow
        and save. Returns the saved run, before decoding."""
        from .client import FalClient

        width, height = request.canvas_size
        cost = self.check_cost(width, height, request.num_frames)
        progress.report(0, 100, f"fal: estimated cost {cost}")
        key = self.key()
        for i, lora in enumerate(request.loras):  # every check before anything is uploaded or billed
            if not lora.is_url() and os.path.getsize(lora.path) > MAX_LORA_BYTES:
                raise InputError("path_or_url", f"{os.path.basename(lora.path)} is "
                                                f"{os.path.getsize(lora.path) / 2**30:.2f} GiB; fal accepts at "
                                                f"most 3 GiB", node=lora_node(i))
        async with FalClient(key, self.hosts()) as client:
            return await self._run(client, request, upload_video, cost, progress, job_key)

    async def attach(self, entry: JournalEntry, progress: Progress) -> "FalRun":
        """Follow a journaled request (submitted earlier, maybe by a process that died) and save its result."""
        from .client import FalClient
        from .queue import QueueHandle

        hosts = self.hosts()
        if not entry.status_url:
            built = QueueHandle.for_request(entry.endpoint_id, entry.request_id, hosts.queue)
            entry = Journal().update(entry.request_id, status_url=built.status_url,
                                     response_url=built.response_url, cancel_url=built.cancel_url)
        if entry.state != "submitted":
            entry = Journal().update(entry.request_id, state="submitted")
        handle = QueueHandle(entry.endpoint_id, entry.request_id, entry.status_url, entry.response_url,
                             entry.cancel_url)
        async with FalClient(self.key(), hosts) as client:
            try:
                saved = await self._save_run(client, handle, entry, LatchedProgress(progress))
            except FalValidationError as exc:
                raise validation_input_error(exc) from None
        return FalRun(saved, handle, entry, [f"fal request {entry.request_id} (re-attached)"])

    async def _run(self, client, request: OutpaintRequest, upload_video, cost, progress: Progress,
                   job_key: str) -> "FalRun":
        """Upload, submit, follow; a stale cached upload is uploaded again and the request resubmitted once."""
        uploads = UploadCache()
        inputs = await self._upload_inputs(client, request, upload_video, uploads, progress)
        try:
            return await self._submit_and_save(client, inputs.payload, cost, progress, job_key)
        except FalValidationError as exc:
            stale = _stale_uploads(exc, inputs)
            if not stale:
                raise validation_input_error(exc) from None
        note = await self._reupload(client, stale, inputs, uploads, progress)
        try:
            run = await self._submit_and_save(client, inputs.payload, cost, progress, job_key)
        except FalValidationError as exc:
            raise validation_input_error(exc) from None
        run.notes.append(note)
        return run

    async def _upload_inputs(self, client, req: OutpaintRequest, upload_video, uploads: UploadCache,
                             progress: Progress) -> _Inputs:
        cached: dict[str, str] = {}
        video_url = req.video_url
        if not video_url:
            video_url, reused, path = await upload_video(client, uploads)
            if reused:
                cached[video_url] = path
        loras = []
        for lora in req.loras:
            path = lora.path
            if not lora.is_url():
                path, reused = await uploads.upload_info(client, lora.path, progress)
                if reused:
                    cached[path] = lora.path
            loras.append({**lora.to_dict(), "path": path})
        return _Inputs({**req.to_fal_input(), "video_url": video_url, "loras": loras}, cached)

    async def _upload_video(self, client, job: OutpaintJob, uploads: UploadCache, progress: Progress,
                            tmp: str) -> tuple[str, bool, str]:
        """(URL, True when it came from the cache, the file uploaded); changed frames are encoded into `tmp`."""
        clip = job.clip
        path = clip.source_path
        if path and clip.untouched:
            progress.report(2, 100, "fal: uploading the source video (untouched)")
        else:
            from ..media.encode import write_mp4

            progress.report(2, 100, "fal: encoding the changed frames (near-lossless) for upload")
            path = os.path.join(tmp, "source.mp4")
            await asyncio.to_thread(write_mp4, path, clip.frames, clip.fps, clip.audio, "maximum", "fast")
        url, reused = await uploads.upload_info(client, path, progress)
        return url, reused, path

    async def _reupload(self, client, stale: list[tuple[str, str]], inputs: _Inputs, uploads: UploadCache,
                        progress: Progress) -> str:
        """Drop stale cache entries, upload those files again and put the new URLs in the payload."""
        names = []
        for old_url, path in stale:
            uploads.forget(old_url)
            log.warning("fal could not download the cached upload of %s; uploading it again",
                        os.path.basename(path))
            new_url, _ = await uploads.upload_info(client, path, progress)
            _replace_url(inputs.payload, old_url, new_url)
            inputs.cached.pop(old_url, None)
            names.append(os.path.basename(path))
        return (f"the cached upload of {', '.join(names)} could no longer be downloaded by fal: uploaded again and "
                f"submitted once more (the first request failed, so it is not billed)")

    async def _submit(self, client, payload: dict, cost, journal: Journal, job_key: str):
        """Submit once. With `on_stop="detach"` a stop during the POST waits for fal's answer (briefly), so the
        job is journaled by its id instead of as "unknown"."""
        if self.config.on_stop != "detach":
            return await client.submit(self.config.endpoint_id, payload)
        task = asyncio.ensure_future(client.submit(self.config.endpoint_id, payload))
        try:
            return await asyncio.shield(task)
        except (asyncio.CancelledError, KeyboardInterrupt) as stop:
            try:
                handle = await asyncio.wait_for(asyncio.shield(task), SUBMIT_ANSWER_WAIT_S)
            except BaseException:  # noqa: BLE001 - no answer: the caller journals the submit as unknown
                raise stop from None
            journal.record(self._entry(handle, payload, cost, job_key))
            log.warning("stopped while submitting: fal request %s was created; journaled and left running (re-run "
                        "to collect it)", handle.request_id)
            raise

    def _entry(self, handle, payload: dict, cost, job_key: str) -> JournalEntry:
        return JournalEntry(handle.request_id, self.config.endpoint_id, handle.status_url, handle.response_url,
                            handle.cancel_url, request=payload, cost_estimate_usd=cost.usd,
                            error=handle.note or None, job_key=job_key)

    async def _submit_and_save(self, client, payload: dict, cost, progress: Progress, job_key: str = "") -> "FalRun":
        journal = Journal()
        guard = LatchedProgress(progress)
        try:
            handle = await self._submit(client, payload, cost, journal, job_key)
        except FalSubmitUnknown as exc:
            why = exc.message if exc.status_code else \
                f"the connection broke after the submit was sent ({exc.detail or exc})"
            raise self._unknown_submit(journal, payload, cost, why, job_key) from exc
        except (asyncio.CancelledError, KeyboardInterrupt) as exc:  # the POST may have reached fal
            if self.config.on_stop != "detach" or not _answered(journal, job_key, payload):
                self._unknown_submit(journal, payload, cost,
                                     f"the run was stopped while submitting ({type(exc).__name__})", job_key)
            raise
        entry = journal.record(self._entry(handle, payload, cost, job_key))
        log.info("fal request %s submitted (estimate %s)", handle.request_id, cost)
        saved = await self._save_run(client, handle, entry, guard)
        return FalRun(saved, handle, entry, [])

    def _unknown_submit(self, journal: Journal, payload: dict, cost, why: str, job_key: str = "") -> FalSubmitUnknown:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        entry = journal.record_unknown(self.config.endpoint_id, payload, why, cost.usd, job_key)
        text = (f"fal submit: {why}; fal may have created and billed this job; it was not submitted again (that "
                f"could bill twice): " + FIND_UNKNOWN_JOB.format(endpoint=self.config.endpoint_id, when=when)
                + f"; journaled as {entry.request_id}")
        log.warning("%s", text)
        return FalSubmitUnknown(text)

    async def follow_and_save(self, client, handle, entry: JournalEntry, progress: Progress) -> OutpaintResult:
        """Wait for the job (interrupt and deadline cancel it), then save the result before decoding."""
        try:
            saved = await self._save_run(client, handle, entry, progress)
        except FalValidationError as exc:
            raise validation_input_error(exc) from None
        return await self.decode(FalRun(saved, handle, entry, []))

    async def _save_run(self, client, handle, entry: JournalEntry, progress: Progress) -> Saved:
        return await follow_and_save(client, handle, entry, progress, output_dir=self.output_dir(),
                                     use_sse=self.config.use_sse, deadline_s=self.config.deadline_s,
                                     detach=self.config.on_stop == "detach")

    async def decode(self, run: "FalRun") -> OutpaintResult:
        """Decode a saved run into an OutpaintResult (frames in memory: one request's worth)."""
        saved, handle, entry = run.saved, run.handle, run.entry
        clip = await asyncio.to_thread(decode_video, saved.path)
        data = saved.data
        has_audio = entry.request.get("generate_audio", True) and not clip.audio.silent
        return OutpaintResult(clip.frames, clip.fps, clip.audio if has_audio else None, int(data.get("seed", 0)),
                              str(data.get("prompt", "")), self.name, video_path=saved.path,
                              notes=run.describe() + ([handle.note] if handle.note else []) + clip.warnings)


@dataclass
class FalRun:
    """A fal request whose result is saved (`saved.path`), before decoding."""

    saved: Saved
    handle: object
    entry: JournalEntry
    notes: list[str]

    def describe(self) -> list[str]:
        billed = f", billed {self.saved.billed} MP" if self.saved.billed is not None else ""
        return [f"fal request {self.handle.request_id}", f"saved {self.saved.path}",
                f"estimate ${self.entry.cost_estimate_usd or 0:.4f}{billed}", *self.notes]


def _answered(journal: Journal, job_key: str, payload: dict) -> bool:
    """Whether a stopped detach-mode submit was answered and journaled by its id (see `_submit`)."""
    return bool(job_key) and any(e.state != "unknown" and e.request == payload for e in journal.find(job_key))


def _stale_uploads(exc: FalValidationError, inputs: _Inputs) -> list[tuple[str, str]]:
    """(cached URL, local file) for each input fal could not download that came from the upload cache."""
    stale = []
    for err in exc.errors:
        if err.type not in DOWNLOAD_ERROR_TYPES:
            continue
        url = None
        if err.field == "video_url":
            url = inputs.payload.get("video_url")
        m = re.fullmatch(r"loras\.(\d+)\.path", err.field)
        if m and int(m.group(1)) < len(inputs.payload.get("loras") or []):
            url = inputs.payload["loras"][int(m.group(1))]["path"]
        if url in inputs.cached and inputs.cached[url]:
            stale.append((url, inputs.cached[url]))
    return stale if stale and len(stale) == len([e for e in exc.errors if e.type in DOWNLOAD_ERROR_TYPES]) else []


def _replace_url(payload: dict, old: str, new: str) -> None:
    if payload.get("video_url") == old:
        payload["video_url"] = new
    for lora in payload.get("loras") or []:
        if lora.get("path") == old:
            lora["path"] = new


def check_request_id(request_id: str) -> str:
    """A fal request id as typed (spaces trimmed), or InputError: letters, digits, '-', '_' and '.' only."""
    rid = str(request_id or "").strip()
    if not rid:
        raise InputError("request_id", "is empty; paste a fal request id", node=RECOVER_NODE)
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", rid) or set(rid) == {"."}:
        raise InputError("request_id", "is not a fal request id (letters, digits, '-', '_' and '.', as fal's "
                                       "dashboard and the pack's journal show them)", node=RECOVER_NODE)
    return rid


async def recover(request_id: str, config: FalConfig = FalConfig(), progress: Progress | None = None):
    """Re-attach to a request by id (from the journal, or built from the endpoint id) and save its result.

    An id the journal does not know is journaled only after fal confirms it has that request."""
    from .client import FalClient
    from .queue import QueueHandle

    request_id = check_request_id(request_id)
    check_limits(config)
    backend = FalBackend(config)
    progress = progress or Progress()
    journal = Journal()
    entry = journal.get(request_id)
    hosts = backend.hosts()
    async with FalClient(backend.key(), hosts) as client:
        if entry is None or not entry.status_url:
            built = QueueHandle.for_request(config.endpoint_id, request_id, hosts.queue)
            try:
                await client.status(built, logs=False)
            except FalError as exc:
                if exc.status_code == 404:
                    raise InputError("request_id", f"fal has no request {request_id} on {config.endpoint_id} (check "
                                                   f"the id on fal.ai/dashboard/requests; fal keeps a result about "
                                                   f"an hour)", node=RECOVER_NODE) from None
                raise
            entry = journal.record(JournalEntry(request_id, config.endpoint_id, built.status_url,
                                                built.response_url, built.cancel_url))
        elif entry.state != "submitted":
            entry = journal.update(request_id, state="submitted")
        handle = QueueHandle(entry.endpoint_id, request_id, entry.status_url, entry.response_url, entry.cancel_url)
        return await backend.follow_and_save(client, handle, entry, progress)


register("fal", FalBackend)
