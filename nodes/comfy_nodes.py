"""ComfyUI adapter: the pack's nodes (V3 schema API). Thin: schema + engine call + ComfyUI glue.

This is the only module that imports ComfyUI. Heavy imports (ltx-core, transformers) never happen here.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
from fractions import Fraction

import torch
from typing_extensions import override

import folder_paths
from comfy_api.latest import ComfyExtension, InputImpl, Types, io, ui

from .backends import Interrupted, OutpaintResult, PreviewConfig, Progress, run_outpaint_async
from .canvas import ANCHORS, CanvasSpec, composite, layout_canvas, snap_summary
from .cost import estimate_cost
from .backends.fal import FalConfig, recover
from .errors import InputError
from .settings import find_fal_key, set_default_config_dir, store_fal_key
from .loras import check_lora_spec
from .request import (CANVAS_SIDE_RANGE, FIELDS, LORA_SCALE_RANGE, LORA_TARGETS, MAX_LORAS, RESOLUTION_PRESETS,
                      ImageSize, LoraSpec, OutpaintRequest)
from .video_decode import Audio, Clip, DecodeOptions, check_frame_memory, decode_video
from .video_encode import write_mp4

log = logging.getLogger(__name__)

CATEGORY = "LTX-2.3 Outpaint"
set_default_config_dir(os.path.join(folder_paths.get_user_directory(), "ltx_outpaint"))
CANVAS = io.Custom("LTX_OUTPAINT_CANVAS")
LORA_STACK = io.Custom("LTX_OUTPAINT_LORA_STACK")
BACKEND = io.Custom("LTX_OUTPAINT_BACKEND")
CUSTOM_SIZE = "custom"


# ---------------------------------------------------------------- conversions between engine and ComfyUI

def to_comfy_audio(audio: Audio | None) -> dict | None:
    if audio is None:
        return None
    return {"waveform": audio.waveform.unsqueeze(0), "sample_rate": int(audio.sample_rate)}


def from_comfy_audio(audio: dict | None) -> Audio | None:
    if not audio:
        return None
    wave = audio["waveform"]
    return Audio(wave[0] if wave.dim() == 3 else wave, int(audio["sample_rate"]))


class SourceVideo(InputImpl.VideoFromComponents):
    """A VIDEO that also carries the decoded clip and the file it came from (for untouched uploads)."""

    def __init__(self, clip: Clip):
        super().__init__(Types.VideoComponents(images=clip.frames, audio=to_comfy_audio(clip.audio),
                                               frame_rate=Fraction(clip.fps).limit_denominator(1001)))
        self.clip = clip


class OutpaintVideo(InputImpl.VideoFromComponents):
    """A VIDEO of an outpaint result; remembers an already-encoded MP4 (remote backends) if any."""

    def __init__(self, result: OutpaintResult, request: OutpaintRequest):
        super().__init__(Types.VideoComponents(images=result.frames, audio=to_comfy_audio(result.audio),
                                               frame_rate=Fraction(result.fps).limit_denominator(1001)))
        self.result = result
        self.request = request


def clip_from_video(video) -> Clip:
    """Any VIDEO -> engine Clip; files are decoded with our decoder (fast, memory-checked)."""
    if isinstance(video, SourceVideo):
        return video.clip
    if isinstance(video, InputImpl.VideoFromFile):
        source = video.get_stream_source()
        if isinstance(source, str):
            return decode_video(source)
    components = video.get_components()
    return Clip(components.images, float(components.frame_rate), from_comfy_audio(components.audio))


class ComfyProgress(Progress):
    """Progress bar + progress text on the node; ComfyUI's interrupt stops the run."""

    def __init__(self, node_id: str | None, total: int = 100):
        import comfy.utils

        self.node_id = node_id
        self.bar = comfy.utils.ProgressBar(total, node_id=node_id)

    def report(self, done, total, text=None):
        super().report(done, total, text)
        self.bar.update_absolute(done, total)
        if text and self.node_id is not None:
            from server import PromptServer

            PromptServer.instance.send_progress_text(text, self.node_id)

    def interrupted(self) -> bool:
        import comfy.model_management

        return comfy.model_management.processing_interrupted()

    def check(self) -> None:
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()


