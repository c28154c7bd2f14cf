"""fal backend: `fal-ai/ltx-2.3-quality/outpaint/lora` through fal's queue, over plain httpx.

Order of work, so that a paid result is never lost and never paid twice:
estimate + cost guard -> upload inputs (content-hash cache) -> submit (retried only when it certainly
created no job) -> journal entry -> follow status (SSE, polling fallback; interrupt cancels the job; the
deadline cancels it too) -> fetch the result -> download the MP4 into the output folder + JSON sidecar
-> journal "saved" -> only then decode.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field

from ..media.canvas import NO_SNAP
from ..cost import estimate_cost
from ..errors import InputError
from .journal import Journal, JournalEntry
from ..request import ENDPOINT_ID
from ..settings import Settings, config_dir, find_fal_key, missing_key_message
from ..media.decode import decode_video
from ..backends import Interrupted, OutpaintJob, OutpaintResult, Progress, register

log = logging.getLogger(__name__)

#: fal's input names -> where the user sets them in our graph (for 422 messages).
INPUT_NAMES = {
    "video_url": "video (Load Video)",
    "resolution": "resolution (Outpaint Canvas)",
    "source_scale": "source_scale (Outpaint Canvas)",
    "loras": "loras (LoRA Stack)",
}
UPLOAD_CACHE_TTL_S = 7 * 24 * 3600
MAX_LORA_BYTES = 3 * 2**30  # fal's limit per LoRA  # fal does not publish how long its CDN keeps uploads


@dataclass(frozen=True)
class FalConfig:
    """Settings of the fal backend node; empty strings / 0 fall back to the pack's settings and env."""

    endpoint_id: str = ENDPOINT_ID
    max_cost_usd: float = 0.0  # 0 = the settings' limit (0 there = no limit)
    deadline_s: float = 3600.0
    use_sse: bool = True
    queue_url: str = ""
    rest_url: str = ""
    cdn_url: str = ""
    output_dir: str = ""  # where results are saved first; "" = <settings folder>/results
    kind: str = field(default="fal", init=False)


def validation_input_error(exc) -> InputError:
    """fal's 422 (at submit or at run time) as one error naming each of our inputs."""
    lines = [f"{field_input_name(e.field)}: {e.msg}" for e in exc.errors] or [str(exc)]
    first = exc.errors[0].field.split(".")[0] if exc.errors else "request"
    return InputError(first, "fal rejected the request: " + "; ".join(lines))


def field_input_name(fal_field: str) -> str:
    top = fal_field.split(".")[0]
    return INPUT_NAMES.get(top, f"{top} (LTX-2.3 Outpaint)") + (fal_field[len(top):] if "." in fal_field else "")


