"""Local backend: LTX-2.3 outpainting on this machine's GPU (or CPU).

Finds the model files the recipe needs (nodes/local/models.py), fetches LoRAs given as URLs into the loras
folder's cache (nodes/lora_fetch.py: safe downloader, 3 GiB cap, safetensors header checked, never unpickled),
places the source on the canvas, resolves the recipe (nodes/local/recipe.py) for the request and runs it on an
engine: Lightricks' ltx-core (nodes/local/ltxcore/) here. ltx-core, ltx-pipelines and transformers are imported
only when a run starts, after :func:`check_ltx_core` has found the pinned versions.
"""
from __future__ import annotations

import logging
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..media.canvas import LTX_SNAP, place_frames
from ..errors import InputError
from .models import ModelSearch, find_models
from .pins import INSTALL_COMMAND, LTX_PINS  # the ltx-core engine is tested with exactly these; others are refused
from ..backends import OutpaintJob, OutpaintResult, Progress, register
from ..backends.preview import fit_audio, source_indices

log = logging.getLogger(__name__)

SAFETY_NOTE = ("enable_safety_checker: the local backend has no safety model, so this output was NOT "
               "checked (only fal's endpoint runs one)")
PRECISIONS = ("auto", "bf16", "fp8")
ENGINES = ("auto", "native", "ltxcore")
OFFLOADS = ("auto", "none", "blocks")
#: what the canvas around the source holds before the fill colour is painted (the workflow pads grey 0.5)
PAD_GREY = 0.5


def ltx_core_problems() -> list[str]:
    """Why the ltx-core engine cannot run here (empty: the pinned versions are installed and import)."""
    import importlib.util
    from importlib import metadata

    problems = []
    for dist, want in LTX_PINS.items():
        try:
            have = metadata.version(dist)
        except metadata.PackageNotFoundError:
            problems.append(f"{dist} is not installed")
            continue
        if have != want:
            problems.append(f"{dist} {have} is installed, this pack needs {want}")
    if not problems:
        for module in ("ltx_core", "ltx_pipelines"):
            if importlib.util.find_spec(module) is None:
                problems.append(f"{module} is not importable")
    if importlib.util.find_spec("sentencepiece") is None:  # the ComfyUI single-file Gemma's tokenizer
        problems.append("sentencepiece is not installed (pip install sentencepiece)")
    return problems


def check_ltx_core() -> None:
    """Raise one InputError naming what is missing or mismatched and the pinned install command."""
    problems = ltx_core_problems()
    if problems:
        raise InputError("engine", f"the local backend's ltx-core engine cannot run: {'; '.join(problems)}. "
                                   f"Install the tested versions into this Python ({sys.executable}): "
                                   f"python -m {INSTALL_COMMAND}")


@dataclass(frozen=True)
class LocalConfig:
    """Settings of the local backend (the "Outpaint Backend: Local GPU" node, or CLI options)."""

    recipe: str = "official"  # a name from recipe.RECIPES
    #: auto: ComfyUI core's LTX-2 when running inside a ComfyUI that has it, else ltx-core
    engine: str = "auto"
    precision: str = "auto"  # transformer weights: auto | bf16 | fp8
    offload: str = "auto"  # ltx-core engine: stream transformer blocks to the GPU ("blocks") when it is small
    keep_loaded: bool = False
    device: str = "auto"
    #: Where to look for models (None: $LTX_OUTPAINT_MODELS_DIR).
    search: ModelSearch | None = None
    #: role -> explicit file (checkpoint, text encoder folder, ...); wins over the search.
    explicit: tuple[tuple[str, str], ...] = ()
    #: Folder whose ltx-outpaint-url-cache/ keeps LoRAs fetched from URLs (None: first loras folder).
    loras_dir: str | None = None
    free_memory: Callable[[], None] | None = field(default=None, compare=False)
    #: models from other loaders (native engine only): ComfyUI MODEL / CLIP / VAE / audio VAE objects
    model: object = field(default=None, compare=False)
    clip: object = field(default=None, compare=False)
    vae: object = field(default=None, compare=False)
    audio_vae: object = field(default=None, compare=False)
    #: set by the ComfyUI adapter when `auto` fell back to ltx-core: why the native engine was not used
    why_not_native: str | None = None
    kind: str = field(default="local", init=False)

    def __post_init__(self):
        from .recipe import get_recipe

        get_recipe(self.recipe)
        if self.engine not in ENGINES:
            raise InputError("engine", f"got {self.engine!r}; allowed: {', '.join(ENGINES)}")
        if self.offload not in OFFLOADS:
            raise InputError("offload", f"got {self.offload!r}; allowed: {', '.join(OFFLOADS)}")
        if self.precision not in PRECISIONS:
            raise InputError("precision", f"got {self.precision!r}; allowed: {', '.join(PRECISIONS)}")


def prefer_fp8(precision: str, device: str = "auto") -> bool:
    """Whether to look for fp8 checkpoint files first: asked for, or `auto` on a GPU under ~60 GB."""
    if precision != "auto":
        return precision == "fp8"
    if device == "cpu" or not torch.cuda.is_available():
        return False
    total = torch.cuda.get_device_properties(torch.device(device if device.startswith("cuda") else "cuda"))
    return total.total_memory < 60 * 2**30


