"""LTX-2.3 outpainting on Lightricks' ltx-core: runs a resolved recipe of ``nodes/local/recipe.py``, stage by stage.

Pure engine module (no ComfyUI). Imported when a local run starts; ltx-core, ltx-pipelines and transformers are
imported inside the functions that need them.

:func:`plan_run` turns a :class:`~..recipe.ResolvedRecipe` and the model files into a :class:`RunPlan` (two
:class:`StagePlan` objects: size, sigmas, sampler, guidance, the LoRAs fused into the transformer, reference
tokens, stage input, output taken, decode, blend); :meth:`RunPlan.parameters` reports it in the flat format of
``ResolvedRecipe.parameters()``, derived from the plan's own fields; :class:`OutpaintPipeline` runs it:

1. Text: Gemma (Hugging Face folder or ComfyUI single file) encodes the prompt, and the negative prompt when a
   stage evaluates it (``*_cfg_pp`` samplers always, even at CFG 1; others when CFG != 1); optional prompt
   enhancement from the first source frame first. The text encoder is freed before anything else loads.
2. Inputs: ``official_stage_inputs`` paints the area to generate the recipe's green on the placed canvas at full
   and half size (the workflow's LTXVInpaintPreprocess on area-resized image and mask).
3. Stage 1 at half size: the transformer with the stage's LoRAs fused (official: distilled LoRA 0.5, IC-LoRA 1.0
   and the user's LoRAs, each on its ``transformer`` target); the half-size green composite VAE-encoded and
   appended as IC reference tokens (denoise mask ``1 - reference_strength``, the target's positions); the source
   audio VAE-encoded and frozen (mask 0); empty video latent; ComfyUI's noise and sampler math
   (:mod:`.sampling`); the output the recipe takes; reference tokens dropped.
4. Between the stages, ``official``: ``VAEDecodeTiled(512, 64, 512, 64)``, pyramid blend (dilation 5) against the
   half-size composite and mask, x2 lanczos in pixels, ``VAEEncodeTiled(512, 64, 512, 64)`` (:mod:`.tiling`);
   ``ic_lora_pipeline``: the spatial upsampler on the latent.
5. Stage 2 at full size from that latent, re-noised to its first sigma; no reference tokens; the audio frozen
   again (the stage-1 audio latent).
6. ``LTXVTiledVAEDecode`` (2 x 2 tiles, overlap 6), pyramid blend (dilation 2) against the full-size composite
   and mask. Output audio: the frozen audio latent decoded by the audio VAE and vocoder, as the workflow's
   ``LTXVAudioVAEDecode`` feeds ``CreateVideo`` (a VAE round trip of the source audio, not the original waveform;
   without source audio: the audio generated in stage 1).

Memory: one model on the device at a time (text encoder, VAE encoders, transformer, VAE decoder, ...); the
transformer is built once when both stages use the same LoRAs and parked in CPU RAM between them when RAM
allows; block offloading (``offload``: auto | none | blocks, :mod:`.offload`) streams the transformer's and
Gemma's blocks to the GPU one at a time when the plan (``nodes/local/memory_plan.py``) does not fit. The planned
peak per stage is logged and put in the notes before the run, the measured peak per stage after a CUDA run.
``keep_loaded`` keeps the checkpoint in RAM, ltx-core's state-dict registry and the last prompt encodings
(``nodes/local/keep.py``); a run without it releases them.
"""
from __future__ import annotations

import gc
import logging
import math
import os
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .. import keep
from ...media.canvas import Rect
from ...media.decode import Audio
from ..memory_plan import GiB, MemoryPlan, ModelSize, Sizes, Work, choose_offload
from ..models import ResolvedModels
from ..recipe import ResolvedRecipe
from . import imageops
from .sampling import SampleResult, Tokens, needs_negative, sample

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp8")
OFFLOADS = ("auto", "none", "blocks")
TEXT_TOKENS = 1024  # ltx-core's Gemma tokenizer pads to this length


@dataclass(frozen=True)
class UserLora:
    """A user LoRA, already on disk: `target` is both|video|audio (see lora_targets)."""

    path: str
    scale: float
    target: str = "both"


@dataclass(frozen=True)
class LoraUse:
    """A LoRA fused into a stage's transformer: its role (distilled_lora, ic_lora_outpaint, user), file, strength."""

    role: str
    path: str
    strength: float
    target: str = "both"


@dataclass(frozen=True)
class StagePlan:
    index: int
    width: int
    height: int
    sigmas: tuple[float, ...]
    sampler: str
    cfg: float
    loras: tuple[LoraUse, ...]
    reference: bool
    reference_strength: float
    reference_downscale: int
    init: str  # "empty" | "pixels_x2" | "latent_upsampler"
    take: str  # "output" | "denoised_output"
    decode: str  # "tiled" | "spatial_tiles" | "none"
    blend_dilation: int
    audio: str  # "frozen_source" | "generated" | "frozen" (the previous stage's) | "none"

    def strength(self, role: str) -> float:
        return sum(lo.strength for lo in self.loras if lo.role == role)

    @property
    def negative(self) -> bool:
        return needs_negative(self.sampler, self.cfg)

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1