async def interruptible(coro):
    """Await an engine coroutine; the engine's Interrupted becomes ComfyUI's interrupt (not an error)."""
    try:
        return await coro
    except Interrupted:
        import comfy.model_management

        raise comfy.model_management.InterruptProcessingException() from None


def _field(name: str, **overrides):
    """A node input generated from the request model's FIELDS table (one source of truth)."""
    spec = FIELDS[name]
    kw = dict(tooltip=spec.doc)
    if spec.kind == "int":
        kw.update(default=spec.default if spec.default is not None else 0, min=int(spec.minimum),
                  max=int(spec.maximum))
        kw.update(overrides)
        return io.Int.Input(name, **kw)
    if spec.kind == "float":
        kw.update(default=spec.default, min=spec.minimum, max=spec.maximum, step=0.01)
        kw.update(overrides)
        return io.Float.Input(name, **kw)
    if spec.kind == "bool":
        return io.Boolean.Input(name, **(kw | {"default": spec.default} | overrides))
    if spec.kind == "enum":
        return io.Combo.Input(name, options=list(spec.choices), **(kw | {"default": spec.default} | overrides))
    return io.String.Input(name, **(kw | {"default": spec.default, "multiline": spec.multiline} | overrides))


def _input_videos() -> list[str]:
    input_dir = folder_paths.get_input_directory()
    files = [f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f))]
    return sorted(folder_paths.filter_files_content_types(files, ["video"]))


# ---------------------------------------------------------------- nodes

#: Outputs shared by every node that yields an outpaint result.
OUTPAINT_OUTPUTS = [
    io.Image.Output(display_name="images", tooltip="The outpainted frames."),
    io.Audio.Output(display_name="audio", tooltip="Output audio (silence when generate_audio is off)."),
    io.Float.Output(display_name="fps", tooltip="Frame rate of the output."),
    io.Video.Output(display_name="video", tooltip="Frames + audio + fps, for Save nodes."),
    io.Int.Output(display_name="seed", tooltip="The seed actually used."),
    io.String.Output(display_name="prompt", tooltip="The prompt actually used (after expansion)."),
]

class LoadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintLoadVideo",
            display_name="Load Video (LTX Outpaint)",
            category=CATEGORY,
            description="Decode a video into frames, audio and fps, with frame selection and rotation "
                        "handled; its VIDEO output remembers the original file.",
            inputs=[
                io.Combo.Input("video", options=_input_videos(), upload=io.UploadType.video,
                               tooltip="A video in ComfyUI's input folder (upload with the button)."),
                io.String.Input("path_or_url", default="", optional=True,
                                tooltip="Overrides the upload: a local file path or an https URL (fetched "
                                        "with the pack's safe downloader)."),
                io.Int.Input("frame_load_cap", default=0, min=0, max=100000,
                             tooltip="Load at most this many frames (0 = all)."),
                io.Int.Input("skip_first_frames", default=0, min=0, max=1000000,
                             tooltip="Skip this many frames at the start (after force_fps)."),
                io.Int.Input("select_every_nth", default=1, min=1, max=1000,
                             tooltip="Keep every nth frame (1 = all); fps is divided accordingly."),
                io.Float.Input("force_fps", default=0.0, min=0.0, max=240.0, step=0.01,
                               tooltip="Resample to this frame rate (0 = keep the file's rate)."),
                io.Int.Input("max_width", default=0, min=0, max=16384, step=2,
                             tooltip="Downscale so the width is at most this (0 = no limit)."),
                io.Int.Input("max_height", default=0, min=0, max=16384, step=2,
                             tooltip="Downscale so the height is at most this (0 = no limit)."),
                io.Int.Input("audio_sample_rate", default=0, min=0, max=192000,
                             tooltip="Resample the audio to this rate (0 = keep)."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Frames, float32 [F,H,W,3]."),
                io.Audio.Output(display_name="audio", tooltip="The matching audio (silence if the file has none)."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of the loaded frames."),
                io.Int.Output(display_name="frame_count", tooltip="Number of loaded frames."),
                io.Video.Output(display_name="video", tooltip="Frames + audio + fps, remembering the source file."),
            ],
        )

    @classmethod
    def _path(cls, video: str, path_or_url: str) -> str:
        return path_or_url.strip() or folder_paths.get_annotated_filepath(video)

    @classmethod
    def validate_inputs(cls, video, path_or_url=""):
        if path_or_url and path_or_url.strip():
            return True
        if not video or not folder_paths.exists_annotated_filepath(video):
            return f"video: file not found in the input folder: {video!r}; upload one or set path_or_url"
        return True

    @classmethod
    def fingerprint_inputs(cls, video, path_or_url="", **kwargs):
        path = cls._path(video, path_or_url or "")
        return f"{path}:{os.path.getmtime(path) if os.path.exists(path) else ''}"

    @classmethod
    def execute(cls, video, frame_load_cap, skip_first_frames, select_every_nth, force_fps, max_width,
                max_height, audio_sample_rate, path_or_url="") -> io.NodeOutput:
        source = cls._path(video, path_or_url or "")
        opts = DecodeOptions(frame_load_cap, skip_first_frames, select_every_nth, force_fps, max_width,
                             max_height, audio_sample_rate)
        from .download import download, is_url, policy_from_env  # httpx only when needed (start-up time)

        temporary = is_url(source)
        if temporary:
            source = download(source, policy=policy_from_env(), field="path_or_url")
        try:
            clip = decode_video(source, opts)
        finally:
            if temporary:
                os.unlink(source)
        if temporary:
            clip.source_path, clip.untouched = None, False
        audio = clip.audio
        audio_text = (f"audio: {audio.waveform.shape[0]} ch @ {audio.sample_rate} Hz" if not audio.silent
                      else "audio: NONE in the file (the AUDIO output is silence)")
        if audio.silent:
            log.warning("LTXOutpaintLoadVideo: %s has no audio track; the AUDIO output is silence",
                        os.path.basename(source))
        info = (f"{clip.width}x{clip.height}, {clip.num_frames} frames @ {clip.fps:g} fps; {audio_text}"
                + ("; untouched source file" if clip.untouched else ""))
        return io.NodeOutput(clip.frames, to_comfy_audio(audio), clip.fps, clip.num_frames, SourceVideo(clip),
                             ui=ui.PreviewText(info))


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
                io.Video.Input("video", tooltip="The source video (its size sets the source rectangle)."),
                io.Combo.Input("resolution", options=list(RESOLUTION_PRESETS) + [CUSTOM_SIZE],
                               default="landscape_16_9",
                               tooltip="fal's canvas presets, or 'custom' to use width/height below."),
                io.Int.Input("width", default=1280, min=CANVAS_SIDE_RANGE[0], max=CANVAS_SIDE_RANGE[1], step=8,
                             tooltip="Canvas width when resolution is 'custom'."),
                io.Int.Input("height", default=720, min=CANVAS_SIDE_RANGE[0], max=CANVAS_SIDE_RANGE[1], step=8,
                             tooltip="Canvas height when resolution is 'custom'."),
                _field("source_scale"),
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
    def execute(cls, video, resolution, width, height, source_scale, placement, offset_x,
                offset_y) -> io.NodeOutput:
        res = ImageSize(width, height) if resolution == CUSTOM_SIZE else resolution
        spec = CanvasSpec(res, source_scale, placement, offset_x, offset_y)
        OutpaintRequest(resolution=res, source_scale=source_scale).validate()
        clip = clip_from_video(video)
        lay = layout_canvas(spec, clip.width, clip.height)
        check_frame_memory(lay.width, lay.height, clip.num_frames, "resolution",
                           "use a smaller canvas or load fewer frames")
        comp = composite(clip.frames, lay)
        info = f"{lay.describe()}\n{snap_summary(spec, clip.width, clip.height, clip.num_frames)}"
        return io.NodeOutput(spec, comp, lay.mask().unsqueeze(0),
                             ui=ui.PreviewText(info))


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
    def execute(cls, lora, scale, transformer, path_or_url="", lora_stack=None) -> io.NodeOutput:
        stack = tuple(lora_stack or ())
        path = (path_or_url or "").strip()
        if not path and lora != "none":
            path = folder_paths.get_full_path_or_raise("loras", lora)
        if not path:
            return io.NodeOutput(stack)
        if len(stack) >= MAX_LORAS:
            raise InputError("lora_stack", f"already holds {len(stack)} LoRAs; at most {MAX_LORAS} are allowed")
        spec = check_lora_spec(LoraSpec(path, scale, transformer), field="lora")
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
                _field("prompt", default=""),
                BACKEND.Input("backend", optional=True,
                              tooltip="A backend node (preview, fal, local). None: the free preview backend."),
                LORA_STACK.Input("loras", optional=True, tooltip="From LoRA Stack nodes (at most 3)."),
                _field("num_frames"),
                _field("frames_per_second"),
                _field("video_strength"),
                _field("num_inference_steps"),
                _field("guidance_scale", step=0.1),
                _field("generate_audio"),
                _field("negative_prompt"),
                _field("seed", default=0, control_after_generate=True),
                _field("enable_prompt_expansion"),
                _field("enable_safety_checker"),
                _field("video_quality"),
                _field("video_write_mode"),
                _field("sync_mode"),
            ],
            outputs=OUTPAINT_OUTPUTS,
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    async def execute(cls, video, canvas, backend=None, loras=None, **fields) -> io.NodeOutput:
        """`fields` are the request model's fields (widgets generated from FIELDS)."""
        request = OutpaintRequest(**fields, resolution=canvas.resolution, source_scale=canvas.source_scale,
                                  loras=tuple(loras or ())).validate()
        if backend is None:
            backend = _default_backend()
        progress = ComfyProgress(cls.hidden.unique_id)
        clip = await asyncio.to_thread(clip_from_video, video)  # decoding must not block ComfyUI's loop
        result = await interruptible(run_outpaint_async(request, clip, canvas, backend, progress))
        n, h, w = result.frames.shape[:3]
        summary = f"{result.backend}: {w}x{h}, {n} frames @ {result.fps:g} fps, seed {result.seed}; " \
                  f"fal: {estimate_cost(*request.canvas_size, request.num_frames)}"
        if result.notes:
            summary += "\n" + "\n".join(result.notes)
        return _outputs(result, request, summary)


