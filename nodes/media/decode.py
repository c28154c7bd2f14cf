"""Decode a video file with PyAV straight into one preallocated float32 IMAGE tensor, plus its audio.

Frame selection follows VideoHelperSuite's options, applied in this order: `force_fps` resamples the
timeline (nearest earlier frame), then `skip_first_frames`, then `select_every_nth`, then
`frame_load_cap`. Rotation metadata is applied (phone clips). Memory is estimated before decoding.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import av
import numpy as np
import torch

from ..errors import InputError

log = logging.getLogger(__name__)

BYTES_PER_FLOAT = 4


@dataclass(frozen=True)
class DecodeOptions:
    """Frame selection and limits; 0 means "no limit" / "keep"."""

    frame_load_cap: int = 0
    skip_first_frames: int = 0
    select_every_nth: int = 1
    force_fps: float = 0.0
    max_width: int = 0
    max_height: int = 0
    audio_sample_rate: int = 0
    #: Refuse to decode when the tensor would need more than this; None = 80 % of available RAM.
    max_memory_bytes: int | None = None

    @property
    def untouched(self) -> bool:
        """True when the selection keeps every frame of the file at its own size and rate."""
        return (self.frame_load_cap == 0 and self.skip_first_frames == 0 and self.select_every_nth == 1
                and not self.force_fps and not self.max_width and not self.max_height)


@dataclass
class Audio:
    """Float32 waveform [channels, samples] in -1..1. `silent` marks a placeholder for a clip with no audio."""

    waveform: torch.Tensor
    sample_rate: int
    silent: bool = False

    @property
    def duration(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate


@dataclass
class Clip:
    """Decoded video: frames [F,H,W,3] float32 0..1, fps, audio, and the file it came from."""

    frames: torch.Tensor
    fps: float
    audio: Audio | None
    source_path: str | None = None
    #: The frames are exactly the file's frames (a remote backend may upload the file as is).
    untouched: bool = False
    start_time: float = 0.0
    #: Problems the user should see (e.g. "the file is cut short"); also logged as warnings.
    warnings: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])


@dataclass(frozen=True)
class VideoInfo:
    """What the container says before decoding."""

    width: int  # display width (after rotation)
    height: int
    rotation: int  # degrees counter-clockwise to apply for display
    fps: float
    duration: float
    frame_count: int  # container's count, or estimated from duration x fps
    has_audio: bool
    indexed_frames: int = 0  # the count the container's index lists (0 = no index count)
    alpha: bool = False  # transparency that the RGB frames drop (see _has_alpha)


def available_memory_bytes() -> int:
    """RAM available to this process now: psutil's figure (every OS), else /proc/meminfo, else 8 GiB."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing (a bare CLI install) or refused
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


#: Demuxers of ordinary single-file media. Playlists and manifests (hls, dash, concat, imf, ...) are left out:
#: they read files they name, anywhere on disk, past the folders a workflow may use.
READ_FORMATS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,gif,apng,mpegts,mpeg,mpegvideo,m4v,flv,asf,ogg,mxf,nut,dv,"
    "h264,hevc,obu,ivf,mjpeg,yuv4mpegpipe,image2,png_pipe,jpeg_pipe,webp_pipe,bmp_pipe,tiff_pipe,gif_pipe,"
    "qoi_pipe,ppm_pipe,pgm_pipe,pbm_pipe,pam_pipe,dpx_pipe,exr_pipe,j2k_pipe,jpegxl_pipe,"
    "wav,mp3,aac,flac")
#: Local files only; image2 reads the one file named (no "%d" sequences).
_READ_OPTIONS = {"format_whitelist": READ_FORMATS, "protocol_whitelist": "file", "pattern_type": "none"}


def open_input(path: str) -> av.container.InputContainer:
    """`av.open` for reading, limited to the single-file formats of READ_FORMATS (FFmpeg errors as raised)."""
    return av.open(os.path.abspath(path), mode="r", container_options=dict(_READ_OPTIONS))


