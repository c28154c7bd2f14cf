"""Outpaint a clip of any length: analyse (scene cuts), plan chunks, run them, assemble the MP4 as they finish.

- preview / local: chunks run one after another in this process; locally each chunk after a scene's first
  is conditioned on the previous chunk's last generated frames (`OutpaintJob.start_frames`) when the engine
  accepts them, and joins are cross-faded over the overlap either way;
- fal: chunks are independent requests (fal cannot take that conditioning), up to N at a time (a semaphore
  shared with a batch), each journaled under a `job_key` (input file hash + frame range + request), so a
  re-run reuses saved results and follows jobs still running instead of submitting again. The seed is
  fixed for the whole clip (a random one is kept in `<output>.state.json` for re-runs).

Memory: a chunk's source frames (source size) and its result (canvas size) for in-process backends, a block
plus the overlap for fal results; nothing grows with the clip's length.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import random
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from ..backends import Progress, make_backend, prepare_job
from ..cost import estimate_cost
from ..errors import InputError
from ..jsonfile import read_object, write_atomic
from ..fal.errors import FalCancelled
from ..media.canvas import CanvasSpec
from ..media.decode import Audio, Clip, silent_audio
from ..request import OutpaintRequest
from .analyze import Analysis, analyze_clip
from .assemble import Assembler, ChunkOutput
from .plan import DEFAULT_OVERLAP, Chunk, ChunkPlan, chunk_rule, plan_chunks
from .reader import AudioReader, FrameReader
from .scenes import DEFAULT_MIN_SCENE_LEN, DEFAULT_THRESHOLD
from .writer import StreamingWriter

log = logging.getLogger(__name__)

STATE_SUFFIX = ".state.json"
PARTS_DIR = ".ltx-outpaint-parts"  # fal chunk results (paid: kept) next to the output


@dataclass(frozen=True)
class LongOptions:
    detect_scenes: bool = True
    scene_threshold: float = DEFAULT_THRESHOLD
    min_scene_len: int = DEFAULT_MIN_SCENE_LEN
    chunk_frames: int = 0  # 0 = the backend's default (fal 481, local 121, preview 481)
    overlap_frames: int = DEFAULT_OVERLAP
    #: local: condition each chunk on the previous chunk's last frames (when the engine accepts them)
    condition_on_previous: bool = True

    def validate(self) -> "LongOptions":
        """Raise InputError naming an option out of its range (NaN included)."""
        if not (math.isfinite(self.scene_threshold) and 1.0 <= self.scene_threshold <= 100.0):
            raise InputError("scene_threshold", f"got {self.scene_threshold}; allowed 1 to 100 (default "
                                                f"{DEFAULT_THRESHOLD:g})")
        if not 1 <= self.min_scene_len <= 100000:
            raise InputError("min_scene_len", f"got {self.min_scene_len}; allowed 1 to 100000 frames (default "
                                              f"{DEFAULT_MIN_SCENE_LEN})")
        if not 0 <= self.overlap_frames <= 240:
            raise InputError("overlap_frames", f"got {self.overlap_frames}; allowed 0 to 240")
        return self


@dataclass
class LongResult:
    path: str
    frames: int
    fps: float
    width: int
    height: int
    seed: int
    prompt: str
    backend: str
    plan: ChunkPlan
    chunks: list[dict]
    notes: list[str] = field(default_factory=list)
    cost_estimate_usd: float = 0.0
    seconds: float = 0.0
    audio: str = "none"  # "source" (carried whole), "generated" (cross-faded), "none"

    def joins(self) -> list[dict]:
        return self.plan.joins()

    def summary(self) -> str:
        j = self.joins()
        cuts = [x for x in j if x["kind"] == "scene_cut"]
        joined = [x for x in j if x["kind"] == "chunk_join"]
        lines = [f"{self.backend}: {self.width}x{self.height}, {self.frames} frames @ {self.fps:g} fps, seed "
                 f"{self.seed}; {len(self.plan.scenes)} scene(s), {len(self.plan.chunks)} chunk(s); audio: "
                 f"{self.audio}" + (f"; fal estimate ${self.cost_estimate_usd:.4f}" if self.cost_estimate_usd else "")]
        if cuts:
            lines.append("scene cuts at " + ", ".join(f"{x['time_s']:.2f}s (frame {x['frame']})" for x in cuts[:20])
                         + (" ..." if len(cuts) > 20 else ""))
        if joined:
            lines.append("chunk joins (cross-faded over {} frames) at ".format(joined[0]["overlap_frames"])
                         + ", ".join(f"{x['time_s']:.2f}s (frame {x['frame']})" for x in joined[:20])
                         + (" ..." if len(joined) > 20 else ""))
        return "\n".join(lines + self.notes)

    def sidecar(self, request: OutpaintRequest) -> dict:
        return {"backend": self.backend, "seed": self.seed, "prompt": self.prompt, "notes": self.notes,
                "output": {"width": self.width, "height": self.height, "frames": self.frames, "fps": self.fps,
                           "audio": self.audio},
                "fal_cost_estimate_usd": self.cost_estimate_usd, "seconds": round(self.seconds, 2),
                "scenes": [list(s) for s in self.plan.scenes], "joins": self.joins(), "chunks": self.chunks,
                "request": {k: v for k, v in request.replace(seed=self.seed).to_fal_input().items()
                            if k != "num_frames"}}


# ---------------------------------------------------------------------------------------------- helpers


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def backend_kind(config) -> str:
    return getattr(config, "kind", None) or "preview"


def make_plan(analysis: Analysis, config, options: LongOptions) -> ChunkPlan:
    kind = backend_kind(config)
    frames_8k1 = kind == "local"
    rule = chunk_rule(kind, options.chunk_frames, frames_8k1)
    overlap = options.overlap_frames
    if frames_8k1 and overlap:
        overlap = 8 * max(1, round((overlap - 1) / 8)) + 1  # whole latent frames (the guide's unit)
    return plan_chunks(analysis.scenes(), analysis.fps, rule, overlap)


def estimate_fal_cost(plan: ChunkPlan, request: OutpaintRequest) -> float:
    w, h = request.canvas_size
    return sum(estimate_cost(w, h, c.request_frames).usd for c in plan.chunks)


def job_key(clip_sha: str, chunk: Chunk, body: dict) -> str:
    """What a fal request is for: the input's content, the frame range and the request (without the upload URL)."""
    body = {k: v for k, v in body.items() if k != "video_url"}
    text = json.dumps({"clip": clip_sha, "range": [chunk.start, chunk.end, chunk.request_frames], "request": body},
                      sort_keys=True)
    return "long-" + hashlib.sha256(text.encode()).hexdigest()[:32]


