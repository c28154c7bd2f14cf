"""LTX-2.3 outpainting with Lightricks' ltx-core: the official IC-LoRA outpaint recipe as one engine.

Pure engine module (no ComfyUI). Imported only when a local run starts: it pulls in ltx-core,
ltx-pipelines and transformers.

The recipe (Lightricks' LTX-2.3 ICLoRA outpaint workflow, two stages):

1. Text: Gemma encodes the prompt (and the negative prompt when CFG is on), optionally after Gemma's
   prompt enhancement; the text encoder is freed before anything else loads.
2. Stage 1 at half size: the canvas composite (source placed, the area to generate painted flat green)
   is VAE-encoded as the IC-LoRA in-context reference (positions scaled by the LoRA's
   ``reference_downscale_factor``), its tokens kept clean by ``video_strength``; the source audio,
   when there is one, is encoded and frozen, so the new picture matches the sound.
   The transformer carries the in/outpaint IC-LoRA, the user's LoRAs (each on its ``transformer``
   target) and, in quality mode, the distilled LoRA.
3. Between stages: decode, put the original pixels back with a pyramid blend, re-encode, 2x latent
   upsampler.
4. Stage 2 at full size: 3 distilled sigmas without the reference; tiled VAE decode; final pyramid blend.

Modes: ``quality`` = dev checkpoint + distilled LoRA (0.25 / 0.5), res_2s sampler with
``num_inference_steps`` on the LTX-2 schedule, CFG with the negative prompt when guidance_scale > 1;
``fast`` = distilled checkpoint, the fixed 8-sigma distilled schedule, Euler, no CFG.

Memory: one model on the device at a time (text encoder -> free -> VAE encoders -> free -> transformer
-> free -> VAE ...), optional fp8 transformer weights (fp8 checkpoint, or cast on the fly), tiled VAE
decode. ``keep_loaded`` keeps the checkpoint's weights in CPU RAM between runs (ltx-core's state-dict
registry) and the last prompt encoding, so a second run skips disk reads and Gemma.
"""
from __future__ import annotations

import gc
import logging
import resource
import sys
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..blend import pyramid_blend
from ..recipe import OFFICIAL
from ...media.canvas import Rect
from ..models import ResolvedModels
from ...media.decode import Audio

log = logging.getLogger(__name__)

IC_LORA_STRENGTH = 1.0
#: Distilled-LoRA strength on the dev checkpoint in quality mode, stage 1 / stage 2 (ltx-pipelines' HQ).
DISTILLED_LORA_STRENGTHS = (0.25, 0.5)
#: Audio CFG relative to video CFG (ltx-pipelines' HQ defaults: video 3, audio 7).
AUDIO_CFG_RATIO = 7.0 / 3.0
PRECISIONS = ("auto", "bf16", "fp8")
MODES = ("quality", "fast")


@dataclass(frozen=True)
class UserLora:
    """A user LoRA, already on disk: `target` is both|video|audio (see lora_targets)."""

    path: str
    scale: float
    target: str = "both"


@dataclass
class OutpaintInputs:
    """One job in canvas space: `composite` [F,H,W,3] 0..1 (source placed, fill colour elsewhere;
    H and W multiples of 64, F = 8k+1) and the source rectangle on it."""

    composite: torch.Tensor
    source_rect: Rect
    fps: float
    prompt: str
    seed: int
    negative_prompt: str = ""
    num_inference_steps: int = 15
    guidance_scale: float = 1.0
    video_strength: float = 1.0
    generate_audio: bool = True
    #: Source audio fitted to the output duration; None (or silent) -> audio is generated from noise.
    source_audio: Audio | None = None
    enhance_prompt: bool = False
    loras: tuple[UserLora, ...] = ()


