"""Planned peak VRAM of a local run, stage by stage (pure arithmetic: no torch, no files).

The ltx-core engine fills :class:`Sizes` from the model files' headers and :class:`Work` from the resolved recipe,
shows :func:`plan` before the run (log and node text), picks block offloading for a model whose stages would not
fit (:func:`choose_offload`) and reports the measured peak per stage after a CUDA run.

What a stage holds on the GPU:

- weights: the whole model, or with block offloading the model without its repeated blocks plus two blocks (the
  one running and the next one being copied in);
- transformer activations, per token of width D (bf16 unless said): hidden state, residual, norm, the
  feed-forward's 4D input and 4D GELU output (10 D), the per-token AdaLN coefficients and embedded timestep
  (LTX-2.3 with cross-attention AdaLN: 9 D + D, kept through all blocks: 10 D), RoPE cos / sin in float32
  (D values of 4 bytes): :data:`ACT_BYTES_PER_TOKEN_DIM` = 44 bytes per token per unit of width;
- Gemma: the hidden states of every layer are kept for the feature extractor ((layers + 1) x tokens x hidden)
  plus 10 x tokens x hidden transient;
- VAE: ComfyUI's own planning formulas for the LTX video VAE (ComfyUI 0.20.1 ``comfy/sd.py``): decode
  ``1200 * T * h * w * 512`` elements for a latent tile of T x h x w, encode ``80 * max(F, 7) * H * W`` for a pixel
  tile of F x H x W, at 2 bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

GiB = 2 ** 30
ACT_BYTES_PER_TOKEN_DIM = 44
GEMMA_TRANSIENT = 10
VAE_DECODE_ELEMS = 1200 * 512  # per latent cell (T x h x w)
VAE_ENCODE_ELEMS = 80  # per pixel (max(F, 7) x H x W)
#: what the CUDA context, cuBLAS workspaces and the allocator's fragmentation take beyond tensors
RESERVE = int(1.0 * GiB)


@dataclass(frozen=True)
class ModelSize:
    """A model's parameter bytes at the precision it will run in, split into its repeated blocks and the rest."""

    total: int
    block: int = 0  # the largest block (0: no blocks to stream)
    blocks: int = 0

    def resident(self, offload: bool) -> int:
        if not offload or not self.blocks:
            return self.total
        return self.total - self.block * self.blocks + 2 * self.block


@dataclass(frozen=True)
class Sizes:
    transformer: ModelSize
    text_encoder: ModelSize
    video_encoder: int
    video_decoder: int
    audio: int = 0  # audio encoder + decoder + vocoder
    upsampler: int = 0
    video_width: int = 4096  # transformer widths (heads x head size)
    audio_width: int = 2048
    text_hidden: int = 3840
    text_layers: int = 48


@dataclass(frozen=True)
class Work:
    """What the resolved recipe asks of each stage (token and tile counts)."""

    text_tokens: int = 1024
    stages: tuple[tuple[int, int], ...] = ()  # (video tokens incl. reference tokens, audio tokens) per stage
    decode_tiles: tuple[tuple[str, tuple[int, int, int]], ...] = ()  # (stage name, latent tile T x h x w)
    encode_tiles: tuple[tuple[str, tuple[int, int, int]], ...] = ()  # (stage name, pixel tile F x H x W)
    upsample_latent: int = 0  # bytes of the latent the spatial upsampler works on (0: not used)


@dataclass(frozen=True)
class StagePeak:
    name: str
    weights: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.activations + RESERVE


@dataclass(frozen=True)
class MemoryPlan:
    stages: tuple[StagePeak, ...]
    offload_transformer: bool
    offload_text: bool
    notes: tuple[str, ...] = field(default=())

    @property
    def peak(self) -> int:
        return max(s.total for s in self.stages)

    def describe(self) -> str:
        parts = ", ".join(f"{s.name} {s.total / GiB:.1f}" for s in self.stages)
        mode = ("blocks" if self.offload_transformer else "none") + \
            (", text encoder blocks" if self.offload_text else "")
        return f"planned peak VRAM {self.peak / GiB:.1f} GiB (offload: {mode}; GiB per stage: {parts})"


def transformer_activations(video_tokens: int, audio_tokens: int, video_width: int, audio_width: int) -> int:
    return ACT_BYTES_PER_TOKEN_DIM * (video_tokens * video_width + audio_tokens * audio_width)


def text_activations(tokens: int, hidden: int, layers: int) -> int:
    return 2 * tokens * hidden * (layers + 1 + GEMMA_TRANSIENT)


def vae_decode_bytes(t: int, h: int, w: int) -> int:
    return 2 * VAE_DECODE_ELEMS * t * h * w


def vae_encode_bytes(f: int, h: int, w: int) -> int:
    return 2 * VAE_ENCODE_ELEMS * max(f, 7) * h * w


def plan(sizes: Sizes, work: Work, *, offload_transformer: bool, offload_text: bool) -> MemoryPlan:
    """Peak VRAM per stage for these sizes and this work, with or without block offloading."""
    stages = [StagePeak("text", sizes.text_encoder.resident(offload_text),
                        text_activations(work.text_tokens, sizes.text_hidden, sizes.text_layers))]
    for i, (video, audio) in enumerate(work.stages):
        stages.append(StagePeak(f"stage {i + 1}", sizes.transformer.resident(offload_transformer),
                                transformer_activations(video, audio, sizes.video_width, sizes.audio_width)))
        name = f"after stage {i + 1}"
        for where, (t, h, w) in work.decode_tiles:
            if where == name:
                stages.append(StagePeak(f"decode {i + 1}", sizes.video_decoder, vae_decode_bytes(t, h, w)))
        for where, (f, h, w) in work.encode_tiles:
            if where == name:
                stages.append(StagePeak(f"encode {i + 2}", sizes.video_encoder, vae_encode_bytes(f, h, w)))
        if work.upsample_latent and i == 0:
            stages.append(StagePeak("upsample", sizes.upsampler + sizes.video_encoder, 6 * work.upsample_latent))
    if sizes.audio:
        stages.append(StagePeak("audio", sizes.audio, 0))
    return MemoryPlan(tuple(stages), offload_transformer, offload_text)


def choose_offload(sizes: Sizes, work: Work, total_vram: int, mode: str) -> MemoryPlan:
    """The plan for `mode` ("none", "blocks", or "auto": blocks for each model whose stages would not fit
    `total_vram`; a CPU run passes total_vram 0 and auto never offloads there)."""
    if mode == "blocks":
        return plan(sizes, work, offload_transformer=True, offload_text=True)
    if mode == "none" or total_vram <= 0:
        return plan(sizes, work, offload_transformer=False, offload_text=False)
    full = plan(sizes, work, offload_transformer=False, offload_text=False)
    text = full.stages[0].total > total_vram
    transformer = any(s.total > total_vram for s in full.stages if s.name.startswith("stage "))
    out = plan(sizes, work, offload_transformer=transformer, offload_text=text)
    notes = ()
    if out.peak > total_vram:
        notes = (f"the plan ({out.peak / GiB:.1f} GiB) exceeds this GPU's {total_vram / GiB:.1f} GiB even with "
                 "block offloading: expect an out-of-memory error; use fp8 or a smaller canvas / fewer frames",)
    return MemoryPlan(out.stages, out.offload_transformer, out.offload_text, notes)
