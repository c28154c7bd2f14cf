"""ComfyUI adapter: the pack's nodes (V3 schema API), one module per node family, and its HTTP routes.

Thin: schema + engine call + ComfyUI glue. This package (and the native local engine) is the only code
that imports ComfyUI; heavy imports (ltx-core, transformers) never happen here.
"""
from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from ..settings import set_default_config_dir
from . import nodes_canvas, nodes_fal, nodes_local, nodes_long, nodes_native, nodes_outpaint, nodes_video
from .common import readable_errors
from .routes import register_routes

set_default_config_dir(os.path.join(folder_paths.get_user_directory(), "ltx_outpaint"))

NODES = [*nodes_video.NODES[:1], *nodes_canvas.NODES, *nodes_outpaint.NODES[:2], nodes_fal.NODES[0],
         *nodes_local.NODES, nodes_outpaint.NODES[2], nodes_fal.NODES[1], nodes_video.NODES[1],
         *nodes_native.NODES, *nodes_long.NODES]
for _node in NODES:  # our errors read "field (node): reason" in ComfyUI, with no module path
    readable_errors(_node)


class OutpaintExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> OutpaintExtension:
    register_routes()
    nodes_video.ensure_sample_video()
    return OutpaintExtension()