@dataclass
class OutpaintOutput:
    frames: torch.Tensor  # [F,H,W,3] float32 0..1
    audio: Audio | None
    prompt: str
    peak_memory_bytes: int
    memory_kind: str  # "VRAM" (CUDA peak allocated) or "RAM" (process peak RSS)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PipelineConfig:
    models: ResolvedModels
    device: str = "auto"  # "auto" (CUDA when available), "cuda", "cuda:1", "cpu"
    precision: str = "auto"  # auto | bf16 | fp8 (transformer weights)
    keep_loaded: bool = False
    tiled_decode: bool = True
    #: Seam band (pixels at full size) over which original and generated pixels are blended.
    blend_band: int = 16
    #: Longest expanded prompt Gemma may write (tokens).
    enhance_max_tokens: int = 512
    #: Called once before our first model loads (the ComfyUI adapter frees ComfyUI's own models).
    free_memory: Callable[[], None] | None = None


class StepTracker:
    """Counts transformer evaluations across both stages; checks for interruption before each."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.done = progress, max(1, total), 0
        self.label = ""
        self.stage_calls = 0
        self.stage_total = 1

    def stage(self, label: str, calls: int) -> None:
        self.label, self.stage_calls, self.stage_total = label, 0, max(1, calls)

    def wrap(self, denoise_fn):
        def tracked(video_state, audio_state, sigmas, step_index):
            self.progress.check()
            out = denoise_fn(video_state, audio_state, sigmas, step_index)
            self.done += 1
            self.stage_calls += 1
            self.progress.report(self.done, self.total,
                                 f"{self.label}: step {self.stage_calls}/{self.stage_total}")
            return out
        return tracked


def evaluations(mode: str, steps: int) -> tuple[int, int]:
    """Transformer evaluations (progress units) of stage 1 and stage 2 for `mode`."""
    from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES

    s2 = len(STAGE_2_DISTILLED_SIGMA_VALUES) - 1
    if mode == "fast":
        return len(DISTILLED_SIGMA_VALUES) - 1, s2
    return 2 * steps + 1, 2 * s2 + 1  # res_2s: two evaluations per step plus the final clean-up


class _SharedState:
    """What `keep_loaded` keeps between runs: ltx-core's CPU state-dict registry and the last prompt."""

    registry = None
    registry_key: tuple | None = None
    text_cache: dict = {}


def release_kept_models() -> None:
    """Drop everything `keep_loaded` kept (weights in RAM, cached prompt encodings)."""
    _SharedState.registry = None
    _SharedState.registry_key = None
    _SharedState.text_cache = {}
    gc.collect()


