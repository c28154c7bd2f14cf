"""The ComfyUI frontend's UI workflow format (version 0.4), built and read against a live /object_info.

Used by tests/make_workflows.py (writes workflows/*.json) and tests/test_workflows.py (checks them and
runs one). Widget order is the frontend's: the inputs of ``input_order`` (required, then optional) whose
type is a widget type, each followed by its ``control_after_generate`` widget where the schema asks for
one; upload buttons are not serialized.
"""
from __future__ import annotations

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
#: Nodes that exist only in the frontend (no backend class).
FRONTEND_ONLY = {"Note": ["text"], "MarkdownNote": ["text"]}


def input_defs(info: dict) -> list[tuple[str, str, dict]]:
    """(name, type, options) of every input in the frontend's order."""
    out = []
    order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            opts = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(spec[0], list):
                opts.setdefault("options", spec[0])
            out.append((name, kind, opts))
    return out


def widgets(info: dict) -> list[tuple[str, str, dict]]:
    """The serialized widgets (name, type, options), control_after_generate included."""
    out = []
    for name, kind, opts in input_defs(info):
        if kind in WIDGET_TYPES and not opts.get("forceInput"):
            out.append((name, kind, opts))
            if opts.get("control_after_generate"):
                out.append((f"{name}:control_after_generate", "COMBO",
                            {"options": ["fixed", "increment", "decrement", "randomize"]}))
    return out


def socket_inputs(info: dict) -> list[tuple[str, str]]:
    return [(n, k) for n, k, o in input_defs(info) if k not in WIDGET_TYPES or o.get("forceInput")]


def check_widget(kind: str, opts: dict, value) -> str | None:
    """Why `value` is not valid for the widget, or None."""
    if kind == "COMBO":
        if opts.get("video_upload") or opts.get("image_upload"):
            return None if isinstance(value, str) else f"expected a file name, got {value!r}"
        return None if value in opts.get("options", []) else f"{value!r} not in {opts.get('options')}"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"expected true/false, got {value!r}"
    if kind == "STRING":
        return None if isinstance(value, str) else f"expected text, got {value!r}"
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and value != int(value)):
            return f"expected a number, got {value!r}"
        lo, hi = opts.get("min"), opts.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return f"{value} outside [{lo}, {hi}]"
    return None


def to_api_prompt(workflow: dict, object_info: dict) -> dict:
    """The API prompt the frontend would queue for `workflow` (frontend-only nodes dropped)."""
    links = {l[0]: l for l in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) != 0:
            continue
        info = object_info[node["type"]]
        inputs = {}
        for (name, _kind, _opts), value in zip(widgets(info), node.get("widgets_values", [])):
            if ":" not in name:
                inputs[name] = value
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
