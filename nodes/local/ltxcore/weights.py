"""Build the LTX-2.3 transformer from a single-file checkpoint with LoRAs fused, in bf16 or scaled fp8.

ltx-core's own builder fuses LoRAs into bf16 weights, casts fp8 without a scale, reads a per-tensor scaled fp8
checkpoint (ComfyUI's format, Lightricks' ``-fp8`` files) as if it had no scales, and fails inside LoRA fusing on
one. This builder reads every tensor through :mod:`.quant` (scaled fp8 / nvfp4 layers dequantized), fuses each
LoRA's ``strength * B @ A`` (``* alpha / rank`` when the file has ``.alpha``, as ComfyUI does) in float32, and
stores each weight

- in bf16 (``fp8=False``), or
- for the ``Linear`` layers of the transformer blocks in per-tensor scaled fp8 (``fp8=True``): the checkpoint's
  own fp8 weight and scale when no LoRA touches it, else the fused weight re-quantized with a fresh absmax
  scale; :class:`ScaledFp8Linear` multiplies the scale back in bf16 at every forward (ComfyUI's
  ``TensorCoreFP8Layout`` fallback). Everything else stays bf16.

One tensor at a time: peak host memory is the built model plus one tensor. The model is built on `device`
(the GPU when it holds the whole model, else the CPU for block offloading).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .quant import FP8_DTYPES, QuantizedSafetensors, quantize_fp8_per_tensor

log = logging.getLogger(__name__)

BLOCKS_PREFIX = "transformer_blocks."


@dataclass(frozen=True)
class LoraWeights:
    """A LoRA to fuse: its file, strength and the ltx-core SDOps that select and rename its keys."""

    path: str
    strength: float
    sd_ops: object = None


class ScaledFp8Linear(torch.nn.Module):
    """A Linear whose weight is fp8 with a per-tensor float32 scale; computes in the input's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features, dtype=torch.float8_e4m3fn,
                                                     device=device), requires_grad=False)
        self.register_buffer("weight_scale", torch.ones((), dtype=torch.float32, device=device))
        self.bias = torch.nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias \
            else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_scale.to(x.dtype)
        return F.linear(x, w, self.bias.to(x.dtype) if self.bias is not None else None)


def use_scaled_fp8(model: torch.nn.Module) -> list[str]:
    """Replace every Linear inside the transformer blocks with :class:`ScaledFp8Linear` (on the meta device)."""
    names = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and n.startswith(BLOCKS_PREFIX)]
    for name in names:
        parent_name, attr = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        lin = getattr(parent, attr)
        setattr(parent, attr, ScaledFp8Linear(lin.in_features, lin.out_features, lin.bias is not None, "meta"))
    return names


def checkpoint_config(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"checkpoint: {os.path.basename(path)} has no 'config' metadata; it is not a Lightricks "
                         "LTX-2.3 single-file checkpoint (get ltx-2.3-22b-dev.safetensors from "
                         "https://huggingface.co/Lightricks/LTX-2.3)")
    return json.loads(meta["config"])


def _lora_state(lora: LoraWeights) -> dict[str, torch.Tensor]:
    from ltx_core.loader.sft_loader import SafetensorsStateDictLoader

    return SafetensorsStateDictLoader().load(lora.path, sd_ops=lora.sd_ops, device=torch.device("cpu")).sd


def _delta(prefix: str, loras: list[tuple[dict, float]], device, used: set) -> torch.Tensor | None:
    total = None
    for i, (sd, strength) in enumerate(loras):
        a, b = sd.get(prefix + ".lora_A.weight"), sd.get(prefix + ".lora_B.weight")
        if a is None or b is None:
            continue
        used.add((i, prefix))
        scale = float(strength)
        alpha = sd.get(prefix + ".alpha")
        if alpha is not None:
            scale *= float(alpha) / a.shape[0]
        d = (b.to(device, torch.float32) * scale) @ a.to(device, torch.float32)
        total = d if total is None else total.add_(d)
    return total


def build_transformer(checkpoint: str, loras: tuple[LoraWeights, ...] = (), *, fp8: bool = False,
                      device: torch.device | str = "cpu", source: QuantizedSafetensors | None = None):
    """ltx-core's X0Model(LTXModel) with `loras` fused; weights read from `source` (default: the file)."""
    from ltx_core.model.transformer import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator, X0Model

    from .compat import assert_no_meta

    device = torch.device(device)
    config = checkpoint_config(checkpoint)
    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(config)
    fp8_layers = set(use_scaled_fp8(model)) if fp8 else set()
    expected = model.state_dict(keep_vars=True)
    lora_sds = [(_lora_state(lo), lo.strength) for lo in loras if lo.strength != 0]
    used: set = set()
    own = source is None
    qs = source or QuantizedSafetensors(checkpoint)
    state: dict[str, torch.Tensor] = {}
    kept = requantized = 0
    try:
        if qs.quantized:
            log.info("checkpoint %s: %d quantized layers (%s)", os.path.basename(checkpoint), len(qs.formats),
                     "/".join(sorted(set(qs.formats.values()))))
        for file_key in qs.keys():
            key = LTXV_MODEL_COMFY_RENAMING_MAP.apply_to_key(file_key)
            if key is None or key not in expected:
                continue
            layer = key[: -len(".weight")] if key.endswith(".weight") else None
            delta = _delta(layer, lora_sds, device, used) if layer is not None else None
            if layer in fp8_layers:
                scale = qs.weight_scale(file_key)
                raw = qs.raw(file_key) if scale is not None and delta is None else None
                if raw is not None and raw.dtype == torch.float8_e4m3fn:
                    state[key] = raw.to(device)
                    state[layer + ".weight_scale"] = scale.to(device, torch.float32).reshape(())
                    kept += 1
                    continue
                w = qs.get(file_key, torch.float32, device)
                if delta is not None:
                    w.add_(delta)
                state[key], state[layer + ".weight_scale"] = quantize_fp8_per_tensor(w)
                requantized += 1
                continue
            if delta is None:
                state[key] = qs.get(file_key, torch.bfloat16, device)
            else:
                w = qs.get(file_key, torch.float32, device)
                state[key] = w.add_(delta).to(torch.bfloat16)
            del delta
    finally:
        if own:
            qs.close()
    unused = sum(1 for i, (sd, _) in enumerate(lora_sds)
                 for p in {k.rsplit(".lora_", 1)[0] for k in sd if ".lora_A." in k} if (i, p) not in used)
    if unused:
        log.warning("%d LoRA layers matched no transformer weight (not applied)", unused)
    model.load_state_dict(state, strict=False, assign=True)
    del state
    if fp8:
        log.info("transformer in scaled fp8: %d checkpoint fp8 weights kept, %d quantized", kept, requantized)
    assert_no_meta(model, "transformer")
    model = X0Model(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def fp8_file(path: str) -> bool:
    """Whether the checkpoint stores transformer weights in fp8 (a scaled fp8 file)."""
    with QuantizedSafetensors(path) as qs:
        if qs.quantized:
            return True
        for key in qs.keys():
            if key.startswith("model.diffusion_model.transformer_blocks.") and key.endswith(".weight"):
                return qs.raw(key).dtype in FP8_DTYPES
    return False
