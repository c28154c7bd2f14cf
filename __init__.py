"""LTX-2.3 Video Outpaint: ComfyUI custom nodes (registered through ComfyUI's V3 schema API).

The engine lives in `nodes/` (importable without ComfyUI); `nodes/comfyui/` is the adapter.
Outside ComfyUI (pytest collecting this folder, packaging tools) the adapter is not imported.
"""
import importlib.util

WEB_DIRECTORY = "./js"

if importlib.util.find_spec("comfy_api") is not None and importlib.util.find_spec("folder_paths") is not None:
    from .nodes.comfyui import comfy_entrypoint

    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
