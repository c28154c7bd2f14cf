"""Long clips and folders: Video File (no decoding), Outpaint Long Video, Outpaint Folder.

The long-video node reads its VIDEO's file chunk by chunk and writes the result to ComfyUI's output folder as
chunks finish; it returns a VIDEO backed by that file (never a whole-clip IMAGE tensor) and its path. The
folder node runs a batch over a folder confined like every workflow path (ComfyUI's input, output or temp
folder, unless the server's environment allows more). Both leave submitted fal jobs running when stopped,
so queueing the same workflow again picks them up (nothing is submitted twice).
"""
from __future__ import annotations

import dataclasses
import logging
import os

import folder_paths
from comfy_api.latest import InputImpl, io, ui

from ..errors import InputError
from ..request import FIELDS, OutpaintRequest
from .common import BACKEND, CANVAS, CATEGORY, LORA_STACK, ComfyProgress, SourceVideo, interruptible, request_field
from .paths import annotated, media_policy, save_target, shown_path

log = logging.getLogger(__name__)

LONG_NODE = "Outpaint Long Video"
FOLDER_NODE = "Outpaint Folder"
#: request fields the long-clip nodes set themselves (num_frames per chunk, the source's frame rate)
OWN_FIELDS = ("prompt", "video_url", "loras", "num_frames", "frames_per_second", "resolution", "source_scale")


def _long_inputs() -> list:
    return [
        io.Boolean.Input("detect_scenes", default=True,
                         tooltip="Split at scene cuts (PySceneDetect's ContentDetector); each scene is its own run."),
        io.Float.Input("scene_threshold", default=27.0, min=1.0, max=100.0, step=0.5,
                       tooltip="Scene-cut threshold (content score; PySceneDetect's default 27)."),
        io.Int.Input("chunk_frames", default=0, min=0, max=100000,
                     tooltip="Frames per request (0 = the backend's default: fal 481 = its maximum, local 121, "
                             "preview 481)."),
        io.Int.Input("overlap_frames", default=17, min=0, max=240,
                     tooltip="Frames shared by consecutive chunks of a scene; cross-faded (local: also a guide)."),
    ]


def _request_inputs() -> list:
    return [request_field(name, **({"default": 0, "control_after_generate": True} if name == "seed" else {}))
            for name in FIELDS if name not in OWN_FIELDS]


def _options(detect_scenes, scene_threshold, chunk_frames, overlap_frames):
    from ..long.runner import LongOptions

    return LongOptions(detect_scenes=detect_scenes, scene_threshold=scene_threshold, chunk_frames=chunk_frames,
                       overlap_frames=overlap_frames)


def _backend(backend, node: str):
    """The backend config for a long run. Local chunks run inside this node (the native engine in process where
    ComfyUI has core LTX-2, else ltx-core; both take the previous chunk's frames as a guide); fal detaches."""
    if backend is None:
        from .nodes_outpaint import _default_backend

        backend = _default_backend()
    if getattr(backend, "kind", None) == "fal":
        return dataclasses.replace(backend, on_stop="detach")
    return backend


def _release_native_loaders() -> None:
    """The native engine keeps its loaders between a run's chunks / clips, not after the node returns (else a
    later workflow loading the same files would hold a second copy in RAM)."""
    from ..local.native.run import release

    release()


def video_file(video) -> tuple[str, list[str]]:
    """The file behind a VIDEO (our Load Video / Video File, core Load Video), and notes."""
    if isinstance(video, SourceVideo):
        clip = video.clip
        if not clip.source_path:
            raise InputError("video", "this VIDEO was downloaded from a URL and is not kept as a file; save it into "
                                      "ComfyUI's input folder and load it from there", node=LONG_NODE)
        notes = [] if clip.untouched else ["Load Video's frame selection / resizing is not applied: the long-video "
                                           "node reads the whole file"]
        return clip.source_path, notes
    if isinstance(video, InputImpl.VideoFromFile):
        source = video.get_stream_source()
        if isinstance(source, str) and os.path.isfile(source):
            return source, []
    raise InputError("video", "needs a VIDEO backed by a file (Video File, Load Video or ComfyUI's Load Video); "
                              "a VIDEO made from frames in memory cannot be read chunk by chunk", node=LONG_NODE)


