"""fal's published price for the outpaint endpoint, as an estimate.

`cost = ceil(width x height x frames / 1e6) x $0.0024075` (fal's endpoint page). Whether fal bills the
canvas before or after its own snapping is not published: treat the figure as an estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

USD_PER_MEGAPIXEL = 0.0024075
PIXELS_PER_UNIT = 1_000_000


@dataclass(frozen=True)
class CostEstimate:
    megapixels: int  # billed units: generated megapixels, rounded up
    usd: float

    def __str__(self) -> str:
        return f"~${self.usd:.4f} ({self.megapixels} MP, estimate)"


def estimate_cost(width: int, height: int, frames: int) -> CostEstimate:
    """Estimated fal price of generating `frames` frames at `width` x `height`."""
    if width <= 0 or height <= 0 or frames <= 0:
        raise ValueError(f"width, height and frames must be positive, got {width}x{height}x{frames}")
    units = math.ceil(width * height * frames / PIXELS_PER_UNIT)
    return CostEstimate(units, units * USD_PER_MEGAPIXEL)