class FalBackend:
    name = "fal"
    snap = NO_SNAP  # fal sizes the canvas itself

    def __init__(self, config: FalConfig):
        self.config = config

    # ------------------------------------------------------------------ helpers
    def hosts(self):
        from .hosts import FalHosts

        env = FalHosts.from_env()
        s = Settings.load()
        return FalHosts(queue=self.config.queue_url or s.fal_queue_url or env.queue,
                        rest=self.config.rest_url or s.fal_rest_url or env.rest,
                        cdn=self.config.cdn_url or s.fal_cdn_url or env.cdn)

    def output_dir(self) -> str:
        path = self.config.output_dir or os.path.join(config_dir(), "results")
        os.makedirs(path, exist_ok=True)
        return path

    def key(self) -> str:
        key = find_fal_key()
        if key is None:
            raise InputError("backend", missing_key_message())
        return key.value

    def check_cost(self, width: int, height: int, frames: int):
        cost = estimate_cost(width, height, frames)
        limit = self.config.max_cost_usd or Settings.load().fal_max_cost_usd
        if limit and cost.usd > limit:
            raise InputError("max_cost_usd", f"estimated cost {cost} is above the limit of ${limit:.4f} per run; "
                                             f"raise the limit or use a smaller canvas / fewer num_frames")
        return cost

    # ------------------------------------------------------------------ the run
    async def run_async(self, job: OutpaintJob, progress: Progress) -> OutpaintResult:
        from .client import FalClient

        req = job.request
        width, height = req.canvas_size
        cost = self.check_cost(width, height, req.num_frames)
        progress.report(0, 100, f"fal: estimated cost {cost}")
        key = self.key()
        for i, lora in enumerate(req.loras):  # every check before anything is uploaded or billed
            if not lora.is_url() and os.path.getsize(lora.path) > MAX_LORA_BYTES:
                raise InputError(f"loras[{i}]", f"{os.path.basename(lora.path)} is "
                                                f"{os.path.getsize(lora.path) / 2**30:.2f} GiB; fal accepts at most 3 GiB")
        async with FalClient(key, self.hosts()) as client:
            uploads = UploadCache()
            video_url = req.video_url or await self._upload_video(client, job, uploads, progress)
            loras = []
            for lora in req.loras:
                path = lora.path if lora.is_url() else await uploads.upload(client, lora.path, progress)
                loras.append({**lora.to_dict(), "path": path})
            payload = {**req.to_fal_input(), "video_url": video_url, "loras": loras}
            handle = await self._submit(client, payload)
            entry = Journal().record(JournalEntry(
                handle.request_id, self.config.endpoint_id, handle.status_url, handle.response_url,
                handle.cancel_url, request=payload, cost_estimate_usd=cost.usd))
            log.info("fal request %s submitted (estimate %s)", handle.request_id, cost)
            return await self.follow_and_save(client, handle, entry, progress)

    async def _upload_video(self, client, job: OutpaintJob, uploads: "UploadCache", progress: Progress) -> str:
        clip = job.clip
        if clip.source_path and clip.untouched:
            progress.report(2, 100, "fal: uploading the source video (untouched)")
            return await uploads.upload(client, clip.source_path, progress)
        from ..media.encode import write_mp4

        progress.report(2, 100, "fal: encoding the changed frames (near-lossless) for upload")
        with tempfile.TemporaryDirectory(prefix="ltx-outpaint-") as tmp:
            path = os.path.join(tmp, "source.mp4")
            await asyncio.to_thread(write_mp4, path, clip.frames, clip.fps, clip.audio, "maximum", "fast")
            return await uploads.upload(client, path, progress)

    async def _submit(self, client, payload: dict):
        from .errors import FalValidationError

        try:
            return await client.submit(self.config.endpoint_id, payload)
        except FalValidationError as exc:
            raise validation_input_error(exc) from None

    async def follow_and_save(self, client, handle, entry: JournalEntry, progress: Progress) -> OutpaintResult:
        """Wait for the job (interrupt and deadline cancel it), then save the result before decoding."""
        from .errors import FalTimeout, FalValidationError

        started = time.monotonic()
        journal = Journal()
        state = {"text": "fal: queued"}

        async def follow():
            async for update in client.watch(handle, use_sse=self.config.use_sse):
                elapsed = time.monotonic() - started
                if update.status == "IN_QUEUE":
                    state["text"] = f"fal: in queue (position {update.queue_position}), {elapsed:.0f} s"
                    done = 25
                else:
                    last = (update.logs or [{}])[-1].get("message", "") if update.logs else ""
                    state["text"] = f"fal: {update.status.lower().replace('_', ' ')}, {elapsed:.0f} s" + (
                        f" - {last}" if last else "")
                    done = 50 if update.status == "IN_PROGRESS" else 80
                progress.report(done, 100, f"{state['text']}; estimate ${entry.cost_estimate_usd or 0:.4f}")

        task = asyncio.create_task(follow())
        try:
            while True:
                finished, _ = await asyncio.wait({task}, timeout=0.25)
                if finished:
                    try:
                        task.result()  # raises fal's job error, if any
                    except FalValidationError as exc:  # input rejected by the runner
                        raise validation_input_error(exc) from None
                    break
                if progress.interrupted():
                    await self._cancel(client, handle, journal, "cancelled", "interrupted by the user")
                    raise Interrupted(f"interrupted: fal request {handle.request_id} cancelled")
                if time.monotonic() - started > self.config.deadline_s:
                    await self._cancel(client, handle, journal, "failed", "deadline")
                    raise FalTimeout(f"fal request {handle.request_id} did not finish within "
                                     f"{self.config.deadline_s:g} s; it was cancelled")
        except BaseException as exc:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # stop following; collect its outcome
            if journal.get(handle.request_id).state == "submitted" and not isinstance(exc, Interrupted):
                journal.update(handle.request_id, state="failed", error=str(exc)[:500])
            raise
        def downloaded(done: int, total: int | None) -> None:
            progress.report(85 + (10 * done / total if total else 0), 100,
                            f"fal: downloading the result {done / 2**20:.1f} MiB")

        path, data, billed = await self.save_result(client, handle, entry, downloaded)
        progress.report(95, 100, f"fal: result saved to {path}; decoding")
        clip = await asyncio.to_thread(decode_video, path)
        has_audio = entry.request.get("generate_audio", True) and not clip.audio.silent
        return OutpaintResult(clip.frames, clip.fps, clip.audio if has_audio else None, int(data.get("seed", 0)),
                              str(data.get("prompt", "")), self.name, video_path=path,
                              notes=[f"fal request {handle.request_id}", f"saved {path}",
                                     f"estimate ${entry.cost_estimate_usd or 0:.4f}"
                                     + (f", billed {billed} MP" if billed is not None else "")]
                              + ([handle.note] if handle.note else []))

    async def _cancel(self, client, handle, journal: Journal, state: str, why: str) -> None:
        try:
            await asyncio.wait_for(client.cancel(handle), timeout=5)
        except Exception as exc:  # noqa: BLE001 - cancelling is best effort; say so
            log.warning("could not cancel fal request %s: %s", handle.request_id, exc)
        journal.update(handle.request_id, state=state, error=why)

    async def save_result(self, client, handle, entry: JournalEntry,
                          on_progress=None) -> tuple[str, dict, int | None]:
        """Download the MP4 and write its JSON sidecar before anything else can fail."""
        result = await client.result(handle)
        data = result.data
        video = data.get("video") or {}
        if not video.get("url"):
            raise InputError("backend", f"fal request {handle.request_id} returned no video: {str(data)[:300]}")
        path = os.path.join(self.output_dir(), f"fal_{handle.request_id}.mp4")
        await client.download(video["url"], path, expected_size=video.get("file_size"),
                              on_progress=on_progress)
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
        return path, data, result.billable_units


