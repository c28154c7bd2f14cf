"""The one request model: every input of fal's `fal-ai/ltx-2.3-quality/outpaint/lora` endpoint.

Every backend (preview, fal, local) takes an :class:`OutpaintRequest`, so a graph can switch backend
without changing what its values mean. Defaults, ranges and enums below are the endpoint's published
schema (see README "Request fields"); `FIELDS` is the single table the nodes, the CLI and validation
are generated from.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

ENDPOINT_ID = "fal-ai/ltx-2.3-quality/outpaint/lora"

#: fal's named canvas sizes (width, height).
RESOLUTION_PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
#: Bounds for a custom canvas side (fal's ImageSize schema caps each side at 14142 px).
CANVAS_SIDE_RANGE = (64, 14142)

DEFAULT_NEGATIVE_PROMPT = (
    "color distortion, overexposure, static, blurry details, subtitles, style, artwork, painting, "
    "frame, still, dim overall tone, worst quality, low quality, JPEG compression artifacts, ugly, "
    "mutilated, extra fingers, poorly drawn hands, poorly drawn face, deformed, disfigured, malformed "
    "limbs, fused fingers, motionless frame, cluttered background, three legs, crowded background, "
    "walking backwards"
)

VIDEO_QUALITIES = ("low", "medium", "high", "maximum")
VIDEO_WRITE_MODES = ("fast", "balanced", "small")
#: Which of LTX-2.3's two transformer streams a LoRA is fused into (see README "LoRA targets").
LORA_TARGETS = ("both", "video", "audio")
MAX_LORAS = 3
LORA_SCALE_RANGE = (0.0, 4.0)
SEED_RANGE = (0, 2**63 - 1)


@dataclass(frozen=True)
class FieldSpec:
    """Schema of one request field: type, default, bounds and the doc shown as tooltip / --help."""

    name: str
    kind: str  # "str", "int", "float", "bool", "enum", "resolution", "loras"
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False
    multiline: bool = False


FIELDS: dict[str, FieldSpec] = {
    f.name: f
    for f in (
        FieldSpec("prompt", "str", "", "The prompt to guide the outpainted video generation. Describe the "
                  "scene, not the edit.", required=True, multiline=True),
        FieldSpec("video_url", "str", "", "The source video to spatially outpaint (a URL; the nodes and CLI "
                  "fill it from the loaded video).", required=True),
        FieldSpec("resolution", "resolution", "landscape_16_9", "Target canvas size: a preset name or a "
                  "custom width x height. Use a size larger than the source to actually extend the frame.",
                  choices=tuple(RESOLUTION_PRESETS)),
        FieldSpec("source_scale", "float", 0.75, "Scale of the source inside the canvas: 1.0 is the largest "
                  "size that fits, 0.75 leaves a border for the model to fill.", 0.25, 1.0),
        FieldSpec("video_strength", "float", 1.0, "Strength of the IC-LoRA video guide for the original "
                  "content; higher preserves the source more strongly.", 0.0, 1.0),
        FieldSpec("num_frames", "int", 121, "Number of frames to generate.", 9, 481),
        FieldSpec("frames_per_second", "float", 24.0, "Frames per second of the generated video.", 1.0, 60.0),
        FieldSpec("num_inference_steps", "int", 15, "Number of denoising steps (quality mode).", 8, 30),
        FieldSpec("guidance_scale", "float", 1.0, "Classifier-free guidance scale; above 1 enables CFG with "
                  "the negative prompt (slower).", 1.0, 20.0),
        FieldSpec("generate_audio", "bool", True, "Generate audio; when off the output has no audio track."),
        FieldSpec("negative_prompt", "str", DEFAULT_NEGATIVE_PROMPT, "What to steer generation away from "
                  "(used when guidance_scale > 1).", multiline=True),
        FieldSpec("seed", "int", None, "Random seed for reproducibility; empty picks a random seed (the "
                  "seed used is returned).", *SEED_RANGE),
        FieldSpec("enable_prompt_expansion", "bool", True, "Let the text encoder expand the prompt."),
        FieldSpec("enable_safety_checker", "bool", True, "Run fal's safety checker (remote backend only)."),
        FieldSpec("video_quality", "enum", "high", "Quality preset of the written MP4.",
                  choices=VIDEO_QUALITIES),
        FieldSpec("video_write_mode", "enum", "balanced", "Encoder speed / file size trade-off of the "
                  "written MP4.", choices=VIDEO_WRITE_MODES),
        FieldSpec("sync_mode", "bool", False, "fal only: return the video inline as a data URI. fal then "
                  "keeps no copy in its request history, so Recover fal Result cannot load it later."),
        FieldSpec("loras", "loras", (), f"Up to {MAX_LORAS} LoRAs applied on top of LTX-2.3 "
                  "(path or URL, scale, transformer target)."),
    )
}


@dataclass(frozen=True)
class ImageSize:
    """A custom canvas size in pixels."""

    width: int
    height: int


def lora_node(index: int) -> str:
    """The LoRA Stack node holding entry `index` (0-based) of a stack, as messages name it (1-based)."""
    return f"LoRA Stack #{index + 1}"


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA: `path` is a URL or a local .safetensors file; `transformer` is both|video|audio."""

    path: str
    scale: float = 1.0
    transformer: str = "both"

    def validate(self, node: str | None = None) -> None:
        """Raise :class:`InputError` naming the bad input of the LoRA Stack node `node` (e.g. "LoRA Stack #2")."""
        if not isinstance(self.path, str) or not self.path.strip():
            raise InputError("path_or_url", "is empty; give a .safetensors file or an https URL", node=node)
        _check_range("scale", self.scale, *LORA_SCALE_RANGE, node=node)
        if self.transformer not in LORA_TARGETS:
            raise InputError("transformer", f"got {self.transformer!r}; allowed: {', '.join(LORA_TARGETS)}",
                             node=node)

    def is_url(self) -> bool:
        return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", self.path))

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "scale": self.scale, "transformer": self.transformer}