class ChunkProgress(Progress):
    """A chunk's progress shown as part of the whole clip."""

    def __init__(self, parent: Progress, chunk: Chunk, plan: ChunkPlan, done_before: Callable[[], float]):
        self.parent, self.chunk, self.plan, self.done_before = parent, chunk, plan, done_before

    def report(self, done, total, text=None):
        share = self.chunk.length / max(1, self.plan.frames)
        overall = self.done_before() + share * (done / total if total else 0)
        label = f"chunk {self.chunk.index + 1}/{len(self.plan.chunks)}"
        self.parent.report(min(99.0, 100 * overall), 100, f"{label}: {text}" if text else label)

    def interrupted(self) -> bool:
        return self.parent.interrupted()

    def note(self, text: str) -> None:
        self.parent.note(text)


def _pad_frames(rgb: np.ndarray, n: int) -> np.ndarray:
    if len(rgb) >= n:
        return rgb[:n]
    return np.concatenate([rgb, np.repeat(rgb[-1:], n - len(rgb), axis=0)])


def _chunk_audio(areader: AudioReader | None, chunk: Chunk, fps: float, frames: int) -> Audio:
    if areader is None:
        return silent_audio(frames / fps)
    s0 = round(chunk.start * areader.rate / fps)
    n = round(frames * areader.rate / fps)
    return Audio(torch.from_numpy(areader.read(s0, n)), areader.rate)


# ---------------------------------------------------------------------------------------------- state