class UploadCache:
    """Content-hash -> fal URL, so the same clip or LoRA is uploaded once."""

    def __init__(self, path: str | None = None):
        self.path = path or os.path.join(config_dir(), "uploads.json")

    def _load(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    async def upload(self, client, file_path: str, progress: Progress | None = None) -> str:
        digest = await asyncio.to_thread(sha256_file, file_path)
        cache = self._load()
        hit = cache.get(digest)
        if hit and time.time() - hit.get("uploaded_at", 0) < UPLOAD_CACHE_TTL_S:
            log.info("reusing the fal upload of %s (same content)", os.path.basename(file_path))
            return hit["url"]
        name = os.path.basename(file_path)

        def report(done: int, total: int | None) -> None:
            if progress is not None and total:
                progress.report(2 + 18 * done / total, 100,
                                f"fal: uploading {name} {done / 2**20:.1f}/{total / 2**20:.1f} MiB")

        url = await client.upload_file(file_path, on_progress=report)
        cache = self._load()
        cache[digest] = {"url": url, "uploaded_at": time.time(), "name": os.path.basename(file_path)}
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(cache, f)
        os.replace(tmp, self.path)
        return url


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


async def recover(request_id: str, config: FalConfig = FalConfig(), progress: Progress | None = None):
    """Re-attach to a request by id (from the journal, or built from the endpoint id) and save its result."""
    from .client import FalClient
    from .hosts import split_endpoint_id
    from .queue import QueueHandle

    backend = FalBackend(config)
    progress = progress or Progress()
    entry = Journal().get(request_id)
    hosts = backend.hosts()
    if entry is None:
        ep = split_endpoint_id(config.endpoint_id)
        base = f"{hosts.queue.rstrip('/')}/{ep.owner}/{ep.alias}/requests/{request_id}"
        entry = Journal().record(JournalEntry(request_id, config.endpoint_id, base + "/status", base,
                                              base + "/cancel"))
    handle = QueueHandle(entry.endpoint_id, request_id, entry.status_url, entry.response_url, entry.cancel_url)
    async with FalClient(backend.key(), hosts) as client:
        return await backend.follow_and_save(client, handle, entry, progress)


register("fal", FalBackend)
