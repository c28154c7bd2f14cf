"""The paste-back and reference preparation of the official workflow (nodes/local/blend.py).

`pyramid_blend` is compared with an independent reference of Lightricks' `LTXVLaplacianPyramidBlend`
written here on kornia's own pyramid functions (kornia comes with ComfyUI's requirements in the test
venv; the pack itself does not import it).
"""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from ltx_outpaint.local import blend
from ltx_outpaint.local.blend import (blend_reach, dilate_mask_low_res, inpaint_fill, official_stage_inputs,
                                      pyramid_blend)
from ltx_outpaint.local.lora_targets import stream_of, wanted
from ltx_outpaint.local.recipe import OFFICIAL

FILL = OFFICIAL.fill_rgb


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _kornia():
    try:
        from kornia.geometry.transform import pyramid
    except ImportError as e:  # pragma: no cover - depends on the venv
        if _in_ci():
            pytest.fail(f"kornia is needed for the reference blend (ComfyUI's requirements install it): {e}")
        pytest.skip(f"kornia not installed: {e}")
    return pyramid


def _reference_blend(image_a, image_b, mask, dilation, max_level=7):
    """LTXVLaplacianPyramidBlend.execute as documented (ComfyUI-LTXVideo pyramid_blending.py), on kornia.
    image_a/b [F,H,W,3], mask [F,H,W]; frame counts equal."""
    k = _kornia()
    a, b, m = image_a.permute(0, 3, 1, 2), image_b.permute(0, 3, 1, 2), mask[:, None].float()
    h, w = a.shape[-2:]
    if dilation > 0:
        if max(h, w) != 64:
            s = 64 / max(h, w)
            m = F.interpolate(m, size=(max(1, int(round(h * s))), max(1, int(round(w * s)))), mode="bilinear",
                              align_corners=False)
        m = F.max_pool2d(m, kernel_size=2 * dilation + 1, stride=1, padding=dilation)
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    pr = pd = 0
    if not (k.is_powerof_two(h) and k.is_powerof_two(w)):
        pr, pd = k.find_next_powerof_two(w) - w, k.find_next_powerof_two(h) - h
    max_level = min(max_level, int(math.log2(min(h + pd, w + pr))))
    if pr or pd:
        m = F.pad(m, (0, pr, 0, pd), mode="reflect")
    out = []
    for s in range(0, a.shape[0], 8):
        ca, cb = a[s:s + 8], b[s:s + 8]
        if pr or pd:
            ca, cb = F.pad(ca, (0, pr, 0, pd), mode="reflect"), F.pad(cb, (0, pr, 0, pd), mode="reflect")
        la = k.build_laplacian_pyramid(ca, max_level)
        lb = k.build_laplacian_pyramid(cb, max_level)
        gm = k.build_pyramid(m[s:s + 8], max_level)
        o = la[-1] * gm[-1] + lb[-1] * (1 - gm[-1])
        for i in range(len(la) - 2, -1, -1):
            o = k.pyrup(o) + la[i] * gm[i] + lb[i] * (1 - gm[i])
        out.append(o[..., :h, :w].clamp(0, 1))
    return torch.cat(out).permute(0, 2, 3, 1)