class ClipState:
    """`<output>.state.json`: the input's hash, the request with its resolved seed, the analysis; lets a re-run of
    the same command keep the seed (so fal chunks are found again) and skip the analysis."""

    def __init__(self, output: str):
        self.path = output + STATE_SUFFIX

    def load(self) -> dict:
        return read_object(self.path)

    def save(self, data: dict) -> None:
        write_atomic(self.path, data, indent=1)


def prepare_clip(source: str, output: str, request: OutpaintRequest, config, options: LongOptions,
                 progress: Progress | None = None, clip_sha: str | None = None) -> tuple[Analysis, ChunkPlan, int, str]:
    """(analysis, plan, seed, input hash) for `source`, reusing `<output>.state.json` when it matches."""
    progress = progress or Progress()
    clip_sha = clip_sha or file_sha256(source)
    state = ClipState(output)
    saved = state.load()
    ident = {"input_sha256": clip_sha, "request": request.replace(seed=None).to_fal_input(),
             "options": asdict(options), "backend": backend_kind(config)}
    if saved.get("ident") == ident and "analysis" in saved:
        analysis = Analysis.from_dict(saved["analysis"])
        seed = int(saved["seed"])
    else:
        def on_frame(done: int, total: int) -> None:
            if done % 320 == 0:
                progress.report(min(99, 100 * done / total), 100, f"scene detection: frame {done}")

        analysis = analyze_clip(source, options.detect_scenes, options.scene_threshold, options.min_scene_len,
                                on_frame)
        seed = request.seed if request.seed is not None else random.randint(0, 2**32 - 1)
        state.save({"ident": ident, "analysis": analysis.to_dict(), "seed": seed})
    if request.seed is not None:
        seed = request.seed
    return analysis, make_plan(analysis, config, options), seed, clip_sha


# ---------------------------------------------------------------------------------------------- the run


async def run_long_async(source: str, output: str, request: OutpaintRequest, canvas: CanvasSpec, config=None,
                         options: LongOptions = LongOptions(), progress: Progress | None = None, *,
                         semaphore: asyncio.Semaphore | None = None, concurrency: int = 2) -> LongResult:
    """Outpaint `source` (a file of any length) into `output` (MP4) + `<output>.json` (scenes, joins, chunks)."""
    progress = progress or Progress()
    started = time.monotonic()
    options.validate()
    request = request.replace(resolution=canvas.resolution, source_scale=canvas.source_scale).validate()
    analysis, plan, seed, clip_sha = await asyncio.to_thread(prepare_clip, source, output, request, config, options,
                                                             progress)
    request = request.replace(seed=seed, frames_per_second=float(analysis.fps))
    kind = backend_kind(config)
    backend = make_backend(config)
    source_audio = AudioReader.open(source, analysis.t0) if analysis.has_audio else None
    if not request.generate_audio and source_audio is not None:
        source_audio.close()
        source_audio = None
    audio_mode = "source" if source_audio else ("generated" if request.generate_audio else "none")
    notes: list[str] = []
    outputs: list[ChunkOutput | None] = [None] * len(plan.chunks)

    def open_writer(rate: int, channels: int) -> StreamingWriter:
        return StreamingWriter(output, analysis.fps, audio_rate=rate, audio_channels=channels,
                               video_quality=request.video_quality, video_write_mode=request.video_write_mode,
                               metadata={"comment": request.prompt})

    assembler = Assembler(open_writer, plan, source_audio, request.generate_audio)
    worker = _Worker()
    try:
        if kind == "fal":
            await _run_fal_chunks(backend, source, request, canvas, plan, analysis, clip_sha, assembler, outputs,
                                  progress, semaphore or asyncio.Semaphore(max(1, concurrency)), output)
        else:
            await worker.run(_run_inprocess_chunks, backend, source, request, canvas, plan, analysis, options,
                             assembler, outputs, worker.progress(progress), notes)
        path = await worker.run(assembler.finish)
    except BaseException:
        if assembler.writer is not None and not worker.busy:
            assembler.writer.abort()
        raise
    finally:
        if source_audio is not None and not worker.busy:  # never close what a running worker still reads
            source_audio.close()
    if assembler.writer.frames != plan.frames:
        raise RuntimeError(f"wrote {assembler.writer.frames} frames, planned {plan.frames}")
    width, height = assembler.writer.size
    first = next((o for o in outputs if o is not None), None)
    chunks = []
    for c, o in zip(plan.chunks, outputs):
        chunks.append({**asdict(c), "request_id": o.request_id if o else None, "reused": o.reused if o else "",
                       "seconds": round(o.seconds, 2) if o else 0.0, "cost_estimate_usd": o.cost_usd if o else 0.0})
        for n in (o.notes if o else []):
            if n not in notes:
                notes.append(n)
    result = LongResult(path, assembler.writer.frames, analysis.fps, width, height, seed,
                        first.prompt if first else request.prompt, backend.name, plan, chunks, notes,
                        sum(c["cost_estimate_usd"] for c in chunks) if kind == "fal" else 0.0,
                        time.monotonic() - started, audio_mode)
    with open(output + ".json", "w", encoding="utf-8") as f:
        json.dump(result.sidecar(request), f, indent=2)
    progress.report(100, 100, f"wrote {os.path.basename(output)}")
    return result


