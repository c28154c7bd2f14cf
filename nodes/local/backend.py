"""Local backend: LTX-2.3 outpainting on this machine's GPU (or CPU) with Lightricks' ltx-core.

Finds the model files (nodes/local_models.py), fetches LoRAs given as URLs into the loras folder's
cache (nodes/lora_fetch.py: safe downloader, 3 GiB cap, safetensors header checked, never unpickled),
builds the canvas composite and runs nodes/local_pipeline.py. ltx-core, ltx-pipelines and transformers
are imported only here, when a run starts.
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..media.canvas import LTX_SNAP, composite
from ..errors import InputError
from .models import ModelSearch, find_models
from ..backends import OutpaintJob, OutpaintResult, Progress, register
from ..backends.preview import fit_audio, source_indices

log = logging.getLogger(__name__)

SAFETY_NOTE = ("enable_safety_checker: the local backend has no safety model, so this output was NOT "
               "checked (only fal's endpoint runs one)")
PRECISIONS = ("auto", "bf16", "fp8")
ENGINES = ("auto", "native", "ltxcore")
OFFLOADS = ("auto", "none", "blocks")


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

    @property
    def pipeline_mode(self) -> str:
        """The ltx-core pipeline's mode for this recipe (until the pipeline reads recipe.py itself)."""
        return {"official": "quality", "ic_lora_pipeline": "fast"}[self.recipe]

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

    def __init__(self, config: LocalConfig):
        self.config = config

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

    def run(self, job: OutpaintJob, progress: Progress) -> OutpaintResult:
        cfg = self.config
        req, clip, lay = job.request, job.clip, job.layout
        search = self._search()
        models = find_models(cfg.pipeline_mode, search, fp8=prefer_fp8(cfg.precision, cfg.device),
                             explicit=dict(cfg.explicit))
        loras = self._user_loras(job, search)
        progress.check()

        from .ltxcore.pipeline import OutpaintInputs, OutpaintPipeline, PipelineConfig

        n, fps = job.num_frames, float(req.frames_per_second)
        frames = clip.frames[source_indices(clip.num_frames, clip.fps, n, fps)]
        canvas_frames = composite(frames, lay)
        del frames
        audio = None
        if clip.audio is not None and not clip.audio.silent:
            audio = fit_audio(clip.audio, n / fps)
        seed = req.seed if req.seed is not None else random.randint(0, 2**32 - 1)
        notes = [f"engine: ltx-core, recipe {cfg.recipe}"
                 + (f" (native engine not used: {cfg.why_not_native})" if cfg.why_not_native else ""),
                 *models.notes]
        if req.enable_safety_checker:
            log.warning(SAFETY_NOTE)
            notes.append(SAFETY_NOTE)
        if cfg.pipeline_mode == "fast" and req.num_inference_steps != 15:
            notes.append(f"num_inference_steps {req.num_inference_steps} ignored: fast mode uses the fixed "
                         "8-step distilled schedule")
        if cfg.pipeline_mode == "fast" and req.guidance_scale > 1:
            notes.append("guidance_scale ignored: fast mode (distilled) runs without CFG")
        pipeline = OutpaintPipeline(PipelineConfig(models, device=cfg.device, precision=cfg.precision,
                                                   keep_loaded=cfg.keep_loaded, free_memory=cfg.free_memory))
        inputs = OutpaintInputs(
            composite=canvas_frames, source_rect=lay.source, fps=fps, prompt=req.prompt, seed=int(seed),
            negative_prompt=req.negative_prompt, num_inference_steps=req.num_inference_steps,
            guidance_scale=req.guidance_scale, video_strength=req.video_strength,
            generate_audio=req.generate_audio, source_audio=audio,
            enhance_prompt=req.enable_prompt_expansion, loras=loras)
        log.info("local LTX-2.3 (%s, %s): %dx%d, %d frames at %g fps, models: %s", cfg.pipeline_mode,
                 "fp8" if pipeline.fp8 else "bf16", lay.width, lay.height, n, fps,
                 ", ".join(f"{k}={os.path.basename(v)}" for k, v in models.paths.items()))
        out = pipeline.run(inputs, progress)
        notes += out.notes
        peak = f"peak {out.memory_kind} {out.peak_memory_bytes / 2**30:.2f} GiB"
        notes.append(peak)
        log.info("local run done in %.1f s, %s", out.seconds.get("total", 0.0), peak)
        return OutpaintResult(out.frames, fps, out.audio, int(seed), out.prompt, self.name, notes=notes)


register("local", LocalBackend)
