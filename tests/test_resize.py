"""`ltx_outpaint.media.resize.resize` against the real `comfy.utils.common_upscale` of the test ComfyUI.

ComfyUI's functions run in a subprocess (importing `comfy` into the test process would put ComfyUI's
modules in front of every later test); the inputs go there and the results come back as .pt files.
Without a ComfyUI folder (env LTX_OUTPAINT_COMFYUI_DIR) the comparison is skipped, under CI=true it fails.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from comfyui_server import find_comfyui_dir
from ltx_outpaint.local.blend import official_stage_inputs
from ltx_outpaint.media.resize import METHODS, resize

SIZES = [((37, 53), (20, 30)), ((37, 53), (53, 37)), ((64, 96), (96, 64)), ((64, 96), (150, 101)),
         ((72, 128), (128, 72)), ((90, 60), (31, 47)), ((50, 101), (40, 40)), ((103, 48), (40, 40))]
# ((src h, src w), (dst w, dst h)); the last two crop 25.5 and 27.5 px per side: round() (banker's), not int()
FILL = (102, 255, 0)

_CHILD = textwrap.dedent("""
    import sys
    import torch
    sys.path.insert(0, sys.argv[1])
    import comfy.utils as cu

    cases = torch.load(sys.argv[2])
    out = []
    for c in cases:
        x = c["images"].movedim(-1, 1)  # what ResizeImageMaskNode hands common_upscale for an IMAGE
        out.append(cu.common_upscale(x, c["width"], c["height"], c["method"], c["crop"]).movedim(1, -1))
    st = torch.load(sys.argv[3])
    placed, mask = st["placed"], st["mask"]
    h, w = mask.shape
    hw, hh = round(w * 0.5), round(h * 0.5)
    # ResizeImageMaskNode "scale by multiplier 0.5, area" on the MASK; "match size, center, area" on the IMAGE
    half_mask = cu.common_upscale(mask[None, None], hw, hh, "area", "disabled")[:, 0]
    half_img = cu.common_upscale(placed.movedim(-1, 1), hw, hh, "area", "center").movedim(1, -1)
    torch.save({"resized": out, "half_mask": half_mask, "half_img": half_img}, sys.argv[4])
""")


def _comfyui_dirs() -> list[str]:
    path, reason = find_comfyui_dir()
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    dirs = [path]
    current = os.path.join(os.path.dirname(path), "ComfyUI-0.20.1")  # .ci/comfyui-current.sh, when run
    if os.path.isfile(os.path.join(current, "comfy", "utils.py")):
        dirs.append(current)
    return dirs


def _cases():
    g = torch.Generator().manual_seed(0)
    cases = []
    for (h, w), (dw, dh) in SIZES:
        images = torch.rand(2, h, w, 3, generator=g)
        images[0, 0, 0] = torch.tensor([1.2, -0.1, 0.5])  # out of range values: lanczos clips, others keep
        for method in METHODS:
            for crop in ("disabled", "center"):
                cases.append(dict(images=images, width=dw, height=dh, method=method, crop=crop))
        for method in ("area", "bilinear", "nearest-exact"):  # a 1-channel mask
            cases.append(dict(images=images[..., :1].contiguous(), width=dw, height=dh, method=method,
                              crop="center"))
    return cases


def test_resize_equals_comfy_common_upscale(tmp_path):
    cases = _cases()
    placed = torch.full((3, 129, 191, 3), 0.5)
    placed[:, 10:119, 20:171] = torch.rand(3, 109, 151, 3, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(129, 191)
    mask[10:119, 20:171] = 0
    torch.save(cases, tmp_path / "cases.pt")
    torch.save({"placed": placed, "mask": mask}, tmp_path / "stage.pt")
    (tmp_path / "child.py").write_text(_CHILD)
    for comfy_dir in _comfyui_dirs():
        result_path = tmp_path / "result.pt"
        proc = subprocess.run([sys.executable, str(tmp_path / "child.py"), comfy_dir, str(tmp_path / "cases.pt"),
                               str(tmp_path / "stage.pt"), str(result_path)], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"ComfyUI at {comfy_dir}:\n{proc.stderr[-3000:]}"
        theirs = torch.load(result_path)
        for case, expected in zip(cases, theirs["resized"]):
            ours = resize(case["images"], case["width"], case["height"], case["method"], case["crop"])
            what = (f"{comfy_dir}: {tuple(case['images'].shape)} -> {case['width']}x{case['height']} "
                    f"{case['method']} crop={case['crop']}")
            assert ours.shape == expected.shape, what
            assert torch.equal(ours, expected), f"{what}: max diff {float((ours - expected).abs().max())}"
        st = official_stage_inputs(placed, mask, FILL)
        assert torch.equal(st.half_mask, theirs["half_mask"][0])
        fill = torch.tensor(FILL, dtype=torch.float32) / 255
        m = theirs["half_mask"][0][..., None]
        assert torch.equal(st.half_ref, theirs["half_img"] * (1 - m) + fill * m)


def test_lanczos_is_quantised_and_center_crop_trims_the_long_axis():
    x = torch.rand(1, 10, 20, 3, generator=torch.Generator().manual_seed(3))
    same = resize(x, 20, 10, "lanczos")
    assert torch.equal(same, (x * 255).clamp(0, 255).to(torch.uint8).float() / 255)  # uint8 round trip
    # 20x10 -> 10x10 with centre crop: 5 columns off each side first, then an identity-size area resize
    assert torch.equal(resize(x, 10, 10, "area", crop="center"), x[:, :, 5:15])
    with pytest.raises(ValueError, match="method"):
        resize(x, 5, 5, "bislerp")
    with pytest.raises(ValueError, match="crop"):
        resize(x, 5, 5, "area", crop="top")
