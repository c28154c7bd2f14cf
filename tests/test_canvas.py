import pytest
import torch

from ltx_outpaint.media.canvas import (ANCHORS, EVEN_SNAP, LTX_SNAP, NO_SNAP, CanvasSpec, composite, layout_canvas,
                                 snap_summary)
from ltx_outpaint.request import RESOLUTION_PRESETS, ImageSize

PHONE = (1080, 1920)  # vertical phone clip


@pytest.mark.parametrize("preset", list(RESOLUTION_PRESETS))
@pytest.mark.parametrize("scale", [0.25, 0.75, 1.0])
def test_every_preset_and_scale_centres_the_largest_fit(preset, scale):
    W, H = RESOLUTION_PRESETS[preset]
    lay = layout_canvas(CanvasSpec(preset, scale), *PHONE)
    assert (lay.width, lay.height) == (W, H)
    fit = min(W / PHONE[0], H / PHONE[1])
    assert lay.source.width == round(PHONE[0] * fit * scale)
    assert lay.source.height == round(PHONE[1] * fit * scale)
    if scale == 1.0:  # largest fit touches the limiting side
        assert lay.source.height == H or lay.source.width == W
    # centred (within rounding)
    assert abs(lay.source.x - (W - lay.source.width) / 2) <= 0.5
    assert abs(lay.source.y - (H - lay.source.height) / 2) <= 0.5


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
    assert s.x == round(700 * fx) and s.y == round(300 * fy)


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
    assert layout_canvas(CanvasSpec(ImageSize(1001, 721), 1.0), 100, 100, EVEN_SNAP).width == 1000
    assert layout_canvas(CanvasSpec(ImageSize(1001, 721), 1.0), 100, 100, NO_SNAP).width == 1001
    assert [LTX_SNAP.frames(n) for n in (9, 10, 12, 13, 121, 120, 100, 1)] == [9, 9, 9, 17, 121, 121, 97, 9]
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
    assert torch.all(comp[:, :, :48] == torch.tensor([102 / 255, 1.0, 0.0]))  # #66FF00, the official fill
