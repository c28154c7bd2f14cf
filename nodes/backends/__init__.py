"""The backend interface every outpaint backend (preview, fal, local GPU) implements.

A backend gets an :class:`OutpaintJob` (validated request + decoded source clip + canvas) and returns
an :class:`OutpaintResult`. Progress and interruption go through :class:`Progress`, which the ComfyUI
adapter and the CLI each implement. Backend *configs* are small dataclasses produced by the backend
nodes; :func:`make_backend` turns one into a backend.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from ..media.canvas import CanvasLayout, CanvasSpec, SnapRule, layout_canvas
from ..request import OutpaintRequest
from ..media.decode import Audio, Clip, check_frame_memory

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """The user stopped the run (ComfyUI's interrupt or Ctrl-C in the CLI)."""


class Progress:
    """Progress sink; the base class logs. Adapters override `report` and `interrupted`."""

    def report(self, done: float, total: float, text: str | None = None) -> None:
        if text:
            log.info("%s", text)

    def interrupted(self) -> bool:
        return False

    def note(self, text: str) -> None:
        """An outcome the user must see even when the run stops (e.g. "fal request X cancelled")."""
        log.warning("%s", text)

    def check(self) -> None:
        """Raise :class:`Interrupted` if the user asked to stop."""
        if self.interrupted():
            raise Interrupted("interrupted by the user")


@dataclass
class OutpaintJob:
    request: OutpaintRequest
    clip: Clip
    canvas: CanvasSpec
    layout: CanvasLayout  # after the backend's snapping
    num_frames: int  # after the backend's snapping
    #: Continuity across long-clip chunks: the previous chunk's last generated frames over the whole canvas,
    #: [k,H,W,3] float32 0..1 at the layout's size, to guide this job's first k frames (frame_idx 0). Only
    #: set for a backend whose `accepts_start_frames` is True; others get None and their joins are cross-faded.
    start_frames: torch.Tensor | None = None


@dataclass
class OutpaintResult:
    frames: torch.Tensor  # [F,H,W,3] float32 0..1
    fps: float
    audio: Audio | None
    seed: int
    prompt: str  # the prompt actually used (after any expansion)
    backend: str
    #: An already-encoded MP4 of the result (remote backends), else None.
    video_path: str | None = None
    notes: list[str] = field(default_factory=list)
    #: quality report (media/quality.py QualityReport.to_dict()), when the backend computed one
    quality: dict | None = None


class Backend(Protocol):
    """A backend implements `run` (blocking; run in a worker thread) or `run_async` (remote I/O).

    Optional: `accepts_start_frames = True` when it honours `OutpaintJob.start_frames`.
    """

    name: str
    snap: SnapRule

    def run(self, job: OutpaintJob, progress: Progress) -> OutpaintResult: ...


@dataclass(frozen=True)
class PreviewConfig:
    """Free, CPU-only, no-AI fill. `fill` is "blur" (blurred stretched source) or "mirror"."""

    fill: str = "blur"
    blur_radius: int = 12
    kind: str = field(default="preview", init=False)


#: Backends shipped with the pack: kind -> module (relative to the package root), imported on first use.
BUILTIN = {"preview": ".backends.preview", "fal": ".fal.backend", "local": ".local.backend"}
#: kind -> factory(config) -> Backend; each backend module registers itself here.
_FACTORIES: dict[str, Callable[[object], Backend]] = {}


def register(kind: str, factory: Callable[[object], Backend]) -> None:
    _FACTORIES[kind] = factory


def make_backend(config) -> Backend:
    if config is None:
        config = PreviewConfig()
    kind = getattr(config, "kind", None)
    if kind in BUILTIN and kind not in _FACTORIES:
        importlib.import_module(BUILTIN[kind], __package__.rpartition(".")[0])  # the module registers itself
    if kind not in _FACTORIES:
        raise ValueError(f"backend: unknown backend kind {kind!r}; available: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[kind](config)


def prepare_job(request: OutpaintRequest, clip: Clip, canvas: CanvasSpec, backend: Backend) -> OutpaintJob:
    """Validate the request and apply the backend's snapping to canvas and frame count.

    The canvas supplies `resolution` and `source_scale` (it is where the user sets them).
    """
    request = request.replace(resolution=canvas.resolution, source_scale=canvas.source_scale).validate()
    lay = layout_canvas(canvas, clip.width, clip.height, backend.snap)
    frames = backend.snap.frames(request.num_frames)
    check_frame_memory(lay.width, lay.height, frames, "resolution",
                       "use a smaller canvas or fewer num_frames", node="Outpaint Canvas")
    if (lay.width, lay.height) != canvas.size or frames != request.num_frames:
        log.info("%s backend snaps %dx%dx%d to %dx%dx%d", backend.name, *canvas.size, request.num_frames,
                 lay.width, lay.height, frames)
    return OutpaintJob(request, clip, canvas, lay, frames)


async def run_outpaint_async(request: OutpaintRequest, clip: Clip, canvas: CanvasSpec, config=None,
                             progress: Progress | None = None) -> OutpaintResult:
    """The whole job, as the nodes and the CLI run it: snap, validate, run the chosen backend.

    Blocking backends run in a worker thread so the caller's event loop (ComfyUI's) stays responsive.
    """
    backend = make_backend(config)
    job = prepare_job(request, clip, canvas, backend)
    progress = progress or Progress()
    run_async = getattr(backend, "run_async", None)
    if run_async is not None:
        result = await run_async(job, progress)
    else:
        result = await asyncio.to_thread(backend.run, job, progress)
    if clip.num_frames < job.num_frames:
        text = (f"the source has {clip.num_frames} frames ({clip.num_frames / clip.fps:.2f} s) but {job.num_frames} "
                f"were generated: past the source there is no source picture to keep (its last frame is held); "
                f"set num_frames to at most {max(clip.num_frames, 9)} to match the source")
        log.warning("%s", text)
        result.notes.append(text)
    if result.quality is None:
        await asyncio.to_thread(attach_quality, result, job)
    return result


def attach_quality(result: OutpaintResult, job: OutpaintJob) -> None:
    """Measure `result` against the source placed on its canvas (media/quality.py) into `result.quality`, on
    up to 32 consecutive frames from the middle. Never fails a run: a report that cannot be made is logged."""
    from ..media.canvas import NO_SNAP, CanvasSpec, composite, layout_canvas
    from ..media.quality import frame_window, quality_report
    from ..request import ImageSize
    from .preview import source_indices

    try:
        n, h, w = result.frames.shape[:3]
        lay = job.layout
        if (lay.width, lay.height) != (w, h):  # a remote result on a canvas of its own size (fal centres)
            spec = CanvasSpec(ImageSize(w, h), job.canvas.source_scale, "center")
            lay = layout_canvas(spec, job.clip.width, job.clip.height, NO_SNAP)
        window = frame_window(n)
        idx = source_indices(job.clip.num_frames, job.clip.fps, n, result.fps)[window]
        placed = composite(job.clip.frames[idx], lay, fill=(0.5, 0.5, 0.5))
        report = quality_report(result.frames[window], placed, lay.mask())
        result.quality = report.to_dict()
        result.notes.extend(report.lines())
        if window.stop - window.start < n:
            result.notes.append(f"quality measured on frames {window.start}-{window.stop - 1} of {n}")
    except Exception as exc:  # the report is advice: never lose a (possibly paid) result over it
        log.warning("quality report not made: %s", exc)


def run_outpaint(request: OutpaintRequest, clip: Clip, canvas: CanvasSpec, config=None,
                 progress: Progress | None = None) -> OutpaintResult:
    """Blocking form of :func:`run_outpaint_async` (for scripts and tests; not inside a running loop)."""
    return asyncio.run(run_outpaint_async(request, clip, canvas, config, progress))