class OutpaintPipeline:
    def __init__(self, config: PipelineConfig):
        from . import compat as ltx_compat

        if config.models.mode not in MODES:
            raise ValueError(f"mode: got {config.models.mode!r}; allowed: {', '.join(MODES)}")
        if config.precision not in PRECISIONS:
            raise ValueError(f"precision: got {config.precision!r}; allowed: {', '.join(PRECISIONS)}")
        self.config = config
        self.models = config.models
        self.mode = config.models.mode
        self.device = _resolve_device(config.device)
        self.dtype = torch.bfloat16  # ltx-core fuses LoRAs into bf16 / fp8 weights only
        self.compat = ltx_compat
        self.fp8 = self._use_fp8()
        self._live: list[tuple[str, weakref.ref]] = []
        self.notes: list[str] = []

    # -- bookkeeping -------------------------------------------------------------------------------
    def _use_fp8(self) -> bool:
        ckpt = self.models.dev if self.mode == "quality" else self.models.distilled
        if self.config.precision == "fp8":
            return True
        if self.config.precision == "bf16":
            return False
        if "fp8" in str(ckpt).lower():
            return True
        if self.device.type == "cuda":  # auto: fp8 below ~60 GB of VRAM
            total = torch.cuda.get_device_properties(self.device).total_memory
            return total < 60 * 2**30
        return False

    def live_models(self) -> list[str]:
        """Names of models built by this pipeline that are still alive (for tests and diagnostics)."""
        gc.collect()
        return [name for name, ref in self._live if ref() is not None]

    def _track(self, name: str, model):
        self.compat.assert_no_meta(model, name)
        self._live.append((name, weakref.ref(model)))
        log.debug("loaded %s", name)
        return model

    def _load(self, ledger, name: str, what: str | None = None):
        return self._track(what or name, self.compat.ledger_model(ledger, name, what))

    def _free(self) -> None:
        self.compat.cleanup_memory(self.device)

    def _ledger(self, checkpoint: str, loras: tuple = ()):
        from ltx_core.loader import DummyRegistry, StateDictRegistry
        from ltx_core.quantization import QuantizationPolicy
        from ltx_pipelines.utils.model_ledger import ModelLedger

        registry = DummyRegistry()
        if self.config.keep_loaded:
            key = (checkpoint, self.models.spatial_upsampler, self.fp8)
            if _SharedState.registry is None or _SharedState.registry_key != key:
                _SharedState.registry, _SharedState.registry_key = StateDictRegistry(), key
            registry = _SharedState.registry
        return ModelLedger(dtype=self.dtype, device=self.device, checkpoint_path=checkpoint,
                           spatial_upsampler_path=self.models.spatial_upsampler, loras=tuple(loras),
                           registry=registry,
                           quantization=QuantizationPolicy.fp8_cast() if self.fp8 else None)

    def _stage_loras(self, inputs: OutpaintInputs, stage: int) -> tuple:
        from ltx_core.loader import LoraPathStrengthAndSDOps

        from ..lora_targets import lora_sd_ops

        loras = [LoraPathStrengthAndSDOps(lo.path, float(lo.scale), lora_sd_ops(lo.path, lo.target))
                 for lo in inputs.loras if lo.scale != 0]
        if stage == 1:
            loras.append(LoraPathStrengthAndSDOps(self.models.ic_lora_outpaint, IC_LORA_STRENGTH,
                                                  lora_sd_ops(self.models.ic_lora_outpaint, "both")))
        if self.mode == "quality":
            loras.append(LoraPathStrengthAndSDOps(self.models.distilled_lora, DISTILLED_LORA_STRENGTHS[stage - 1],
                                                  lora_sd_ops(self.models.distilled_lora, "both")))
        return tuple(loras)

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
        from ltx_core.components.noisers import GaussianNoiser
        from ltx_core.model.upsampler import upsample_video
        from ltx_core.types import AudioLatentShape, VideoPixelShape
        from ltx_pipelines.utils.types import PipelineComponents

        _check_inputs(inputs)
        t0 = time.perf_counter()
        seconds: dict[str, float] = {}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.config.free_memory is not None:
            self.config.free_memory()
        notes: list[str] = []
        if self.fp8:
            notes.append("transformer weights in fp8 (upcast per layer during inference)")
        f, h, w, _ = inputs.composite.shape
        checkpoint = self.models.dev if self.mode == "quality" else self.models.distilled
        ledger = self._ledger(checkpoint)
        cfg = self.mode == "quality" and inputs.guidance_scale > 1.0
        n1, n2 = evaluations(self.mode, inputs.num_inference_steps)
        tracker = StepTracker(progress, n1 + n2)
        components = PipelineComponents(dtype=self.dtype, device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(inputs.seed)
        noiser = GaussianNoiser(generator=generator)

        # 1. Text.
        progress.report(0, tracker.total, "encoding the prompt (Gemma)")
        progress.check()
        prompt, v_ctx, a_ctx, v_neg, a_neg = self._encode_text(inputs, ledger, cfg)
        seconds["text"] = time.perf_counter() - t0

        # 2. Stage-1 conditioning: the composite as IC reference, the source audio frozen.
        progress.check()
        t = time.perf_counter()
        shape1 = VideoPixelShape(batch=1, frames=f, width=w // 2, height=h // 2, fps=inputs.fps)
        factor = _reference_downscale_factor(self.models.ic_lora_outpaint)
        if (h // 2) % (32 * factor) or (w // 2) % (32 * factor):
            raise ValueError(f"resolution: {w}x{h} cannot use the IC-LoRA's reference_downscale_factor "
                             f"{factor}; sides must be multiples of {64 * factor}")
        encoder = self._load(ledger, "video_encoder")
        ref = _to_model_video(inputs.composite, h // 2 // factor, w // 2 // factor, self.device, self.dtype)
        ref_latent = encoder(ref)
        del ref, encoder
        frozen_audio = None
        audio_real = inputs.source_audio is not None and not inputs.source_audio.silent
        if audio_real:
            frozen_audio = self._encode_audio(inputs.source_audio, ledger,
                                              AudioLatentShape.from_video_pixel_shape(shape1).frames)
        self._free()
        seconds["encode"] = time.perf_counter() - t

        # 3. Stage 1.
        from ltx_core.conditioning import VideoConditionByReferenceLatent

        conditionings = [VideoConditionByReferenceLatent(latent=ref_latent, downscale_factor=factor,
                                                         strength=float(inputs.video_strength))]
        t = time.perf_counter()
        tracker.stage(f"stage 1/2 ({w // 2}x{h // 2})", n1)
        video_latent, audio_latent = self._denoise(
            1, ledger.with_loras(self._stage_loras(inputs, 1)), inputs, tracker, shape1, conditionings,
            noiser, components, (v_ctx, a_ctx, v_neg, a_neg), cfg, frozen_audio=frozen_audio)
        del conditionings, ref_latent
        self._free()
        seconds["stage1"] = time.perf_counter() - t

        # 4. Between stages: decode, put the original back, re-encode, 2x latent upsample.
        progress.check()
        t = time.perf_counter()
        half = self._decode_video(ledger, video_latent, generator, tiled=False)
        half_composite = _resize_frames(inputs.composite, h // 2, w // 2)
        half_rect = Rect(inputs.source_rect.x // 2, inputs.source_rect.y // 2,
                         inputs.source_rect.width // 2, inputs.source_rect.height // 2)
        half_mask = torch.ones(h // 2, w // 2)
        half_mask[half_rect.y:half_rect.y + half_rect.height, half_rect.x:half_rect.x + half_rect.width] = 0
        half = pyramid_blend(half, half_composite, half_mask, dilation=OFFICIAL.stages[0].blend_dilation)
        del half_composite
        encoder = self._load(ledger, "video_encoder")
        latent = encoder(_to_model_video(half, h // 2, w // 2, self.device, self.dtype))
        del half
        upsampler = self._load(ledger, "spatial_upsampler")
        upscaled = upsample_video(latent=latent, video_encoder=encoder, upsampler=upsampler)
        del encoder, upsampler, latent, video_latent
        self._free()
        seconds["upsample"] = time.perf_counter() - t

        # 5. Stage 2: refine at full size (no reference).
        t = time.perf_counter()
        shape2 = VideoPixelShape(batch=1, frames=f, width=w, height=h, fps=inputs.fps)
        tracker.stage(f"stage 2/2 ({w}x{h})", n2)
        video_latent, audio_latent = self._denoise(
            2, ledger.with_loras(self._stage_loras(inputs, 2)), inputs, tracker, shape2, [],
            noiser, components, (v_ctx, a_ctx, v_neg, a_neg), False, frozen_audio=frozen_audio,
            initial_video=upscaled, initial_audio=audio_latent)
        del upscaled
        self._free()
        seconds["stage2"] = time.perf_counter() - t

        # 6. Decode and put the original pixels back.
        progress.check()
        progress.report(tracker.total, tracker.total, "decoding")
        t = time.perf_counter()
        frames = self._decode_video(ledger, video_latent, generator, tiled=self.config.tiled_decode)
        r = inputs.source_rect
        final_mask = torch.ones(h, w)
        final_mask[r.y:r.y + r.height, r.x:r.x + r.width] = 0
        frames = pyramid_blend(frames, inputs.composite, final_mask, dilation=OFFICIAL.stages[1].blend_dilation)
        audio = None
        if inputs.generate_audio:
            if audio_real:
                audio = inputs.source_audio
                notes.append("audio: the source audio (it steered generation as frozen reference tokens)")
            else:
                audio = self._decode_audio(ledger, audio_latent, f / inputs.fps)
                notes.append("audio: generated (the source has no audio)")
        del video_latent, audio_latent
        seconds["decode"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - t0
        peak, kind = _peak_memory(self.device)
        log.info("local LTX-2.3 %s run: %dx%dx%d in %.1f s, peak %s %.2f GiB", self.mode, w, h, f,
                 seconds["total"], kind, peak / 2**30)
        return OutpaintOutput(frames, audio, prompt, peak, kind, seconds, self.notes + notes)

    # -- pieces ------------------------------------------------------------------------------------
    def _encode_text(self, inputs: OutpaintInputs, ledger, cfg: bool):
        key = (self.models.text_encoder, checkpoint_key(ledger), inputs.prompt,
               inputs.negative_prompt if cfg else None, inputs.enhance_prompt,
               inputs.seed if inputs.enhance_prompt else None, str(self.device))
        cached = _SharedState.text_cache.get(key) if self.config.keep_loaded else None
        if cached is not None:
            log.info("prompt encoding reused (keep_loaded)")
            return cached
        text_encoder = self._track("text_encoder", self.compat.load_text_encoder(
            self.models.text_encoder, self.device, self.dtype))
        prompt = inputs.prompt
        if inputs.enhance_prompt:
            prompt = self._enhance(text_encoder, inputs)
        prompts = [prompt] + ([inputs.negative_prompt] if cfg else [])
        raw = [text_encoder.encode(p) for p in prompts]
        del text_encoder
        self._free()
        processor = self._track("embeddings_processor", self.compat.load_embeddings_processor(
            ledger.checkpoint_path, self.models.text_encoder, self.device, self.dtype))
        outs = [processor.process_hidden_states(hs, mask) for hs, mask in raw]
        del processor, raw
        self._free()
        v_neg = outs[1].video_encoding if cfg else None
        a_neg = outs[1].audio_encoding if cfg else None
        result = (prompt, outs[0].video_encoding, outs[0].audio_encoding, v_neg, a_neg)
        if self.config.keep_loaded:
            _SharedState.text_cache = {key: result}
        return result

    def _enhance(self, text_encoder, inputs: OutpaintInputs) -> str:
        from ltx_pipelines.utils.helpers import clean_response

        r = inputs.source_rect
        first = inputs.composite[0, r.y:r.y + r.height, r.x:r.x + r.width]
        long_side = max(first.shape[0], first.shape[1])
        if long_side > 896:
            scale = 896 / long_side
            first = _resize_frames(first[None], max(1, round(first.shape[0] * scale)),
                                   max(1, round(first.shape[1] * scale)))[0]
        image = (first.clamp(0, 1) * 255).round().to(torch.uint8)
        try:
            enhanced = clean_response(self.compat.enhance_prompt(text_encoder, inputs.prompt, image,
                                                                 seed=inputs.seed % 2**63,
                                                                 max_new_tokens=self.config.enhance_max_tokens))
        except Exception as exc:  # a broken enhancer must not lose the run: fall back to the prompt
            log.warning("prompt expansion failed (%s); using the prompt as given", exc)
            self.notes.append(f"prompt expansion failed: {exc}")
            return inputs.prompt
        log.info("expanded prompt: %s", enhanced)
        return enhanced or inputs.prompt

    def _encode_audio(self, audio: Audio, ledger, frames: int) -> torch.Tensor:
        from ltx_core.model.audio_vae import encode_audio
        from ltx_core.types import Audio as LtxAudio

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
        return latent[:, :, :frames].to(self.dtype)

    def _denoise(self, stage: int, ledger, inputs: OutpaintInputs, tracker: StepTracker, shape, conditionings,
                 noiser, components, contexts, cfg: bool, *, frozen_audio=None, initial_video=None,
                 initial_audio=None):
        from ltx_core.components.diffusion_steps import EulerDiffusionStep, Res2sDiffusionStep
        from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
        from ltx_core.components.schedulers import LTX2Scheduler
        from ltx_core.types import VideoLatentShape
        from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
        from ltx_pipelines.utils.helpers import (denoise_audio_video, denoise_video_only,
                                                 multi_modal_guider_denoising_func, simple_denoising_func)
        from ltx_pipelines.utils.samplers import euler_denoising_loop, res2s_audio_video_denoising_loop

        v_ctx, a_ctx, v_neg, a_neg = contexts
        transformer = self._load(ledger, "transformer", f"transformer (stage {stage})")
        if stage == 2:
            sigmas = torch.tensor(STAGE_2_DISTILLED_SIGMA_VALUES, dtype=torch.float32, device=self.device)
        elif self.mode == "fast":
            sigmas = torch.tensor(DISTILLED_SIGMA_VALUES, dtype=torch.float32, device=self.device)
        else:
            empty = torch.empty(VideoLatentShape.from_pixel_shape(shape).to_torch_shape())
            sigmas = LTX2Scheduler().execute(latent=empty, steps=inputs.num_inference_steps).to(
                dtype=torch.float32, device=self.device)
        if cfg:
            g = float(inputs.guidance_scale)
            denoise = multi_modal_guider_denoising_func(
                video_guider=MultiModalGuider(params=MultiModalGuiderParams(cfg_scale=g, rescale_scale=0.45),
                                              negative_context=v_neg),
                audio_guider=MultiModalGuider(params=MultiModalGuiderParams(cfg_scale=g * AUDIO_CFG_RATIO,
                                                                            rescale_scale=1.0),
                                              negative_context=a_neg),
                v_context=v_ctx, a_context=a_ctx, transformer=transformer)
        else:
            denoise = simple_denoising_func(video_context=v_ctx, audio_context=a_ctx, transformer=transformer)
        denoise = tracker.wrap(denoise)
        seed = int(inputs.seed) + stage

        def loop(sigmas_, video_state, audio_state, stepper):
            if self.mode == "quality":
                return res2s_audio_video_denoising_loop(sigmas=sigmas_, video_state=video_state,
                                                        audio_state=audio_state, stepper=stepper,
                                                        denoise_fn=denoise, noise_seed=seed % 2**62)
            return euler_denoising_loop(sigmas=sigmas_, video_state=video_state, audio_state=audio_state,
                                        stepper=stepper, denoise_fn=denoise)

        stepper = Res2sDiffusionStep() if self.mode == "quality" else EulerDiffusionStep()
        common = dict(output_shape=shape, conditionings=conditionings, noiser=noiser, sigmas=sigmas,
                      stepper=stepper, denoising_loop_fn=loop, components=components, dtype=self.dtype,
                      device=self.device, initial_video_latent=initial_video)
        if initial_video is not None:
            common["noise_scale"] = float(sigmas[0])
        try:
            with _quiet_tqdm():
                if frozen_audio is not None:
                    video_state = denoise_video_only(initial_audio_latent=frozen_audio, **common)
                    return video_state.latent, None
                video_state, audio_state = denoise_audio_video(initial_audio_latent=initial_audio, **common)
                return video_state.latent, audio_state.latent
        finally:
            del transformer, denoise

    def _decode_video(self, ledger, latent: torch.Tensor, generator, tiled: bool) -> torch.Tensor:
        from ltx_core.model.video_vae import TilingConfig, decode_video

        decoder = self._load(ledger, "video_decoder")
        chunks = [c.to("cpu") for c in decode_video(latent, decoder, TilingConfig.default() if tiled else None,
                                                    generator)]
        del decoder
        self._free()
        frames = torch.cat(chunks, dim=0) if len(chunks) > 1 else chunks[0]
        return frames.float().div_(255.0)

    def _decode_audio(self, ledger, latent: torch.Tensor, duration: float) -> Audio:
        from ltx_core.model.audio_vae import decode_audio

        # Audio decoder and vocoder in float32: ltx-core 1.0.0 runs them in bf16, which later upstream
        # versions dropped for audio quality (and oneDNN has no bf16 transposed-conv kernel for some shapes).
        decoder = self._load(ledger, "audio_decoder").float()
        vocoder = self._load(ledger, "vocoder").float()
        out = decode_audio(latent.float(), decoder, vocoder)
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


# -- helpers ---------------------------------------------------------------------------------------
def checkpoint_key(ledger) -> str:
    return str(getattr(ledger, "checkpoint_path", ""))


def _resolve_device(device: str) -> torch.device:
    if device in ("", "auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for, but this machine has no usable CUDA GPU; "
                         "use 'auto' or 'cpu'")
    return dev


def _check_inputs(inputs: OutpaintInputs) -> None:
    f, h, w, c = inputs.composite.shape
    if c != 3:
        raise ValueError(f"composite: expected [F,H,W,3] frames, got {tuple(inputs.composite.shape)}")
    if h % 64 or w % 64:
        raise ValueError(f"resolution: {w}x{h} is not a multiple of 64 on both sides (the two-stage "
                         "pipeline needs that; the canvas node shows the snapped size)")
    if (f - 1) % 8:
        raise ValueError(f"num_frames: {f} is not of the form 8k+1 (9, 17, 25, ..., 121, ...)")
    if inputs.fps <= 0:
        raise ValueError(f"frames_per_second: must be > 0, got {inputs.fps}")


def _reference_downscale_factor(path: str) -> int:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as fh:
        meta = fh.metadata() or {}
    try:
        factor = int(meta.get("reference_downscale_factor", 1))
    except ValueError as exc:
        raise ValueError(f"ic_lora_outpaint: bad reference_downscale_factor in {path}: {exc}") from exc
    return max(1, factor)


def _resize_frames(frames: torch.Tensor, height: int, width: int, chunk: int = 16) -> torch.Tensor:
    """[F,H,W,3] -> [F,height,width,3] (area-style antialiased bilinear), chunked."""
    if frames.shape[1:3] == (height, width):
        return frames.clone()
    out = torch.empty(frames.shape[0], height, width, 3, dtype=torch.float32)
    for s in range(0, frames.shape[0], chunk):
        x = frames[s:s + chunk].permute(0, 3, 1, 2).float()
        out[s:s + chunk] = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True,
                                         align_corners=False).clamp_(0, 1).permute(0, 2, 3, 1)
    return out


def _to_model_video(frames: torch.Tensor, height: int, width: int, device, dtype) -> torch.Tensor:
    """[F,H,W,3] 0..1 -> [1,3,F,height,width] in -1..1 on `device`."""
    x = _resize_frames(frames, height, width)
    return (x.permute(3, 0, 1, 2)[None] * 2.0 - 1.0).to(device=device, dtype=dtype)


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "VRAM"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "RAM"


class _quiet_tqdm:
    """ltx-pipelines' loops draw tqdm bars on stderr; our progress goes through `Progress` instead."""

    def __enter__(self):
        import ltx_pipelines.utils.samplers as samplers

        self._samplers, self._orig = samplers, samplers.tqdm
        samplers.tqdm = lambda it, *a, **k: it
        return self

    def __exit__(self, *exc):
        self._samplers.tqdm = self._orig
        return False


__all__ = ["OutpaintPipeline", "PipelineConfig", "OutpaintInputs", "OutpaintOutput", "UserLora",
           "release_kept_models", "evaluations"]