class SaveMP4(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintSaveMP4",
            display_name="Save MP4 (LTX Outpaint)",
            category=CATEGORY,
            description="Write an H.264 + AAC MP4 into ComfyUI's output folder (see README for the encoder "
                        "settings of each quality / write mode).",
            inputs=[
                io.Video.Input("video", tooltip="The video to save."),
                io.String.Input("filename_prefix", default="ltx-outpaint/outpaint",
                                tooltip="Prefix (may include a subfolder); a counter is appended."),
                _field("video_quality"),
                _field("video_write_mode"),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Absolute path of the written MP4.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, video, filename_prefix, video_quality, video_write_mode) -> io.NodeOutput:
        import json

        width, height = video.get_dimensions()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height)
        file = f"{name}_{counter:05}_.mp4"
        path = os.path.join(folder, file)
        metadata = {}
        if cls.hidden.prompt is not None:
            metadata["prompt"] = json.dumps(cls.hidden.prompt)
        if cls.hidden.extra_pnginfo:
            for key, value in cls.hidden.extra_pnginfo.items():
                metadata[key] = json.dumps(value)
        encoded = getattr(getattr(video, "result", None), "video_path", None)
        request = getattr(video, "request", None)
        if encoded and request and (request.video_quality, request.video_write_mode) == (video_quality,
                                                                                         video_write_mode):
            shutil.copyfile(encoded, path)  # already encoded with these settings: no second encode
        else:
            clip = clip_from_video(video)
            write_mp4(path, clip.frames, clip.fps, clip.audio, video_quality, video_write_mode, metadata=metadata)
        return io.NodeOutput(path, ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]))


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
                               tooltip="Refuse to submit when the estimate is above this (0 = the settings' "
                                       "limit, or none)."),
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


class LocalBackendNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintLocalBackend",
            display_name="Outpaint Backend: Local GPU (LTX-2.3)",
            category=CATEGORY,
            description="Run LTX-2.3 on this machine with Lightricks' ltx-core (pip install ltx-core "
                        "ltx-pipelines). Model files are found in ComfyUI's model folders "
                        "(checkpoints, loras, latent_upscale_models, text_encoders). No safety checker runs "
                        "locally.",
            inputs=[
                io.Combo.Input("mode", options=["quality", "fast"], default="quality",
                               tooltip="quality: dev checkpoint + distilled LoRA, res_2s sampler, "
                                       "num_inference_steps, CFG when guidance_scale > 1. fast: distilled "
                                       "checkpoint, fixed 8-step schedule, no CFG."),
                io.Combo.Input("precision", options=["auto", "bf16", "fp8"], default="auto",
                               tooltip="Transformer weights. fp8 halves their memory (fp8 checkpoint, or a "
                                       "bf16 one cast while loading); auto = fp8 on GPUs under 60 GB."),
                io.Boolean.Input("keep_loaded", default=False,
                                 tooltip="Keep the weights in RAM and the last prompt encoding between runs "
                                         "(faster reruns, uses CPU RAM)."),
                io.String.Input("model_paths", default="", multiline=True, optional=True,
                                tooltip="Optional explicit files, one ROLE=PATH per line (roles: dev, "
                                        "distilled, distilled_lora, ic_lora_outpaint, spatial_upsampler, "
                                        "text_encoder)."),
            ],
            outputs=[BACKEND.Output(display_name="backend", tooltip="Connect to the outpaint node.")],
        )

    @classmethod
    def execute(cls, mode, precision, keep_loaded, model_paths="") -> io.NodeOutput:
        return io.NodeOutput(_local_config(mode, precision, keep_loaded, model_paths))


def _local_config(mode="quality", precision="auto", keep_loaded=False, model_paths=""):
    from .backends.local import LocalConfig
    from .local_models import ModelSearch

    explicit = []
    for line in (model_paths or "").splitlines():
        if line.strip():
            role, sep, path = line.partition("=")
            if not sep or not path.strip():
                raise InputError("model_paths", f"expected ROLE=PATH, got {line.strip()!r}")
            explicit.append((role.strip(), os.path.expanduser(path.strip())))
    search = ModelSearch.from_lookup(folder_paths.get_folder_paths).merge(ModelSearch.from_env())
    return LocalConfig(mode=mode, precision=precision, keep_loaded=keep_loaded, search=search,
                       explicit=tuple(explicit), free_memory=_free_comfy_models)


def _default_backend():
    """The settings' default backend, for an outpaint node with none connected."""
    from .settings import Settings

    kind = Settings.load().default_backend
    if kind == "fal":
        log.info("LTXOutpaint: no backend connected; using the default backend from the settings: fal")
        return FalConfig(output_dir=_fal_output_dir())
    if kind == "local":
        log.info("LTXOutpaint: no backend connected; using the default backend from the settings: local")
        return _local_config()
    log.warning("LTXOutpaint: no backend connected; using the free PREVIEW backend (no AI)")
    return PreviewConfig()


