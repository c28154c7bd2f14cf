"""Video nodes: Load Video (decode with selection, rotation, audio) and Save MP4."""
from __future__ import annotations

import logging
import os
import shutil

import folder_paths
from comfy_api.latest import io, ui

from ..errors import InputError
from ..media.decode import DecodeOptions, check_options, decode_video
from ..media.encode import write_mp4
from ..media.remux import remux_with_metadata
from .paths import annotated as _annotated, media_policy, save_target
from .common import CATEGORY, SourceVideo, clip_from_video, to_comfy_audio, request_field

log = logging.getLogger(__name__)

#: The sample clip the shipped templates load: a small portrait scene (tests/make_workflows.py writes it with
#: media/sample.py) kept in workflows/ and copied into ComfyUI's input folder when it is not there.
SAMPLE_VIDEO = "ltx-outpaint-sample.mp4"
SAMPLE_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "workflows", SAMPLE_VIDEO)


def ensure_sample_video() -> str | None:
    """Copy the templates' sample clip into ComfyUI's input folder unless a file of that name is there.

    Called once at start-up (a file copy, no decoding), so a template opens with its clip present: no missing
    file on the first run, no red Load Video in frontends that check media on open. Never overwrites.
    """
    target = os.path.join(folder_paths.get_input_directory(), SAMPLE_VIDEO)
    if os.path.exists(target):
        return target
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(SAMPLE_SOURCE, target + ".part")
        os.replace(target + ".part", target)
    except OSError as e:
        log.warning("LTX Outpaint: could not copy the templates' sample clip to %s: %s", target, e)
        return None
    log.info("LTX Outpaint: copied the templates' sample clip to %s", target)
    return target


NODE = "Load Video"


def _input_videos() -> list[str]:
    input_dir = folder_paths.get_input_directory()
    files = [f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f))]
    return sorted(folder_paths.filter_files_content_types(files, ["video"]))


# ---------------------------------------------------------------- nodes


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
                                tooltip="Overrides the chosen file at run time: a local file path or an https "
                                        "URL (fetched with the pack's safe downloader). The list above must "
                                        "still name a file in the input folder (the sample clip does)."),
                io.Int.Input("frame_load_cap", default=0, min=0, max=100000,
                             tooltip="Load at most this many frames (0 = all)."),
                io.Int.Input("skip_first_frames", default=0, min=0, max=1000000,
                             tooltip="Skip this many frames at the start (after force_fps)."),
                io.Int.Input("select_every_nth", default=1, min=1, max=1000,
                             tooltip="Keep every nth frame (1 = all); fps is divided accordingly."),
                io.Float.Input("force_fps", default=0.0, min=0.0, max=240.0, step=0.01,
                               tooltip="Resample to this frame rate, 1 to 240 (0 = keep the file's rate)."),
                io.Int.Input("max_width", default=0, min=0, max=16384, step=2,
                             tooltip="Downscale so the width is at most this (0 = no limit)."),
                io.Int.Input("max_height", default=0, min=0, max=16384, step=2,
                             tooltip="Downscale so the height is at most this (0 = no limit)."),
                io.Int.Input("audio_sample_rate", default=0, min=0, max=192000,
                             tooltip="Resample the audio to this rate, 8000 to 192000 Hz (0 = keep)."),
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
    def _source(cls, video: str, path_or_url: str) -> tuple[str, bool]:
        """(a URL, True) or (the real path of an allowed local file, False); refusals name the input once."""
        from ..download import is_url

        given = (path_or_url or "").strip()
        if given and is_url(given):
            return given, True
        if given:
            return media_policy().resolve(given, "path_or_url", NODE), False
        if not video:
            raise InputError("video", "no video selected; upload one or set path_or_url", node=NODE)
        return media_policy().resolve(_annotated(video), "video", NODE), False

    @classmethod
    def validate_inputs(cls, video):
        # One parameter on purpose: ComfyUI reports a failed check once per parameter of validate_inputs, so a
        # problem is named once. `path_or_url`, when set, is checked (same rules, same message) when the node
        # runs; an empty `video` is allowed here for graphs that only give path_or_url.
        if not video:
            return True
        try:
            media_policy().resolve(_annotated(video), "video", NODE)
        except InputError as exc:
            return str(exc)
        return True

    @classmethod
    def fingerprint_inputs(cls, video, path_or_url="", **kwargs):
        given = (path_or_url or "").strip()
        from ..download import is_url

        if given and is_url(given):
            return given
        if given:
            return media_policy().fingerprint(given)
        return media_policy().fingerprint(_annotated(video or ""), label=video)

    @classmethod
    def execute(cls, video, frame_load_cap, skip_first_frames, select_every_nth, force_fps, max_width,
                max_height, audio_sample_rate, path_or_url="") -> io.NodeOutput:
        source, temporary = cls._source(video, path_or_url or "")
        opts = DecodeOptions(frame_load_cap, skip_first_frames, select_every_nth, force_fps, max_width,
                             max_height, audio_sample_rate)
        check_options(opts)  # before a download
        if temporary:
            from ..download import download, policy_from_env  # httpx only when needed (start-up time)

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
                + ("; untouched source file" if clip.untouched else "")
                + "".join(f"\n{w}" for w in clip.warnings))
        return io.NodeOutput(clip.frames, to_comfy_audio(audio), clip.fps, clip.num_frames, SourceVideo(clip),
                             ui=ui.PreviewText(info))

class SaveMP4(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintSaveMP4",
            display_name="Save MP4 (LTX Outpaint)",
            category=CATEGORY,
            description="Write an H.264 + AAC MP4 into ComfyUI's output folder (see README for the encoder "
                        "settings of each quality / write mode). A fal result with the same settings is copied "
                        "without re-encoding, with the prompt/workflow metadata added.",
            inputs=[
                io.Video.Input("video", tooltip="The video to save."),
                io.String.Input("filename_prefix", default="ltx-outpaint/outpaint",
                                tooltip="Prefix (may include a subfolder); a counter is appended."),
                request_field("video_quality"),
                request_field("video_write_mode"),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Absolute path of the written MP4.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, video, filename_prefix, video_quality, video_write_mode) -> io.NodeOutput:
        import json

        width, height = video.get_dimensions()
        folder, name, counter, subfolder = save_target(filename_prefix, width, height, "Save MP4")
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
            remux_with_metadata(encoded, path, metadata)  # already encoded with these settings: no re-encode
        else:
            clip = clip_from_video(video)
            write_mp4(path, clip.frames, clip.fps, clip.audio, video_quality, video_write_mode, metadata=metadata)
        result = getattr(video, "result", None)
        if result is not None:  # an outpaint result: its run facts beside the file (no workflow, no key)
            with open(path + ".json", "w", encoding="utf-8") as f:  # as the CLI names its sidecar
                json.dump({"backend": result.backend, "seed": result.seed, "prompt": result.prompt,
                           "fps": result.fps, "frames": int(result.frames.shape[0]), "notes": result.notes,
                           "quality": result.quality}, f, indent=2)
        return io.NodeOutput(path, ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]))


NODES = [LoadVideo, SaveMP4]
