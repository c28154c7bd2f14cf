"""Canvas node: target size, source scale and placement; the composite and the mask."""
from __future__ import annotations

import logging

from comfy_api.latest import io, ui

import torch

from ..media.canvas import ANCHORS, FILL_RGB, CanvasSpec, composite, layout_canvas, snap_summary
from ..media.decode import check_frame_memory
from ..request import CANVAS_SIDE_RANGE, RESOLUTION_PRESETS, ImageSize, OutpaintRequest
from .common import CANVAS, CATEGORY, CUSTOM_SIZE, request_field, clip_from_video

log = logging.getLogger(__name__)

PREVIEW_FRAMES = 481


class OutpaintCanvas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintCanvas",
            display_name="Outpaint Canvas (LTX)",
            category=CATEGORY,
            description="Choose the target canvas and where the source sits on it. Outputs the canvas for "
                        "the outpaint node, the reference composite and the mask (1 = generate).",
            inputs=[
                io.Video.Input("video", optional=True,
                               tooltip="The source video (its size sets the source rectangle). Optional for "
                                       "Outpaint Folder, where each clip has its own size; a long file is "
                                       f"previewed from its first {PREVIEW_FRAMES} frames."),
                io.Combo.Input("resolution", options=list(RESOLUTION_PRESETS) + [CUSTOM_SIZE],
                               default="landscape_16_9",
                               tooltip="fal's canvas presets, or 'custom' to use width/height below."),
                io.Int.Input("width", default=1280, min=CANVAS_SIDE_RANGE[0], max=CANVAS_SIDE_RANGE[1], step=8,
                             tooltip="Canvas width when resolution is 'custom'."),
                io.Int.Input("height", default=720, min=CANVAS_SIDE_RANGE[0], max=CANVAS_SIDE_RANGE[1], step=8,
                             tooltip="Canvas height when resolution is 'custom'."),
                request_field("source_scale"),
                io.Combo.Input("placement", options=list(ANCHORS), default="center",
                               tooltip="Where the source sits (fal always centres; other anchors are "
                                       "honoured by the preview and local backends)."),
                io.Int.Input("offset_x", default=0, min=-16384, max=16384,
                             tooltip="Pixels to move the source right of its anchored position (clamped)."),
                io.Int.Input("offset_y", default=0, min=-16384, max=16384,
                             tooltip="Pixels to move the source down from its anchored position (clamped)."),
            ],
            outputs=[
                CANVAS.Output(display_name="canvas", tooltip="Canvas settings for the outpaint node."),
                io.Image.Output(display_name="composite",
                                tooltip="Source frames placed on the canvas, the rest flat green."),
                io.Mask.Output(display_name="mask", tooltip="1 where the model generates, 0 over the source."),
            ],
        )

    @classmethod
    def execute(cls, resolution, width, height, source_scale, placement, offset_x,
                offset_y, video=None) -> io.NodeOutput:
        res = ImageSize(width, height) if resolution == CUSTOM_SIZE else resolution
        spec = CanvasSpec(res, source_scale, placement, offset_x, offset_y)
        OutpaintRequest(resolution=res, source_scale=source_scale).validate()
        if video is None:  # a folder's clips have their own sizes: the canvas alone
            w, h = spec.size
            lay = layout_canvas(spec, w, h)
            check_frame_memory(w, h, 1, "resolution", "use a smaller canvas")
            blank = torch.empty(1, h, w, 3)
            blank[:] = torch.tensor(FILL_RGB)
            return io.NodeOutput(spec, blank, torch.ones(1, h, w),
                                 ui=ui.PreviewText(f"canvas {w}x{h}, source_scale {source_scale}, {placement}; "
                                                   f"no video: each clip is placed by its own size"))
        clip, note = _preview_clip(video)
        lay = layout_canvas(spec, clip.width, clip.height)
        check_frame_memory(lay.width, lay.height, clip.num_frames, "resolution",
                           "use a smaller canvas or load fewer frames")
        comp = composite(clip.frames, lay)
        info = f"{lay.describe()}\n{snap_summary(spec, clip.width, clip.height, clip.num_frames)}" + note
        return io.NodeOutput(spec, comp, lay.mask().unsqueeze(0),
                             ui=ui.PreviewText(info))


def _preview_clip(video):
    """The clip to preview: a long file-backed VIDEO is decoded from its first PREVIEW_FRAMES frames only."""
    from comfy_api.latest import InputImpl

    from ..media.decode import DecodeOptions, decode_video, probe

    if isinstance(video, InputImpl.VideoFromFile):
        source = video.get_stream_source()
        if isinstance(source, str) and probe(source).frame_count > PREVIEW_FRAMES:
            clip = decode_video(source, DecodeOptions(frame_load_cap=PREVIEW_FRAMES))
            return clip, f"\n(a long file: the composite shows its first {clip.num_frames} frames)"
    return clip_from_video(video), ""


NODES = [OutpaintCanvas]