def _open(path: str) -> av.container.InputContainer:
    """Open a media file; messages name the file (never its folder) and leave FFmpeg's errno text to the log."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise InputError("video", f"file not found: {name}")
    if os.path.getsize(path) == 0:
        raise InputError("video", f"{name} is empty (0 bytes)")
    try:
        return open_input(path)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OSError) as exc:
        log.info("%s: PyAV cannot open it: %s", name, exc)
        raise InputError("video", f"{name} is not a video PyAV can read (truncated or not a media file)") from None


def check_frame_memory(width: int, height: int, frames: int, field: str, advice: str,
                       limit: int | None = None, node: str | None = None) -> None:
    """Refuse, before allocating, a float32 [frames,H,W,3] tensor that would not fit in RAM.

    `limit` defaults to 80 % of the currently available memory.
    """
    needed = frames * width * height * 3 * BYTES_PER_FLOAT
    limit = int(available_memory_bytes() * 0.8) if limit is None else limit
    if needed > limit:
        raise InputError(field, f"{frames} frames of {width}x{height} need {needed / 2**30:.1f} GiB as float32 "
                                f"but only {limit / 2**30:.1f} GiB of RAM may be used; {advice}", node=node)


def probe(path: str) -> VideoInfo:
    """Read size, rotation, fps, duration and frame count without decoding the whole file."""
    with _open(path) as container:
        return _probe_container(container, path)[0]


_ATTACHED_PIC = 0x0400  # AV_DISPOSITION_ATTACHED_PIC: cover art stored as a one-picture "video" stream


def _is_cover(stream) -> bool:
    disposition = getattr(stream, "disposition", 0)
    return bool(int(getattr(disposition, "value", disposition) or 0) & _ATTACHED_PIC)


def video_stream(container) -> av.video.stream.VideoStream | None:
    """The clip's video track, None if it has none. Cover art (attached pictures) is not a track; of several
    tracks, FFmpeg's pick (the one with most frames seen while probing: a one-frame thumbnail track loses)."""
    tracks = [s for s in container.streams.video if not _is_cover(s)]
    if len(tracks) > 1:
        best = container.streams.best("video")
        if best is not None and any(s.index == best.index for s in tracks):
            return next(s for s in tracks if s.index == best.index)
        return max(tracks, key=lambda s: (s.frames, (s.codec_context.width or 0) * (s.codec_context.height or 0)))
    return tracks[0] if tracks else None


ELEMENTARY_STREAM_FORMATS = frozenset({"h264", "hevc", "m4v", "mpegvideo", "obu", "vvc", "cavsvideo"})


def _is_elementary_stream(container) -> bool:
    """A raw codec stream (dashcam .h264, .hevc): no container, so no timestamps and no frame rate of its own."""
    return bool(set(container.format.name.split(",")) & ELEMENTARY_STREAM_FORMATS)


def _probe_container(container, path: str) -> tuple[VideoInfo, Iterator[av.VideoFrame]]:
    """Info from the container and its first decoded frame; also returns the frame iterator, with that
    first frame put back in front, so decoding continues without a seek (which would flush the
    threaded decoder)."""
    stream = video_stream(container)
    if stream is None:
        kind = "an audio-only file" if container.streams.audio else "a file with no video stream"
        raise InputError("video", f"{os.path.basename(path)} is {kind}; a video stream is required")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(24)
    if _is_elementary_stream(container) and stream.guessed_rate:
        rate = stream.guessed_rate  # a raw stream's "average" is the demuxer's default 25; the SPS has the rate
    fps = float(rate)
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    frame_count = stream.frames or int(round(duration * fps))
    # The first frame carries the display matrix; decoding one frame is cheap and reliable.
    frames = container.decode(stream)
    try:
        first = next(frames, None)
    except av.error.FFmpegError as exc:
        log.info("%s: the first frame does not decode: %s", os.path.basename(path), exc)
        raise InputError("video", f"{os.path.basename(path)}: cannot decode the first frame") from None
    if first is None or first.width == 0 or first.height == 0:
        raise InputError("video", f"{os.path.basename(path)}: no decodable frames")
    rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
    width, height = (first.height, first.width) if rotation % 180 == 90 else (first.width, first.height)
    info = VideoInfo(width, height, rotation, fps, duration, frame_count, bool(container.streams.audio),
                     int(stream.frames or 0), _has_alpha(stream, first))
    return info, itertools.chain([first], frames)


def _has_alpha(stream, first: av.VideoFrame) -> bool:
    """Transparency: an alpha plane with a see-through pixel in the first frame (GIF and PNG decoders give
    one to opaque pictures too), or VP8/VP9 alpha stored beside the picture (WebM's alpha_mode)."""
    if any(k.lower() == "alpha_mode" and str(v).strip() == "1" for k, v in stream.metadata.items()):
        return True
    if not any(c.is_alpha for c in first.format.components):
        return False
    return bool((first.to_ndarray(format="rgba")[..., 3] < 255).any())


