"""The native engine's helper nodes: the parts of the official outpaint recipe ComfyUI core has no node for.

The outpaint node expands into core nodes plus these (see nodes/local/native/graph.py); they are ordinary
nodes too, usable in hand-built graphs: stage inputs (green composites at both sizes), the official pyramid
blend, a frozen latent (the source audio), the spatially tiled decode, a LoRA on one LTX-2.3 stream, and
the finish node that turns the result into the outpaint node's outputs with a quality report.
"""
from __future__ import annotations

import json
import math
import logging

import torch
from comfy_api.latest import io

from ..backends import OutpaintResult
from ..backends.preview import fit_audio
from ..cost import estimate_cost
from ..errors import InputError
from ..request import LORA_TARGETS
from .common import CATEGORY, OUTPAINT_OUTPUTS, from_comfy_audio, outpaint_outputs

log = logging.getLogger(__name__)

ENGINE_CATEGORY = CATEGORY + "/engine"
FINISH_NODE = "Outpaint Result (LTX, native engine)"


class StageInputs(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintStageInputs",
            display_name="Outpaint Stage Inputs (LTX)",
            category=ENGINE_CATEGORY,
            description="The official recipe's IC references: the canvas with the area to generate painted the "
                        "fill colour, at full size and at the stage-1 size (area-resized mask and image).",
            inputs=[
                io.Image.Input("placed", tooltip="The source placed on the canvas (grey elsewhere)."),
                io.Mask.Input("mask", tooltip="1 where the model generates."),
                io.String.Input("fill_rgb", default="102,255,0", tooltip="Fill colour R,G,B (0-255)."),
                io.Float.Input("stage1_scale", default=0.5, min=0.125, max=1.0, step=0.125,
                               tooltip="Stage-1 size as a fraction of the canvas."),
            ],
            outputs=[io.Image.Output(display_name="full_ref"), io.Mask.Output(display_name="full_mask"),
                     io.Image.Output(display_name="half_ref"), io.Mask.Output(display_name="half_mask")],
        )

    @classmethod
    def execute(cls, placed, mask, fill_rgb, stage1_scale) -> io.NodeOutput:
        from ..local.blend import official_stage_inputs

        try:
            fill = tuple(int(c) for c in fill_rgb.split(","))
        except ValueError:
            fill = ()
        if len(fill) != 3 or not all(0 <= c <= 255 for c in fill):
            raise InputError("fill_rgb", f"got {fill_rgb!r}; expected three integers 0 to 255, e.g. 102,255,0",
                             node="Outpaint Stage Inputs")
        m = mask[0] if mask.dim() == 3 else mask
        s = official_stage_inputs(placed, m, fill, stage1_scale=stage1_scale)
        return io.NodeOutput(s.full_ref, s.full_mask, s.half_ref, s.half_mask)


class PyramidBlend(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintPyramidBlend",
            display_name="Outpaint Pyramid Blend (LTX)",
            category=ENGINE_CATEGORY,
            description="Put the original pixels back: Laplacian-pyramid blend of the generated frames and the "
                        "original, the generated area first dilated into the original on a coarse grid (the "
                        "official recipe's LTXVLaplacianPyramidBlend).",
            inputs=[
                io.Image.Input("generated"), io.Image.Input("original"),
                io.Mask.Input("mask", tooltip="1 = generated area."),
                io.Int.Input("dilation", default=5, min=0, max=15, tooltip="Dilation in grid cells."),
                io.Int.Input("long_side", default=64, min=8, max=512, tooltip="Grid cells on the long side."),
                io.Int.Input("levels", default=7, min=1, max=12, tooltip="Pyramid levels."),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, generated, original, mask, dilation, long_side, levels) -> io.NodeOutput:
        from ..local.blend import pyramid_blend

        return io.NodeOutput(pyramid_blend(generated, original, mask, dilation=dilation, long_side=long_side,
                                           levels=levels))


class FreezeLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintFreezeLatent",
            display_name="Freeze Latent (LTX Outpaint)",
            category=ENGINE_CATEGORY,
            description="Give a latent a zero noise mask so the sampler keeps it as it is (the source audio "
                        "in the official recipe: the new picture follows the real sound).",
            inputs=[io.Latent.Input("latent")],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, latent) -> io.NodeOutput:
        from ..local.native.ops import freeze_latent

        return io.NodeOutput(freeze_latent(latent))


class SpatialTiledDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintSpatialTiledDecode",
            display_name="Spatially Tiled VAE Decode (LTX Outpaint)",
            category=ENGINE_CATEGORY,
            description="Decode in spatial tiles (all frames per tile), joined with linear ramps: the official "
                        "recipe's final decode.",
            inputs=[io.Latent.Input("samples"), io.Vae.Input("vae"),
                    io.Int.Input("horizontal_tiles", default=2, min=1, max=6),
                    io.Int.Input("vertical_tiles", default=2, min=1, max=6),
                    io.Int.Input("overlap", default=6, min=1, max=8, tooltip="Overlap in latent cells.")],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, samples, vae, horizontal_tiles, vertical_tiles, overlap) -> io.NodeOutput:
        from ..local.native.ops import spatial_tiled_decode

        return io.NodeOutput(spatial_tiled_decode(vae, samples["samples"], horizontal_tiles, vertical_tiles,
                                                  overlap))


class LoraTarget(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintLoraTarget",
            display_name="LoRA on an LTX-2.3 Stream (LTX Outpaint)",
            category=ENGINE_CATEGORY,
            description="Apply a LoRA (a file inside ComfyUI's loras folders) to LTX-2.3's video stream, audio "
                        "stream or both, with core's LoRA loader.",
            inputs=[io.Model.Input("model"),
                    io.String.Input("lora_path", default="", tooltip="Path of a .safetensors LoRA inside a loras folder."),
                    io.Float.Input("strength", default=1.0, min=0.0, max=4.0, step=0.05),
                    io.Combo.Input("target", options=list(LORA_TARGETS), default="both")],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, lora_path, strength, target) -> io.NodeOutput:
        from ..local.native.ops import apply_lora_target

        return io.NodeOutput(apply_lora_target(model, lora_path, strength, target))


class GuideAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintGuideAttention",
            display_name="Guide Attention Strength (LTX Outpaint)",
            category=ENGINE_CATEGORY,
            description="Set the attention strength of the last guide LTXVAddGuide added (it uses the guide's "
                        "strength for both); the official outpaint recipe keeps the IC reference's attention at 1.",
            inputs=[io.Conditioning.Input("positive"), io.Conditioning.Input("negative"),
                    io.Float.Input("attention_strength", default=1.0, min=0.0, max=1.0, step=0.01)],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, positive, negative, attention_strength) -> io.NodeOutput:
        from ..local.native.ops import set_guide_attention

        return io.NodeOutput(set_guide_attention(positive, attention_strength),
                             set_guide_attention(negative, attention_strength))


class NativeFinish(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintNativeFinish",
            display_name="Outpaint Result (LTX, native engine)",
            category=ENGINE_CATEGORY,
            description="The native engine's last step: the outpaint node's outputs and its text (notes, quality "
                        "report, peak VRAM).",
            inputs=[io.Image.Input("images"), io.Image.Input("placed"), io.Mask.Input("mask"),
                    io.Float.Input("fps", default=24.0, min=1.0, max=240.0),
                    io.Int.Input("seed", default=0, min=0, max=2**63 - 1),
                    io.String.Input("prompt", default=""), io.String.Input("info", default="{}"),
                    io.Audio.Input("audio", optional=True)],
            outputs=OUTPAINT_OUTPUTS,
        )

    @classmethod
    def execute(cls, images, placed, mask, fps, seed, prompt, info, audio=None) -> io.NodeOutput:
        from ..media.quality import frame_window, quality_report

        try:
            meta = json.loads(info or "{}")
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise InputError("info", "must be a JSON object (what LTXOutpaintStageInputs gives)", node=FINISH_NODE)
        if not (math.isfinite(fps) and fps > 0):
            raise InputError("fps", f"got {fps}; allowed 1 to 240", node=FINISH_NODE)
        n = images.shape[0]
        engine_audio = from_comfy_audio(audio)
        if engine_audio is not None:  # the decoded latent covers the source audio: fit it to the video
            engine_audio = fit_audio(engine_audio, n / fps)
        m = mask[0] if mask.dim() == 3 else mask
        window = frame_window(n)
        report = quality_report(images[window], placed[:n][window], m)
        notes = list(meta.get("notes", []))
        if meta.get("expanded"):
            notes.append(f"prompt expanded by Gemma (enable_prompt_expansion): {prompt[:300]!r}")
        if window.stop - window.start < n:
            notes.append(f"quality measured on frames {window.start}-{window.stop - 1} of {n}")
        if torch.cuda.is_available():
            notes.append(f"peak VRAM {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (measured)")
        result = OutpaintResult(images, float(fps), engine_audio, int(seed), prompt, meta.get("backend", "local"),
                                notes=notes, quality=report.to_dict())
        h, w = images.shape[1:3]
        summary = (f"{result.backend}: {w}x{h}, {n} frames @ {fps:g} fps, seed {seed}; "
                   f"fal: {estimate_cost(w, h, n)}\n" + "\n".join(notes + report.lines()))
        return outpaint_outputs(result, None, summary)


NODES = [StageInputs, PyramidBlend, FreezeLatent, SpatialTiledDecode, LoraTarget, GuideAttention, NativeFinish]
