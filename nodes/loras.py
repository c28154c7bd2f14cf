"""LoRA entries: resolve a local file or URL and check that a local file is a safetensors LoRA.

Files are only ever opened with `safetensors` (header and key names); nothing is unpickled.

`transformer` targets, for LTX-2.3's audio+video transformer (each block has a video stream and an
audio stream):
- `both`  - every LoRA weight is applied: video self/cross-attention and feed-forward
  (`attn1`, `attn2`, `ff`), audio ones (`audio_attn1`, `audio_attn2`, `audio_ff`) and the cross-modal
  attention between them (`audio_to_video_attn`, `video_to_audio_attn`).
- `video` - only the video stream's weights (`attn1`, `attn2`, `ff`); audio and cross-modal untouched.
- `audio` - only the audio stream's weights (`audio_attn1`, `audio_attn2`, `audio_ff`).
On fal the value is passed through unchanged (fal does not document the field for LTX).
"""
from __future__ import annotations

import os

from .errors import InputError
from .request import LoraSpec

LORA_KEY_MARKERS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up")


def check_lora_file(path: str, field: str = "lora", node: str | None = None) -> int:
    """Raise :class:`InputError` unless `path` is a safetensors file holding LoRA weights.

    Returns the number of LoRA tensors found.
    """
    from safetensors import SafetensorError, safe_open

    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise InputError(field, f"LoRA file not found: {name}", node=node)
    if not name.lower().endswith(".safetensors"):
        raise InputError(field, f"{name}: only .safetensors LoRAs are accepted (pickled .pt/.ckpt/.bin "
                                f"files are never loaded)", node=node)
    try:
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
    except (SafetensorError, ValueError) as exc:
        raise InputError(field, f"{name} is not a valid safetensors file ({exc})", node=node) from None
    except OSError:  # its text would name the server path
        raise InputError(field, f"{name} could not be read", node=node) from None
    lora_keys = [k for k in keys if any(m in k for m in LORA_KEY_MARKERS)]
    if not lora_keys:
        raise InputError(field, f"{name} holds {len(keys)} tensors but no LoRA weights "
                                f"(no lora_A/lora_B or lora_down/lora_up keys): is it a full checkpoint?", node=node)
    return len(lora_keys)


def check_lora_spec(spec: LoraSpec, field: str = "lora", node: str | None = None) -> LoraSpec:
    """Validate an entry; local files are checked now, URLs when a backend fetches them."""
    spec.validate(node)
    if not spec.is_url():
        check_lora_file(spec.path, field, node)
    elif not spec.path.lower().startswith(("https://", "http://")):
        raise InputError(field, f"unsupported URL scheme in {spec.path.split('://')[0]}://; use https", node=node)
    return spec