def output_size(info: VideoInfo, opts: DecodeOptions) -> tuple[int, int]:
    """Display size after the optional max_width / max_height downscale (aspect kept, even sides kept)."""
    w, h = info.width, info.height
    scale = 1.0
    if opts.max_width and w > opts.max_width:
        scale = min(scale, opts.max_width / w)
    if opts.max_height and h > opts.max_height:
        scale = min(scale, opts.max_height / h)
    if scale < 1.0:
        w, h = max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)
    return w, h


def planned_frame_count(info: VideoInfo, opts: DecodeOptions) -> int:
    """Upper estimate of how many frames the selection yields (used to preallocate)."""
    total = info.frame_count
    if opts.force_fps:
        total = int(math.floor(info.duration * opts.force_fps)) + 1
    n = max(0, total - opts.skip_first_frames)
    n = math.ceil(n / max(1, opts.select_every_nth))
    if opts.frame_load_cap:
        n = min(n, opts.frame_load_cap)
    return n


_LESS = "set frame_load_cap, select_every_nth or max_width/max_height to load less"


#: force_fps and audio_sample_rate: 0 keeps the file's own rate, else one of these ranges.
FORCE_FPS_RANGE = (1.0, 240.0)
AUDIO_RATE_RANGE = (8000, 192000)


def check_options(opts: DecodeOptions) -> None:
    """Refuse out-of-range options before any work (InputError naming the option and its range)."""
    for name, lo in (("frame_load_cap", 0), ("skip_first_frames", 0), ("select_every_nth", 1),
                     ("max_width", 0), ("max_height", 0)):
        v = getattr(opts, name)
        if v < lo:
            raise InputError(name, f"got {v}; must be >= {lo}")
    for name, (lo, hi) in (("force_fps", FORCE_FPS_RANGE), ("audio_sample_rate", AUDIO_RATE_RANGE)):
        v = getattr(opts, name)
        if not math.isfinite(v) or (v != 0 and not lo <= v <= hi):  # NaN passes ComfyUI's min/max check
            raise InputError(name, f"got {v}; allowed 0 (keep the file's rate) or {lo:g} to {hi:g}")


def timestamp_tolerance(time_base, fps: float) -> float:
    """How far a frame's time may sit past a slot of a `fps` timeline and still be that slot's frame: one tick
    of the stream's time base (MKV/WebM store whole milliseconds: frame 1 of a 24 fps clip reads 0.042 s, not
    0.04167 s), at most a quarter frame (a time base as coarse as the frame rate must not shift frames)."""
    tick = float(time_base) if time_base else 0.0
    return max(1e-6, min(tick, 0.25 / fps))


def _timed(decoded: Iterator[av.VideoFrame], fps: float) -> Iterator[tuple[av.VideoFrame, float]]:
    """(frame, time in s); a frame without a timestamp (raw Annex-B H.264) comes 1 / `fps` after the one before."""
    t = None
    for frame in decoded:
        t = float(frame.time) if frame.time is not None else (0.0 if t is None else t + 1.0 / fps)
        yield frame, t


def _selected_frames(decoded: Iterator[av.VideoFrame], opts: DecodeOptions,
                     source_fps: float) -> Iterator[tuple[av.VideoFrame, float]]:
    """Yield (frame, time) for each selected output frame, in order."""
    index = 0  # index in the (possibly resampled) timeline

    def wanted(i: int) -> bool:
        if i < opts.skip_first_frames:
            return False
        return (i - opts.skip_first_frames) % opts.select_every_nth == 0

    emitted = 0
    cap = opts.frame_load_cap or None
    if not opts.force_fps:
        for frame, t in _timed(decoded, source_fps):
            if wanted(index):
                yield frame, t
                emitted += 1
                if cap and emitted >= cap:
                    return
            index += 1
        return
    # Resample: output frame k shows the last source frame with time <= t0 + k / fps.
    step = 1.0 / opts.force_fps
    prev = prev_t = None
    t0 = None
    tol = 1e-6
    for frame, t in _timed(decoded, source_fps):
        if t0 is None:
            t0, tol = t, timestamp_tolerance(frame.time_base, opts.force_fps)
        if prev is not None:
            while t0 + index * step < t - tol:
                if wanted(index):
                    yield prev, t0 + index * step
                    emitted += 1
                    if cap and emitted >= cap:
                        return
                index += 1
        prev, prev_t = frame, t
    if prev is not None:
        timed = prev.time is not None and prev.duration and prev.time_base  # else on the index timeline
        shown = float(prev.duration * prev.time_base) if timed else 1.0 / source_fps
        end = prev_t + shown
        while t0 + index * step < end - tol:
            if wanted(index):
                yield prev, t0 + index * step
                emitted += 1
                if cap and emitted >= cap:
                    return
            index += 1


