"""Tensor work of the native engine's helper nodes, on ComfyUI core's model API (imports ComfyUI lazily)."""
from __future__ import annotations

import logging
import os

import torch

from ...errors import InputError
from ..lora_targets import wanted

log = logging.getLogger(__name__)


def freeze_latent(latent: dict) -> dict:
    """The latent with a zero noise mask: the sampler keeps it exactly (the official workflow's
    LTXVSetAudioRefTokens.frozen_audio: mask zeros (b, 1, t, 1))."""
    samples = latent["samples"]
    out = dict(latent)
    out["noise_mask"] = torch.zeros((samples.shape[0], 1, samples.shape[2], 1), dtype=torch.float32,
                                    device=samples.device)
    return out


def set_guide_attention(conditioning: list, strength: float) -> list:
    """The conditioning with its last guide's attention strength set to `strength` (core's LTXVAddGuide sets it
    to the guide's denoise strength; the official workflow's IC guide keeps attention at 1: with 1 and no
    pixel mask core builds no attention bias at all)."""
    out = []
    for tensor, values in conditioning:
        values = dict(values)
        entries = list(values.get("guide_attention_entries") or [])
        if entries:
            entries[-1] = {**entries[-1], "strength": float(strength)}
            values["guide_attention_entries"] = entries
        out.append([tensor, values])
    return out


def _ramp(n: int, rising: bool, device) -> torch.Tensor:
    return torch.linspace(0, 1, n, device=device) if rising else torch.linspace(1, 0, n, device=device)


def spatial_tiled_decode(vae, samples: torch.Tensor, horizontal: int, vertical: int, overlap: int) -> torch.Tensor:
    """Decode [B,C,T,h,w] latents in horizontal x vertical spatial tiles (each tile: all frames at once),
    overlapping by `overlap` latent cells and joined with linear ramps; the algorithm of the official
    workflow's final decode (ComfyUI-LTXVideo LTXVTiledVAEDecode, last_frame_fix off). -> [B*F,H,W,3]."""
    import comfy.model_management

    b, _, t, h, w = samples.shape
    t_scale, h_scale, w_scale = vae.downscale_index_formula
    frames = 1 + (t - 1) * t_scale
    from ..ltxcore.tiling import spatial_tile_ranges  # the same tile geometry as the ltx-core engine's

    rows, cols = spatial_tile_ranges(h, vertical, overlap), spatial_tile_ranges(w, horizontal, overlap)
    row_overlap = overlap if len(rows) > 1 else 0
    col_overlap = overlap if len(cols) > 1 else 0
    out = weights = None
    for v, (vs, ve) in enumerate(rows):
        for x, (hs, he) in enumerate(cols):
            comfy.model_management.throw_exception_if_processing_interrupted()
            dec = vae.decode(samples[:, :, :, vs:ve, hs:he])  # [B, F, th*32, tw*32, 3] (or [B*F, ...])
            dec = dec.reshape(b, frames, *dec.shape[-3:]).float()
            if out is None:
                out = torch.zeros((b, frames, h * h_scale, w * w_scale, dec.shape[-1]), device=dec.device)
                weights = torch.zeros((1, 1, h * h_scale, w * w_scale, 1), device=dec.device)
            wt = torch.ones((1, 1, dec.shape[2], dec.shape[3], 1), device=dec.device)
            oh, ow = row_overlap * h_scale, col_overlap * w_scale
            if x > 0:
                wt[:, :, :, :ow] *= _ramp(ow, True, dec.device).view(1, 1, 1, -1, 1)
            if x < len(cols) - 1:
                wt[:, :, :, -ow:] *= _ramp(ow, False, dec.device).view(1, 1, 1, -1, 1)
            if v > 0:
                wt[:, :, :oh] *= _ramp(oh, True, dec.device).view(1, 1, -1, 1, 1)
            if v < len(rows) - 1:
                wt[:, :, -oh:] *= _ramp(oh, False, dec.device).view(1, 1, -1, 1, 1)
            y0, x0 = vs * h_scale, hs * w_scale
            out[:, :, y0:y0 + dec.shape[2], x0:x0 + dec.shape[3]] += dec * wt
            weights[:, :, y0:y0 + dec.shape[2], x0:x0 + dec.shape[3]] += wt
            del dec
    out /= weights + 1e-8
    return out.reshape(b * frames, *out.shape[2:]).clamp_(0.0, 1.0)


def apply_lora_target(model, lora_path: str, strength: float, target: str):
    """Patch `model` with the LoRA entries of `target` (both | video | audio stream of LTX-2.3), through
    core's own LoRA loader. The file must lie inside one of ComfyUI's loras folders."""
    import comfy.sd
    import comfy.utils

    import folder_paths

    from ...paths import PathPolicy

    # the same rule as the LoRA Stack's: inside the loras folders, symlinks resolved (+ the server's opt-ins)
    lora_path = PathPolicy(list(folder_paths.get_folder_paths("loras")), what="LoRA file",
                           described="ComfyUI's loras folders").resolve(lora_path, "lora_path")
    if strength == 0:
        return model
    sd = comfy.utils.load_torch_file(lora_path, safe_load=True)
    kept = {k: v for k, v in sd.items() if wanted(k, target)}
    if not kept:
        raise InputError("loras", f"{os.path.basename(lora_path)} has no {target} entries for LTX-2.3")
    log.info("LoRA %s: %d of %d tensors on the %s stream(s)", os.path.basename(lora_path), len(kept), len(sd),
             target)
    patched, _ = comfy.sd.load_lora_for_models(model, None, kept, strength, 0)
    return patched
