import math

import pytest

from ltx_outpaint.cost import estimate_cost
from ltx_outpaint.errors import InputError
from ltx_outpaint.request import (DEFAULT_NEGATIVE_PROMPT, FIELDS, MAX_LORAS, RESOLUTION_PRESETS, ImageSize,
                                  LoraSpec, OutpaintRequest)

NUMERIC = [s for s in FIELDS.values() if s.kind in ("int", "float")]


def test_defaults_match_the_endpoint_schema():
    r = OutpaintRequest()
    assert (r.resolution, r.source_scale, r.video_strength, r.num_frames, r.frames_per_second) == (
        "landscape_16_9", 0.75, 1.0, 121, 24.0)
    assert (r.num_inference_steps, r.guidance_scale, r.generate_audio, r.seed) == (15, 1.0, True, None)
    assert (r.enable_prompt_expansion, r.enable_safety_checker, r.sync_mode) == (True, True, False)
    assert (r.video_quality, r.video_write_mode) == ("high", "balanced")
    assert r.negative_prompt == DEFAULT_NEGATIVE_PROMPT and r.negative_prompt.startswith("color distortion")
    for spec in FIELDS.values():
        if spec.name not in ("loras",):
            assert getattr(r, spec.name) == spec.default, spec.name
    r.validate()


def test_every_endpoint_field_is_in_the_model():
    expected = {"prompt", "video_url", "resolution", "source_scale", "video_strength", "num_frames",
                "frames_per_second", "num_inference_steps", "guidance_scale", "generate_audio",
                "negative_prompt", "seed", "enable_prompt_expansion", "enable_safety_checker", "video_quality",
                "video_write_mode", "sync_mode", "loras"}
    assert set(FIELDS) == expected
    assert set(OutpaintRequest().to_fal_input()) == expected - {"seed"}


@pytest.mark.parametrize("spec", NUMERIC, ids=lambda s: s.name)
def test_numeric_bounds(spec):
    lo, hi = spec.minimum, spec.maximum
    step = 1 if spec.kind == "int" else 0.001
    OutpaintRequest(**{spec.name: type(spec.default or 0)(lo)}).validate()
    OutpaintRequest(**{spec.name: type(spec.default or 0)(hi)}).validate()
    for bad in (lo - step, hi + step):
        bad = int(bad) if spec.kind == "int" else bad
        with pytest.raises(InputError) as e:
            OutpaintRequest(**{spec.name: bad}).validate()
        assert e.value.field == spec.name
        msg = str(e.value)
        assert spec.name in msg and repr(bad) in msg and f"{lo}" in msg and f"{hi}" in msg


@pytest.mark.parametrize("name,value", [("num_frames", 12.5), ("seed", "7"), ("generate_audio", 1),
                                        ("video_quality", "ultra"), ("video_write_mode", "slow"),
                                        ("resolution", "landscape_21_9"), ("prompt", None),
                                        ("source_scale", math.nan)])
def test_wrong_types_and_enums_name_the_field(name, value):
    with pytest.raises(InputError) as e:
        OutpaintRequest(**{name: value}).validate()
    assert e.value.field == name and name in str(e.value)


def test_enum_error_lists_allowed_values():
    with pytest.raises(InputError, match="low, medium, high, maximum"):
        OutpaintRequest(video_quality="ultra").validate()


def test_custom_resolution_bounds():
    OutpaintRequest(resolution=ImageSize(1280, 720)).validate()
    with pytest.raises(InputError, match=r"resolution.width: got 20000; allowed range 64 to 14142"):
        OutpaintRequest(resolution=ImageSize(20000, 720)).validate()
    with pytest.raises(InputError, match="resolution.height"):
        OutpaintRequest(resolution=ImageSize(1280, 10)).validate()


def test_presets_give_fal_sizes():
    assert RESOLUTION_PRESETS == {"square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
                                  "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768),
                                  "landscape_16_9": (1024, 576)}
    for name, size in RESOLUTION_PRESETS.items():
        assert OutpaintRequest(resolution=name).canvas_size == size


def test_loras_validated():
    ok = LoraSpec("https://example.com/a.safetensors", 1.0, "video")
    OutpaintRequest(loras=(ok,) * MAX_LORAS).validate()
    with pytest.raises(InputError, match="got 4 LoRAs; at most 3"):
        OutpaintRequest(loras=(ok,) * 4).validate()
    with pytest.raises(InputError, match=r"^scale \(LoRA Stack #1\): got 5.0; allowed range 0.0 to 4.0$"):
        OutpaintRequest(loras=(LoraSpec("a.safetensors", 5.0),)).validate()
    with pytest.raises(InputError, match=r"^transformer \(LoRA Stack #2\): got 'high'; allowed: both, video, "
                                         r"audio$"):
        OutpaintRequest(loras=(ok, LoraSpec("b.safetensors", 1, "high"))).validate()


def test_fal_input_roundtrip():
    body = {"prompt": "p", "video_url": "https://x/v.mp4", "resolution": {"width": 1280, "height": 720},
            "seed": 42, "loras": [{"path": "https://x/l.safetensors", "scale": 0.5, "transformer": "audio"}]}
    r = OutpaintRequest.from_dict(body).validate(require_video_url=True)
    out = r.to_fal_input()
    assert out["resolution"] == {"width": 1280, "height": 720} and out["seed"] == 42
    assert out["loras"] == body["loras"]
    assert OutpaintRequest.from_dict(out) == r
    with pytest.raises(InputError, match="unknown field"):
        OutpaintRequest.from_dict({"promt": "typo"})
    with pytest.raises(InputError, match="video_url: is required"):
        OutpaintRequest().validate(require_video_url=True)


def test_cost_seed_example():
    c = estimate_cost(1280, 720, 121)
    assert c.megapixels == 112
    assert round(c.usd, 4) == 0.2696
    assert "$0.2696" in str(c)
    assert estimate_cost(1000, 1000, 1).megapixels == 1
    assert estimate_cost(1000, 1000, 1).usd == pytest.approx(0.0024075)
    assert estimate_cost(1001, 1000, 1).megapixels == 2  # rounded up
    with pytest.raises(ValueError):
        estimate_cost(0, 720, 121)