class VideoFile(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintVideoFile",
            display_name="Video File (LTX Outpaint)",
            category=CATEGORY,
            description="A video file as a VIDEO without decoding it (any length): for Outpaint Long Video.",
            inputs=[
                io.Combo.Input("video", options=_input_videos(), upload=io.UploadType.video,
                               tooltip="A video in ComfyUI's input folder."),
                io.String.Input("path", default="", optional=True,
                                tooltip="Instead: a file in ComfyUI's input, output or temp folder."),
            ],
            outputs=[io.Video.Output(display_name="video", tooltip="The file, not decoded."),
                     io.String.Output(display_name="path", tooltip="Its path.")],
        )

    @classmethod
    def _source(cls, video: str, path: str = "") -> str:
        given = (path or "").strip()
        if given:
            return media_policy().resolve(given, "path", "Video File")
        if not video:
            raise InputError("video", "no video selected", node="Video File")
        return media_policy().resolve(annotated(video), "video", "Video File")

    @classmethod
    def validate_inputs(cls, video):
        # One parameter: ComfyUI reports a failed check once per parameter, so a problem is named once;
        # `path`, when set, is checked (same rules, same message) when the node runs.
        if not video:
            return True
        try:
            cls._source(video)
        except InputError as exc:
            return str(exc)
        return True

    @classmethod
    def fingerprint_inputs(cls, video, path="", **kwargs):
        given = (path or "").strip()
        return media_policy().fingerprint(given) if given else media_policy().fingerprint(annotated(video or ""),
                                                                                          label=video)

    @classmethod
    def execute(cls, video, path="") -> io.NodeOutput:
        from ..media.decode import probe

        source = cls._source(video, path)
        info = probe(source)
        text = f"{info.width}x{info.height}, about {info.frame_count} frames @ {info.fps:g} fps ({info.duration:.1f} s)"
        return io.NodeOutput(InputImpl.VideoFromFile(source), source, ui=ui.PreviewText(text))


def _input_videos() -> list[str]:
    from .nodes_video import _input_videos as videos

    return videos()


class OutpaintLong(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintLong",
            display_name="Outpaint Long Video (LTX Outpaint)",
            category=CATEGORY,
            description="Outpaint a video of any length: split at scene cuts and into overlapping chunks, each "
                        "chunk a run of the chosen backend, written to the output folder as chunks finish.",
            inputs=[
                io.Video.Input("video", tooltip="A VIDEO backed by a file (Video File, Load Video)."),
                CANVAS.Input("canvas", tooltip="From the Outpaint Canvas node."),
                request_field("prompt", default=""),
                BACKEND.Input("backend", optional=True, tooltip="preview, fal or local (None: the default)."),
                LORA_STACK.Input("loras", optional=True),
                io.String.Input("filename_prefix", default="ltx-outpaint/long"),
                *_long_inputs(),
                *_request_inputs(),
            ],
            outputs=[io.Video.Output(display_name="video", tooltip="The written MP4 (read from disk when used)."),
                     io.String.Output(display_name="path", tooltip="Absolute path of the written MP4."),
                     io.String.Output(display_name="info", tooltip="Scenes, chunk joins and notes.")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    async def execute(cls, video, canvas, prompt, filename_prefix, detect_scenes, scene_threshold, chunk_frames,
                      overlap_frames, backend=None, loras=None, **fields) -> io.NodeOutput:
        from ..long.runner import run_long_async

        request = OutpaintRequest(prompt=prompt, **fields, resolution=canvas.resolution,
                                  source_scale=canvas.source_scale, loras=tuple(loras or ())).validate()
        source, notes = video_file(video)
        config = _backend(backend, LONG_NODE)
        folder, name, counter, subfolder = save_target(filename_prefix, *canvas.size, LONG_NODE)
        file = f"{name}_{counter:05}_.mp4"
        path = os.path.join(folder, file)
        progress = ComfyProgress(cls.hidden.unique_id)
        try:
            result = await interruptible(run_long_async(
                source, path, request, canvas, config, _options(detect_scenes, scene_threshold, chunk_frames,
                                                                overlap_frames), progress))
        finally:
            _release_native_loaders()
        text = "\n".join([result.summary(), *notes, f"saved {shown_path(path)}"])
        shown = ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]).as_dict()
        return io.NodeOutput(InputImpl.VideoFromFile(path), path, text, ui={**shown, "text": (text,)})