class _StopAware(Progress):
    """`inner`, also reading as interrupted once `stop` is set (the task that started the worker stopped)."""

    def __init__(self, inner: Progress, stop: threading.Event):
        self.inner, self.stop = inner, stop

    def report(self, done, total, text=None) -> None:
        self.inner.report(done, total, text)

    def interrupted(self) -> bool:
        return self.stop.is_set() or self.inner.interrupted()

    def note(self, text: str) -> None:
        self.inner.note(text)


WORKER_STOP_WAIT_S = 120.0


class _Worker:
    """Runs a long clip's blocking steps in a thread. When the task stops (Ctrl-C, cancellation) the thread is
    told (`stop`, read through `progress()`) and waited for, so the caller's clean-up never closes a file or
    writer it is still using; `busy` stays True only if it did not stop in time."""

    def __init__(self):
        self.stop = threading.Event()
        self.busy = False

    def progress(self, inner: Progress) -> Progress:
        return _StopAware(inner, self.stop)

    async def run(self, fn, *args):
        future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        try:
            return await asyncio.shield(future)
        except BaseException:
            if not future.done():
                self.stop.set()
                deadline = time.monotonic() + WORKER_STOP_WAIT_S
                while not future.done() and time.monotonic() < deadline:
                    try:
                        await asyncio.wait({future}, timeout=0.2)
                    except BaseException:  # noqa: BLE001 - stopped again: keep waiting for the worker
                        continue
                self.busy = not future.done()
                if self.busy:
                    log.warning("the worker thread did not stop within %.0f s; leaving its files open",
                                WORKER_STOP_WAIT_S)
                elif not future.cancelled() and future.exception() is not None:  # its own stop, as expected
                    log.debug("worker stopped: %r", future.exception())
            raise


def run_long(*args, **kwargs) -> LongResult:
    """Blocking form of :func:`run_long_async` (scripts, tests, the CLI)."""
    return asyncio.run(run_long_async(*args, **kwargs))


