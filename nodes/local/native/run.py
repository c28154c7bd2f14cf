"""Run a native-engine graph in this process (inside ComfyUI), for callers that need a result, not an expansion.

The outpaint node hands its graph to ComfyUI's executor (expansion). Long clips and batches run many jobs from
one node, so they call :func:`run_graph`: the same core and helper node classes, called in dependency order in
the node's own thread. ComfyUI's model management, progress bar hook and interrupt checks still apply (they live
in the core code the nodes run); loaders and prompt encodings are reused from one job to the next while their
inputs do not change (a small cache of the previous job's loader outputs, dropped when unused).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

#: node types whose outputs depend only on their inputs and are worth keeping between jobs
REUSABLE = ("CheckpointLoaderSimple", "LoraLoaderModelOnly", "LTXAVTextEncoderLoader", "LTXVAudioVAELoader",
            "LatentUpscaleModelLoader", "CLIPTextEncode", "LTXVConditioning", "LTXOutpaintLoraTarget")
_kept: dict[Any, tuple] = {}


def _accepted(cls, inputs: dict) -> dict:
    """Only the inputs the node declares (as ComfyUI's executor does: a core version without one of them
    ignores it instead of failing on an unexpected keyword)."""
    try:
        declared = cls.INPUT_TYPES()
    except Exception:  # noqa: BLE001 - no declaration to filter by: pass everything
        return inputs
    names = {n for section in ("required", "optional") for n in declared.get(section, {})}
    dropped = sorted(set(inputs) - names - {"sampling_mode"})
    if dropped:
        log.info("native engine: %s takes no %s in this ComfyUI; left out", getattr(cls, "__name__", cls),
                 ", ".join(dropped))
    return {k: v for k, v in inputs.items() if k in names or k == "sampling_mode"}


def _call(cls, inputs: dict) -> tuple:
    inputs = _accepted(cls, inputs)
    if hasattr(cls, "FUNCTION") and not hasattr(cls, "define_schema"):
        return tuple(getattr(cls(), cls.FUNCTION)(**inputs))
    out = cls.execute(**inputs)
    if asyncio.iscoroutine(out):
        out = asyncio.run(out)
    return tuple(getattr(out, "result", out))


def _key(class_type: str, inputs: dict, keys: dict) -> Any:
    """A hashable key when every input is a primitive or the output of a reusable node; else None."""
    parts = []
    for name, value in sorted(inputs.items()):
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            if value[0] not in keys or keys[value[0]] is None:
                return None
            parts.append((name, keys[value[0]], value[1]))
        elif isinstance(value, (str, int, float, bool)) or value is None:
            parts.append((name, value))
        else:
            return None
    return (class_type, tuple(parts))


def run_graph(graph: dict, outputs: list, *, reuse: bool = True) -> list:
    """Execute `graph` (API format) and return the values of `outputs` ([node_id, index] links)."""
    import comfy.model_management
    import nodes
    import torch

    done: dict[str, tuple] = {}
    keys: dict[str, Any] = {}
    used: dict[Any, tuple] = {}

    def value(v):
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] in graph:
            return evaluate(v[0])[v[1]]
        return v

    def evaluate(node_id: str) -> tuple:
        if node_id in done:
            return done[node_id]
        node = graph[node_id]
        class_type, raw = node["class_type"], node["inputs"]
        for v in raw.values():  # dependencies first, so their keys are known
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] in graph:
                evaluate(v[0])
        key = _key(class_type, raw, keys) if reuse and class_type in REUSABLE else None
        keys[node_id] = key
        if key is not None and key in _kept:
            done[node_id] = used[key] = _kept[key]
            return done[node_id]
        comfy.model_management.throw_exception_if_processing_interrupted()
        inputs = {k: value(v) for k, v in raw.items()}
        if class_type == "TextGenerateLTX2Prompt" and isinstance(inputs.get("sampling_mode"), str):
            inputs["sampling_mode"] = {"sampling_mode": inputs["sampling_mode"]}
        done[node_id] = _call(nodes.NODE_CLASS_MAPPINGS[class_type], inputs)
        if key is not None:
            used[key] = done[node_id]
        return done[node_id]

    with torch.inference_mode():
        result = [value(o) for o in outputs]
    _kept.clear()
    _kept.update(used)  # what this job used stays for the next one; the rest is released
    return result


def release() -> None:
    """Drop the loaders kept from the last job (ComfyUI's unload action calls it too)."""
    _kept.clear()