def _rand(*shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("frames,h,w", [(3, 96, 160), (10, 100, 300), (2, 64, 64), (1, 37, 53), (9, 128, 256)])
@pytest.mark.parametrize("dilation", [0, 2, 5])
def test_pyramid_blend_equals_the_official_node_on_kornia(frames, h, w, dilation):
    a, b = _rand(frames, h, w, 3, seed=1), _rand(frames, h, w, 3, seed=2)
    mask = (_rand(frames, h, w, seed=3) > 0.6).float()
    ours = pyramid_blend(a, b, mask, dilation=dilation)
    ref = _reference_blend(a, b, mask, dilation)
    assert ours.shape == ref.shape == (frames, h, w, 3)
    assert float((ours - ref).abs().max()) < 1e-5


def test_single_frame_mask_applies_to_every_frame_and_frames_trim_to_shortest():
    a, b = _rand(11, 48, 80, 3, seed=4), _rand(12, 48, 80, 3, seed=5)
    mask = torch.zeros(48, 80)
    mask[:, :20] = 1
    ours = pyramid_blend(a, b, mask, dilation=5)
    ref = _reference_blend(a, b[:11], mask.expand(11, 48, 80), 5)
    assert ours.shape == (11, 48, 80, 3)
    assert float((ours - ref).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="frame counts"):
        pyramid_blend(a, b, mask, dilation=5, trim_to_shortest=False)


def test_chunks_of_eight_frames_and_results_independent_of_chunking(monkeypatch):
    seen = []
    real = blend._blend_chunk

    def spy(a, b, masks):  # records the chunk size, then runs the real code
        seen.append(a.shape[0])
        return real(a, b, masks)

    monkeypatch.setattr(blend, "_blend_chunk", spy)
    a, b = _rand(19, 40, 72, 3, seed=6), _rand(19, 40, 72, 3, seed=7)
    mask = torch.zeros(40, 72)
    mask[:, 50:] = 1
    out8 = pyramid_blend(a, b, mask, dilation=2)
    assert seen == [8, 8, 3]
    out1 = pyramid_blend(a, b, mask, dilation=2, chunk=1)
    assert torch.equal(out8, out1)


def test_inputs_are_not_modified_and_validation_names_the_argument():
    a, b = _rand(2, 32, 48, 3, seed=8), _rand(2, 32, 48, 3, seed=9)
    a0, b0 = a.clone(), b.clone()
    pyramid_blend(a, b, torch.ones(32, 48), dilation=1)
    assert torch.equal(a, a0) and torch.equal(b, b0)
    with pytest.raises(ValueError, match="original"):
        pyramid_blend(a, b[:, :16], torch.ones(32, 48), dilation=1)
    with pytest.raises(ValueError, match="mask"):
        pyramid_blend(a, b, torch.ones(30, 48), dilation=1)


def test_single_pixel_dilates_to_a_square_of_2r_plus_1_cells_on_the_64_cell_grid():
    # Long side already 64: the grid is the pixel grid; a (2r+1)^2 square exactly.
    for r in (1, 2, 5):
        m = torch.zeros(1, 1, 32, 64)
        m[0, 0, 10, 20] = 1
        d = dilate_mask_low_res(m, r)
        expected = torch.zeros(32, 64)
        expected[10 - r:10 + r + 1, 20 - r:20 + r + 1] = 1
        assert torch.equal(d[0, 0], expected)
    # Long side 256: cells of 4 px. Bilinear (align_corners=False) samples pixels 4i+1 and 4i+2 with weight
    # 1/2 each, so the pixel (21, 41) gives cell (5, 10) the value 1/4; the max-pool spreads it over cells
    # 3..7 x 8..12; back at full size a pixel y reads cell coordinate (y + 0.5) / 4 - 0.5.
    m = torch.zeros(1, 1, 128, 256)
    m[0, 0, 21, 41] = 1
    d = dilate_mask_low_res(m, 2)[0, 0]
    coord = (torch.arange(256) + 0.5) / 4 - 0.5
    rows_in = (coord[:128] >= 3) & (coord[:128] <= 7)
    cols_in = (coord >= 8) & (coord <= 12)
    rows_out = (coord[:128] <= 2) | (coord[:128] >= 8)
    cols_out = (coord <= 7) | (coord >= 13)
    assert torch.equal(d[rows_in][:, cols_in], torch.full((int(rows_in.sum()), int(cols_in.sum())), 0.25))
    assert int(rows_in.sum()) == 16 and int(cols_in.sum()) == 16  # 5 cells of 4 px, less half a cell each end
    assert float(d[rows_out].abs().max()) == 0 and float(d[:, cols_out].abs().max()) == 0
    assert float(d.max()) == 0.25
    # cells <= 0: unchanged
    assert torch.equal(dilate_mask_low_res(m, 0), m)


def test_outside_its_reach_the_blend_returns_the_original():
    # The official final blend on the workflow's default canvas (1920x1088, source 1792x1024): the 7 levels
    # reach far into the source, but its middle is untouched. (At the stage-1 size, 960x544 with dilation
    # 5, every source pixel is within reach.)
    h, w = 1088, 1920
    mask = torch.ones(h, w)
    mask[32:1056, 64:1856] = 0
    reach = blend_reach(mask, dilation=OFFICIAL.stages[1].blend_dilation)
    source = mask == 0
    assert 0 < int((source & ~reach).sum()) < int(source.sum())  # some of the source is reached, not all
    assert bool(reach[mask > 0].all())
    b = _rand(1, h, w, 3, seed=10)
    b[0, mask > 0] = torch.tensor(FILL, dtype=torch.float32) / 255
    for seed in (11, 12):
        a = _rand(1, h, w, 3, seed=seed)
        out = pyramid_blend(a, b, mask, dilation=OFFICIAL.stages[1].blend_dilation)
        assert torch.equal(out[0, ~reach], b[0, ~reach])
        assert float((out[0, reach] - b[0, reach]).abs().max()) > 0.05  # inside the reach it blends


def test_dilation_pulls_the_generated_picture_into_the_source_and_no_fill_colour_survives():
    h, w = 128, 256
    mask = torch.zeros(h, w)
    mask[:, :64] = 1  # generate the left quarter
    gen = torch.full((1, h, w, 3), 0.5)
    src = torch.full((1, h, w, 3), 0.25)
    src[0, mask > 0] = torch.tensor(FILL, dtype=torch.float32) / 255  # the green composite
    near, far = [], []
    fill = torch.tensor(FILL, dtype=torch.float32) / 255
    for r in (0, 1, 2, 5):
        out = pyramid_blend(gen, src, mask, dilation=r, levels=4)
        near.append(float(out[0, 64, 70, 0]))  # 6 px (1.5 cells of 4 px) inside the source
        far.append(float(out[0, 64, 200, 0]))  # 34 cells away
        dist = (out[0, mask > 0] - fill).norm(dim=-1)
        assert float(dist.min()) > 0.3  # no pixel of the generated area is near the fill colour
    assert near[0] < 0.3 and near[-1] > 0.48  # r = 0 keeps mostly the source (0.25); r = 5 takes the generated 0.5
    assert near == sorted(near) and len(set(near)) == len(near)  # more dilation, more of the generated picture
    assert all(abs(v - 0.25) < 1e-5 for v in far)


def test_inpaint_fill_mixes_linearly_and_broadcasts_a_single_frame_mask():
    images = torch.full((3, 2, 2, 3), 0.2)
    mask = torch.tensor([[0.0, 1.0], [0.5, 0.25]])
    out = inpaint_fill(images, mask, (102, 255, 0))
    fill = torch.tensor([102 / 255, 1.0, 0.0])
    assert out.shape == (3, 2, 2, 3)
    for f in range(3):
        assert torch.allclose(out[f, 0, 0], torch.full((3,), 0.2))
        assert torch.allclose(out[f, 0, 1], fill)
        assert torch.allclose(out[f, 1, 0], 0.5 * 0.2 + 0.5 * fill)
        assert torch.allclose(out[f, 1, 1], 0.75 * 0.2 + 0.25 * fill)
    # per-frame masks: trimmed to the shorter of images and mask, like the node
    assert inpaint_fill(images, mask.expand(2, 2, 2), (0, 0, 0)).shape == (2, 2, 2, 3)


def test_official_stage_inputs_build_both_composites():
    f, h, w = 2, 64, 96
    placed = torch.full((f, h, w, 3), 0.5)  # KJNodes' grey canvas
    placed[:, 8:56, 16:80] = _rand(f, 48, 64, 3, seed=13)
    mask = torch.ones(h, w)
    mask[8:56, 16:80] = 0
    mask[8, 16] = 0.5  # a fractional value survives into both masks
    st = official_stage_inputs(placed, mask, FILL)
    fill = torch.tensor(FILL, dtype=torch.float32) / 255
    assert torch.equal(st.full_mask, mask)
    assert torch.allclose(st.full_ref, placed * (1 - mask[..., None]) + fill * mask[..., None])
    # half size: area = 2x2 means here (even sides)
    half_mask = mask.reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    half_img = placed.reshape(f, h // 2, 2, w // 2, 2, 3).mean((2, 4))
    assert st.half_mask.shape == (32, 48) and torch.allclose(st.half_mask, half_mask, atol=1e-6)
    assert torch.allclose(st.half_ref, half_img * (1 - half_mask[..., None]) + fill * half_mask[..., None],
                          atol=1e-6)
    assert 0 < float(st.half_mask[4, 8]) < 1  # grey and source mixed at the half-size border
    # odd sides: Python's round() like ResizeImageMaskNode (round(95.5) = 96, round(64.5) = 64)
    odd = official_stage_inputs(torch.rand(1, 129, 191, 3), torch.ones(129, 191), FILL)
    assert odd.half_mask.shape == (64, 96) and odd.half_ref.shape == (1, 64, 96, 3)


def test_lora_streams():
    assert stream_of("diffusion_model.transformer_blocks.3.attn1.to_q.lora_A.weight") == "video"
    assert stream_of("transformer_blocks.3.audio_attn1.to_q") == "audio"
    assert stream_of("transformer_blocks.12.audio_ff.net.0.proj") == "audio"
    assert stream_of("transformer_blocks.0.audio_to_video_attn.to_k") == "cross"
    assert stream_of("transformer_blocks.0.video_to_audio_attn.to_k") == "cross"
    assert stream_of("audio_patchify_proj") == "audio" and stream_of("patchify_proj") == "video"
    assert wanted("transformer_blocks.0.video_to_audio_attn.to_k", "both")
    assert not wanted("transformer_blocks.0.video_to_audio_attn.to_k", "video")
    assert not wanted("transformer_blocks.0.attn2.to_k", "audio")
