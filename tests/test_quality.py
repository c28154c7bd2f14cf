"""The quality report (nodes/media/quality.py) on synthetic clips whose answers are worked out here."""
from __future__ import annotations

import json
import math

import pytest
import torch

from ltx_outpaint.media.quality import quality_report

F_, H, W = 4, 24, 48
X0, X1 = 16, 32  # kept columns [16, 32): the source spans the full height, generated left and right
FILL = (102, 255, 0)


def _mask():
    m = torch.ones(H, W)
    m[:, X0:X1] = 0
    return m


def _ramp(frames=F_):
    """Red = x / W, green = y / H, blue 0.3: continuous everywhere."""
    x = torch.arange(W, dtype=torch.float32)[None, None, :].expand(frames, H, W) / W
    y = torch.arange(H, dtype=torch.float32)[None, :, None].expand(frames, H, W) / H
    return torch.stack([x, y, torch.full_like(x, 0.3)], dim=-1).contiguous()


def test_identical_gives_inf_psnr_and_a_uniform_error_of_0_1_gives_20_db():
    src = _ramp() * 0.8
    r = quality_report(src.clone(), src, _mask())
    assert r.kept_psnr_db == math.inf
    out = src.clone()
    out[:, :, X0:X1] += 0.1  # MSE 0.01 over the kept area -> 10*log10(1/0.01) = 20 dB
    out[:, :, :X0] = 0.9  # the generated area does not count
    r = quality_report(out, src, _mask())
    assert r.kept_psnr_db == pytest.approx(20.0, abs=1e-4)