@dataclass(frozen=True)
class RunPlan:
    """What the engine runs for one request, nothing left to decide."""

    recipe: str
    checkpoint_role: str
    checkpoint: str
    prompt: str
    negative_prompt: str
    seed: int
    frames: int
    fps: float
    width: int
    height: int
    fill_rgb: tuple[int, int, int]
    blend_long_side: int
    blend_levels: int
    vae_tiles: tuple[int, int, int, int]
    spatial_tiles: tuple[int, int, int]
    audio: str  # "frozen_source" | "generated" | "none"
    enhance_prompt: bool
    stages: tuple[StagePlan, StagePlan]

    @property
    def negative(self) -> bool:
        return any(s.negative for s in self.stages)

    def parameters(self) -> dict:
        """Every value this plan runs, flat, in the format of ``ResolvedRecipe.parameters()``."""
        ref = next((s for s in self.stages if s.reference), None)
        out = {"recipe": self.recipe, "checkpoint": self.checkpoint_role, "fill_rgb": tuple(self.fill_rgb),
               "prompt": self.prompt, "negative_prompt": self.negative_prompt,
               "frames": self.frames, "fps": self.fps, "size": (self.width, self.height), "audio": self.audio,
               "blend": (self.blend_long_side, self.blend_levels),
               "reference_strength": ref.reference_strength if ref else None,
               "reference_frame": 0 if ref else None,  # the reference tokens take the target's positions
               "reference_attention": 1.0 if ref else None,  # no attention mask: full attention to them
               "vae_tiles": tuple(self.vae_tiles) if any(s.init == "pixels_x2" for s in self.stages) else None,
               "spatial_tiles": tuple(self.spatial_tiles)}
        for st in self.stages:
            out[f"stage{st.index}"] = {
                "size": (st.width, st.height), "sigmas": tuple(st.sigmas), "sampler": st.sampler,
                "cfg": st.cfg, "seed": self.seed,
                "distilled_lora": st.strength("distilled_lora"), "ic_lora": st.strength("ic_lora_outpaint"),
                "reference": st.reference, "init": st.init, "take": st.take, "decode": st.decode,
                "blend_dilation": st.blend_dilation}
        return out


def plan_run(resolved: ResolvedRecipe, models: ResolvedModels | None = None, *, has_source_audio: bool = True,
             loras: tuple[UserLora, ...] = ()) -> RunPlan:
    """The engine's plan for `resolved` on `models` (see the module docstring). Without `models` the file paths
    are None and an IC-LoRA's reference_downscale_factor is taken as 1."""
    r = resolved.recipe
    path = (lambda role: getattr(models, role, None)) if models is not None else (lambda role: None)  # noqa: E731
    checkpoint = path(r.checkpoint)
    audio = "none" if not resolved.generate_audio else ("frozen_source" if has_source_audio else "generated")
    stages = []
    for i, st in enumerate(r.stages):
        uses = []
        if st.distilled_lora:
            uses.append(LoraUse("distilled_lora", path("distilled_lora"), float(st.distilled_lora)))
        if st.ic_lora:
            uses.append(LoraUse("ic_lora_outpaint", path("ic_lora_outpaint"), float(st.ic_lora)))
        uses += [LoraUse("user", lo.path, float(lo.scale), lo.target) for lo in loras if lo.scale != 0]
        downscale = 1
        if st.reference and r.name != "official" and path("ic_lora_outpaint"):
            # ICLoraPipeline reads the LoRA's factor; the official workflow ignores it (its note 5193): 1
            downscale = reference_downscale_factor(path("ic_lora_outpaint"))
        w, h = resolved.stage_size(i)
        stage_audio = audio if i == 0 or audio == "none" else "frozen"
        stages.append(StagePlan(i + 1, w, h, tuple(float(s) for s in st.sigmas), st.sampler, resolved.cfg,
                                tuple(uses), st.reference, resolved.reference_strength, downscale, st.init, st.take,
                                st.decode, st.blend_dilation, stage_audio))
    return RunPlan(r.name, r.checkpoint, checkpoint, resolved.prompt, resolved.negative_prompt, resolved.seed,
                   resolved.frames, resolved.fps, resolved.width, resolved.height, tuple(r.fill_rgb),
                   r.blend_long_side, r.blend_levels, tuple(r.vae_tiles), tuple(r.spatial_tiles), audio,
                   resolved.enhance_prompt, (stages[0], stages[1]))


def parameters(resolved: ResolvedRecipe, models: ResolvedModels | None = None, *, has_source_audio: bool = True,
               loras: tuple[UserLora, ...] = ()) -> dict:
    """What this engine runs for `resolved`, in the flat format of ``ResolvedRecipe.parameters()`` (from its plan)."""
    return plan_run(resolved, models, has_source_audio=has_source_audio, loras=loras).parameters()


@dataclass
class OutpaintInputs:
    """One job in canvas space."""

    placed: torch.Tensor  # [F,H,W,3] 0..1: the source placed on the canvas (grey 0.5 elsewhere); H, W x64; F = 8k+1
    mask: torch.Tensor  # [H,W]: 1 where the model generates
    source_rect: Rect
    recipe: ResolvedRecipe
    source_audio: Audio | None = None  # fitted to the output duration; None or silent: no source audio
    loras: tuple[UserLora, ...] = ()
    #: long clips: the previous chunk's last generated frames over the whole canvas, [k,H,W,3] 0..1 with
    #: k = 8m+1, put at latent frame 0 of both stages (ComfyUI's LTXVAddGuide at frame_idx 0: the latent
    #: replaced, denoise mask 1 - strength) so this chunk starts where that one ended
    start_frames: torch.Tensor | None = None
    start_strength: float = 1.0


@dataclass
class OutpaintOutput:
    frames: torch.Tensor  # [F,H,W,3] float32 0..1
    audio: Audio | None
    prompt: str
    peak_memory_bytes: int
    memory_kind: str  # "VRAM" (CUDA peak allocated) or "RAM" (process RSS, sampled)
    plan: RunPlan
    memory_plan: MemoryPlan | None = None
    stage_peaks: dict[str, int] = field(default_factory=dict)  # measured on CUDA, per stage
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PipelineConfig:
    models: ResolvedModels
    device: str = "auto"  # "auto" (CUDA when available), "cuda", "cuda:1", "cpu"
    precision: str = "auto"  # auto | bf16 | fp8 (transformer weights)
    offload: str = "auto"  # auto | none | blocks
    keep_loaded: bool = False
    #: Longest expanded prompt Gemma may write (tokens).
    enhance_max_tokens: int = 512
    #: Called once before our first model loads (the ComfyUI adapter frees ComfyUI's own models).
    free_memory: Callable[[], None] | None = None


