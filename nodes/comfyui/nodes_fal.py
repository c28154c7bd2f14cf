"""fal.ai nodes: the fal backend (paid) and Recover fal Result."""
from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import io

from ..fal.backend import FalConfig, check_request_id, recover
from .common import BACKEND, CATEGORY, OUTPAINT_OUTPUTS, ComfyProgress, outpaint_outputs, interruptible

log = logging.getLogger(__name__)


class FalBackendNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintFalBackend",
            display_name="Outpaint Backend: fal.ai (paid)",
            category=CATEGORY,
            description="Run on fal.ai's fal-ai/ltx-2.3-quality/outpaint/lora (billed per generated megapixel). "
                        "The key comes from FAL_KEY or the pack's settings, never from a widget. Results are "
                        "saved to output/ltx-outpaint/fal before decoding.",
            inputs=[
                io.Float.Input("max_cost_usd", default=0.0, min=0.0, max=1000.0, step=0.01,
                               tooltip="Refuse to submit when the estimate is above this (0 = none). The "
                                       "pack settings' limit, when lower, applies too."),
                io.Float.Input("deadline_minutes", default=60.0, min=0.05, max=24 * 60.0, step=0.5,
                               tooltip="Cancel the fal job if it has not finished after this many minutes."),
                io.Boolean.Input("use_sse", default=True,
                                 tooltip="Follow the job with fal's status stream (falls back to polling)."),
            ],
            outputs=[BACKEND.Output(display_name="backend", tooltip="Connect to the outpaint node.")],
        )

    @classmethod
    def execute(cls, max_cost_usd, deadline_minutes, use_sse) -> io.NodeOutput:
        return io.NodeOutput(FalConfig(max_cost_usd=max_cost_usd, deadline_s=deadline_minutes * 60.0,
                                       use_sse=use_sse, output_dir=_fal_output_dir()))

def _fal_output_dir() -> str:
    return os.path.join(folder_paths.get_output_directory(), "ltx-outpaint", "fal")

class FalRecover(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintFalRecover",
            display_name="Recover fal Result (LTX Outpaint)",
            category=CATEGORY,
            description="Re-attach to a fal request by id (e.g. after a crash or restart), wait for it, save "
                        "and load its result. Paid requests are listed in the pack's journal.",
            inputs=[io.String.Input("request_id", default="", tooltip="The fal request id (see the journal, "
                                                                        "the sidecar JSON or the log).")],
            outputs=OUTPAINT_OUTPUTS,
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    async def execute(cls, request_id) -> io.NodeOutput:
        progress = ComfyProgress(cls.hidden.unique_id)
        request_id = check_request_id(request_id)
        result = await interruptible(recover(request_id, FalConfig(output_dir=_fal_output_dir()), progress))
        return outpaint_outputs(result, None, f"fal request {request_id}: " + "; ".join(result.notes))


NODES = [FalBackendNode, FalRecover]
