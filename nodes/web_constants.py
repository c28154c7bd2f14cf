"""What the frontend extensions need to mirror the Python side (one source of truth, served as JSON at
GET /ltx_outpaint/constants): canvas presets, anchors, each backend's snapping and fal's price.
ComfyUI-free, so tests can compare the route's answer with it."""
from __future__ import annotations

from .cost import PIXELS_PER_UNIT, USD_PER_MEGAPIXEL
from .media.canvas import ANCHORS, EVEN_SNAP, FILL_RGB, LTX_SNAP
from .request import RESOLUTION_PRESETS
from .settings import BACKENDS


def constants() -> dict:
    return {
        "presets": {name: list(size) for name, size in RESOLUTION_PRESETS.items()},
        "anchors": {name: list(frac) for name, frac in ANCHORS.items()},
        "snap": {"preview": {"multiple": EVEN_SNAP.multiple, "frames_8k1": EVEN_SNAP.frames_8k1},
                 "local": {"multiple": LTX_SNAP.multiple, "frames_8k1": LTX_SNAP.frames_8k1}},
        "cost": {"usd_per_megapixel": USD_PER_MEGAPIXEL, "pixels_per_unit": PIXELS_PER_UNIT},
        "fill_rgb": list(FILL_RGB),
        "backends": list(BACKENDS),
    }
