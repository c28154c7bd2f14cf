"""Tiled VAE encode / decode exactly as the official workflow's nodes tile them, around ltx-core's VAE.

- ``VAEDecodeTiled`` / ``VAEEncodeTiled`` (512, 64, 512, 64) go through ComfyUI's ``tiled_scale_multidim``
  (ComfyUI 0.20.1 ``comfy/utils.py``; ``comfy/sd.py`` ``decode_tiled`` / ``encode_tiled`` with the LTX video VAE's
  ratios: time ``8t - 7`` / ``floor((t + 7) / 8)``, space x32). :func:`tiled_apply` is that algorithm: tiles of
  ``tile`` cells every ``tile - overlap`` cells, each output weighted by a mask that ramps ``(k + 1) / feather``
  over ``feather`` cells at both ends of every axis, then divided by the summed weights.
- ``LTXVTiledVAEDecode`` (ComfyUI-LTXVideo ``tiled_vae_decode.py``; the workflow uses 2 x 2 tiles, overlap 6 latent
  cells): :func:`decode_spatial_tiles`, tiles of ``(size + (n - 1) * overlap) // n`` cells, linear ramps of
  ``overlap * 32`` pixels on inner edges only, normalised by the summed weights.

Frames are ``[F, H, W, 3]`` in 0..1 (ComfyUI IMAGE); latents ``[1, 128, T, h, w]``. ltx-core's VAE works in -1..1.
"""
from __future__ import annotations

import itertools
from typing import Callable

import torch