class BatchSink:
    """Batch events as the node's progress bar (overall) and progress text (per clip)."""

    def __init__(self, progress: ComfyProgress):
        from ..batch.progress import BatchProgress

        class Sink(BatchProgress):
            def clip(self, index, total, name, fraction, text):
                progress.report(100 * (index + fraction) / max(1, total), 100,
                                f"clip {index + 1}/{total} {name}: {text}")

            def overall(self, done, total, text):
                progress.report(100 * done / max(1, total), 100, f"{done}/{total} clips: {text}")

            def interrupted(self):
                return progress.interrupted()

            def note(self, text):
                progress.note(text)

        self.sink = Sink()


class OutpaintFolder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintFolder",
            display_name="Outpaint Folder (LTX Outpaint)",
            category=CATEGORY,
            description="Outpaint every video in a folder (any lengths). fal: N requests at a time, the total "
                        "cost checked first; local: one clip after another. Queue it again to resume.",
            inputs=[
                io.String.Input("folder", default="",
                                tooltip="A folder inside ComfyUI's input, output or temp folder (relative to input)."),
                CANVAS.Input("canvas"),
                request_field("prompt", default=""),
                BACKEND.Input("backend", optional=True),
                LORA_STACK.Input("loras", optional=True),
                io.String.Input("output_subfolder", default="ltx-outpaint/batch",
                                tooltip="Where in ComfyUI's output folder the results, manifest and summary go."),
                io.Int.Input("concurrency", default=2, min=1, max=64, tooltip="fal requests at a time."),
                io.Float.Input("max_total_cost_usd", default=0.0, min=0.0, max=100000.0, step=0.5,
                               tooltip="Refuse the batch before any upload when fal's estimate is above this "
                                       "(0 = no cap)."),
                *_long_inputs(),
                *_request_inputs(),
            ],
            outputs=[io.String.Output(display_name="summary", tooltip="Per clip: status, output, seconds, cost."),
                     io.String.Output(display_name="summary_csv", tooltip="Path of batch-summary.csv."),
                     io.String.Output(display_name="output_folder")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def _folder(cls, folder: str) -> str:
        if not (folder or "").strip():
            raise InputError("folder", "is empty; give a folder inside ComfyUI's input folder", node=FOLDER_NODE)
        return media_policy().resolve_folder(folder, "folder", FOLDER_NODE)

    @classmethod
    def _out_dir(cls, output_subfolder: str) -> str:
        base = os.path.realpath(folder_paths.get_output_directory())
        sub = (output_subfolder or "").strip() or "ltx-outpaint/batch"
        out = "" if "\0" in sub else os.path.realpath(os.path.join(base, sub))  # NUL: no such folder
        if out != base and not out.startswith(base + os.sep):
            raise InputError("output_subfolder", "must stay inside ComfyUI's output folder", node=FOLDER_NODE)
        return out

    @classmethod
    def validate_inputs(cls, folder):
        # One parameter (a problem is named once); `output_subfolder` is checked when the node runs.
        try:
            cls._folder(folder)
        except InputError as exc:
            return str(exc)
        return True

    @classmethod
    def fingerprint_inputs(cls, folder, **kwargs):
        return float("nan")  # the folder's content may change: always run (finished clips are skipped)

    @classmethod
    async def execute(cls, folder, canvas, prompt, output_subfolder, concurrency, max_total_cost_usd,
                      detect_scenes, scene_threshold, chunk_frames, overlap_frames, backend=None, loras=None,
                      **fields) -> io.NodeOutput:
        from ..batch.inputs import list_inputs
        from ..batch.runner import run_batch_async

        request = OutpaintRequest(prompt=prompt, **fields, resolution=canvas.resolution,
                                  source_scale=canvas.source_scale, loras=tuple(loras or ())).validate()
        source = cls._folder(folder)
        out_dir = cls._out_dir(output_subfolder)
        inputs = list_inputs([source], field="folder", exclude=out_dir)
        progress = ComfyProgress(cls.hidden.unique_id)
        try:
            summary = await interruptible(run_batch_async(
                inputs, out_dir, request, canvas, _backend(backend, FOLDER_NODE),
                _options(detect_scenes, scene_threshold, chunk_frames, overlap_frames), concurrency=concurrency,
                max_total_cost_usd=max_total_cost_usd, sink=BatchSink(progress).sink))
        finally:
            _release_native_loaders()
        text = summary.text()
        return io.NodeOutput(text, summary.summary_csv, out_dir, ui=ui.PreviewText(text))


NODES = [VideoFile, OutpaintLong, OutpaintFolder]