def _free_comfy_models() -> None:
    """Unload ComfyUI's own models before the local backend loads LTX-2.3."""
    import comfy.model_management

    comfy.model_management.unload_all_models()
    comfy.model_management.soft_empty_cache()


def _fal_output_dir() -> str:
    return os.path.join(folder_paths.get_output_directory(), "ltx-outpaint", "fal")


def _outputs(result: OutpaintResult, request: OutpaintRequest | None, summary: str) -> io.NodeOutput:
    n = result.frames.shape[0]
    audio = result.audio
    if audio is None:  # no track in the VIDEO; the AUDIO socket gets explicit silence
        from .video_decode import silent_audio

        audio = silent_audio(n / result.fps)
    return io.NodeOutput(result.frames, to_comfy_audio(audio), result.fps, OutpaintVideo(result, request),
                         result.seed, result.prompt, ui=ui.PreviewText(summary))


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
        if not request_id.strip():
            raise InputError("request_id", "is empty; paste a fal request id")
        progress = ComfyProgress(cls.hidden.unique_id)
        result = await interruptible(recover(request_id.strip(), FalConfig(output_dir=_fal_output_dir()), progress))
        return _outputs(result, None, f"fal request {request_id}: " + "; ".join(result.notes))


def register_routes() -> None:
    """Pack routes: store the fal key server-side (never echoed back in full)."""
    from aiohttp import web
    from server import PromptServer

    routes = PromptServer.instance.routes

    @routes.get("/ltx_outpaint/fal_key")
    async def fal_key_status(request):
        key = find_fal_key()
        return web.json_response({"configured": key is not None, "source": key.source if key else None,
                                  "masked": key.masked() if key else None})

    @routes.get("/ltx_outpaint/constants")
    async def web_constants(request):
        from .web_constants import constants

        return web.json_response(constants())

    @routes.get("/ltx_outpaint/settings")
    async def settings_get(request):
        from .settings import Settings

        return web.json_response(Settings.load().__dict__)

    @routes.post("/ltx_outpaint/settings")
    async def settings_post(request):
        """Update non-secret settings (base-URL overrides, default backend); unknown names are refused."""
        import dataclasses

        from .settings import Settings
        from .web_constants import BACKENDS

        body = await request.json()
        current = Settings.load()
        fields = {f.name: f for f in dataclasses.fields(Settings)}
        if not isinstance(body, dict) or set(body) - set(fields):
            return web.json_response({"error": f"allowed settings: {', '.join(fields)}"}, status=400)
        if body.get("default_backend", current.default_backend) not in BACKENDS:
            return web.json_response({"error": f"default_backend: allowed {', '.join(BACKENDS)}"}, status=400)
        for name, value in body.items():
            if name.endswith("_url") and value and not str(value).startswith(("http://", "https://")):
                return web.json_response({"error": f"{name}: must be an http(s) URL or empty"}, status=400)
        updated = dataclasses.replace(current, **{k: type(getattr(current, k))(v) for k, v in body.items()})
        updated.save()
        return web.json_response(updated.__dict__)

    @routes.post("/ltx_outpaint/fal_key")
    async def fal_key_store(request):
        body = await request.json()
        value = str(body.get("key", "")) if isinstance(body, dict) else ""
        store_fal_key(value)
        key = find_fal_key()
        return web.json_response({"configured": key is not None, "masked": key.masked() if key else None})


NODES = [LoadVideo, OutpaintCanvas, LoraStack, PreviewBackendNode, FalBackendNode, LocalBackendNode, Outpaint,
         FalRecover, SaveMP4]


class OutpaintExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> OutpaintExtension:
    register_routes()
    return OutpaintExtension()
