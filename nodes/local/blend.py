"""Paste-back and reference preparation exactly as Lightricks' official LTX-2.3 outpaint workflow does them.

Re-implemented from the behaviour of `ComfyUI-LTXVideo` (commit aceeae96) ``pyramid_blending.py``
(``LTXVLaplacianPyramidBlend``), ``vanish_nodes.py`` (``LTXVInpaintPreprocess``) and kornia 0.9.0's pyramid
functions, without importing either (kornia is not a dependency of the pack):

- the generated-area mask is dilated on a coarse grid (long side 64 cells, a (2r+1)-cell max-pool, bilinear
  down and up, not re-thresholded), so the generated picture reaches r cells into the source;
- a Laplacian pyramid blend (5x5 [1,4,6,4,1]/16 kernel, reflect borders, 7 levels at most) joins the
  generated frames (mask 1) with the green composite (mask 0); frames are reflect-padded right/bottom to
  powers of two first and processed 8 at a time in float32.

The blend does not keep the whole source bit for bit: the coarse pyramid levels mix low frequencies over a
wide span (at 1920x1088 with a 64-px border they reach ~450 px into the source). :func:`blend_reach` says
which pixels can depend on the generated frames at all; everywhere else the result is the composite
exactly. Pure torch; imports nothing from ComfyUI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..media.resize import resize
from .recipe import OFFICIAL

#: Frames per chunk (pyramid_blending.py:19, _CHUNK_SIZE; memory only, the result does not depend on it).
CHUNK_FRAMES = 8
#: Dilation grid: cells on the long side (64; the recipe cites pyramid_blending.py:20).
LONG_SIDE = OFFICIAL.blend_long_side
#: Pyramid levels (7; the recipe cites pyramid_blending.py:262).
LEVELS = OFFICIAL.blend_levels

_TAPS = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _padding(h: int, w: int) -> tuple[int, int]:
    """(right, bottom) reflect padding to powers of two; none when both sides already are."""
    if _is_pow2(h) and _is_pow2(w):
        return 0, 0
    return _next_pow2(w) - w, _next_pow2(h) - h


def _blur(x: torch.Tensor) -> torch.Tensor:
    """[N,C,H,W] -> the 5x5 outer-product [1,4,6,4,1]/16 filter with reflect borders (separable; shifted
    slices, several times faster on CPU than a 1-channel convolution)."""
    k0, k1, k2 = _TAPS[0], _TAPS[1], _TAPS[2]
    p = F.pad(x, (2, 2, 2, 2), mode="reflect")
    r = p[..., 0:-4] + p[..., 4:]
    r.mul_(k0).add_(p[..., 1:-3] + p[..., 3:-1], alpha=k1).add_(p[..., 2:-2], alpha=k2)
    del p
    c = r[..., 0:-4, :] + r[..., 4:, :]
    c.mul_(k0).add_(r[..., 1:-3, :] + r[..., 3:-1, :], alpha=k1).add_(r[..., 2:-2, :], alpha=k2)
    return c


def _down(x: torch.Tensor) -> torch.Tensor:
    """kornia pyrdown: blur, then bilinear to floor(H/2) x floor(W/2) (align_corners=False)."""
    h, w = x.shape[-2:]
    return F.interpolate(_blur(x), size=(h // 2, w // 2), mode="bilinear", align_corners=False)


def _up(x: torch.Tensor) -> torch.Tensor:
    """kornia pyrup: bilinear to 2H x 2W (align_corners=False), then blur."""
    h, w = x.shape[-2:]
    return _blur(F.interpolate(x, size=(2 * h, 2 * w), mode="bilinear", align_corners=False))


def dilate_mask_low_res(mask: torch.Tensor, cells: int, long_side: int = LONG_SIDE) -> torch.Tensor:
    """Grow the 1-area of `mask` [N,1,H,W] by `cells` cells of a grid whose long side has `long_side` cells.

    Bilinear down to that grid (skipped when the long side already is `long_side`), a (2*cells+1)^2
    max-pool, bilinear back up: the result is soft (0..1), not re-thresholded. `cells` <= 0: unchanged.
    """
    mask = mask.float()
    if cells <= 0:
        return mask
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask: expected [N,1,H,W], got {tuple(mask.shape)}")
    h, w = mask.shape[-2:]
    low = mask
    if max(h, w) != long_side:
        scale = long_side / max(h, w)
        size = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
        low = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
    low = F.max_pool2d(low, kernel_size=2 * cells + 1, stride=1, padding=cells)
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)


def _as_frames_mask(mask: torch.Tensor) -> torch.Tensor:
    """[H,W], [F,H,W] or [F,H,W,C] (channel 0 used) -> [F,H,W] float32."""
    if mask.ndim == 4:
        mask = mask[..., 0]
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"mask: expected [H,W] or [F,H,W], got {tuple(mask.shape)}")
    return mask.float()


def _mask_pyramid(mask: torch.Tensor, levels: int) -> list[torch.Tensor]:
    pyramid = [mask]
    for _ in range(levels - 1):
        pyramid.append(_down(pyramid[-1]))
    return pyramid


def _blend_chunk(a: torch.Tensor, b: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """Laplacian blend of padded [n,3,H,W] chunks with the mask's Gaussian pyramid `masks`.

    The node computes collapse(L(a)*m + L(b)*(1-m)); the pyramid is linear and collapse(L(b)) = b, so this
    is b + collapse(L(a-b)*m): the same up to float rounding (< 1e-6), one pyramid instead of two, and
    exactly b wherever every level's mask weight within reach is 0."""
    bands = []
    g = a - b
    for m in masks[:-1]:
        n = _down(g)
        band = g - _up(n)
        band.mul_(m)
        bands.append(band)
        g = n
    out = g * masks[-1]
    del g
    while bands:
        out = _up(out).add_(bands.pop())
    return out.add_(b)


