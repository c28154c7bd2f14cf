"""STAND-IN (private to the ltx-core engine branch): minimal versions of the shared image operations.

Another branch writes the real ones: ``nodes/local/blend.py`` (``pyramid_blend``, ``inpaint_fill``,
``official_stage_inputs``) and ``nodes/media/resize.py`` (``resize``). :mod:`.imageops` imports those when they
exist and falls back to this module; the lead deletes this file when that branch is merged.

Written from descriptions of the workflow's nodes (ComfyUI-LTXVideo vanish_nodes.py LTXVInpaintPreprocess,
pyramid_blending.py LTXVLaplacianPyramidBlend with kornia 0.9.0's pyramids; ComfyUI's ResizeImageMaskNode and
comfy.utils.common_upscale), not from their code.
Frames are [F,H,W,3] float 0..1; masks [H,W] or [F,H,W], 1 where the model generates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_K1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
_KERNEL = torch.outer(_K1, _K1) / 256.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = _KERNEL.to(x)[None, None].expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)


def _down(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(_blur(x), size=(x.shape[-2] // 2, x.shape[-1] // 2), mode="bilinear", align_corners=False)


def _up(x: torch.Tensor) -> torch.Tensor:
    return _blur(F.interpolate(x, size=(x.shape[-2] * 2, x.shape[-1] * 2), mode="bilinear", align_corners=False))


def _gauss(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    out = [x]
    for _ in range(levels - 1):
        out.append(_down(out[-1]))
    return out


def _lap(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    g = _gauss(x, levels)
    return [g[i] - _up(g[i + 1]) for i in range(levels - 1)] + [g[-1]]


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _dilate(mask: torch.Tensor, dilation: int, long_side: int) -> torch.Tensor:
    """[N,1,H,W]: max-pool (2r+1) on a grid whose long side is `long_side` cells, bilinear back (soft)."""
    if dilation <= 0:
        return mask
    h, w = mask.shape[-2:]
    s = long_side / max(h, w)
    small = (max(1, round(h * s)), max(1, round(w * s)))
    m = mask if max(h, w) == long_side else F.interpolate(mask, size=small, mode="bilinear", align_corners=False)
    m = F.max_pool2d(m, kernel_size=2 * dilation + 1, stride=1, padding=dilation)
    return F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)


def pyramid_blend(generated: torch.Tensor, original: torch.Tensor, mask: torch.Tensor, *, dilation: int,
                  long_side: int = 64, levels: int = 7) -> torch.Tensor:
    """LTXVLaplacianPyramidBlend(image_a=generated, image_b=original, mask, trim_to_shortest, dilation)."""
    if mask.dim() == 2:
        mask = mask[None]
    n = min(generated.shape[0], original.shape[0], mask.shape[0] if mask.shape[0] > 1 else generated.shape[0])
    if mask.shape[0] == 1:
        mask = mask.expand(n, -1, -1)
    a = generated[:n].permute(0, 3, 1, 2).float()
    b = original[:n].permute(0, 3, 1, 2).float()
    m = _dilate(mask[:n, None].float(), dilation, long_side)
    h, w = a.shape[-2:]
    pr = pd = 0
    if not (h & (h - 1) == 0 and w & (w - 1) == 0):
        pr, pd = _pow2(w) - w, _pow2(h) - h
    lv = min(levels, int(math.log2(min(h + pd, w + pr))))
    m = F.pad(m, (0, pr, 0, pd), mode="reflect") if pr or pd else m
    out = []
    for s in range(0, n, 8):
        ca, cb = a[s:s + 8], b[s:s + 8]
        if pr or pd:
            ca, cb = F.pad(ca, (0, pr, 0, pd), mode="reflect"), F.pad(cb, (0, pr, 0, pd), mode="reflect")
        la, lb, g = _lap(ca, lv), _lap(cb, lv), _gauss(m[s:s + 8], lv)
        res = la[-1] * g[-1] + lb[-1] * (1 - g[-1])
        for i in range(lv - 2, -1, -1):
            res = _up(res) + la[i] * g[i] + lb[i] * (1 - g[i])
        out.append(res[..., :h, :w].clamp(0, 1))
    return torch.cat(out).permute(0, 2, 3, 1).contiguous()


def inpaint_fill(images: torch.Tensor, mask: torch.Tensor, fill_rgb) -> torch.Tensor:
    """LTXVInpaintPreprocess: images * (1 - mask) + fill * mask (fill_rgb in 0..255)."""
    m = mask[..., None].to(images)
    fill = torch.tensor([c / 255.0 for c in fill_rgb], dtype=images.dtype)
    return images * (1 - m) + fill * m


def resize(images: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """comfy.utils.common_upscale for [F,H,W,C] (crop 'disabled' only here); lanczos through PIL on uint8."""
    if crop != "disabled":
        raise NotImplementedError("stand-in resize: crop='center' not needed by the ltx-core engine")
    if method == "lanczos":
        from PIL import Image

        out = []
        for frame in images:
            arr = np.clip(255.0 * frame.float().cpu().numpy(), 0, 255).astype(np.uint8)
            pil = Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr)
            back = np.asarray(pil.resize((width, height), resample=Image.LANCZOS)).astype(np.float32) / 255.0
            out.append(torch.from_numpy(back.reshape(height, width, -1)))
        return torch.stack(out)
    x = images.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(height, width), mode=method, **({"align_corners": False}
                                                               if method in ("bilinear", "bicubic") else {}))
    return x.permute(0, 2, 3, 1).contiguous()


@dataclass
class StageInputs:
    full_ref: torch.Tensor
    full_mask: torch.Tensor
    half_ref: torch.Tensor
    half_mask: torch.Tensor


def official_stage_inputs(placed: torch.Tensor, mask: torch.Tensor, fill_rgb) -> StageInputs:
    """The workflow's full-size and half-size green composites and masks (nodes 5361, 5364, 5357, 5358)."""
    f, h, w, _ = placed.shape
    if mask.dim() == 2:
        mask = mask[None]
    hw, hh = round(w * 0.5), round(h * 0.5)
    half_mask = F.interpolate(mask[:, None].float(), size=(hh, hw), mode="area")[:, 0]
    half_img = resize(placed, hw, hh, "area")
    return StageInputs(inpaint_fill(placed, mask[0] if mask.shape[0] == 1 else mask, fill_rgb), mask,
                       inpaint_fill(half_img, half_mask[0] if half_mask.shape[0] == 1 else half_mask, fill_rgb),
                       half_mask)
