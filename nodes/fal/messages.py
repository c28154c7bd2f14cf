"""fal's field names -> the inputs of our graph, for messages that name each field once, with its node.

`loras.0.scale` is `scale (LoRA Stack #1)`: LoRA positions are 1-based, in stack order.
"""
from __future__ import annotations

from ..errors import InputError
from ..request import lora_node

OUTPAINT_NODE = "LTX-2.3 Outpaint"
#: fal's input names -> (our input, node) where the user sets them.
INPUTS = {
    "video_url": ("video", "Load Video"),
    "resolution": ("resolution", "Outpaint Canvas"),
    "source_scale": ("source_scale", "Outpaint Canvas"),
    "loras": ("loras", OUTPAINT_NODE),
}
#: fields of one LoRA entry -> the LoRA Stack input that sets it.
LORA_INPUTS = {"path": "path_or_url", "scale": "scale", "transformer": "transformer"}
DOWNLOAD_ERROR_TYPES = ("file_download_error",)


def our_input(fal_field: str) -> tuple[str, str]:
    """(input, node) for a dotted fal field such as `num_frames`, `resolution.width` or `loras.1.scale`."""
    parts = [p for p in fal_field.split(".") if p != ""] or ["request"]
    top = parts[0]
    if top == "loras" and len(parts) >= 2 and parts[1].isdigit():
        node = lora_node(int(parts[1]))
        return (LORA_INPUTS.get(parts[2], parts[2]) if len(parts) > 2 else "lora"), node
    name, node = INPUTS.get(top, (top, OUTPAINT_NODE))
    return ".".join([name, *parts[1:]]), node


def label(fal_field: str) -> str:
    name, node = our_input(fal_field)
    return f"{name} ({node})"


def _reason(error) -> str:
    if error.type in DOWNLOAD_ERROR_TYPES:
        return f"fal could not download the file: {error.msg}"
    return f"fal rejected the value: {error.msg}"


def validation_input_error(exc) -> InputError:
    """fal's 422 (at submit or at run time) as one InputError naming each of our inputs once."""
    if not exc.errors:
        return InputError("request", f"fal rejected the request: {exc.message}", node=OUTPAINT_NODE)
    first, *rest = exc.errors
    name, node = our_input(first.field)
    text = _reason(first) + "".join(f"; also {label(e.field)}: {_reason(e)}" for e in rest)
    return InputError(name, text, node=node)