def _levels_for(h: int, w: int, levels: int) -> int:
    pr, pd = _padding(h, w)
    return max(1, min(levels, int(math.log2(min(h + pd, w + pr)))))


def pyramid_blend(generated: torch.Tensor, original: torch.Tensor, mask: torch.Tensor, *, dilation: int,
                  long_side: int = LONG_SIDE, levels: int = LEVELS, trim_to_shortest: bool = True,
                  chunk: int = CHUNK_FRAMES) -> torch.Tensor:
    """``LTXVLaplacianPyramidBlend``: `generated` where `mask` is 1, `original` where it is 0.

    generated, original: [F,H,W,3] in 0..1 (any float dtype; computed in float32). `original` is the green
    composite in the official workflow. mask: [H,W] or [F,H,W] (a single frame applies to every frame).
    dilation: cells of the `long_side` grid by which the generated area first grows into the original
    (official: 5 between the stages, 2 at the end). levels: pyramid levels, clamped to log2 of the padded
    short side. trim_to_shortest: different frame counts are trimmed to the shortest (else an error).
    Returns a new float32 [F,H,W,3] tensor clamped to 0..1; the inputs are not modified.
    """
    if generated.ndim != 4 or generated.shape[-1] != 3:
        raise ValueError(f"generated: expected [F,H,W,3], got {tuple(generated.shape)}")
    if original.shape[1:] != generated.shape[1:]:
        raise ValueError(f"original: size {tuple(original.shape)} differs from generated {tuple(generated.shape)}")
    mask = _as_frames_mask(mask)
    if mask.shape[1:] != generated.shape[1:3]:
        raise ValueError(f"mask: size {tuple(mask.shape[1:])} differs from the frames' {tuple(generated.shape[1:3])}")
    counts = [generated.shape[0], original.shape[0]] + ([mask.shape[0]] if mask.shape[0] > 1 else [])
    if len(set(counts)) > 1 and not trim_to_shortest:
        raise ValueError(f"generated, original and mask have different frame counts {counts}")
    n = min(counts)
    _, h, w, _ = generated.shape
    pr, pd = _padding(h, w)
    levels = _levels_for(h, w, levels)
    device = generated.device

    def masks_for(m: torch.Tensor) -> list[torch.Tensor]:
        m = dilate_mask_low_res(m[:, None].to(device), dilation, long_side)
        if pr or pd:
            m = F.pad(m, (0, pr, 0, pd), mode="reflect")
        return _mask_pyramid(m, levels)

    shared = masks_for(mask[:1]) if mask.shape[0] == 1 else None

    def padded(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2)
        return F.pad(x, (0, pr, 0, pd), mode="reflect") if pr or pd else x

    out = torch.empty((n, h, w, 3), dtype=torch.float32, device=device)
    for s in range(0, n, max(1, chunk)):
        e = min(s + max(1, chunk), n)
        masks = shared if shared is not None else masks_for(mask[s:e])
        blended = _blend_chunk(padded(generated[s:e]), padded(original[s:e]), masks)
        out[s:e] = blended[..., :h, :w].clamp(0, 1).permute(0, 2, 3, 1)
        del blended
    return out


