"""Canvas geometry: where the source sits on the target canvas, and what each backend snaps to.

fal's rule: the source is scaled to the largest size that fits the canvas, times `source_scale`, and
centred. We add anchors and pixel offsets (clamped so the source stays on the canvas).

Every rounding here is :func:`round_half_up` (halves go up, as `Math.floor(v + 0.5)`), the same rule, with
the same floating-point steps, as the frontend's js/ltx_geometry.js, so the canvas preview shows exactly
the numbers a run uses (tests/test_canvas_geometry_js.py compares the two on a grid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..request import RESOLUTION_PRESETS, ImageSize

#: Anchor name -> (x fraction, y fraction) of the free space left of / above the source.
ANCHORS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "top_left": (0.0, 0.0), "top": (0.5, 0.0), "top_right": (1.0, 0.0),
    "left": (0.0, 0.5), "right": (1.0, 0.5),
    "bottom_left": (0.0, 1.0), "bottom": (0.5, 1.0), "bottom_right": (1.0, 1.0),
}

#: The colour painted where the model generates: Lightricks' #66FF00 (ComfyUI-LTXVideo vanish_nodes.py:92,
#: _BG_COLOR_RGB, used by LTXVInpaintPreprocess in the official outpaint workflow); 0..1 floats.
FILL_RGB = (102 / 255, 1.0, 0.0)


def round_half_up(value: float) -> int:
    """The nearest integer, halves up (2.5 -> 3, 3.5 -> 4); Python's round() would give 2 and 4."""
    return math.floor(value + 0.5)


@dataclass(frozen=True)
class SnapRule:
    """What a backend needs: canvas sides a multiple of `multiple`, frame counts of the form 8k+1."""

    name: str
    multiple: int = 1
    frames_8k1: bool = False

    def size(self, width: int, height: int) -> tuple[int, int]:
        m = self.multiple
        return max(m, round_half_up(width / m) * m), max(m, round_half_up(height / m) * m)

    def frames(self, n: int) -> int:
        if not self.frames_8k1:
            return n
        return max(9, 8 * round_half_up((n - 1) / 8) + 1)


NO_SNAP = SnapRule("none")
#: H.264 in yuv420p needs even sides.
EVEN_SNAP = SnapRule("even", multiple=2)
#: LTX-2.3's two-stage pipelines: sides divisible by 64, 8k+1 frames.
LTX_SNAP = SnapRule("ltx", multiple=64, frames_8k1=True)


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class CanvasSpec:
    """What the user asked for on the Outpaint Canvas node (resolution as in the request model)."""

    resolution: str | ImageSize = "landscape_16_9"
    source_scale: float = 0.75
    anchor: str = "center"
    offset_x: int = 0
    offset_y: int = 0

    @property
    def size(self) -> tuple[int, int]:
        if isinstance(self.resolution, ImageSize):
            return self.resolution.width, self.resolution.height
        return RESOLUTION_PRESETS[self.resolution]


@dataclass(frozen=True)
class CanvasLayout:
    """The effective canvas size and the rectangle the source occupies on it."""

    width: int
    height: int
    source: Rect
    snap: str = "none"

    def mask(self) -> torch.Tensor:
        """[H, W] float32: 1 where the model generates, 0 over the source."""
        m = torch.ones(self.height, self.width, dtype=torch.float32)
        s = self.source
        m[s.y:s.y + s.height, s.x:s.x + s.width] = 0.0
        return m

    def describe(self) -> str:
        s = self.source
        return (f"canvas {self.width}x{self.height}, source {s.width}x{s.height} at ({s.x}, {s.y})"
                + (f" [snapped: {self.snap}]" if self.snap != "none" else ""))


def layout_canvas(spec: CanvasSpec, source_width: int, source_height: int,
                  snap: SnapRule = NO_SNAP) -> CanvasLayout:
    """Place a `source_width` x `source_height` clip on the canvas of `spec`, after `snap`."""
    if source_width <= 0 or source_height <= 0:
        raise ValueError(f"source size must be positive, got {source_width}x{source_height}")
    if spec.anchor not in ANCHORS:
        raise ValueError(f"anchor: got {spec.anchor!r}; allowed: {', '.join(ANCHORS)}")
    width, height = snap.size(*spec.size)
    fit = min(width / source_width, height / source_height) * spec.source_scale
    sw = max(1, min(width, round_half_up(source_width * fit)))
    sh = max(1, min(height, round_half_up(source_height * fit)))
    fx, fy = ANCHORS[spec.anchor]
    x = min(max(round_half_up((width - sw) * fx) + spec.offset_x, 0), width - sw)
    y = min(max(round_half_up((height - sh) * fy) + spec.offset_y, 0), height - sh)
    return CanvasLayout(width, height, Rect(x, y, sw, sh), snap.name)


def place_frames(frames: torch.Tensor, layout: CanvasLayout, out: torch.Tensor, chunk: int = 16) -> None:
    """Resize `frames` [F,h,w,3] into the source rectangle of `out` [F,H,W,3] (in place, in chunks)."""
    s = layout.source
    for start in range(0, frames.shape[0], chunk):
        block = frames[start:start + chunk].permute(0, 3, 1, 2)
        if block.shape[-2:] != (s.height, s.width):
            block = torch.nn.functional.interpolate(block, size=(s.height, s.width), mode="bilinear",
                                                    align_corners=False, antialias=True).clamp_(0, 1)
        out[start:start + chunk, s.y:s.y + s.height, s.x:s.x + s.width, :] = block.permute(0, 2, 3, 1)


def composite(frames: torch.Tensor, layout: CanvasLayout, fill: tuple[float, float, float] = FILL_RGB) -> torch.Tensor:
    """The source placed on the canvas, the rest flat `fill` (default the recipe's green). [F,H,W,3]."""
    out = torch.empty(frames.shape[0], layout.height, layout.width, 3, dtype=torch.float32)
    out[:] = torch.tensor(fill, dtype=torch.float32)
    place_frames(frames, layout, out)
    return out


def snap_summary(spec: CanvasSpec, source_width: int, source_height: int, num_frames: int) -> str:
    """One line per backend snapping rule, for the canvas node's info text."""
    lines = []
    for label, rule in (("fal / requested", NO_SNAP), ("preview (even sides)", EVEN_SNAP),
                        ("local LTX (x64, 8k+1 frames)", LTX_SNAP)):
        lay = layout_canvas(spec, source_width, source_height, rule)
        lines.append(f"{label}: {lay.width}x{lay.height}, source {lay.source.width}x{lay.source.height}"
                     f" at ({lay.source.x},{lay.source.y}), {rule.frames(num_frames)} frames")
    return "\n".join(lines)
