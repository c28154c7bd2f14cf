"""Test-only ComfyUI custom node (never shipped): GET /ltx_test/kept answers what the pack's keep_loaded holds.

Inside ComfyUI the pack's modules are imported under the custom-node folder's module name, so the probe finds
the pack's ``nodes/local/keep.py`` in sys.modules by its suffix and returns ``summary()`` of each copy.
"""
import sys

from aiohttp import web
from server import PromptServer


@PromptServer.instance.routes.get("/ltx_test/kept")
async def kept(request):
    found = {name: module.summary() for name, module in list(sys.modules.items())
             if name.endswith("nodes.local.keep") and hasattr(module, "summary")}
    return web.json_response(found)


NODE_CLASS_MAPPINGS = {}
