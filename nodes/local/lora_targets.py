"""Which LTX-2.3 transformer weights a LoRA is fused into: its `transformer` target (both|video|audio).

LTX-2.3 is one audio+video transformer: each block has a video stream (``attn1`` self-attention,
``attn2`` text cross-attention, ``ff``), an audio stream (``audio_attn1``, ``audio_attn2``, ``audio_ff``)
and cross-modal attention (``audio_to_video_attn``, ``video_to_audio_attn``); outside the blocks,
modules named ``audio_*`` belong to the audio stream. A LoRA's ``transformer`` field picks:

- ``both``: every entry in the file;
- ``video``: only entries of video-stream modules;
- ``audio``: only entries of audio-stream modules.

The filter is an ltx-core ``SDOps`` built from the LoRA file's own keys (ltx-core's LoRA loader applies
it while reading the file), so nothing outside the target is ever loaded or fused.
"""
from __future__ import annotations

import re

from safetensors import safe_open

_BLOCK = re.compile(r"(?:^|\.)transformer_blocks\.\d+\.([A-Za-z0-9_]+)")
_LORA_SUFFIX = re.compile(r"\.(lora_A|lora_B|lora_down|lora_up|alpha)(\.weight)?$")
AUDIO_MODULES = ("audio_attn1", "audio_attn2", "audio_ff")
VIDEO_MODULES = ("attn1", "attn2", "ff")
CROSS_MODULES = ("audio_to_video_attn", "video_to_audio_attn")
COMFY_PREFIX = "diffusion_model."


def stream_of(key: str) -> str:
    """"video", "audio" or "cross" for a transformer (or LoRA) key, by the module it belongs to."""
    key = key[len(COMFY_PREFIX):] if key.startswith(COMFY_PREFIX) else key
    m = _BLOCK.search(key)
    if m:
        module = m.group(1)
        if module in CROSS_MODULES or module.startswith(("audio_to_video", "video_to_audio")):
            return "cross"
        return "audio" if module.startswith("audio") else "video"
    top = key.split(".", 1)[0]
    if top.startswith(("audio_to_video", "video_to_audio")):
        return "cross"
    return "audio" if top.startswith("audio") else "video"


def wanted(key: str, target: str) -> bool:
    if target == "both":
        return True
    if target not in ("video", "audio"):
        raise ValueError(f"transformer: got {target!r}; allowed: both, video, audio")
    return stream_of(key) == target


def module_prefixes(path: str, target: str) -> list[str]:
    """The LoRA file's module prefixes (key minus ``.lora_A.weight`` etc.) that `target` keeps."""
    with safe_open(path, framework="pt") as f:
        keys = list(f.keys())
    prefixes = sorted({_LORA_SUFFIX.sub("", k) for k in keys})
    return [p for p in prefixes if wanted(p, target)]


def lora_sd_ops(path: str, target: str):
    """ltx-core SDOps that keeps only `target`'s entries of the LoRA at `path` and strips ComfyUI's prefix."""
    from ltx_core.loader import SDOps  # heavy import only when a local run starts

    ops = (SDOps(f"ltx_outpaint_lora_{target}").with_replacement(COMFY_PREFIX, "")
           # kohya-style names -> the lora_A / lora_B names ltx-core's fuser reads
           .with_replacement(".lora_down.weight", ".lora_A.weight")
           .with_replacement(".lora_up.weight", ".lora_B.weight"))
    if target == "both":
        return ops.with_matching()
    for prefix in module_prefixes(path, target):
        ops = ops.with_matching(prefix=prefix + ".")
    return ops