def test_half_of_the_generated_area_painted_fill_colour_is_a_leak_of_one_half():
    src = _ramp()
    out = torch.full((F_, H, W, 3), 0.5)  # grey: far from the fill colour
    out[:, :, X0:X1] = src[:, :, X0:X1]
    out[:, : H // 2, :X0] = torch.tensor(FILL) / 255  # left area: top half painted
    out[:, : H // 2, X1:] = torch.tensor(FILL) / 255  # right area: top half painted
    r = quality_report(out, src, _mask(), fill_rgb=FILL)
    assert r.green_leak_fraction == pytest.approx(0.5)
    # Fill-coloured pixels in the kept area (a green source) are not a leak.
    out[:, :, X0:X1] = torch.tensor(FILL) / 255
    r = quality_report(out, src, _mask(), fill_rgb=FILL)
    assert r.green_leak_fraction == pytest.approx(0.5)
    # Within tolerance counts, just outside does not: 0.09 and 0.11 away in the red channel.
    out[:, : H // 2, :X0, 0] += 0.09
    out[:, : H // 2, X1:, 0] += 0.11
    r = quality_report(out, src, _mask(), fill_rgb=FILL)
    assert r.green_leak_fraction == pytest.approx(X0 / (X0 + W - X1) * 0.5)


def _expected_color_step(out, src, b):
    """The seam colour statistic written out by hand for this geometry: border pairs at x = X0 (generated to
    the left) and x = X1 - 1 (generated to the right), every row, every frame."""
    raws, bases = [], []
    for t in range(out.shape[0]):
        for y in range(H):
            # right border: inner X1-b..X1-1, outer X1..X1+b-1, deep X1-2b..X1-b-1
            inner, outer = out[t, y, X1 - b:X1].mean(0), out[t, y, X1:X1 + b].mean(0)
            s_inner, s_deep = src[t, y, X1 - b:X1].mean(0), src[t, y, X1 - 2 * b:X1 - b].mean(0)
            raws.append(float((outer - inner).abs().mean()))
            bases.append(float((s_inner - s_deep).abs().mean()))
            # left border: inner X0..X0+b-1, outer X0-b..X0-1, deep X0+b..X0+2b-1
            inner, outer = out[t, y, X0:X0 + b].mean(0), out[t, y, X0 - b:X0].mean(0)
            s_inner, s_deep = src[t, y, X0:X0 + b].mean(0), src[t, y, X0 + b:X0 + 2 * b].mean(0)
            raws.append(float((outer - inner).abs().mean()))
            bases.append(float((s_inner - s_deep).abs().mean()))
    return sum(raws) / len(raws), sum(bases) / len(bases), len(raws)


def test_seam_steps_hard_colour_edge_vs_continuous_gradient():
    b = 3
    src = _ramp()
    # Continuous: the generated area continues the picture -> no step beyond the source's own change.
    smooth = quality_report(src.clone(), src, _mask(), band_px=b)
    raw, base, pairs = _expected_color_step(src, src, b)
    assert smooth.seam_pairs == pairs == F_ * H * 2
    assert smooth.seam_color_raw == pytest.approx(raw, abs=1e-6)
    assert smooth.seam_color_baseline == pytest.approx(base, abs=1e-6)
    assert abs(smooth.seam_color_step) < 1e-6 and base > 0  # the ramp does change between bands
    assert smooth.seam_gradient_step == pytest.approx(1.0, abs=1e-3)
    # Hard edge: the generated area is flat 0.9 grey (and the kept area is changed too, which must not
    # change the baseline: it is the source's own change between bands).
    hard_out = src.clone()
    hard_out[:, :, X0:X1] = src[:, :, X0:X1] * 0.5 + 0.2
    hard_out[:, :, :X0] = 0.9
    hard_out[:, :, X1:] = 0.9
    hard = quality_report(hard_out, src, _mask(), band_px=b)
    raw, base, _ = _expected_color_step(hard_out, src, b)
    assert hard.seam_color_step == pytest.approx(raw - base, abs=1e-6)
    assert hard.seam_color_step > 0.2
    # across the border: |0.9 - ramp| per channel; nearby: the ramp's 1/W step in red, 0 in flat grey
    assert hard.seam_gradient_step > 20


def test_seam_on_all_four_sides_of_a_rectangle():
    b, (y0, y1, x0, x1) = 2, (8, 16, 16, 32)  # kept rows [8, 16), columns [16, 32)
    mask = torch.ones(H, W)
    mask[y0:y1, x0:x1] = 0
    src = _ramp(2)
    out = src.clone()
    out[:, :y0] = 0.9  # a hard edge above the source only; the other sides continue the picture
    r = quality_report(out, src, mask, band_px=b)

    def band(img, t, y, x, dy, dx, k0, k1):  # mean over the pixels p + k*(dy, dx), k in [k0, k1]
        return torch.stack([img[t, y + k * dy, x + k * dx] for k in range(k0, k1 + 1)]).mean(0)

    raws, bases = [], []
    sides = [(y0, range(x0, x1), -1, 0), (y1 - 1, range(x0, x1), 1, 0)]  # (row, columns, outward dy, dx)
    for t in range(2):
        for row, cols, dy, dx in sides:
            for x in cols:
                raws.append(float((band(out, t, row, x, dy, dx, 1, b) - band(out, t, row, x, dy, dx, 1 - b, 0))
                                  .abs().mean()))
                bases.append(float((band(src, t, row, x, dy, dx, 1 - b, 0) - band(src, t, row, x, dy, dx, 1 - 2 * b, -b))
                                   .abs().mean()))
        for col, dx in ((x0, -1), (x1 - 1, 1)):
            for y in range(y0, y1):
                raws.append(float((band(out, t, y, col, 0, dx, 1, b) - band(out, t, y, col, 0, dx, 1 - b, 0))
                                  .abs().mean()))
                deep = band(src, t, y, col, 0, dx, 1 - 2 * b, -b)
                bases.append(float((band(src, t, y, col, 0, dx, 1 - b, 0) - deep).abs().mean()))
    assert r.seam_pairs == len(raws) == 2 * (2 * (x1 - x0) + 2 * (y1 - y0))
    assert r.seam_color_raw == pytest.approx(sum(raws) / len(raws), abs=1e-6)
    assert r.seam_color_baseline == pytest.approx(sum(bases) / len(bases), abs=1e-6)
    assert r.seam_color_step > 0.05


def test_temporal_flicker_static_generated_area_vs_generated_noise():
    frames = 6
    src = torch.stack([_ramp(1)[0] * 0.5 + 0.02 * t for t in range(frames)])  # moves 0.02 per frame
    static = src.clone()
    static[:, :, :X0] = 0.4
    static[:, :, X1:] = 0.6
    r = quality_report(static, src, _mask())
    assert r.temporal_flicker_generated == 0 and r.temporal_flicker == 0
    assert r.temporal_flicker_source == pytest.approx(0.02, abs=1e-6)
    noisy = src.clone()
    noise = torch.rand(frames, H, W, 3, generator=torch.Generator().manual_seed(1))
    noisy[:, :, :X0] = noise[:, :, :X0]
    noisy[:, :, X1:] = noise[:, :, X1:]
    r = quality_report(noisy, src, _mask())
    gen = _mask() > 0.5
    expected = float((noisy[1:, gen] - noisy[:-1, gen]).abs().mean())  # ~1/3 for uniform noise
    assert r.temporal_flicker_generated == pytest.approx(expected, rel=1e-5)
    assert r.temporal_flicker == pytest.approx(expected / 0.02, rel=1e-4)
    assert r.temporal_flicker > 10
    # Chunks of frames join: 20 frames give the same mean as computing it in one go.
    long_src = torch.stack([_ramp(1)[0] * 0.5 + 0.01 * t for t in range(20)])
    long_out = long_src.clone()
    long_out[:, :, :X0] = torch.rand(20, H, X0, 3, generator=torch.Generator().manual_seed(2))
    r = quality_report(long_out, long_src, _mask())
    expected = float((long_out[1:, gen] - long_out[:-1, gen]).abs().mean())
    assert r.temporal_flicker_generated == pytest.approx(expected, rel=1e-5)


def test_edge_cases_no_generated_area_everything_generated_one_frame():
    src = _ramp()
    none_generated = quality_report(src.clone(), src, torch.zeros(H, W))
    assert none_generated.kept_psnr_db == math.inf and none_generated.generated_fraction == 0
    assert none_generated.green_leak_fraction is None and none_generated.seam_color_step is None
    assert none_generated.temporal_flicker is None and none_generated.temporal_flicker_source == 0
    all_generated = quality_report(src.clone(), src, torch.ones(H, W))
    assert all_generated.kept_psnr_db is None and all_generated.seam_pairs == 0
    assert all_generated.green_leak_fraction == 0 and all_generated.temporal_flicker is None
    one = quality_report(src[:1].clone(), src[:1], _mask())
    assert one.frames == 1 and one.temporal_flicker is None and one.temporal_flicker_generated is None
    for r in (none_generated, all_generated, one):
        text = "\n".join(r.lines())
        assert "n/a" in text
        json.dumps(r.to_dict(), allow_nan=False)  # JSON-safe: inf written as "inf"
    assert none_generated.to_dict()["kept_psnr_db"] == "inf"
    with pytest.raises(ValueError, match="band_px"):
        quality_report(src, src, _mask(), band_px=1)
    with pytest.raises(ValueError, match="generate_mask"):
        quality_report(src, src, torch.zeros(H, W + 1))


def test_lines_and_dict_carry_the_figures():
    src = _ramp()
    out = src.clone()
    out[:, :, :X0] = torch.tensor(FILL) / 255
    r = quality_report(out, src, _mask(), fill_rgb=FILL)
    d = r.to_dict()
    assert d["green_leak_fraction"] == pytest.approx(X0 / (X0 + W - X1))
    assert d["fill_rgb"] == list(FILL) and d["band_px"] == 2
    text = "\n".join(r.lines())
    assert "#66FF00" in text and "PSNR: inf dB" in text and "seam colour step" in text
    assert f"{r.green_leak_fraction:.2%}" in text
