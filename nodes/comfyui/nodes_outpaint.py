"""The outpaint node, the LoRA stack and the free preview backend node."""
from __future__ import annotations

import logging

import folder_paths
from comfy_api.latest import io

import asyncio
import dataclasses

from ..backends import PreviewConfig, run_outpaint_async
from ..cost import estimate_cost
from ..errors import InputError
from ..loras import check_lora_spec
from ..request import LORA_SCALE_RANGE, LORA_TARGETS, MAX_LORAS, LoraSpec, OutpaintRequest
from .common import (BACKEND, CANVAS, CATEGORY, LORA_STACK, OUTPAINT_OUTPUTS, ComfyProgress, request_field, outpaint_outputs,
                     clip_from_video, interruptible)
from .paths import lora_fingerprint, lora_source

log = logging.getLogger(__name__)


class LoraStack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintLoraStack",
            display_name="LoRA Stack (LTX Outpaint)",
            category=CATEGORY,
            description=f"Add a LoRA to the stack (chainable; at most {MAX_LORAS}). 'transformer' picks "
                        "LTX-2.3's stream: both, video only, or audio only.",
            inputs=[
                io.Combo.Input("lora", options=["none"] + folder_paths.get_filename_list("loras"),
                               default="none", tooltip="A LoRA from ComfyUI's loras folder."),
                io.String.Input("path_or_url", default="", optional=True,
                                tooltip="Instead of the list: a .safetensors path or an https URL."),
                io.Float.Input("scale", default=1.0, min=LORA_SCALE_RANGE[0], max=LORA_SCALE_RANGE[1],
                               step=0.05, tooltip="LoRA strength (0 = no effect)."),
                io.Combo.Input("transformer", options=list(LORA_TARGETS), default="both",
                               tooltip="both: video, audio and cross-modal weights; video: video stream "
                                       "only; audio: audio stream only."),
                LORA_STACK.Input("lora_stack", optional=True, tooltip="A stack to add this LoRA to."),
            ],
            outputs=[LORA_STACK.Output(display_name="lora_stack", tooltip="The stack with this LoRA added.")],
        )

    @classmethod
    def validate_inputs(cls, lora):
        # One parameter on purpose: ComfyUI reports a failed check once per parameter, so a problem is named
        # once. `path_or_url` (same rules, same message) is checked when the node runs.
        try:  # local paths stay inside the loras folders (symlinks resolved) unless the environment allows more
            lora_source(lora, "")
        except InputError as exc:
            return str(exc)
        return True

    @classmethod
    def fingerprint_inputs(cls, lora, path_or_url="", **kwargs):
        return lora_fingerprint(lora, path_or_url)

    @classmethod
    def execute(cls, lora, scale, transformer, path_or_url="", lora_stack=None) -> io.NodeOutput:
        stack = tuple(lora_stack or ())
        path = lora_source(lora, path_or_url)
        if not path:
            return io.NodeOutput(stack)
        if len(stack) >= MAX_LORAS:
            raise InputError("lora_stack", f"already holds {len(stack)} LoRAs; at most {MAX_LORAS} are allowed")
        field = "path_or_url" if (path_or_url or "").strip() else "lora"
        spec = check_lora_spec(LoraSpec(path, scale, transformer), field=field, node="LoRA Stack")
        return io.NodeOutput(stack + (spec,))

class PreviewBackendNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintPreviewBackend",
            display_name="Outpaint Backend: Preview (free, no AI)",
            category=CATEGORY,
            description="A fast CPU fill with NO AI (blurred or mirrored source) to check framing, timing and "
                        "audio before spending GPU time or money.",
            inputs=[
                io.Combo.Input("fill", options=["blur", "mirror"], default="blur",
                               tooltip="blur: blurred stretched source; mirror: source reflected outwards."),
                io.Int.Input("blur_radius", default=12, min=2, max=64,
                             tooltip="Strength of the blur fill (downscale factor)."),
            ],
            outputs=[BACKEND.Output(display_name="backend", tooltip="Connect to the outpaint node.")],
        )

    @classmethod
    def execute(cls, fill, blur_radius) -> io.NodeOutput:
        return io.NodeOutput(PreviewConfig(fill=fill, blur_radius=blur_radius))