TIME_UP = (lambda t: max(0, t * 8 - 7))
TIME_DOWN = (lambda t: max(0, (t + 7) // 8))


def tiled_apply(samples: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile: tuple[int, ...],
                overlap: tuple[int, ...], scale: tuple, index_scale: tuple, out_channels: int,
                downscale: bool = False, output_device: str | torch.device = "cpu") -> torch.Tensor:
    """ComfyUI's tiled_scale_multidim: apply `fn` to overlapping tiles of `samples` [B, C, *dims] and blend.

    `scale[d]` maps a size along axis d to the output's (a number: multiply, or divide when `downscale`; or a
    callable); `index_scale[d]` maps a tile position the same way."""
    dims = len(tile)

    def size(d, v):
        s = scale[d]
        return s(v) if callable(s) else (v / s if downscale else s * v)

    def pos(d, v):
        s = index_scale[d]
        return s(v) if callable(s) else (v / s if downscale else s * v)

    out_shape = [round(size(d, samples.shape[d + 2])) for d in range(dims)]
    output = torch.empty([samples.shape[0], out_channels, *out_shape], device=output_device)
    for b in range(samples.shape[0]):
        s = samples[b:b + 1]
        if all(s.shape[d + 2] <= tile[d] for d in range(dims)):
            output[b:b + 1] = fn(s).to(output_device)
            continue
        out = output[b:b + 1].zero_()
        weight = torch.zeros([1, 1, *out_shape], device=output_device)
        starts = [range(0, s.shape[d + 2] - overlap[d], tile[d] - overlap[d]) if s.shape[d + 2] > tile[d] else [0]
                  for d in range(dims)]
        for it in itertools.product(*starts):
            piece, where = s, []
            for d in range(dims):
                p = max(0, min(s.shape[d + 2] - overlap[d], it[d]))
                n = min(tile[d], s.shape[d + 2] - p)
                piece = piece.narrow(d + 2, p, n)
                where.append(round(pos(d, p)))
            result = fn(piece).to(output_device)
            mask = torch.ones([1, 1, *result.shape[2:]], device=output_device)
            for d in range(2, dims + 2):
                feather = round(size(d - 2, overlap[d - 2]))
                if feather >= mask.shape[d]:
                    continue
                for k in range(feather):
                    a = (k + 1) / feather
                    mask.narrow(d, k, 1).mul_(a)
                    mask.narrow(d, mask.shape[d] - 1 - k, 1).mul_(a)
            o, w = out, weight
            for d in range(dims):
                o = o.narrow(d + 2, where[d], mask.shape[d + 2])
                w = w.narrow(d + 2, where[d], mask.shape[d + 2])
            o.add_(result * mask)
            w.add_(mask)
        out.div_(weight)
    return output


def _to_frames(video: torch.Tensor) -> torch.Tensor:
    """[1,3,F,H,W] in -1..1 -> [F,H,W,3] in 0..1 (ComfyUI's process_output: clamp((x + 1) / 2))."""
    return ((video[0].float() + 1.0) / 2.0).clamp_(0, 1).permute(1, 2, 3, 0).contiguous()


def decode_tiled(decoder, latent: torch.Tensor, device, dtype, tile_size: int = 512, overlap: int = 64,
                 temporal_size: int = 512, temporal_overlap: int = 64) -> torch.Tensor:
    """VAEDecodeTiled(tile_size, overlap, temporal_size, temporal_overlap) -> [F,H,W,3] 0..1."""
    if tile_size < overlap * 4:
        overlap = tile_size // 4
    if temporal_size < temporal_overlap * 2:
        temporal_overlap //= 2
    t_tile = max(2, temporal_size // 8)
    t_overlap = max(1, min(t_tile // 2, temporal_overlap // 8))
    tile, ov = tile_size // 32, overlap // 32

    def fn(x):
        with torch.inference_mode():
            return decoder(x.to(device=device, dtype=dtype)).float()

    out = tiled_apply(latent, fn, tile=(max(2, t_tile), tile, tile), overlap=(max(1, t_overlap), ov, ov),
                      scale=(TIME_UP, 32, 32), index_scale=(8, 32, 32), out_channels=3)
    return _to_frames(out)


def encode_tiled(encoder, frames: torch.Tensor, device, dtype, tile_size: int = 512, overlap: int = 64,
                 temporal_size: int = 512, temporal_overlap: int = 64) -> torch.Tensor:
    """VAEEncodeTiled(tile_size, overlap, temporal_size, temporal_overlap) of [F,H,W,3] 0..1 -> [1,128,T,h,w]."""
    pixels = frames.permute(3, 0, 1, 2)[None]  # [1,3,F,H,W]
    t_latent = max(2, TIME_DOWN(temporal_size))
    t_tile = TIME_UP(t_latent)
    t_overlap = TIME_UP(max(1, min(t_latent // 2, TIME_DOWN(temporal_overlap))))
    keep = TIME_UP(TIME_DOWN(pixels.shape[2]))

    def fn(x):
        with torch.inference_mode():
            return encoder((x * 2.0 - 1.0).to(device=device, dtype=dtype)).float()

    return tiled_apply(pixels[:, :, :keep], fn, tile=(t_tile, tile_size, tile_size),
                       overlap=(t_overlap, overlap, overlap), scale=(TIME_DOWN, 32, 32), index_scale=(8, 32, 32),
                       out_channels=128, downscale=True)


def spatial_tile_ranges(size: int, tiles: int, overlap: int) -> list[tuple[int, int]]:
    """LTXVTiledVAEDecode's tile ranges (latent cells) along one axis. An axis too short for `tiles` tiles
    overlapping by `overlap` (the node would slice from a negative start) gets fewer tiles, at least one."""
    while tiles > 1 and (size + (tiles - 1) * overlap) // tiles <= overlap:
        tiles -= 1
    base = (size + (tiles - 1) * overlap) // tiles
    out = []
    for i in range(tiles):
        start = i * (base - overlap)
        end = min(start + base, size) if i < tiles - 1 else size
        out.append((start, end))
    return out


def decode_spatial_tiles(decoder, latent: torch.Tensor, device, dtype, horizontal: int = 2, vertical: int = 2,
                         overlap: int = 6) -> torch.Tensor:
    """LTXVTiledVAEDecode(horizontal, vertical, overlap, last_frame_fix=False) -> [F,H,W,3] 0..1."""
    _, _, t, h, w = latent.shape
    frames = 1 + (t - 1) * 8
    out = torch.zeros(1, 3, frames, h * 32, w * 32)
    weights = torch.zeros(1, 1, frames, h * 32, w * 32)
    ramp = overlap * 32
    rows, cols = spatial_tile_ranges(h, vertical, overlap), spatial_tile_ranges(w, horizontal, overlap)
    vertical, horizontal = len(rows), len(cols)
    for v, (vs, ve) in enumerate(rows):
        for x, (hs, he) in enumerate(cols):
            with torch.inference_mode():
                dec = decoder(latent[..., vs:ve, hs:he].to(device=device, dtype=dtype)).float().cpu()
            dec = ((dec + 1.0) / 2.0).clamp_(0, 1)  # each tile is a ComfyUI vae.decode: already 0..1
            th, tw = dec.shape[-2:]
            wt = torch.ones(th, tw)
            if x > 0:
                wt[:, :ramp] *= torch.linspace(0, 1, ramp)[None]
            if x < horizontal - 1:
                wt[:, -ramp:] *= torch.linspace(1, 0, ramp)[None]
            if v > 0:
                wt[:ramp, :] *= torch.linspace(0, 1, ramp)[:, None]
            if v < vertical - 1:
                wt[-ramp:, :] *= torch.linspace(1, 0, ramp)[:, None]
            out[..., vs * 32:vs * 32 + th, hs * 32:hs * 32 + tw] += dec * wt
            weights[..., vs * 32:vs * 32 + th, hs * 32:hs * 32 + tw] += wt
            del dec
    out /= weights + 1e-8
    return out[0].permute(1, 2, 3, 0).contiguous()
