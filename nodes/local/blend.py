"""Put the original pixels back into a generated canvas with a Laplacian-pyramid (multi-band) blend.

The source rectangle is kept exactly, except a seam band of `band` pixels along its edges that border
generated area; across that band low frequencies blend over a wide span and fine detail over a narrow
one, so the join shows neither a hard edge nor ghosting. Edges of the source that touch the canvas edge
get no band. Pure torch, works on frame chunks (memory stays at a few frames).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..media.canvas import Rect

_KERNEL_1D = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def seam_alpha(width: int, height: int, rect: Rect, band: int) -> torch.Tensor:
    """[H,W] weight of the original: 1 inside `rect` beyond the band, a linear ramp across the band,
    0 outside. Sides of `rect` on the canvas border get no ramp."""
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    inf = torch.tensor(float("inf"))
    band = max(1, int(band))
    d = torch.full((height, width), float("inf"))
    if rect.x > 0:
        d = torch.minimum(d, xs - rect.x)
    if rect.x + rect.width < width:
        d = torch.minimum(d, rect.x + rect.width - xs)
    if rect.y > 0:
        d = torch.minimum(d, ys - rect.y)
    if rect.y + rect.height < height:
        d = torch.minimum(d, rect.y + rect.height - ys)
    alpha = torch.where(d == inf, torch.ones_like(d), (d / band).clamp(0, 1))
    inside = ((xs >= rect.x) & (xs < rect.x + rect.width) & (ys >= rect.y) & (ys < rect.y + rect.height))
    return alpha * inside


def _blur(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = _KERNEL_1D.to(x)
    x = F.pad(x, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def _down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return _blur(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


def pyramid_blend(generated: torch.Tensor, original: torch.Tensor, alpha: torch.Tensor,
                  levels: int = 5) -> torch.Tensor:
    """Blend two [N,C,H,W] images with weight `alpha` [H,W] for `original`; pixels with alpha == 1 are
    exactly `original`. Where alpha is 0 the original is never read (it may hold fill colour there)."""
    a = alpha.to(generated)[None, None]
    # The original outside its region is replaced by the generated picture, so the wide low-frequency
    # bands can never pull the fill colour into the result.
    inside = (a > 0).to(generated)
    orig = original * inside + generated * (1 - inside)
    levels = max(1, min(levels, int(torch.log2(torch.tensor(float(min(generated.shape[-2:])))).item()) - 2))
    ga, gg, go = [a], [generated], [orig]
    for _ in range(levels - 1):
        ga.append(_down(ga[-1]))
        gg.append(_down(gg[-1]))
        go.append(_down(go[-1]))
    out = ga[-1] * go[-1] + (1 - ga[-1]) * gg[-1]
    for i in range(levels - 2, -1, -1):
        size = gg[i].shape[-2:]
        lg = gg[i] - _up(gg[i + 1], size)
        lo = go[i] - _up(go[i + 1], size)
        out = _up(out, size) + ga[i] * lo + (1 - ga[i]) * lg
    out = torch.where(a >= 1, original, out)
    return out.clamp_(0, 1)


def blend_frames(generated: torch.Tensor, original: torch.Tensor, rect: Rect, band: int,
                 chunk: int = 8) -> torch.Tensor:
    """In place on `generated` [F,H,W,3] (0..1): the original [F,H,W,3] put back inside `rect`."""
    f, h, w, _ = generated.shape
    alpha = seam_alpha(w, h, rect, band)
    for s in range(0, f, chunk):
        g = generated[s:s + chunk].permute(0, 3, 1, 2).float()
        o = original[s:s + chunk].permute(0, 3, 1, 2).to(g)
        generated[s:s + chunk] = pyramid_blend(g, o, alpha).permute(0, 2, 3, 1).to(generated.dtype)
    return generated
