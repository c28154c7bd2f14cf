"""The request model against an independent, hand-written copy of fal's published schema
(tests/data/fal_schema.json, with its source): every field, type, default, range and enum of FIELDS is compared
with it, never with values taken from the code under test."""
import json
import math
import os

import pytest

from ltx_outpaint.cost import estimate_cost
from ltx_outpaint.errors import InputError
from ltx_outpaint.request import (FIELDS, MAX_LORAS, RESOLUTION_PRESETS, ImageSize,
                                  LoraSpec, OutpaintRequest)

with open(os.path.join(os.path.dirname(__file__), "data", "fal_schema.json"), encoding="utf-8") as _f:
    SCHEMA = json.load(_f)
INPUT = SCHEMA["input"]
#: fal's type names -> FieldSpec.kind
KINDS = {"string": "str", "integer": "int", "float": "float", "boolean": "bool", "enum": "enum",
         "ImageSize | Enum": "resolution", "list<LoRAInput>": "loras"}
NUMERIC = [name for name, f in INPUT.items() if "min" in f]


def test_fields_are_exactly_the_published_inputs_with_their_types():
    assert set(FIELDS) == set(INPUT)
    for name, published in INPUT.items():
        assert FIELDS[name].kind == KINDS[published["type"]], name


def test_defaults_match_the_published_schema():
    r = OutpaintRequest()
    for name, published in INPUT.items():
        if "default" in published:
            assert FIELDS[name].default == published["default"], name
            assert getattr(r, name) == published["default"], name
    assert FIELDS["seed"].default is None and r.seed is None  # published: random when missing
    assert "seed" not in r.to_fal_input()
    r.validate()


def test_required_fields_are_in_every_request():
    body = OutpaintRequest(prompt="p", video_url="https://x/v.mp4").to_fal_input()
    for name, published in INPUT.items():
        if published.get("required"):
            assert name in body, name
    assert FIELDS["prompt"].required and FIELDS["video_url"].required
    with pytest.raises(InputError, match="video_url: is required"):
        OutpaintRequest().validate(require_video_url=True)


def test_the_published_full_example_round_trips():
    example = SCHEMA["full_example"]
    body = OutpaintRequest.from_dict(example).validate().to_fal_input()
    assert {k: body[k] for k in example} == example
    assert all(body[k] == INPUT[k]["default"] for k in set(body) - set(example))  # e.g. sync_mode


@pytest.mark.parametrize("name", NUMERIC)
def test_numeric_bounds(name):
    published = INPUT[name]
    spec = FIELDS[name]
    lo, hi = published["min"], published["max"]
    assert (spec.minimum, spec.maximum) == (lo, hi)
    kind = int if published["type"] == "integer" else float
    OutpaintRequest(**{name: kind(lo)}).validate()
    OutpaintRequest(**{name: kind(hi)}).validate()
    step = 1 if kind is int else 0.001
    for bad in (lo - step, hi + step):
        bad = kind(bad)
        with pytest.raises(InputError) as e:
            OutpaintRequest(**{name: bad}).validate()
        assert e.value.field == name
        msg = str(e.value)
        assert name in msg and repr(bad) in msg and f"{spec.minimum}" in msg and f"{spec.maximum}" in msg


@pytest.mark.parametrize("name", [n for n, f in INPUT.items() if f["type"] == "enum"])
def test_enums_are_the_published_options(name):
    assert list(FIELDS[name].choices) == INPUT[name]["options"]
    with pytest.raises(InputError, match=", ".join(INPUT[name]["options"])):
        OutpaintRequest(**{name: "ultra"}).validate()


@pytest.mark.parametrize("name,value", [("num_frames", 12.5), ("seed", "7"), ("generate_audio", 1),
                                        ("video_quality", "ultra"), ("video_write_mode", "slow"),
                                        ("resolution", "landscape_21_9"), ("prompt", None),
                                        ("source_scale", math.nan)])
def test_wrong_types_and_enums_name_the_field(name, value):
    with pytest.raises(InputError) as e:
        OutpaintRequest(**{name: value}).validate()
    assert e.value.field == name and name in str(e.value)


def test_custom_resolution_bounds():
    OutpaintRequest(resolution=ImageSize(1280, 720)).validate()
    with pytest.raises(InputError, match=r"resolution.width: got 20000; allowed range 64 to 14142"):
        OutpaintRequest(resolution=ImageSize(20000, 720)).validate()
    with pytest.raises(InputError, match="resolution.height"):
        OutpaintRequest(resolution=ImageSize(1280, 10)).validate()


def test_presets_give_fal_sizes():
    published = {name: tuple(size) for name, size in SCHEMA["resolution_presets"].items()}
    assert RESOLUTION_PRESETS == published
    assert FIELDS["resolution"].choices == tuple(published)
    for name, size in published.items():
        assert OutpaintRequest(resolution=name).canvas_size == size


def test_loras_validated():
    ok = LoraSpec("https://example.com/a.safetensors", 1.0, "video")
    assert MAX_LORAS == INPUT["loras"]["max_items"]
    assert set(ok.to_dict()) == set(INPUT["loras"]["item_fields"])
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
    ex = SCHEMA["pricing"]["example"]
    c = estimate_cost(ex["width"], ex["height"], ex["frames"])
    assert c.megapixels == ex["megapixels"]
    assert round(c.usd, 4) == ex["usd"]
    assert f"${ex['usd']}" in str(c)
    assert c.usd == pytest.approx(ex["megapixels"] * SCHEMA["pricing"]["usd_per_megapixel"])
    assert estimate_cost(1000, 1000, 1).megapixels == 1
    assert estimate_cost(1000, 1000, 1).usd == pytest.approx(0.0024075)
    assert estimate_cost(1001, 1000, 1).megapixels == 2  # rounded up
    with pytest.raises(ValueError):
        estimate_cost(0, 720, 121)