def decode_video(path: str, opts: DecodeOptions = DecodeOptions()) -> Clip:
    """Decode the selected frames of `path` into one float32 [F,H,W,3] tensor, plus the matching audio."""
    check_options(opts)
    with _open(path) as container:
        stream = video_stream(container)
        if stream is not None:
            stream.thread_type = "AUTO"  # must be set before the codec opens
        info, decoded = _probe_container(container, path)
        planned = planned_frame_count(info, opts)
        width, height = output_size(info, opts)
        limit = int(available_memory_bytes() * 0.8) if opts.max_memory_bytes is None else opts.max_memory_bytes
        check_frame_memory(width, height, max(planned, 1), "frame_load_cap", _LESS, limit)
        most = max(1, limit // (width * height * 3 * BYTES_PER_FLOAT))  # frames the limit allows
        # A little headroom: container frame counts can be short by a frame or two.
        capacity = min(planned + 2, most) if not opts.frame_load_cap else planned
        out = torch.empty((capacity, height, width, 3), dtype=torch.float32)
        out_np = out.numpy()
        k = info.rotation // 90
        # Scale before rotating: reformat works in the coded (unrotated) orientation.
        coded_w, coded_h = (height, width) if k % 2 else (width, height)
        n = 0
        first_time = None
        fps = opts.force_fps or info.fps
        source = _Counted(decoded)
        cut_short = None
        try:
            for frame, t in _selected_frames(source, opts, info.fps):
                if first_time is None:
                    first_time = t
                if n == out.shape[0]:
                    if n >= most:  # the file gave no (or too low a) frame count: the guard above saw less
                        check_frame_memory(width, height, n + 1, "frame_load_cap", f"the file does not say how "
                                           f"many frames it has and has more than {n}; {_LESS}", limit)
                    out, out_np = _grow(out, n, most)
                rgb = frame.to_ndarray(format="rgb24", width=coded_w, height=coded_h)
                if k:
                    rgb = np.rot90(rgb, k)
                np.multiply(rgb, np.float32(1.0 / 255.0), out=out_np[n], casting="unsafe")
                del rgb  # free before the next frame is converted (fewer page faults)
                n += 1
        except av.error.FFmpegError as exc:
            log.info("%s: decoding stopped after %d frames: %s", os.path.basename(path), source.count, exc)
            if n == 0:
                raise InputError("video", f"{os.path.basename(path)}: decoding failed (the file is damaged or "
                                          f"cut short)") from None
            cut_short = f"decoding failed after frame {source.count}"
        if cut_short is None and source.exhausted and source.count < info.indexed_frames:
            cut_short = f"its index lists {info.indexed_frames} frames but the data ends after {source.count}"
    warnings = []
    if cut_short and n:
        text = f"{os.path.basename(path)} is cut short ({cut_short}); loaded the {n} frames before the cut"
        warnings.append("WARNING: " + text)
        log.warning("%s", text)
    if info.alpha and n:
        text = (f"{os.path.basename(path)} has transparency (an alpha channel), which is dropped: see-through "
                f"areas load as the colour stored under them (often black)")
        warnings.append("WARNING: " + text)
        log.warning("%s", text)
    spacing = None if opts.force_fps else _irregular_spacing(source.times)
    if spacing and n:
        gap, median = spacing
        text = (f"{os.path.basename(path)} has a variable frame rate (a {gap:.2f} s gap between frames, "
                f"{1 / median:.3g} fps elsewhere): its frames are loaded one after another at {info.fps:.3g} fps, so "
                f"they drift from the audio; set force_fps (e.g. {min(240, max(1, round(1 / median)))}) to place "
                f"them by their timestamps")
        warnings.append("WARNING: " + text)
        log.warning("%s", text)
    if n == 0:
        raise InputError("skip_first_frames",
                         f"the selection gives 0 frames: the clip has about {info.frame_count} frames "
                         f"({info.fps:.3g} fps, {info.duration:.2f} s) and skip_first_frames="
                         f"{opts.skip_first_frames}, select_every_nth={opts.select_every_nth}; "
                         f"lower skip_first_frames")
    frames = out[:n]
    if opts.select_every_nth > 1 and not opts.force_fps:
        fps = info.fps / opts.select_every_nth
    elif opts.select_every_nth > 1:
        fps = opts.force_fps / opts.select_every_nth
    start = first_time or 0.0
    duration = n / fps
    audio = decode_audio(path, start, duration, opts.audio_sample_rate) if info.has_audio else None
    if audio is None:
        audio = silent_audio(duration, opts.audio_sample_rate or 44100)
        log.warning("%s has no audio track: returning %.2f s of silence", os.path.basename(path), duration)
    return Clip(frames, float(fps), audio, source_path=os.path.abspath(path),
                untouched=opts.untouched and source.exhausted and not cut_short, start_time=start,
                warnings=warnings)


class _Counted:
    """An iterator of frames that counts what it yields, keeps their times and notes when its source ran out."""

    def __init__(self, it: Iterator):
        self._it = iter(it)
        self.count = 0
        self.exhausted = False
        self.times: list[float] = []

    def __iter__(self) -> "_Counted":
        return self

    def __next__(self):
        try:
            item = next(self._it)
        except StopIteration:
            self.exhausted = True
            raise
        self.count += 1
        if item.time is not None:
            self.times.append(float(item.time))
        return item


def _irregular_spacing(times: list[float]) -> tuple[float, float] | None:
    """(largest gap, median spacing) in s when some gap between frames is over 3x the median (a variable
    frame rate screen or phone recording that stood still); None for a steady rate."""
    if len(times) < 3:
        return None
    gaps = np.diff(np.sort(np.asarray(times, dtype=np.float64)))
    median = float(np.median(gaps))
    if median <= 0 or gaps.max() <= 3 * median:
        return None
    return float(gaps.max()), median


def _grow(out: torch.Tensor, n: int, most: int) -> tuple[torch.Tensor, np.ndarray]:
    """The container under-reported its frame count: grow the buffer, to at most `most` frames (one copy)."""
    log.debug("frame buffer full at %d frames; growing", n)
    bigger = torch.empty((min(max(n + 16, int(n * 1.1)), most),) + tuple(out.shape[1:]), dtype=out.dtype)
    bigger[:n] = out[:n]
    return bigger, bigger.numpy()


class AudioConverter:
    """Audio frames in, float32 planar frames at one `layout` and `rate` out. PyAV's resampler is rebuilt when
    the input's sample format, layout or rate changes (broadcast streams switch stereo -> mono, 48 -> 44.1 kHz
    mid-file); `flush()` at the end."""

    def __init__(self, layout, rate: int):
        self.layout, self.rate = layout, int(rate)
        self._resampler = None
        self._source = None

    def resample(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        source = (frame.format.name, frame.layout.name, frame.layout.nb_channels, frame.sample_rate)
        out = []
        if source != self._source:
            if self._resampler is not None:
                log.info("audio changes mid-stream (%s -> %s); resampling it to %s at %d Hz", self._source[1:],
                         source[1:], getattr(self.layout, "name", self.layout), self.rate)
            out = self.flush()
            self._resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
            self._source = source
        return out + list(self._resampler.resample(frame))

    def flush(self) -> list[av.AudioFrame]:
        return list(self._resampler.resample(None)) if self._resampler is not None else []


def silent_audio(duration: float, sample_rate: int = 44100, channels: int = 2) -> Audio:
    samples = max(1, int(round(duration * sample_rate)))
    return Audio(torch.zeros(channels, samples, dtype=torch.float32), sample_rate, silent=True)


def decode_audio(path: str, start: float = 0.0, duration: float | None = None,
                 sample_rate: int = 0) -> Audio | None:
    """Decode the first audio stream (any channel layout) as float32, trimmed to [start, start+duration).

    Resampled only when `sample_rate` is given. Returns None when the file has no audio stream.
    """
    with _open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        rate = sample_rate or stream.codec_context.sample_rate or stream.rate
        resampler = None
        chunks: list[np.ndarray] = []
        first_t = None
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    resampler = AudioConverter(frame.layout, rate)
                    first_t = float(frame.time or 0.0)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            if resampler is not None:
                for out in resampler.flush():
                    chunks.append(out.to_ndarray())
        except av.error.FFmpegError as exc:
            log.warning("%s: audio decoding stopped early (%s)", os.path.basename(path), exc)
    if not chunks:
        return None
    wave = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    offset = int(round((start - (first_t or 0.0)) * rate))
    want = None if duration is None else int(round(duration * rate))
    if offset > 0:
        wave = wave[:, offset:]
    elif offset < 0:  # audio starts after the first frame: pad the gap with silence (no more than is kept)
        gap = -offset if want is None else min(-offset, want)
        wave = np.concatenate([np.zeros((wave.shape[0], gap), np.float32), wave], axis=1)
    if want is not None:
        wave = wave[:, :want]
        if wave.shape[1] < want:
            wave = np.pad(wave, ((0, 0), (0, want - wave.shape[1])))
    return Audio(torch.from_numpy(np.ascontiguousarray(wave)), int(rate))