def blend_reach(mask: torch.Tensor, *, dilation: int, long_side: int = LONG_SIDE,
                levels: int = LEVELS) -> torch.Tensor:
    """[H,W] bool: where :func:`pyramid_blend` with these parameters can take anything from `generated`.

    True where any pyramid level's mask weight is non-zero within the reconstruction's reach (pyrup's
    support, level by level). Where False, the blend returns `original` exactly.
    mask: [H,W] (or the first frame of [F,H,W]).
    """
    m = _as_frames_mask(mask)[:1]
    h, w = m.shape[-2:]
    pr, pd = _padding(h, w)
    m = dilate_mask_low_res(m[:, None], dilation, long_side)
    if pr or pd:
        m = F.pad(m, (0, pr, 0, pd), mode="reflect")
    pyramid = _mask_pyramid(m, _levels_for(h, w, levels))
    reach = (pyramid[-1] > 0).float()
    for g in reversed(pyramid[:-1]):
        reach = ((_up(reach) > 0) | (g > 0)).float()
    return reach[0, 0, :h, :w] > 0


def inpaint_fill(images: torch.Tensor, mask: torch.Tensor, fill_rgb: tuple[int, int, int]) -> torch.Tensor:
    """``LTXVInpaintPreprocess``: images [F,H,W,3] * (1 - m) + fill_rgb/255 * m; m: [H,W] or [F,H,W]
    (a single frame applies to every frame; otherwise both are trimmed to the shorter). Fractional mask
    values mix linearly."""
    m = _as_frames_mask(mask).to(images.device)
    if m.shape[0] == 1 and images.shape[0] > 1:
        m = m.expand(images.shape[0], -1, -1)
    n = min(m.shape[0], images.shape[0])
    m4 = m[:n].unsqueeze(-1)
    fill = torch.tensor(fill_rgb).float().to(images.device) / 255
    return images[:n] * (1 - m4) + fill.view(1, 1, 1, 3) * m4


@dataclass
class StageInputs:
    """The official workflow's two green composites and their masks (mask 1 = generate)."""

    full_ref: torch.Tensor  # [F,H,W,3]: LTXVInpaintPreprocess(canvas, mask); the final blend's original
    full_mask: torch.Tensor  # [H,W]
    half_ref: torch.Tensor  # [F,h,w,3]: stage 1's IC reference and the between-stages blend's original
    half_mask: torch.Tensor  # [h,w]


def official_stage_inputs(placed: torch.Tensor, mask: torch.Tensor, fill_rgb: tuple[int, int, int],
                          stage1_scale: float = 0.5) -> StageInputs:
    """Both composites as the workflow builds them from `placed` [F,H,W,3] (the source on a grey 0.5
    canvas, KJNodes ImagePadForOutpaintTargetSize) and `mask` [H,W] (1 in the padding).

    Half size: the mask "scale by multiplier" `stage1_scale` with area (round(W*s) x round(H*s)); the canvas
    "match size" to it with area and centre crop; then LTXVInpaintPreprocess at each size.
    """
    if mask.ndim != 2 or tuple(mask.shape) != tuple(placed.shape[1:3]):
        raise ValueError(f"mask: expected [H,W] = {tuple(placed.shape[1:3])}, got {tuple(mask.shape)}")
    mask = mask.float()
    h, w = mask.shape
    hw, hh = round(w * stage1_scale), round(h * stage1_scale)
    half_mask = resize(mask[None, :, :, None], hw, hh, "area")[0, :, :, 0]
    half_image = resize(placed.float(), hw, hh, "area", crop="center")
    return StageInputs(full_ref=inpaint_fill(placed.float(), mask, fill_rgb), full_mask=mask,
                       half_ref=inpaint_fill(half_image, half_mask, fill_rgb), half_mask=half_mask)