class StepTracker:
    """Counts sampling steps across both stages; checks for interruption before every transformer evaluation."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.done = progress, max(1, total), 0
        self.label = ""
        self.stage_steps = 0
        self.stage_total = 1
        self.last_step = -1

    def stage(self, label: str, steps: int) -> None:
        self.label, self.stage_steps, self.stage_total, self.last_step = label, 0, max(1, steps), -1

    def before(self, step: int) -> None:
        if step != self.last_step:  # a new step: the previous one is done (the negative pass only checks)
            if self.last_step >= 0:
                self._report()
            self.last_step = step
        self.progress.check()  # an interruption asked for during the report stops before this evaluation

    def finish(self) -> None:
        if self.last_step >= 0:
            self._report()
            self.last_step = -1

    def _report(self) -> None:
        self.done += 1
        self.stage_steps += 1
        self.progress.report(self.done, self.total, f"{self.label}: step {self.stage_steps}/{self.stage_total}")


def release_kept_models() -> None:
    """Drop everything `keep_loaded` kept (weights in RAM, registry, cached prompt encodings)."""
    keep.release("released on request")


class OutpaintPipeline:
    def __init__(self, config: PipelineConfig):
        from . import compat as ltx_compat

        if config.precision not in PRECISIONS:
            raise ValueError(f"precision: got {config.precision!r}; allowed: {', '.join(PRECISIONS)}")
        if config.offload not in OFFLOADS:
            raise ValueError(f"offload: got {config.offload!r}; allowed: {', '.join(OFFLOADS)}")
        self.config = config
        self.models = config.models
        self.device = _resolve_device(config.device)
        self.dtype = torch.bfloat16
        self.compat = ltx_compat
        self._live: list[tuple[str, weakref.ref]] = []
        self.notes: list[str] = []
        self._ram_peak = 0

    def parameters(self, resolved: ResolvedRecipe, *, has_source_audio: bool = True,
                   loras: tuple[UserLora, ...] = ()) -> dict:
        """What :meth:`run` will run for `resolved` (see :func:`parameters`)."""
        return parameters(resolved, self.models, has_source_audio=has_source_audio, loras=loras)

    # -- bookkeeping -------------------------------------------------------------------------------
    def use_fp8(self, checkpoint: str) -> bool:
        from .weights import fp8_file

        if self.config.precision != "auto":
            return self.config.precision == "fp8"
        if fp8_file(checkpoint):
            return True
        if self.device.type == "cuda":  # auto: fp8 below ~60 GB of VRAM
            return torch.cuda.get_device_properties(self.device).total_memory < 60 * 2**30
        return False

    def live_models(self) -> list[str]:
        """Names of models built by this pipeline that are still alive (for tests and diagnostics)."""
        gc.collect()
        return [name for name, ref in self._live if ref() is not None]

    def _track(self, name: str, model):
        self.compat.assert_no_meta(model, name)
        self._live.append((name, weakref.ref(model)))
        self._sample_ram()
        log.debug("loaded %s", name)
        return model

    def _load(self, ledger, name: str, what: str | None = None):
        return self._track(what or name, self.compat.ledger_model(ledger, name, what))

    def _free(self) -> None:
        self._sample_ram()
        self.compat.cleanup_memory(self.device)

    def _sample_ram(self) -> None:
        rss = _process_rss()
        self._ram_peak = max(self._ram_peak, rss)

    def _ledger(self, plan: RunPlan):
        from ltx_core.loader import DummyRegistry, StateDictRegistry
        from ltx_pipelines.utils.model_ledger import ModelLedger

        upsampler = self.models.spatial_upsampler if any(s.init == "latent_upsampler" for s in plan.stages) \
            else None
        registry = DummyRegistry()
        if self.config.keep_loaded:
            key = (plan.checkpoint, upsampler)
            with keep.Kept.lock:
                if keep.Kept.registry is None or keep.Kept.registry_key != key:
                    keep.Kept.registry, keep.Kept.registry_key = StateDictRegistry(), key
                registry = keep.Kept.registry
        return ModelLedger(dtype=self.dtype, device=self.device, checkpoint_path=plan.checkpoint,
                           spatial_upsampler_path=upsampler, registry=registry)

    def _checkpoint_source(self, checkpoint: str):
        """The checkpoint's tensors: kept in RAM with keep_loaded, else read from the file per build."""
        if not self.config.keep_loaded:
            return None
        from .quant import preload

        with keep.Kept.lock:
            if keep.Kept.checkpoint is None or keep.Kept.checkpoint[0] != checkpoint:
                keep.Kept.checkpoint = None
                gc.collect()
                keep.Kept.checkpoint = (checkpoint, preload(checkpoint))
            return keep.Kept.checkpoint[1]

    # -- memory plan -------------------------------------------------------------------------------
    def memory_plan(self, plan: RunPlan, fp8: bool) -> MemoryPlan:
        sizes = model_sizes(self.models, plan, fp8)
        work = stage_work(plan)
        total = 0
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            total = int(free)
        return choose_offload(sizes, work, total, self.config.offload)

    # -- the run -----------------------------------------------------------------------------------
    def run(self, inputs: OutpaintInputs, progress) -> OutpaintOutput:
        with torch.inference_mode():
            try:
                return self._run(inputs, progress)
            except BaseException as exc:
                # The traceback's frames hold the models (the sampler's locals); clear them so an
                # interrupted or failed run frees its memory now, not when the error is discarded.
                traceback.clear_frames(exc.__traceback__)
                raise
            finally:
                gc.collect()
                self._free()

    def _run(self, inputs: OutpaintInputs, progress) -> OutpaintOutput:
        from ltx_pipelines.utils.types import PipelineComponents

        _check_inputs(inputs)
        if not self.config.keep_loaded:
            keep.release("keep_loaded is off")
        t0 = time.perf_counter()
        seconds: dict[str, float] = {}
        if self.config.free_memory is not None:
            self.config.free_memory()
        audio_real = inputs.source_audio is not None and not inputs.source_audio.silent
        plan = plan_run(inputs.recipe, self.models, has_source_audio=audio_real, loras=inputs.loras)
        fp8 = self.use_fp8(plan.checkpoint)
        mplan = self.memory_plan(plan, fp8)
        notes = [f"recipe {plan.recipe}: {_stage_summary(plan)}", mplan.describe(), *mplan.notes]
        log.info("%s", notes[1])
        if fp8:
            notes.append("transformer weights in scaled fp8 (dequantized per layer during inference)")
        peaks: dict[str, int] = {}
        f, h, w, _ = inputs.placed.shape
        tracker = StepTracker(progress, sum(s.steps for s in plan.stages))
        components = PipelineComponents(dtype=self.dtype, device=self.device)
        ledger = self._ledger(plan)

        # 1. Text.
        progress.report(0, tracker.total, f"{mplan.describe()}; encoding the prompt (Gemma)")
        progress.check()
        with _stage_peak(self.device, peaks, "text"):
            prompt, contexts = self._encode_text(inputs, plan, ledger, mplan.offload_text)
        seconds["text"] = time.perf_counter() - t0

        # 2. Inputs at full and half size; stage-1 encodes.
        progress.check()
        t = time.perf_counter()
        refs = imageops.official_stage_inputs(inputs.placed, inputs.mask, plan.fill_rgb)
        guides: list = [None] * len(plan.stages)
        with _stage_peak(self.device, peaks, "encode 1"):
            ref_latent = None
            s1 = plan.stages[0]
            if s1.reference or inputs.start_frames is not None:
                encoder = self._load(ledger, "video_encoder")
            if s1.reference:
                rh, rw = s1.height // s1.reference_downscale, s1.width // s1.reference_downscale
                ref = refs.half_ref if (rh, rw) == tuple(refs.half_ref.shape[1:3]) else \
                    imageops.resize(refs.half_ref, rw, rh, "bilinear")
                ref_latent = encoder(_model_video(ref, self.device, self.dtype))
                del ref
            if inputs.start_frames is not None:
                guides = [self._guide_latent(encoder, inputs.start_frames, st) for st in plan.stages]
                notes.append(f"conditioned on the previous chunk's last {inputs.start_frames.shape[0]} frames "
                             f"(guide at frame 0, strength {inputs.start_strength:g}, both stages)")
            if s1.reference or inputs.start_frames is not None:
                del encoder
            audio_latent = None
            if plan.audio == "frozen_source":
                audio_latent = self._encode_audio(inputs.source_audio, ledger, plan)
        self._free()
        seconds["encode"] = time.perf_counter() - t

        # 3. Stage 1.
        t = time.perf_counter()
        transformer = self._transformer(plan, s1, fp8, mplan.offload_transformer)
        tracker.stage(f"stage 1/2 ({s1.width}x{s1.height})", s1.steps)
        with _stage_peak(self.device, peaks, "stage 1"):
            video1, audio_latent = self._sample_stage(transformer, plan, s1, components, contexts, tracker,
                                                      initial_video=None, reference=ref_latent,
                                                      audio_latent=audio_latent, frames=f,
                                                      guide=guides[0], guide_strength=inputs.start_strength)
        del ref_latent
        seconds["stage1"] = time.perf_counter() - t
        s2 = plan.stages[1]
        if s2.loras == s1.loras:
            transformer = self._park(transformer, mplan.offload_transformer)
        else:
            del transformer
            transformer = None
        self._free()

        # 4. Between the stages.
        progress.check()
        t = time.perf_counter()
        if s2.init == "pixels_x2":
            with _stage_peak(self.device, peaks, "decode 1"):
                decoder = self._load(ledger, "video_decoder")
                tile, ov, ttile, tov = plan.vae_tiles
                half = _tiled_decode(_seeded(decoder, plan.seed, self.device), video1, self.device, self.dtype,
                                     tile, ov, ttile, tov)
                del decoder
            self._free()
            if s1.blend_dilation:
                half = imageops.pyramid_blend(half, refs.half_ref, refs.half_mask, dilation=s1.blend_dilation,
                                              long_side=plan.blend_long_side, levels=plan.blend_levels)
            big = imageops.resize(half, s2.width, s2.height, "lanczos")
            del half
            with _stage_peak(self.device, peaks, "encode 2"):
                encoder = self._load(ledger, "video_encoder")
                from .tiling import encode_tiled

                latent2 = encode_tiled(encoder, big, self.device, self.dtype, tile, ov, ttile, tov)
                del encoder, big
        elif s2.init == "latent_upsampler":
            from ltx_core.model.upsampler import upsample_video

            with _stage_peak(self.device, peaks, "upsample"):
                encoder = self._load(ledger, "video_encoder")
                upsampler = self._load(ledger, "spatial_upsampler")
                latent2 = upsample_video(latent=video1.to(self.device, self.dtype), video_encoder=encoder,
                                         upsampler=upsampler).float().cpu()
                del encoder, upsampler
        else:
            raise ValueError(f"stage 2 init {s2.init!r} is not implemented by the ltx-core engine")
        del video1
        self._free()
        seconds["between"] = time.perf_counter() - t

        # 5. Stage 2.
        t = time.perf_counter()
        if transformer is None:
            transformer = self._transformer(plan, s2, fp8, mplan.offload_transformer)
        else:
            transformer = self._unpark(transformer, mplan.offload_transformer)
        tracker.stage(f"stage 2/2 ({s2.width}x{s2.height})", s2.steps)
        with _stage_peak(self.device, peaks, "stage 2"):
            video2, audio_latent = self._sample_stage(transformer, plan, s2, components, contexts, tracker,
                                                      initial_video=latent2, reference=None,
                                                      audio_latent=audio_latent, frames=f,
                                                      guide=guides[1], guide_strength=inputs.start_strength)
        del transformer, latent2
        self._free()
        seconds["stage2"] = time.perf_counter() - t

        # 6. Decode, put the original pixels back, audio.
        progress.check()
        progress.report(tracker.total, tracker.total, "decoding")
        t = time.perf_counter()
        with _stage_peak(self.device, peaks, "decode 2"):
            decoder = self._load(ledger, "video_decoder")
            if s2.decode == "spatial_tiles":
                from .tiling import decode_spatial_tiles

                hx, vx, ov = plan.spatial_tiles
                frames = decode_spatial_tiles(_seeded(decoder, plan.seed, self.device), video2, self.device,
                                              self.dtype, hx, vx, ov)
            else:
                frames = _tiled_decode(_seeded(decoder, plan.seed, self.device), video2, self.device, self.dtype,
                                       *plan.vae_tiles)
            del decoder
        self._free()
        if s2.blend_dilation:
            frames = imageops.pyramid_blend(frames, refs.full_ref, refs.full_mask, dilation=s2.blend_dilation,
                                            long_side=plan.blend_long_side, levels=plan.blend_levels)
        audio = None
        if plan.audio != "none":
            with _stage_peak(self.device, peaks, "audio"):
                audio = self._decode_audio(ledger, audio_latent, f / plan.fps)
            notes.append("audio: the source audio after the audio VAE round trip (the frozen latent decoded, as "
                         "the workflow's LTXVAudioVAEDecode)" if plan.audio == "frozen_source" else
                         "audio: generated (the source has no audio)")
        del video2, audio_latent
        seconds["decode"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - t0
        if self.device.type == "cuda":
            peak, kind = max(peaks.values(), default=0), "VRAM"
            notes.append("measured peak VRAM per stage (GiB): " +
                         ", ".join(f"{k} {v / GiB:.1f}" for k, v in peaks.items()))
        else:
            self._sample_ram()
            peak, kind = self._ram_peak, "RAM"
        log.info("local LTX-2.3 %s run: %dx%dx%d in %.1f s, peak %s %.2f GiB", plan.recipe, w, h, f,
                 seconds["total"], kind, peak / GiB)
        return OutpaintOutput(frames, audio, prompt, peak, kind, plan, mplan, peaks, seconds, self.notes + notes)

    # -- pieces ------------------------------------------------------------------------------------
    def _transformer(self, plan: RunPlan, stage: StagePlan, fp8: bool, offload: bool):
        from ..lora_targets import lora_sd_ops
        from .weights import LoraWeights, build_transformer

        loras = tuple(LoraWeights(lo.path, lo.strength, lora_sd_ops(lo.path, lo.target)) for lo in stage.loras)
        build_on = torch.device("cpu") if offload else self.device
        t = time.perf_counter()
        model = build_transformer(plan.checkpoint, loras, fp8=fp8, device=build_on,
                                  source=self._checkpoint_source(plan.checkpoint))
        if offload:
            from .offload import stream_blocks

            model._streamer = stream_blocks(model, model.velocity_model.transformer_blocks, self.device)
        log.info("transformer for stage %d built in %.1f s (%s)", stage.index, time.perf_counter() - t,
                 ", ".join(f"{lo.role} {lo.strength:g}" for lo in stage.loras) or "no LoRAs")
        return self._track(f"transformer (stage {stage.index})", model)

    def _park(self, transformer, offload: bool):
        """Keep the transformer for stage 2 without holding the GPU: in CPU RAM when it fits there."""
        if offload or self.device.type != "cuda":
            return transformer
        need = sum(p.numel() * p.element_size() for p in transformer.parameters())
        if _available_ram() < 1.2 * need:
            log.info("not enough free RAM to park the transformer between the stages: rebuilt for stage 2")
            return None
        return transformer.to("cpu")

    def _unpark(self, transformer, offload: bool):
        if offload or self.device.type != "cuda":
            return transformer
        return transformer.to(self.device)

    def _encode_text(self, inputs: OutpaintInputs, plan: RunPlan, ledger, offload: bool):
        key = (self.models.text_encoder, plan.checkpoint, plan.prompt, plan.negative_prompt if plan.negative
               else None, plan.enhance_prompt, plan.seed if plan.enhance_prompt else None, str(self.device))
        cached = keep.Kept.text.get(key) if self.config.keep_loaded else None
        if cached is not None:
            log.info("prompt encoding reused (keep_loaded)")
            return cached
        build_on = torch.device("cpu") if offload else self.device
        text_encoder = self._track("text_encoder", self.compat.load_text_encoder(
            self.models.text_encoder, build_on, self.dtype))
        streamer = None
        if offload:
            from .offload import stream_blocks

            streamer = stream_blocks(text_encoder.model, self.compat.language_layers(text_encoder.model),
                                     self.device)
        prompt = plan.prompt
        if plan.enhance_prompt:
            prompt = self._enhance(text_encoder, inputs, plan)
        prompts = [prompt] + ([plan.negative_prompt] if plan.negative else [])
        raw = [text_encoder.encode(p) for p in prompts]
        if streamer is not None:
            streamer.remove()
        del text_encoder, streamer
        self._free()
        processor = self._track("embeddings_processor", self.compat.load_embeddings_processor(
            plan.checkpoint, self.models.text_encoder, self.device, self.dtype))
        outs = [processor.process_hidden_states(hs, mask) for hs, mask in raw]
        del processor, raw
        self._free()
        contexts = {False: (outs[0].video_encoding, outs[0].audio_encoding)}
        if plan.negative:
            contexts[True] = (outs[1].video_encoding, outs[1].audio_encoding)
        result = (prompt, contexts)
        if self.config.keep_loaded:
            keep.Kept.text = {key: result}
        return result

    def _enhance(self, text_encoder, inputs: OutpaintInputs, plan: RunPlan) -> str:
        from ltx_pipelines.utils.helpers import clean_response

        r = inputs.source_rect
        first = inputs.placed[0, r.y:r.y + r.height, r.x:r.x + r.width]
        long_side = max(first.shape[0], first.shape[1])
        if long_side > 896:
            scale = 896 / long_side
            first = imageops.resize(first[None], max(1, round(first.shape[1] * scale)),
                                    max(1, round(first.shape[0] * scale)), "area")[0]
        image = (first.clamp(0, 1) * 255).round().to(torch.uint8)
        try:
            enhanced = clean_response(self.compat.enhance_prompt(text_encoder, plan.prompt, image,
                                                                 seed=plan.seed % 2**63,
                                                                 max_new_tokens=self.config.enhance_max_tokens))
        except Exception as exc:  # a broken enhancer must not lose the run: fall back to the prompt
            log.warning("prompt expansion failed (%s); using the prompt as given", exc)
            self.notes.append(f"prompt expansion failed: {exc}")
            return plan.prompt
        log.info("expanded prompt: %s", enhanced)
        return enhanced or plan.prompt

    def _encode_audio(self, audio: Audio, ledger, plan: RunPlan) -> torch.Tensor:
        from ltx_core.model.audio_vae import encode_audio
        from ltx_core.types import Audio as LtxAudio, AudioLatentShape, VideoPixelShape

        frames = AudioLatentShape.from_video_pixel_shape(VideoPixelShape(
            batch=1, frames=plan.frames, width=plan.width, height=plan.height, fps=plan.fps)).frames
        encoder = self._load(ledger, "audio_encoder")
        wave = audio.waveform
        channels = int(getattr(encoder, "in_channels", 2))
        if wave.shape[0] < channels:
            wave = wave.repeat(channels // wave.shape[0] + 1, 1)
        wave = wave[:channels].float()[None].to(self.device)
        latent = encode_audio(LtxAudio(waveform=wave, sampling_rate=int(audio.sample_rate)), encoder)
        del encoder
        if latent.shape[2] < frames:
            latent = F.pad(latent, (0, 0, 0, frames - latent.shape[2]))
        return latent[:, :, :frames].float().cpu()

    def _guide_latent(self, encoder, frames: torch.Tensor, stage: StagePlan) -> torch.Tensor:
        """Start frames at `stage`'s size, VAE-encoded (frames trimmed to 8m+1)."""
        k = 8 * ((frames.shape[0] - 1) // 8) + 1
        pixels = frames[:k]
        if tuple(pixels.shape[1:3]) != (stage.height, stage.width):
            pixels = imageops.resize(pixels, stage.width, stage.height, "bilinear")
        return encoder(_model_video(pixels, self.device, self.dtype)).float().cpu()

    def _sample_stage(self, transformer, plan: RunPlan, stage: StagePlan, components, contexts,
                      tracker: StepTracker, *, initial_video, reference, audio_latent, frames: int,
                      guide: torch.Tensor | None = None, guide_strength: float = 1.0):
        """One stage: build the token states, sample, return (video latent [1,128,T,h,w], audio latent or None).

        `guide` (a VAE latent of start frames) replaces the first latent frames, frozen by `guide_strength`."""
        from ltx_core.conditioning import VideoConditionByLatentIndex, VideoConditionByReferenceLatent
        from ltx_core.model.transformer.modality import Modality
        from ltx_core.tools import AudioLatentTools, VideoLatentTools
        from ltx_core.types import AudioLatentShape, VideoLatentShape, VideoPixelShape

        pixel_shape = VideoPixelShape(batch=1, frames=frames, width=stage.width, height=stage.height, fps=plan.fps)
        vshape = VideoLatentShape.from_pixel_shape(shape=pixel_shape, latent_channels=components.video_latent_channels,
                                                   scale_factors=components.video_scale_factors)
        vtools = VideoLatentTools(components.video_patchifier, vshape, plan.fps)
        init = initial_video.to(self.device, torch.float32) if initial_video is not None else None
        vstate = vtools.create_initial_state(self.device, torch.float32, init)
        n_target = vstate.latent.shape[1]
        if guide is not None:
            cond = VideoConditionByLatentIndex(latent=guide.to(self.device, torch.float32), strength=float(guide_strength),
                                               latent_idx=0)
            vstate = cond.apply_to(latent_state=vstate, latent_tools=vtools)
        if reference is not None:
            cond = VideoConditionByReferenceLatent(latent=reference.to(self.device, torch.float32),
                                                   downscale_factor=stage.reference_downscale,
                                                   strength=float(stage.reference_strength))
            vstate = cond.apply_to(latent_state=vstate, latent_tools=vtools)
        video = Tokens(vstate.latent.float(), vstate.clean_latent.float(), vstate.denoise_mask.float())
        audio = astate = None
        atools = None
        if stage.audio != "none":
            ashape = AudioLatentShape.from_video_pixel_shape(pixel_shape)
            atools = AudioLatentTools(components.audio_patchifier, ashape)
            a_init = audio_latent.to(self.device, torch.float32) if audio_latent is not None else None
            astate = atools.create_initial_state(self.device, torch.float32, a_init)
            mask = astate.denoise_mask.float()
            if stage.audio in ("frozen_source", "frozen"):
                mask = torch.zeros_like(mask)
            audio = Tokens(astate.latent.float(), astate.clean_latent.float(), mask)

        # ComfyUI's noise: one CPU generator seeded with the seed, the video latent (guide frames included) then
        # the audio latent; the ancestral sampler's extra noise from a second CPU generator (seed + 1).
        ref_frames = reference.shape[2] if reference is not None else 0
        full_v = (1, vshape.channels, vshape.frames + ref_frames, vshape.height, vshape.width)
        ref_shape = tuple(reference.shape) if reference is not None else None
        patchify = components.video_patchifier.patchify

        def draw(gen):
            nv = torch.randn(full_v, generator=gen)
            tokens = patchify(nv[:, :, :vshape.frames])
            if ref_shape is not None:
                extra = nv[:, :, vshape.frames:]
                if tuple(extra.shape) != ref_shape:  # a downscaled reference: its own grid
                    extra = torch.randn(ref_shape, generator=gen)
                tokens = torch.cat([tokens, patchify(extra)], dim=1)
            na = None
            if audio is not None:
                na = components.audio_patchifier.patchify(torch.randn(ashape.to_torch_shape(), generator=gen))
            return tokens.to(self.device), (na.to(self.device) if na is not None else None)

        seed = int(plan.seed)
        first = torch.Generator("cpu").manual_seed(seed % 2**63)
        ancestral = torch.Generator("cpu").manual_seed((seed + 1) % 2**63)
        v_pos, v_att = vstate.positions, vstate.attention_mask
        a_pos = astate.positions if astate is not None else None
        velocity = transformer.velocity_model
        dtype = self.dtype

        def model(xv, xa, sigma, negative):
            ctx_v, ctx_a = contexts[negative]
            s = torch.tensor(sigma, dtype=torch.float32, device=self.device)
            tv = video.mask * sigma
            mv = Modality(latent=xv.to(dtype), sigma=s, timesteps=tv, positions=v_pos, context=ctx_v,
                          attention_mask=v_att)
            ma = None
            if xa is not None:
                ta = audio.mask * sigma
                ma = Modality(latent=xa.to(dtype), sigma=s, timesteps=ta, positions=a_pos, context=ctx_a)
            vx, ax = velocity(mv, ma, None)
            x0v = xv - tv * vx.float()
            x0a = xa - ta * ax.float() if xa is not None else None
            return x0v, x0a

        result: SampleResult = sample(model, video, audio, list(stage.sigmas), stage.sampler, stage.cfg,
                                      noise=lambda i: draw(first), step_noise=lambda i: draw(ancestral),
                                      before_step=tracker.before)
        tracker.finish()
        take = result.video_denoised if stage.take == "denoised_output" else result.video
        out = components.video_patchifier.unpatchify(take[:, :n_target], output_shape=vshape)
        audio_out = None
        if audio is not None:
            a_tokens = result.audio_denoised if stage.take == "denoised_output" else result.audio
            audio_out = atools.patchifier.unpatchify(a_tokens, output_shape=atools.target_shape).cpu()
        return out.float().cpu(), audio_out

    def _decode_audio(self, ledger, latent: torch.Tensor, duration: float) -> Audio:
        from ltx_core.model.audio_vae import decode_audio

        # Audio decoder and vocoder in float32: ltx-core 1.0.0 runs them in bf16, which later upstream
        # versions dropped for audio quality (and oneDNN has no bf16 transposed-conv kernel for some shapes).
        decoder = self._load(ledger, "audio_decoder").float()
        vocoder = self._load(ledger, "vocoder").float()
        out = decode_audio(latent.to(self.device, torch.float32), decoder, vocoder)
        del decoder, vocoder
        self._free()
        wave = out.waveform.float().cpu()
        if wave.dim() == 3:
            wave = wave[0]
        if wave.dim() == 1:
            wave = wave[None]
        want = int(round(duration * out.sampling_rate))
        wave = wave[:, :want]
        if wave.shape[1] < want:
            wave = F.pad(wave, (0, want - wave.shape[1]))
        return Audio(wave.clamp(-1, 1).contiguous(), int(out.sampling_rate))


# -- sizes for the memory plan -------------------------------------------------------------------------
def _header(path: str) -> dict[str, tuple[tuple[int, ...], str]]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}


def _elems(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _block_sizes(entries: dict, pattern: str, bytes_of) -> tuple[int, int, int]:
    import re

    rx = re.compile(pattern)
    total, blocks = 0, {}
    for k, (shape, dtype) in entries.items():
        b = bytes_of(k, shape, dtype)
        total += b
        m = rx.search(k)
        if m:
            blocks[m.group(1)] = blocks.get(m.group(1), 0) + b
    return total, max(blocks.values(), default=0), len(blocks)


def model_sizes(models: ResolvedModels, plan: RunPlan, fp8: bool) -> Sizes:
    """Parameter bytes per model (from the files' headers, at the precision they run in) and widths."""
    from .weights import checkpoint_config

    head = _header(plan.checkpoint)

    def tr_bytes(k, shape, dtype):
        if k.endswith(("_scale", "_scale_2", ".scale_weight", ".scale_input", ".comfy_quant")) or k == "scaled_fp8":
            return 0
        n = _elems(shape) * (2 if dtype == "U8" else 1)  # nvfp4 stores two values per byte
        if fp8 and ".transformer_blocks." in k and k.endswith(".weight") and len(shape) == 2:
            return n + 4  # scaled fp8: the weight + its float32 scale
        return n * 2  # bf16

    tr = {k: v for k, v in head.items()  # the text connectors in the same prefix belong to the embeddings processor
          if k.startswith("model.diffusion_model.") and "_embeddings_connector." not in k}
    total, block, nblocks = _block_sizes(tr, r"transformer_blocks\.(\d+)\.", tr_bytes)
    part = lambda prefix: sum(_elems(s) * 2 for k, (s, _d) in head.items() if k.startswith(prefix))  # noqa: E731
    te = models.text_encoder
    if os.path.isfile(te):
        gem = _header(te)
    else:
        gem = {}
        for root, _dirs, files in os.walk(te):
            for name in files:
                if name.endswith(".safetensors"):
                    gem.update(_header(os.path.join(root, name)))
    gem_bytes = lambda k, s, d: 0 if k == "spiece_model" or k.endswith(("_scale", "_scale_2")) else \
        _elems(s) * (4 if d == "U8" else 2)  # noqa: E731  (bf16 after dequantization; nvfp4: 2 values per byte)
    gtotal, gblock, gblocks = _block_sizes(gem, r"(?:^|language_model\.|^model\.)layers\.(\d+)\.", gem_bytes)
    hidden = next((s[1] for k, (s, _d) in gem.items() if k.endswith("embed_tokens.weight")), 3840)
    up = 0
    if any(s.init == "latent_upsampler" for s in plan.stages) and models.spatial_upsampler:
        up = sum(_elems(s) * 2 for s, _d in _header(models.spatial_upsampler).values())
    cfg = checkpoint_config(plan.checkpoint).get("transformer", {})
    return Sizes(
        transformer=ModelSize(total, block, nblocks), text_encoder=ModelSize(gtotal, gblock, gblocks),
        video_encoder=part("vae.encoder.") + part("vae.per_channel"), video_decoder=part("vae.decoder."),
        audio=part("audio_vae.") + part("vocoder."), upsampler=up,
        video_width=int(cfg.get("num_attention_heads", 32)) * int(cfg.get("attention_head_dim", 128)),
        audio_width=int(cfg.get("audio_num_attention_heads", 32)) * int(cfg.get("audio_attention_head_dim", 64)),
        text_hidden=int(hidden), text_layers=max(1, gblocks))


#: LTX-2's audio VAE: 16 kHz, hop 160, 4x time compression
AUDIO_LATENTS_PER_SECOND = 16000 / 160 / 4


def stage_work(plan: RunPlan) -> Work:
    """Token and tile counts per stage of `plan` (what memory_plan needs)."""
    t = (plan.frames - 1) // 8 + 1
    audio_tokens = 0
    if plan.audio != "none":
        try:
            from ltx_core.types import AudioLatentShape, VideoPixelShape
        except ImportError:  # the native engine plans without ltx-core: LTX-2's 25 audio latents per second
            audio_tokens = math.ceil(plan.frames / plan.fps * AUDIO_LATENTS_PER_SECOND)
        else:
            audio_tokens = AudioLatentShape.from_video_pixel_shape(VideoPixelShape(
                batch=1, frames=plan.frames, width=plan.width, height=plan.height, fps=plan.fps)).frames
    stages, decodes, encodes = [], [], []
    for st in plan.stages:
        cells = t * (st.height // 32) * (st.width // 32)
        ref = cells // (st.reference_downscale ** 2) if st.reference else 0
        stages.append((cells + ref, audio_tokens))
    s1, s2 = plan.stages
    h1, w1 = s1.height // 32, s1.width // 32
    tile, ov, ttile, tov = plan.vae_tiles
    if s2.init == "pixels_x2":
        decodes.append(("after stage 1", (min(t, max(2, ttile // 8)), min(h1, tile // 32), min(w1, tile // 32))))
        encodes.append(("after stage 1", (plan.frames, min(s2.height, tile), min(s2.width, tile))))
    h2, w2 = s2.height // 32, s2.width // 32
    hx, vx, sov = plan.spatial_tiles
    decodes.append(("after stage 2", (t, (h2 + (vx - 1) * sov) // vx, (w2 + (hx - 1) * sov) // hx)))
    upsample = 128 * t * h1 * w1 * 4 * 4 if s2.init == "latent_upsampler" else 0
    return Work(TEXT_TOKENS, tuple(stages), tuple(decodes), tuple(encodes), upsample)


# -- helpers ---------------------------------------------------------------------------------------
class _stage_peak:
    """Measures the CUDA peak of a block into `peaks[name]` (nothing on CPU)."""

    def __init__(self, device: torch.device, peaks: dict, name: str):
        self.device, self.peaks, self.name = device, peaks, name

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peaks[self.name] = int(torch.cuda.max_memory_allocated(self.device))
        return False


def _seeded(decoder, seed: int, device: torch.device):
    """The decoder with its noise (timestep-conditioned VAEs add some) drawn from a generator seeded per call."""
    def decode(x):
        return decoder(x, generator=torch.Generator(device=device).manual_seed(int(seed) % 2**63))
    return decode


def _tiled_decode(decoder, latent, device, dtype, tile=512, overlap=64, ttile=512, tov=64) -> torch.Tensor:
    from .tiling import decode_tiled

    return decode_tiled(decoder, latent, device, dtype, tile, overlap, ttile, tov)


def _stage_summary(plan: RunPlan) -> str:
    parts = []
    for s in plan.stages:
        loras = "+".join(f"{lo.role.replace('_outpaint', '')} {lo.strength:g}" for lo in s.loras) or "no LoRA"
        parts.append(f"stage {s.index} {s.width}x{s.height} {s.sampler} {s.steps} steps cfg {s.cfg:g} ({loras})")
    return "; ".join(parts)


def reference_downscale_factor(path: str) -> int:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as fh:
        meta = fh.metadata() or {}
    try:
        factor = int(float(meta.get("reference_downscale_factor", 1)))
    except ValueError as exc:
        raise ValueError(f"ic_lora_outpaint: bad reference_downscale_factor in {path}: {exc}") from exc
    return max(1, factor)


def _resolve_device(device: str) -> torch.device:
    if device in ("", "auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for, but this machine has no usable CUDA GPU; "
                         "use 'auto' or 'cpu'")
    return dev


def _check_inputs(inputs: OutpaintInputs) -> None:
    f, h, w, c = inputs.placed.shape
    if c != 3:
        raise ValueError(f"placed: expected [F,H,W,3] frames, got {tuple(inputs.placed.shape)}")
    if h % 64 or w % 64:
        raise ValueError(f"resolution: {w}x{h} is not a multiple of 64 on both sides (the two-stage "
                         "pipeline needs that; the canvas node shows the snapped size)")
    if (f - 1) % 8:
        raise ValueError(f"num_frames: {f} is not of the form 8k+1 (9, 17, 25, ..., 121, ...)")
    if tuple(inputs.mask.shape[-2:]) != (h, w):
        raise ValueError(f"mask: {tuple(inputs.mask.shape)} does not match the canvas {w}x{h}")
    r = inputs.recipe
    if (r.width, r.height, r.frames) != (w, h, f):
        raise ValueError(f"recipe resolved for {r.width}x{r.height}x{r.frames}, frames are {w}x{h}x{f}")
    if r.fps <= 0:
        raise ValueError(f"frames_per_second: must be > 0, got {r.fps}")
    g = inputs.start_frames
    if g is not None and (g.dim() != 4 or tuple(g.shape[1:]) != (h, w, 3) or not 1 <= g.shape[0] < f):
        raise ValueError(f"start_frames: expected [k,{h},{w},3] with 1 <= k < {f}, got {tuple(g.shape)}")


def _model_video(frames: torch.Tensor, device, dtype) -> torch.Tensor:
    """[F,H,W,3] 0..1 -> [1,3,F,H,W] in -1..1 on `device` (ComfyUI's vae.encode input scaling)."""
    return (frames.permute(3, 0, 1, 2)[None] * 2.0 - 1.0).to(device=device, dtype=dtype)


def _process_rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # psutil missing or refused: no RAM figure
        return 0


def _available_ram() -> int:
    from ...media.decode import available_memory_bytes

    return available_memory_bytes()


__all__ = ["OutpaintPipeline", "PipelineConfig", "OutpaintInputs", "OutpaintOutput", "UserLora", "RunPlan",
           "StagePlan", "plan_run", "parameters", "release_kept_models", "model_sizes", "stage_work"]
