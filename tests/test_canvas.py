"""Canvas geometry against fal's published rule (tests/data/fal_schema.json: presets, "1.0 uses the largest
source size that fits the target", centred) and the official workflow's fill colour; expected numbers are
worked out here (exact fractions, halves up), not taken from the code under test."""
import json
import math
import os
from fractions import Fraction

import pytest
import torch

from ltx_outpaint.media.canvas import (ANCHORS, EVEN_SNAP, LTX_SNAP, NO_SNAP, CanvasSpec, composite, layout_canvas,
                                       snap_summary)
from ltx_outpaint.request import ImageSize

PHONE = (1080, 1920)  # vertical phone clip
with open(os.path.join(os.path.dirname(__file__), "data", "fal_schema.json"), encoding="utf-8") as _f:
    SCHEMA = json.load(_f)
PRESETS = {name: tuple(size) for name, size in SCHEMA["resolution_presets"].items()}
#: Lightricks' fill for the area to generate, #66FF00 (official outpaint workflow, LTXVInpaintPreprocess)
FILL = (0x66 / 255, 0xFF / 255, 0x00 / 255)


def _half_up(q: Fraction) -> int:
    return math.floor(q + Fraction(1, 2))


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("scale", [0.25, 0.75, 1.0])
def test_every_preset_and_scale_centres_the_largest_fit(preset, scale):
    W, H = PRESETS[preset]
    lay = layout_canvas(CanvasSpec(preset, scale), *PHONE)
    assert (lay.width, lay.height) == (W, H)
    fit = min(Fraction(W, PHONE[0]), Fraction(H, PHONE[1])) * Fraction(scale)
    w, h = _half_up(PHONE[0] * fit), _half_up(PHONE[1] * fit)
    assert (lay.source.width, lay.source.height) == (w, h)
    if scale == 1.0:  # "1.0 uses the largest source size that fits the target"
        assert h == H or w == W
    assert (lay.source.x, lay.source.y) == (_half_up(Fraction(W - w, 2)), _half_up(Fraction(H - h, 2)))


def test_custom_landscape_from_vertical():
    lay = layout_canvas(CanvasSpec(ImageSize(1280, 720), 0.75), *PHONE)
    assert (lay.width, lay.height) == (1280, 720)
    assert (lay.source.width, lay.source.height) == (304, 540)
    assert (lay.source.x, lay.source.y) == (488, 90)


@pytest.mark.parametrize("anchor", list(ANCHORS))
def test_anchors(anchor):
    lay = layout_canvas(CanvasSpec(ImageSize(1000, 600), 0.5, anchor), 400, 400)
    s = lay.source
    assert (s.width, s.height) == (300, 300)
    fx, fy = ANCHORS[anchor]
    assert s.x == _half_up(700 * Fraction(fx)) and s.y == _half_up(300 * Fraction(fy))


def test_offsets_move_and_clamp():
    base = layout_canvas(CanvasSpec(ImageSize(1000, 600), 0.5), 400, 400).source
    moved = layout_canvas(CanvasSpec(ImageSize(1000, 600), 0.5, "center", 100, -50), 400, 400).source
    assert (moved.x, moved.y) == (base.x + 100, base.y - 50)
    clamped = layout_canvas(CanvasSpec(ImageSize(1000, 600), 0.5, "center", 5000, -5000), 400, 400).source
    assert (clamped.x, clamped.y) == (700, 0)


def test_snapping_rules():
    spec = CanvasSpec(ImageSize(1280, 720), 0.75)
    ltx = layout_canvas(spec, *PHONE, LTX_SNAP)
    assert (ltx.width, ltx.height) == (1280, 704) and ltx.width % 64 == 0 and ltx.height % 64 == 0
    assert ltx.source.height <= 704 and ltx.snap == "ltx"
    assert layout_canvas(CanvasSpec(ImageSize(1001, 721), 1.0), 100, 100, EVEN_SNAP).width == 1002  # 500.5 up
    assert layout_canvas(CanvasSpec(ImageSize(1001, 721), 1.0), 100, 100, NO_SNAP).width == 1001
    # 8k+1 frames, halves up: 13 -> 17 (1.5 -> 2), 21 -> 25 (2.5 -> 3)
    assert [LTX_SNAP.frames(n) for n in (9, 10, 12, 13, 21, 121, 120, 100, 1)] == [9, 9, 9, 17, 25, 121, 121, 97, 9]
    assert NO_SNAP.frames(100) == 100
    assert all((LTX_SNAP.frames(n) - 1) % 8 == 0 for n in range(1, 500))
    text = snap_summary(spec, *PHONE, 100)
    assert "1280x704" in text and "97 frames" in text and "1280x720" in text


def test_mask_and_composite():
    lay = layout_canvas(CanvasSpec(ImageSize(128, 64), 1.0), 32, 64)
    m = lay.mask()
    assert m.shape == (64, 128)
    s = lay.source
    assert (s.x, s.width) == (48, 32)
    assert m[:, s.x:s.x + s.width].sum() == 0 and m.sum() == 64 * (128 - 32)
    frames = torch.rand(3, 64, 32, 3)
    comp = composite(frames, lay)
    assert comp.shape == (3, 64, 128, 3)
    assert torch.allclose(comp[:, :, 48:80], frames, atol=1e-6)  # same size: pasted exactly
    assert torch.allclose(comp[:, :, :48], torch.tensor(FILL).expand(3, 64, 48, 3), atol=1e-6)
    assert torch.allclose(comp[:, :, 80:], torch.tensor(FILL).expand(3, 64, 48, 3), atol=1e-6)