@dataclass(frozen=True)
class OutpaintRequest:
    """Every input of the endpoint, with its defaults. Call :meth:`validate` before use."""

    prompt: str = ""
    video_url: str = ""
    resolution: str | ImageSize = "landscape_16_9"
    source_scale: float = 0.75
    video_strength: float = 1.0
    num_frames: int = 121
    frames_per_second: float = 24.0
    num_inference_steps: int = 15
    guidance_scale: float = 1.0
    generate_audio: bool = True
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    seed: int | None = None
    enable_prompt_expansion: bool = True
    enable_safety_checker: bool = True
    video_quality: str = "high"
    video_write_mode: str = "balanced"
    sync_mode: bool = False
    loras: tuple[LoraSpec, ...] = field(default_factory=tuple)

    @property
    def canvas_size(self) -> tuple[int, int]:
        """The requested canvas (width, height), before any backend snapping."""
        if isinstance(self.resolution, ImageSize):
            return self.resolution.width, self.resolution.height
        return RESOLUTION_PRESETS[self.resolution]

    def replace(self, **changes: Any) -> "OutpaintRequest":
        return dataclasses.replace(self, **changes)

    def validate(self, require_video_url: bool = False) -> "OutpaintRequest":
        """Raise :class:`InputError` naming the first invalid field, its value and the allowed range."""
        for spec in FIELDS.values():
            value = getattr(self, spec.name)
            if spec.name == "video_url":
                if require_video_url and not value:
                    raise InputError("video_url", "is required")
                continue
            _validate_value(spec, value)
        return self

    def to_fal_input(self) -> dict[str, Any]:
        """The JSON body fal's endpoint takes (seed omitted when random)."""
        body: dict[str, Any] = {}
        for spec in FIELDS.values():
            value = getattr(self, spec.name)
            if spec.name == "seed" and value is None:
                continue
            if spec.kind == "resolution" and isinstance(value, ImageSize):
                value = {"width": value.width, "height": value.height}
            elif spec.kind == "loras":
                value = [lora.to_dict() for lora in value]
            body[spec.name] = value
        return body

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OutpaintRequest":
        """Build from a fal-style JSON dict (unknown keys are an error)."""
        unknown = set(data) - set(FIELDS)
        if unknown:
            raise InputError(sorted(unknown)[0], f"unknown field; known fields: {', '.join(FIELDS)}")
        values = dict(data)
        res = values.get("resolution")
        if isinstance(res, dict):
            values["resolution"] = ImageSize(int(res.get("width", 0)), int(res.get("height", 0)))
        if "loras" in values:
            values["loras"] = tuple(
                lora if isinstance(lora, LoraSpec) else LoraSpec(**lora) for lora in values["loras"] or ()
            )
        return cls(**values)


def _check_range(name: str, value: Any, lo: float | None, hi: float | None, node: str | None = None) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(name, f"got {value!r}; allowed range {lo} to {hi}", node=node)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(name, f"got {value!r}; allowed range {lo} to {hi}", node=node)


def _validate_value(spec: FieldSpec, value: Any) -> None:
    name = spec.name
    if spec.kind == "str":
        if not isinstance(value, str):
            raise InputError(name, f"got {type(value).__name__}; expected text")
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            raise InputError(name, f"got {value!r}; expected true or false")
    elif spec.kind in ("int", "float"):
        if value is None and name == "seed":
            return
        numeric = (int,) if spec.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            raise InputError(name, f"got {value!r}; expected {'an integer' if spec.kind == 'int' else 'a number'}"
                                     f" from {spec.minimum} to {spec.maximum}")
        _check_range(name, value, spec.minimum, spec.maximum)
    elif spec.kind == "enum":
        if value not in spec.choices:
            raise InputError(name, f"got {value!r}; allowed: {', '.join(spec.choices)}")
    elif spec.kind == "resolution":
        if isinstance(value, ImageSize):
            for side in ("width", "height"):
                v = getattr(value, side)
                if isinstance(v, bool) or not isinstance(v, int):
                    raise InputError(f"resolution.{side}", f"got {v!r}; expected an integer")
                _check_range(f"resolution.{side}", v, *CANVAS_SIDE_RANGE)
        elif value not in RESOLUTION_PRESETS:
            raise InputError(name, f"got {value!r}; allowed: {', '.join(RESOLUTION_PRESETS)} "
                                     f"or a custom width x height ({CANVAS_SIDE_RANGE[0]}-{CANVAS_SIDE_RANGE[1]} px)")
    elif spec.kind == "loras":
        if len(value) > MAX_LORAS:
            raise InputError(name, f"got {len(value)} LoRAs; at most {MAX_LORAS} are allowed")
        for i, lora in enumerate(value):
            if not isinstance(lora, LoraSpec):
                raise InputError("loras", f"entry {i + 1} is not a LoRA entry (path, scale, transformer)")
            lora.validate(lora_node(i))