class LocalBackend:
    name = "local"
    snap = LTX_SNAP
    #: the ltx-core engine guides a job's first frames with `OutpaintJob.start_frames` (long-clip chunks)
    accepts_start_frames = True

    def __init__(self, config: LocalConfig):
        self.config = config
        self.why_not_native = config.why_not_native

    def _search(self) -> ModelSearch:
        return self.config.search if self.config.search is not None else ModelSearch.from_env()

    def _loras_dir(self, search: ModelSearch) -> str:
        if self.config.loras_dir:
            return self.config.loras_dir
        folders = search.get("loras")
        if not folders:
            raise InputError("loras", "a LoRA URL needs a loras folder to cache it in; set "
                                      "$LTX_OUTPAINT_MODELS_DIR (its loras/ subfolder) or --loras-dir")
        return folders[0]

    def user_lora_files(self, job: OutpaintJob) -> list[tuple[str, float, str]]:
        """(path on disk, scale, target) per user LoRA; URLs are fetched into the loras folder's cache."""
        from ..lora_fetch import fetch_lora
        from ..loras import check_lora_file

        search = self._search()
        out = []
        for i, spec in enumerate(job.request.loras):
            if spec.is_url():
                path = fetch_lora(spec.path, self._loras_dir(search))
            else:
                path = spec.path
                check_lora_file(path, f"loras[{i}]")
            out.append((path, float(spec.scale), spec.transformer))
        return out

    def _user_loras(self, job: OutpaintJob, search: ModelSearch):
        from .ltxcore.pipeline import UserLora

        return tuple(UserLora(path, scale, target) for path, scale, target in self.user_lora_files(job))

    def engine(self) -> str:
        """The engine this run uses: "native" (ComfyUI core's LTX-2, only inside a ComfyUI that has it) or
        "ltxcore". `auto` picks native where it can (the reason it cannot is kept in `why_not_native`)."""
        if self.config.engine == "ltxcore":
            return "ltxcore"
        from .native import unavailable_reason
        from .recipe import get_recipe

        reason = unavailable_reason(get_recipe(self.config.recipe))
        if reason is None:
            return "native"
        if self.config.engine == "native":
            raise InputError("engine", f"native was chosen but {reason}; use engine 'auto' or 'ltxcore'")
        if self.why_not_native is None:
            self.why_not_native = reason
        return "ltxcore"

    def run(self, job: OutpaintJob, progress: Progress) -> OutpaintResult:
        if self.engine() == "native":  # inside ComfyUI with core LTX-2: its own nodes, run in this process
            from .native.backend import NativeBackend

            return NativeBackend(self.config).run(job, progress)
        cfg = self.config
        req, clip, lay = job.request, job.clip, job.layout
        check_ltx_core()
        search = self._search()
        models = find_models(cfg.recipe, search, fp8=prefer_fp8(cfg.precision, cfg.device),
                             explicit=dict(cfg.explicit))
        loras = self._user_loras(job, search)
        progress.check()

        from .ltxcore.pipeline import OutpaintInputs, OutpaintPipeline, PipelineConfig
        from .recipe import resolve

        n, fps = job.num_frames, float(req.frames_per_second)
        frames = clip.frames[source_indices(clip.num_frames, clip.fps, n, fps)]
        placed = torch.full((n, lay.height, lay.width, 3), PAD_GREY, dtype=torch.float32)
        place_frames(frames, lay, placed)
        del frames
        audio = None
        if clip.audio is not None and not clip.audio.silent:
            audio = fit_audio(clip.audio, n / fps)
        seed = req.seed if req.seed is not None else random.randint(0, 2**32 - 1)
        resolved = resolve(cfg.recipe, req, width=lay.width, height=lay.height, frames=n, seed=int(seed))
        notes = [f"engine: ltx-core, recipe {cfg.recipe}"
                 + (f" (native engine not used: {self.why_not_native})" if self.why_not_native else ""),
                 *models.notes, *resolved.notes]
        if req.enable_safety_checker:
            log.warning(SAFETY_NOTE)
            notes.append(SAFETY_NOTE)
        pipeline = OutpaintPipeline(PipelineConfig(models, device=cfg.device, precision=cfg.precision,
                                                   offload=cfg.offload, keep_loaded=cfg.keep_loaded,
                                                   free_memory=cfg.free_memory))
        log.info("local LTX-2.3 (ltx-core engine, %s recipe): %dx%d, %d frames at %g fps, models: %s", cfg.recipe,
                 lay.width, lay.height, n, fps, ", ".join(f"{k}={os.path.basename(v)}" for k, v in models.paths.items()))
        start = job.start_frames
        if start is not None and tuple(start.shape[1:3]) != (lay.height, lay.width):
            raise ValueError(f"start_frames: {tuple(start.shape)} do not match the canvas {lay.width}x{lay.height}")
        out = pipeline.run(OutpaintInputs(placed, lay.mask(), lay.source, resolved, audio, loras,
                                          start_frames=start), progress)
        notes += out.notes
        peak = f"peak {out.memory_kind} {out.peak_memory_bytes / 2**30:.2f} GiB"
        notes.append("engine: ltx-core" + (" (auto: ComfyUI core's LTX-2 not available here)"
                                           if cfg.engine == "auto" else ""))
        notes.append(peak)
        log.info("local run done in %.1f s, %s", out.seconds.get("total", 0.0), peak)
        return OutpaintResult(out.frames, fps, out.audio, int(seed), out.prompt, self.name, notes=notes)


register("local", LocalBackend)
