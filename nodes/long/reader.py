"""Read a video file by frame range, and its audio by sample range, without ever holding the whole clip.

Frames live on a constant-rate timeline: slot k is the picture shown at `t0 + k / fps` (the last frame whose
time is at or before it, as the decoder's `force_fps` does), so a variable-frame-rate phone clip reads like
a constant-rate one and frame k of the output always lines up with slot k of the source. Reads that follow
each other continue decoding; a jump seeks (PyAV, to the keyframe before) and decodes forward. A small tail
of recent frames / samples is kept so an overlapping next read (chunk overlap) needs no backward seek.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
from collections import deque
from typing import Iterator

import av
import numpy as np

from ..media.decode import AudioConverter, VideoInfo, _open, _probe_container, timestamp_tolerance, video_stream

log = logging.getLogger(__name__)

SEEK_AHEAD_S = 2.0  # a forward jump shorter than this decodes through instead of seeking


class FrameReader:
    """uint8 RGB frames [n,H,W,3] of slots [start, start+count), at `size` (default: display size).

    `stats` counts what was decoded and the most frames held at once (returned + kept), for tests.
    """

    def __init__(self, path: str, size: tuple[int, int] | None = None, keep: int = 0):
        self.path = path
        self._open()
        try:
            info, decoded = _probe_container(self.container, path)  # refuses a file with no video track
        except BaseException:
            self.container.close()
            raise
        self.info: VideoInfo = info
        self.fps = float(info.fps)
        first = next(decoded)
        self.t0 = float(first.time or 0.0)
        self._tol = timestamp_tolerance(first.time_base, self.fps)
        self.width, self.height = size or (info.width, info.height)
        self.keep = max(0, int(keep))
        self._rot = info.rotation // 90
        self._last_duration = 1 / self.fps
        self._iter: Iterator[tuple[int, int, np.ndarray]] | None = None
        self._carry: tuple[int, int, np.ndarray] | None = None  # last decoded frame and its slot range
        self._tail: deque[tuple[int, np.ndarray]] = deque()  # (slot, frame) of the last `keep` slots
        self.stats = {"decoded": 0, "seeks": 0, "max_held": 0, "reads": 0}
        self._restart(0, itertools.chain([first], decoded))  # continue from the probe: no seek

    def _open(self) -> None:
        self.container = _open(self.path)
        self.stream = video_stream(self.container)
        ctx = self.stream.codec_context if self.stream is not None else None
        if ctx is not None and (ctx.width or 0) * (ctx.height or 0) >= 640 * 360:  # threads pay off on real sizes
            self.stream.thread_type = "AUTO"

    # ------------------------------------------------------------------ timeline
    def slot_of(self, t: float) -> int:
        """The first slot a frame with time `t` is shown at."""
        return max(0, math.ceil((t - self.t0 - self._tol) * self.fps))

    def _frames(self, decoded: Iterator[av.VideoFrame]) -> Iterator[tuple[int, int, np.ndarray]]:
        """(first slot, end slot, rgb) of each decoded frame that is shown at least once. A frame without a
        timestamp (raw Annex-B H.264) comes 1 / fps after the one before."""
        prev = None
        prev_t = 0.0
        cw, ch = (self.height, self.width) if self._rot % 2 else (self.width, self.height)
        try:
            for frame in decoded:
                if frame.time is not None:
                    t = float(frame.time)
                else:
                    t = self.t0 if prev is None else prev_t + 1 / self.fps
                if prev is not None:
                    a, b = self.slot_of(prev_t), self.slot_of(t)
                    if b > a:
                        yield a, b, prev
                if (frame.width, frame.height) == (cw, ch):
                    rgb = frame.to_ndarray(format="rgb24")
                else:
                    rgb = frame.to_ndarray(format="rgb24", width=cw, height=ch)
                if self._rot:
                    rgb = np.ascontiguousarray(np.rot90(rgb, self._rot))
                self.stats["decoded"] += 1
                prev, prev_t = rgb, t
                timed = frame.time is not None and frame.duration and frame.time_base
                dur = float(frame.duration * frame.time_base) if timed else 0.0
                self._last_duration = dur or 1 / self.fps
        except av.error.FFmpegError as exc:
            log.warning("%s: decoding stopped early (%s)", os.path.basename(self.path), exc)
        if prev is not None:
            a, b = self.slot_of(prev_t), self.slot_of(prev_t + self._last_duration)
            if b > a:
                yield a, b, prev

    def _restart(self, slot: int, decoded: Iterator[av.VideoFrame] | None = None) -> None:
        """Position the decoder at or before `slot` (seek to the keyframe before it). A stream that cannot seek
        (raw H.264) is opened again and decoded from its start."""
        if decoded is None:
            try:
                if slot > 0:
                    target = self.t0 + slot / self.fps - 0.5 / self.fps
                    tb = self.stream.time_base
                    self.container.seek(max(0, int(target / tb)) if tb else 0, stream=self.stream, backward=True)
                    self.stats["seeks"] += 1
                else:
                    self.container.seek(self.stream.start_time or 0, stream=self.stream, backward=True)
            except av.error.FFmpegError as exc:
                log.info("%s: cannot seek (%s); reading again from the start", os.path.basename(self.path), exc)
                self.container.close()
                self._open()
            decoded = self.container.decode(self.stream)
        self._iter = self._frames(decoded)
        self._carry = None
        self._next = slot  # slots before this one are skipped

    # ------------------------------------------------------------------ reads
    def read(self, start: int, count: int) -> np.ndarray:
        """Slots [start, start+count) as uint8 [n,H,W,3]; n < count only past the end of the file."""
        self.stats["reads"] += 1
        out: list[np.ndarray] = []
        pos, end = start, start + count
        for slot, rgb in self._tail:  # overlapping reads start from the kept tail
            if slot == pos and pos < end:
                out.append(rgb)
                pos += 1
        if pos < end and not (self._next <= pos <= self._next + SEEK_AHEAD_S * self.fps):
            self._restart(pos)
        while pos < end:
            item = self._carry or next(self._iter, None)
            if item is None:
                break
            a, b, rgb = item
            if b <= pos:
                self._carry = None
                continue
            while pos < min(b, end):
                out.append(rgb)
                pos += 1
            self._carry = item if b > pos else None
        self._next = max(self._next, pos)
        self._remember(start, out)
        self.stats["max_held"] = max(self.stats["max_held"], len(out) + len(self._tail))
        if not out:
            return np.empty((0, self.height, self.width, 3), np.uint8)
        return np.stack(out)

    def _remember(self, start: int, frames: list[np.ndarray]) -> None:
        if not self.keep:
            return
        for i, rgb in enumerate(frames):
            if not self._tail or start + i > self._tail[-1][0]:
                self._tail.append((start + i, rgb))
        while len(self._tail) > self.keep:
            self._tail.popleft()

    def iter_blocks(self, start: int, count: int, block: int = 16) -> Iterator[np.ndarray]:
        """`read` in blocks of at most `block` frames (stops early at the end of the file)."""
        pos, end = start, start + count
        while pos < end:
            got = self.read(pos, min(block, end - pos))
            if len(got) == 0:
                return
            yield got
            pos += len(got)

    def count_slots(self) -> int:
        """Timeline length, from the packets alone (no decoding)."""
        last_t, last_dur = None, 1 / self.fps
        untimed = 0  # packets without a timestamp (raw H.264): one slot each
        with _open(self.path) as c:
            s = video_stream(c)
            for packet in c.demux(s):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    untimed += 1
                    continue
                t = float(packet.pts * s.time_base)
                if last_t is None or t > last_t:
                    last_t = t
                    last_dur = float(packet.duration * s.time_base) if packet.duration else 1 / self.fps
        return untimed if last_t is None else self.slot_of(last_t + last_dur)

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AudioReader:
    """float32 [C, n] samples of the first audio stream from sample `start` (sample 0 = time `t0`).

    Silence before the audio starts and after it ends; `None`-safe: `AudioReader.open` returns None for a
    file without audio.
    """

    def __init__(self, path: str, t0: float = 0.0, sample_rate: int = 0, keep_s: float = 2.0):
        self.path = path
        self.container = _open(path)
        self.stream = self.container.streams.audio[0]
        self.rate = int(sample_rate or self.stream.codec_context.sample_rate or self.stream.rate)
        self.channels = int(self.stream.codec_context.channels or 2)
        self.t0 = float(t0)
        self.keep = int(keep_s * self.rate)
        self._buf = np.zeros((self.channels, 0), np.float32)
        self._buf_start = 0
        self._iter = None
        self._eof = False
        self.stats = {"seeks": 0, "max_held": 0}
        self._restart(0)

    @classmethod
    def open(cls, path: str, t0: float = 0.0, sample_rate: int = 0) -> "AudioReader | None":
        with _open(path) as c:
            if not c.streams.audio:
                return None
        return cls(path, t0, sample_rate)

    def _restart(self, sample: int) -> None:
        # seek a little early: the first packets after a seek decode without their overlap (AAC warm-up)
        t = self.t0 + sample / self.rate - 0.25
        if sample > 0 and t > 0:
            self.container.seek(int(t / self.stream.time_base), stream=self.stream, backward=True)
            self.stats["seeks"] += 1
        elif self._iter is not None:  # back to the start: reopen (a decoder fresh from the file's first packet)
            self.container.close()
            self.container = _open(self.path)
            self.stream = self.container.streams.audio[0]
        self._iter = self._decode()
        self._buf = np.zeros((self.channels, 0), np.float32)
        self._buf_start = None
        self._eof = False

    def _decode(self):
        resampler = None
        try:
            for frame in self.container.decode(self.stream):
                if resampler is None:
                    layout = "mono" if self.channels == 1 else ("stereo" if self.channels == 2 else frame.layout)
                    resampler = AudioConverter(layout, self.rate)
                    start = round((float(frame.time or 0.0) - self.t0) * self.rate)
                    yield ("start", start)
                for out in resampler.resample(frame):
                    yield ("data", out.to_ndarray()[: self.channels])
            if resampler is not None:
                for out in resampler.flush():
                    yield ("data", out.to_ndarray()[: self.channels])
        except av.error.FFmpegError as exc:
            log.warning("%s: audio decoding stopped early (%s)", os.path.basename(self.path), exc)

    def read(self, start: int, count: int) -> np.ndarray:
        """Samples [start, start+count) as float32 [C, count]."""
        end = start + count
        if self._buf_start is not None and (start < self._buf_start or
                                            start > self._buf_start + self._buf.shape[1] + 2 * self.rate):
            self._restart(start)
        elif self._buf_start is None and start > 2 * self.rate:
            self._restart(start)
        while not self._eof and (self._buf_start is None or self._buf_start + self._buf.shape[1] < end):
            item = next(self._iter, None)
            if item is None:
                self._eof = True
                break
            kind, value = item
            if kind == "start":
                self._buf_start = value
                continue
            self._buf = np.concatenate([self._buf, value.astype(np.float32, copy=False)], axis=1)
        out = np.zeros((self.channels, count), np.float32)
        if self._buf_start is not None:
            a, b = max(start, self._buf_start), min(end, self._buf_start + self._buf.shape[1])
            if b > a:
                out[:, a - start:b - start] = self._buf[:, a - self._buf_start:b - self._buf_start]
            drop = max(0, end - self.keep - self._buf_start)
            drop = min(drop, self._buf.shape[1])
            if drop:
                self._buf = self._buf[:, drop:]
                self._buf_start += drop
        self.stats["max_held"] = max(self.stats["max_held"], self._buf.shape[1] + count)
        return out

    def close(self) -> None:
        self.container.close()
