"""Tiled VAE decode / encode as the official workflow's nodes tile: tile grid, positions and blend weights.

The "VAE" here is a local stand-in written in the test (each latent cell decodes to its own 32 x 32 pixel block
and 8 frames, each pixel block encodes to its mean): with a local VAE every correct tiling reproduces the untiled
result exactly, so any wrong position, overlap or weight shows. The tile counts and ranges are the ones the
research notes computed from the nodes' code (/tmp/research/official_recipe.md §2.8, §3).
"""
from __future__ import annotations

import torch

from ltx_outpaint.local.ltxcore.tiling import (decode_spatial_tiles, decode_tiled, encode_tiled,
                                               spatial_tile_ranges, tiled_apply)


class LocalDecoder:
    """latent [1,C,T,h,w] -> video [1,3,8T-7,32h,32w] in -1..1; each output depends on one latent cell only."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, generator=None):
        self.calls.append(tuple(x.shape))
        x = x.float()
        rgb = torch.tanh(x[:, :3])  # 3 channels in -1..1
        first, rest = rgb[:, :, :1], rgb[:, :, 1:].repeat_interleave(8, dim=2)
        frames = torch.cat([first, rest], dim=2)
        return frames.repeat_interleave(32, dim=3).repeat_interleave(32, dim=4)


class LocalEncoder:
    """pixels [1,3,F,H,W] (F = 8k+1) in -1..1 -> latent [1,128,k+1,H/32,W/32]: block means, tiled over channels."""

    def __init__(self):
        self.calls = []

    def __call__(self, x):
        self.calls.append(tuple(x.shape))
        x = x.float()
        first, rest = x[:, :, :1], x[:, :, 1:]
        if rest.shape[2]:
            rest = rest.reshape(*rest.shape[:2], -1, 8, *rest.shape[3:]).mean(3)
        t = torch.cat([first, rest], dim=2)
        t = torch.nn.functional.avg_pool3d(t, (1, 32, 32))
        return t.repeat(1, 43, 1, 1, 1)[:, :128]


def test_ltxv_tiled_decode_ranges_are_the_nodes():
    # 1920 x 1088 canvas: latent 60 x 34; 2 x 2 tiles overlapping by 6 cells
    assert spatial_tile_ranges(60, 2, 6) == [(0, 33), (27, 60)]
    assert spatial_tile_ranges(34, 2, 6) == [(0, 20), (14, 34)]
    assert spatial_tile_ranges(4, 2, 6) == [(0, 4)]  # too short for two tiles: one


def test_vae_decode_tiled_512_64_equals_untiled_with_a_local_vae():
    torch.manual_seed(0)
    latent = torch.randn(1, 128, 3, 20, 40)
    dec = LocalDecoder()
    tiled = decode_tiled(dec, latent, "cpu", torch.float32, 512, 64, 512, 64)
    tiles = len(dec.calls)
    whole = ((dec(latent)[0] + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0)
    assert tiles == 2 * 3  # rows start at 0, 14; columns at 0, 14, 28 (16-cell tiles, 2-cell overlap)
    assert all(c[3] <= 16 and c[4] <= 16 for c in dec.calls[:tiles])
    assert tiled.shape == (17, 640, 1280, 3)
    assert torch.allclose(tiled, whole, atol=1e-6)


def test_ltxv_spatial_tiles_equal_untiled_with_a_local_vae():
    torch.manual_seed(1)
    latent = torch.randn(1, 128, 2, 34, 60)[..., :22, :40]  # a 1280 x 704 canvas
    dec = LocalDecoder()
    tiled = decode_spatial_tiles(dec, latent, "cpu", torch.float32, 2, 2, 6)
    assert [c[3:] for c in dec.calls] == [(14, 23), (14, 23), (14, 23), (14, 23)]
    whole = ((dec(latent)[0] + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0)
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_vae_encode_tiled_512_64_equals_untiled_with_a_local_vae():
    torch.manual_seed(2)
    frames = torch.rand(9, 576, 1088, 3)
    enc = LocalEncoder()
    tiled = encode_tiled(enc, frames, "cpu", torch.float32, 512, 64, 512, 64)
    assert len(enc.calls) == 2 * 3  # rows at 0, 448 px; columns at 0, 448, 896 px (512-px tiles, 64 overlap)
    whole = enc((frames.permute(3, 0, 1, 2)[None] * 2 - 1))
    assert tiled.shape == (1, 128, 2, 18, 34)
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_tiled_apply_feathers_overlaps_linearly():
    """Two tiles whose outputs differ by a constant: across the overlap the blend ramps (k + 1) / feather."""
    x = torch.zeros(1, 1, 12)
    calls = []

    def fn(t):
        calls.append(t.shape[-1])
        return torch.full((1, 1, t.shape[-1]), float(len(calls)))

    out = tiled_apply(x, fn, tile=(8,), overlap=(4,), scale=(1,), index_scale=(1,), out_channels=1)
    assert calls == [8, 8]  # starts at 0 and 4
    # cells 0..3: only tile 1; 4..7: both (tile 1 weights 4/4..1/4 falling, tile 2 1/4..4/4 rising); 8..11 tile 2
    w1 = torch.tensor([4, 3, 2, 1]) / 4
    w2 = torch.tensor([1, 2, 3, 4]) / 4
    assert torch.allclose(out[0, 0, :4], torch.ones(4))
    assert torch.allclose(out[0, 0, 4:8], (1 * w1 + 2 * w2) / (w1 + w2))
    assert torch.allclose(out[0, 0, 8:], torch.full((4,), 2.0))
