"""Run the native engine's graph inside THIS process on ComfyUI core (for benchmarks; helper, not a test file).

`load_comfyui()` imports a ComfyUI folder as a library (its builtin nodes + the pack's nodes, model folders
pointed at a models tree), `run_graph()` executes an API-format graph node by node in dependency order: the
same core node classes and helper nodes the outpaint node's expansion uses, without the server's queue,
caching or websocket. The tests' tiny Gemma needs the test-only size patch (tests/comfyui_test_nodes/
ltx_outpaint_test_support); `load_comfyui(tiny_gemma_sizes=...)` applies it, as the test server does.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def load_comfyui(comfy_dir: str, models_root: str, *, cpu: bool, tiny_gemma_sizes: str | None = None):
    """Import ComfyUI from `comfy_dir` with `models_root`'s kind folders; returns ComfyUI's `nodes` module."""
    sys.argv = ["main.py"] + (["--cpu"] if cpu else [])
    sys.path.insert(0, comfy_dir)
    import comfy.options

    comfy.options.enable_args_parsing()
    import folder_paths

    for kind in ("checkpoints", "loras", "text_encoders", "latent_upscale_models"):
        folder_paths.add_model_folder_path(kind, os.path.join(models_root, kind), is_default=True)
    if tiny_gemma_sizes:
        os.environ["LTX_OUTPAINT_TEST_TINY_GEMMA"] = tiny_gemma_sizes
        spec = importlib.util.spec_from_file_location(
            "ltx_outpaint_test_support", os.path.join(HERE, "comfyui_test_nodes", "ltx_outpaint_test_support",
                                                      "__init__.py"))
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    from ltx_outpaint.comfyui import NODES  # the pack's nodes, registered as ComfyUI registers V3 nodes

    for cls in NODES:
        nodes.NODE_CLASS_MAPPINGS[cls.define_schema().node_id] = cls
    return nodes


def _call(cls, inputs: dict):
    if hasattr(cls, "FUNCTION") and not hasattr(cls, "define_schema"):
        return getattr(cls(), cls.FUNCTION)(**inputs)
    out = cls.execute(**inputs)
    if asyncio.iscoroutine(out):
        out = asyncio.run(out)
    return getattr(out, "result", out)


def run_graph(nodes_module, graph: dict, outputs: list, on_node=None) -> list:
    """Execute `graph` (API format) and return the values of `outputs` ([node_id, index] links).
    `on_node(node_id, class_type, phase)` is called with "start" / "end" around each node (for timing)."""
    import torch

    done: dict[str, tuple] = {}

    def value(v):
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] in graph:
            return evaluate(v[0])[v[1]]
        return v

    def evaluate(node_id: str):
        if node_id not in done:
            node = graph[node_id]
            inputs = {k: value(v) for k, v in node["inputs"].items()}
            if node["class_type"] == "TextGenerateLTX2Prompt":
                inputs["sampling_mode"] = {"sampling_mode": inputs["sampling_mode"]}
            if on_node:
                on_node(node_id, node["class_type"], "start")
            done[node_id] = tuple(_call(nodes_module.NODE_CLASS_MAPPINGS[node["class_type"]], inputs))
            if on_node:
                on_node(node_id, node["class_type"], "end")
        return done[node_id]

    with torch.inference_mode():
        return [value(o) for o in outputs]
