"""Frame resizing that reproduces ComfyUI's ``comfy.utils.common_upscale`` (core 0.3.75 .. 0.20.1).

The official outpaint workflow resizes with core's ``ResizeImageMaskNode``, which calls ``common_upscale``;
the local engines must resize the same way to feed the model the same pixels. Pure torch (+ PIL for
lanczos, imported only then); imports nothing from ComfyUI.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

METHODS = ("area", "bilinear", "bicubic", "nearest-exact", "lanczos")
CROPS = ("disabled", "center")


def _center_crop(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """common_upscale's crop="center" on [N,C,H,W]: trim the longer axis to the target's aspect first."""
    old_h, old_w = x.shape[-2:]
    old_aspect = old_w / old_h
    new_aspect = width / height
    cx = cy = 0
    if old_aspect > new_aspect:
        cx = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        cy = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return x.narrow(-2, cy, old_h - cy * 2).narrow(-1, cx, old_w - cx * 2)


def _lanczos(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """PIL LANCZOS on uint8 (255*x clipped, truncated) per frame, back to float /255, like core."""
    from PIL import Image

    frames = x.movedim(1, -1).cpu().numpy()
    out = []
    for frame in frames:
        pixels = np.clip(255.0 * frame, 0, 255).astype(np.uint8)
        if pixels.shape[-1] == 1:
            pixels = pixels[..., 0]  # PIL wants grayscale as [H,W]
        img = Image.fromarray(pixels).resize((width, height), resample=Image.Resampling.LANCZOS)
        arr = np.array(img).astype(np.float32) / 255.0
        out.append(torch.from_numpy(arr.reshape(height, width, -1)))
    return torch.stack(out).movedim(-1, 1).to(x.device, x.dtype)


def resize(images: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """images [F,H,W,C] -> [F,height,width,C] as ``common_upscale(images.movedim(-1, 1), width, height,
    method, crop).movedim(1, -1)``.

    method: area | bilinear | bicubic | nearest-exact (``F.interpolate`` with that mode, not clamped) or
    lanczos (PIL on uint8, so quantised to 1/255 even at the same size; 1, 3 or 4 channels). crop:
    disabled | center (the longer axis is trimmed to the target aspect before resizing).
    """
    if method not in METHODS:
        raise ValueError(f"method: got {method!r}; allowed: {', '.join(METHODS)}")
    if crop not in CROPS:
        raise ValueError(f"crop: got {crop!r}; allowed: {', '.join(CROPS)}")
    if images.ndim != 4:
        raise ValueError(f"images: expected [F,H,W,C], got {tuple(images.shape)}")
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"size: width and height must be >= 1, got {width}x{height}")
    width, height = int(width), int(height)
    x = images.movedim(-1, 1)
    if crop == "center":
        x = _center_crop(x, width, height)
    if method == "lanczos":
        out = _lanczos(x, width, height)
    else:
        out = F.interpolate(x, size=(height, width), mode=method)
    return out.movedim(1, -1)
