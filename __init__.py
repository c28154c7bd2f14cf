"""LTX-2.3 Video Outpaint: ComfyUI custom nodes (registered through ComfyUI's V3 schema API).

The engine lives in `nodes/` (importable without ComfyUI); `nodes/comfy_nodes.py` is the adapter.
"""
from .nodes.comfy_nodes import comfy_entrypoint

WEB_DIRECTORY = "./js"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