def _run_inprocess_chunks(backend, source: str, request: OutpaintRequest, canvas: CanvasSpec, plan: ChunkPlan,
                          analysis: Analysis, options: LongOptions, assembler: Assembler,
                          outputs: list, progress: Progress, notes: list[str]) -> None:
    """preview / local: one chunk after another; conditioned on the previous chunk's tail when accepted."""
    conditions = options.condition_on_previous and getattr(backend, "accepts_start_frames", False)
    if options.condition_on_previous and not conditions and any(c.overlap for c in plan.chunks):
        notes.append(f"the {backend.name} backend does not take the previous chunk's frames as a guide: chunk "
                     f"joins are cross-faded only")
    done = {"frames": 0}
    keep = max((c.overlap for c in plan.chunks), default=0)
    areader = AudioReader.open(source, analysis.t0) if analysis.has_audio else None
    try:
        with FrameReader(source, keep=keep) as reader:
            for chunk in plan.chunks:
                progress.check()
                t = time.monotonic()
                sub = ChunkProgress(progress, chunk, plan, lambda: done["frames"] / max(1, plan.frames))
                rgb = _pad_frames(reader.read(chunk.start, chunk.length), chunk.request_frames)
                frames = torch.from_numpy(rgb).float().div_(255.0)
                del rgb
                clip = Clip(frames, analysis.fps, _chunk_audio(areader, chunk, analysis.fps, chunk.request_frames))
                req = request.replace(num_frames=chunk.request_frames)
                job = prepare_job(req, clip, canvas, backend)
                if conditions and chunk.overlap and assembler.raw_tail is not None:
                    job.start_frames = assembler.raw_tail
                result = backend.run(job, sub)
                del clip, frames, job
                out = ChunkOutput(frames=result.frames[:chunk.length], seed=result.seed, prompt=result.prompt,
                                  notes=[n for n in result.notes if not n.startswith(("peak ", "measured peak"))],
                                  seconds=time.monotonic() - t)
                if result.audio is not None and not result.audio.silent:
                    n = round(chunk.length * result.audio.sample_rate / analysis.fps)
                    out.audio, out.audio_rate = result.audio.waveform[:, :n].numpy(), result.audio.sample_rate
                elif result.audio is not None:
                    n = round(chunk.length * result.audio.sample_rate / analysis.fps)
                    out.audio = np.zeros((result.audio.waveform.shape[0], n), np.float32)
                    out.audio_rate = result.audio.sample_rate
                del result
                assembler.add(chunk, out)
                out.frames = out.audio = None  # the assembler keeps what the next chunk needs
                outputs[chunk.index] = out
                done["frames"] += chunk.length - chunk.overlap
                progress.report(100 * done["frames"] / max(1, plan.frames), 100,
                                f"chunk {chunk.index + 1}/{len(plan.chunks)} done ({done['frames']}/{plan.frames} frames)")
    finally:
        if areader is not None:
            areader.close()


async def _run_fal_chunks(backend, source: str, request: OutpaintRequest, canvas: CanvasSpec, plan: ChunkPlan,
                          analysis: Analysis, clip_sha: str, assembler: Assembler, outputs: list,
                          progress: Progress, semaphore: asyncio.Semaphore, output: str) -> None:
    """fal: every chunk is its own request, N at a time; results are assembled in order as they arrive."""
    parts = os.path.join(os.path.dirname(os.path.abspath(output)), PARTS_DIR)
    backend = type(backend)(replace(backend.config, output_dir=backend.config.output_dir or parts))
    keep = max((c.overlap for c in plan.chunks), default=0)
    reader = FrameReader(source, keep=keep)
    areader = AudioReader.open(source, analysis.t0) if analysis.has_audio else None
    source_lock = asyncio.Lock()
    done = {"frames": 0}
    from ..fal.journal import Journal

    earlier_runs = Journal().by_job_key()  # one pass over the journal for every chunk of this clip
    whole = len(plan.chunks) == 1 and plan.chunks[0].request_frames == plan.chunks[0].length and \
        reader.info.frame_count == plan.frames and not reader.info.rotation

    async def one(chunk: Chunk) -> ChunkOutput:
        req = request.replace(num_frames=chunk.request_frames)
        body = req.to_fal_input()
        key = job_key(clip_sha, chunk, body)
        sub = ChunkProgress(progress, chunk, plan, lambda: done["frames"] / max(1, plan.frames))
        t = time.monotonic()
        cost = estimate_cost(*req.canvas_size, chunk.request_frames).usd
        earlier = _reusable(earlier_runs.get(key, []))
        if earlier is not None and earlier.state == "saved":
            return _fal_output(earlier.result_path, earlier, cost, t, "saved")
        async with semaphore:
            if earlier is not None:  # submitted (maybe by a process that died): follow it, never resubmit
                try:
                    run = await backend.attach(earlier, sub)
                    return _fal_output(run.saved.path, run.entry, cost, t, "attached", run.saved.data)
                except FalCancelled:  # fal did cancel it (nothing billed): submit this chunk again
                    log.info("fal request %s was cancelled; submitting chunk %d again", earlier.request_id,
                             chunk.index + 1)
            with tempfile.TemporaryDirectory(prefix="ltx-outpaint-chunk-") as tmp:
                if whole:
                    path = source
                else:
                    path = os.path.join(tmp, f"chunk{chunk.index:04d}.mp4")
                    async with source_lock:
                        await asyncio.to_thread(_write_chunk_source, reader, areader, chunk, analysis.fps, path)
                run = await backend.run_file_async(req, path, sub, job_key=key)
            out = _fal_output(run.saved.path, run.entry, cost, t, "", run.saved.data)
            out.notes += run.notes
            return out

    tasks = [asyncio.create_task(one(c)) for c in plan.chunks]
    try:
        for chunk, task in zip(plan.chunks, tasks):
            try:
                out = await task
            except Exception:
                # a failed chunk fails the clip; the other requests finish and are saved first (they are paid,
                # and a re-run reuses them)
                others = [t for t in tasks if not t.done()]
                if others:
                    await asyncio.gather(*others, return_exceptions=True)
                raise
            if assembler.generated:
                areader_out = AudioReader.open(out.path)
                if areader_out is not None:
                    n = round(chunk.length * areader_out.rate / analysis.fps)
                    out.audio, out.audio_rate = areader_out.read(0, n), areader_out.rate
                    areader_out.close()
            await asyncio.to_thread(assembler.add, chunk, out)
            out.audio = None
            outputs[chunk.index] = out
            done["frames"] += chunk.length - chunk.overlap
            progress.report(100 * done["frames"] / max(1, plan.frames), 100,
                            f"chunk {chunk.index + 1}/{len(plan.chunks)} assembled ({done['frames']}/{plan.frames} frames)")
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        reader.close()
        if areader is not None:
            areader.close()


