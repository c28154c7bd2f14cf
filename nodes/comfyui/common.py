"""Shared pieces of the ComfyUI adapter: socket types, engine <-> ComfyUI conversions, progress and
interrupt glue, widgets generated from the request model.

The adapter (this package) is the only code that imports ComfyUI, besides the native local engine.
"""
from __future__ import annotations

import functools
import inspect
import logging
from fractions import Fraction

from comfy_api.latest import InputImpl, Types, io, ui

from ..backends import Interrupted, OutpaintResult, Progress
from ..errors import InputError
from ..media.decode import Audio, Clip, decode_video
from ..request import FIELDS, OutpaintRequest

log = logging.getLogger(__name__)

CATEGORY = "LTX-2.3 Outpaint"
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

    def note(self, text: str) -> None:
        """Shown on the node even when the run stops (progress text does not go through the interrupt hook)."""
        super().note(text)
        if self.node_id is not None:
            from server import PromptServer

            PromptServer.instance.send_progress_text(text, self.node_id)

    def check(self) -> None:
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()


class NodeError(Exception):
    """What our nodes raise to ComfyUI: a message that reads well on its own.

    ComfyUI reports `exception_type` as the class's module path + name (for a custom node that module path
    is the pack's folder on the server) and `exception_message` as str(exception). This class's module is
    "builtins", so the type reads `LTXOutpaintError` and the message starts with the field and node.
    """


NodeError.__module__ = "builtins"
NodeError.__name__ = NodeError.__qualname__ = "LTXOutpaintError"


def node_error(exc: BaseException, node: str) -> NodeError:
    """Our engine's error as ComfyUI should show it: `field (node): reason`, or fal's message as is."""
    if isinstance(exc, InputError):
        return NodeError(str(exc.on_node(node)))
    return NodeError(str(exc))


def _user_errors():
    from ..fal.errors import FalError

    return InputError, FalError


def readable_errors(node_cls):
    """Wrap a node's `execute` so our errors reach ComfyUI as NodeError (and Interrupted as its interrupt)."""
    fn = node_cls.__dict__["execute"].__func__
    node = short_name(node_cls.define_schema().display_name)

    def translate(exc: BaseException):
        if isinstance(exc, Interrupted):
            import comfy.model_management

            return comfy.model_management.InterruptProcessingException()
        return node_error(exc, node)

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def execute(cls, *args, **kwargs):
            try:
                return await fn(cls, *args, **kwargs)
            except (Interrupted, *_user_errors()) as exc:
                raise translate(exc) from exc
    else:
        @functools.wraps(fn)
        def execute(cls, *args, **kwargs):
            try:
                return fn(cls, *args, **kwargs)
            except (Interrupted, *_user_errors()) as exc:
                raise translate(exc) from exc
    node_cls.execute = classmethod(execute)
    return node_cls


def short_name(display_name: str) -> str:
    """A node's display name as messages use it: "Load Video (LTX Outpaint)" -> "Load Video"."""
    for suffix in (" (LTX Outpaint)", " (LTX)", " (paid)", " (free, no AI)"):
        display_name = display_name.replace(suffix, "")
    return display_name


async def interruptible(coro):
    """Await an engine coroutine; the engine's Interrupted becomes ComfyUI's interrupt (not an error)."""
    try:
        return await coro
    except Interrupted:
        import comfy.model_management

        raise comfy.model_management.InterruptProcessingException() from None


def request_field(name: str, **overrides):
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


#: Outputs shared by every node that yields an outpaint result.
OUTPAINT_OUTPUTS = [
    io.Image.Output(display_name="images", tooltip="The outpainted frames."),
    io.Audio.Output(display_name="audio", tooltip="Output audio (silence when generate_audio is off)."),
    io.Float.Output(display_name="fps", tooltip="Frame rate of the output."),
    io.Video.Output(display_name="video", tooltip="Frames + audio + fps, for Save nodes."),
    io.Int.Output(display_name="seed", tooltip="The seed actually used."),
    io.String.Output(display_name="prompt", tooltip="The prompt actually used (after expansion)."),
]


def outpaint_outputs(result: OutpaintResult, request: OutpaintRequest | None, summary: str) -> io.NodeOutput:
    n = result.frames.shape[0]
    audio = result.audio
    if audio is None:  # no track in the VIDEO; the AUDIO socket gets explicit silence
        from ..media.decode import silent_audio

        audio = silent_audio(n / result.fps)
    return io.NodeOutput(result.frames, to_comfy_audio(audio), result.fps, OutpaintVideo(result, request),
                         result.seed, result.prompt, ui=ui.PreviewText(summary))