class Outpaint(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaint",
            display_name="LTX-2.3 Outpaint",
            category=CATEGORY,
            description="Outpaint a video onto the canvas with the chosen backend. Same inputs and meaning "
                        "on every backend (fal's endpoint schema).",
            inputs=[
                io.Video.Input("video", tooltip="The source video."),
                CANVAS.Input("canvas", tooltip="From the Outpaint Canvas node (resolution, source_scale, placement)."),
                request_field("prompt", default=""),
                BACKEND.Input("backend", optional=True,
                              tooltip="A backend node (preview, fal, local). None: the free preview backend."),
                LORA_STACK.Input("loras", optional=True, tooltip="From LoRA Stack nodes (at most 3)."),
                request_field("num_frames"),
                request_field("frames_per_second"),
                request_field("video_strength"),
                request_field("num_inference_steps"),
                request_field("guidance_scale", step=0.1),
                request_field("generate_audio"),
                request_field("negative_prompt"),
                request_field("seed", default=0, control_after_generate=True),
                request_field("enable_prompt_expansion"),
                request_field("enable_safety_checker"),
                request_field("video_quality"),
                request_field("video_write_mode"),
                request_field("sync_mode"),
            ],
            outputs=OUTPAINT_OUTPUTS,
            hidden=[io.Hidden.unique_id],
            enable_expand=True,  # the local backend's native engine expands into core nodes
        )

    @classmethod
    async def execute(cls, video, canvas, backend=None, loras=None, **fields) -> io.NodeOutput:
        """`fields` are the request model's fields (widgets generated from FIELDS)."""
        request = OutpaintRequest(**fields, resolution=canvas.resolution, source_scale=canvas.source_scale,
                                  loras=tuple(loras or ())).validate()
        if backend is None:
            backend = _default_backend()
        unique_id = cls.hidden.unique_id
        progress = ComfyProgress(unique_id)
        clip = await asyncio.to_thread(clip_from_video, video)  # decoding must not block ComfyUI's loop
        if getattr(backend, "kind", None) == "local":
            from .nodes_local import choose_engine, native_expansion

            engine, why_not = choose_engine(backend)
            if engine == "native":
                graph, outputs = await asyncio.to_thread(native_expansion, request, clip, canvas, backend,
                                                         str(unique_id), progress)
                return io.NodeOutput(*outputs, expand=graph)
            log.info("LTXOutpaint: local backend on ltx-core (%s)", why_not)
            backend = dataclasses.replace(backend, engine="ltxcore", why_not_native=why_not)
        result = await interruptible(run_outpaint_async(request, clip, canvas, backend, progress))
        n, h, w = result.frames.shape[:3]
        summary = f"{result.backend}: {w}x{h}, {n} frames @ {result.fps:g} fps, seed {result.seed}; " \
                  f"fal: {estimate_cost(*request.canvas_size, request.num_frames)}"
        if result.notes:
            summary += "\n" + "\n".join(result.notes)
        return outpaint_outputs(result, request, summary)


def _default_backend():
    """The settings' default backend, for an outpaint node with none connected."""
    from ..settings import Settings
    from .nodes_fal import _fal_output_dir
    from .nodes_local import _local_config

    kind = Settings.load().default_backend
    if kind == "fal":
        log.info("LTXOutpaint: no backend connected; using the default backend from the settings: fal")
        from ..fal.backend import FalConfig

        return FalConfig(output_dir=_fal_output_dir())
    if kind == "local":
        log.info("LTXOutpaint: no backend connected; using the default backend from the settings: local")
        return _local_config()
    log.warning("LTXOutpaint: no backend connected; using the free PREVIEW backend (no AI)")
    return PreviewConfig()


NODES = [LoraStack, PreviewBackendNode, Outpaint]