def _reusable(entries: list):
    """The journal entry a re-run must use instead of submitting (of a chunk's `entries`, oldest first): saved
    (file present), still running (submitted / recoverable / cancelled while running), or unknown (may be
    billed: refused). None: submit."""
    for entry in reversed(entries):
        if entry.state == "saved" and entry.result_path and os.path.exists(entry.result_path):
            return entry
        if entry.state in ("submitted", "recoverable") or (entry.state == "cancelled" and entry.may_still_run):
            return entry
        if entry.state == "unknown":
            raise InputError("backend", f"an earlier submit of this chunk has an unknown outcome (fal may have created "
                                        f"and billed it; journal entry {entry.request_id}): it is not submitted "
                                        f"again; find it on fal's dashboard and load it with Recover fal Result")
    return None


def _fal_output(path: str, entry, cost: float, started: float, reused: str, data: dict | None = None) -> ChunkOutput:
    if data is None:  # an earlier run's saved result: its sidecar has fal's answer
        try:
            with open(path + ".json", encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = {}
    return ChunkOutput(path=path, seed=data.get("seed"), prompt=str(data.get("prompt") or ""),
                       request_id=entry.request_id, cost_usd=cost, seconds=time.monotonic() - started,
                       reused=reused)


def _write_chunk_source(reader: FrameReader, areader: AudioReader | None, chunk: Chunk, fps: float, path: str) -> None:
    """The chunk's source frames (padded with the last one to `request_frames`) + its audio, near-lossless."""
    rate = areader.rate if areader else 0
    writer = StreamingWriter(path, fps, audio_rate=rate, audio_channels=areader.channels if areader else 0,
                             video_quality="maximum", video_write_mode="fast")
    try:
        last = None
        n = 0
        for block in reader.iter_blocks(chunk.start, chunk.length, 16):
            writer.write_frames(block)
            last, n = block[-1:], n + len(block)
        while n < chunk.request_frames and last is not None:
            writer.write_frames(last)
            n += 1
        if areader is not None:
            s0 = round(chunk.start * rate / fps)
            writer.write_audio(areader.read(s0, round(chunk.length * rate / fps)))
            pad = round(n * rate / fps) - round(chunk.length * rate / fps)
            if pad > 0:
                writer.write_audio(np.zeros((areader.channels, pad), np.float32))
        writer.close()
    except BaseException:
        writer.abort()
        raise
