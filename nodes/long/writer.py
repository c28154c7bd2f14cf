"""An MP4 writer that takes frames and audio as they come (H.264 + AAC, the settings of media/encode.py).

Frames are appended in blocks; audio is appended as float32 [C, n] pieces and cut into the encoder's frame
size as it goes. The caller interleaves the two (audio up to the time of the frames written so far), so the
muxer never queues more than a moment of either. The file is written as `<path>.partial` and renamed on
`close()`; memory stays at one block whatever the length.
"""
from __future__ import annotations

import logging
import os

import av
import numpy as np
import torch

from ..media.encode import (_LAYOUTS, QUALITY_AUDIO_BITRATE, QUALITY_CRF, SMALL_MODE_CRF_BONUS, WRITE_MODE_PRESET,
                            RateConverter, aac_rate, check_output_path, clean_metadata, fps_fraction)

log = logging.getLogger(__name__)


class StreamingWriter:
    """`write_frames(block)` (float 0..1 or uint8 [n,H,W,3]), `write_audio(wave)`, `close()`."""

    def __init__(self, path: str, fps: float, *, audio_rate: int = 0, audio_channels: int = 0,
                 video_quality: str = "high", video_write_mode: str = "balanced",
                 metadata: dict[str, str] | None = None):
        if video_quality not in QUALITY_CRF:
            raise ValueError(f"video_quality: got {video_quality!r}; allowed: {', '.join(QUALITY_CRF)}")
        if video_write_mode not in WRITE_MODE_PRESET:
            raise ValueError(f"video_write_mode: got {video_write_mode!r}; allowed: {', '.join(WRITE_MODE_PRESET)}")
        self.path = check_output_path(path)
        self.rate = fps_fraction(fps)
        self.quality, self.mode = video_quality, video_write_mode
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        self.partial = path + ".partial"
        self.container = av.open(self.partial, mode="w", format="mp4",
                                 options={"movflags": "+faststart+use_metadata_tags"})
        if metadata:
            self.container.metadata.update(clean_metadata(metadata))
        self.video = None
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self.audio = None
        self.audio_samples = 0
        self._pending = np.zeros((0, 0), np.float32)
        self._convert: RateConverter | None = None
        if audio_rate and audio_channels:
            layout = _LAYOUTS.get(audio_channels)
            if layout is None:
                log.warning("%d audio channels have no standard layout; writing the first two", audio_channels)
                layout, audio_channels = "stereo", 2
            self.audio_rate, self.audio_channels = aac_rate(int(audio_rate)), audio_channels
            self.audio = self.container.add_stream("aac", rate=self.audio_rate, layout=layout)
            self.audio.bit_rate = QUALITY_AUDIO_BITRATE[video_quality]
            if self.audio_rate != int(audio_rate):  # pieces come at `audio_rate`; the track is at an AAC rate
                self._convert = RateConverter(int(audio_rate), self.audio_rate, layout)
            self._pending = np.zeros((audio_channels, 0), np.float32)

    def _open_video(self, width: int, height: int) -> None:
        vs = self.container.add_stream("libx264", rate=self.rate)
        vs.width, vs.height = width + width % 2, height + height % 2
        vs.pix_fmt = "yuv420p"
        crf = QUALITY_CRF[self.quality] + (SMALL_MODE_CRF_BONUS if self.mode == "small" else 0)
        vs.options = {"crf": str(crf), "preset": WRITE_MODE_PRESET[self.mode]}
        vs.codec_context.time_base = 1 / self.rate
        self.video, self.size = vs, (width, height)

    @property
    def seconds(self) -> float:
        """Duration of the frames written so far."""
        return self.frames / float(self.rate)

    def write_frames(self, block) -> None:
        if isinstance(block, torch.Tensor):
            if block.dtype != torch.uint8:
                block = block.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
            block = block.numpy()
        elif block.dtype != np.uint8:
            block = np.clip(np.rint(block * 255.0), 0, 255).astype(np.uint8)
        n, h, w, _ = block.shape
        if self.video is None:
            self._open_video(w, h)
        if (w, h) != self.size:
            raise ValueError(f"frame size changed from {self.size[0]}x{self.size[1]} to {w}x{h}")
        if w % 2 or h % 2:
            block = np.pad(block, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for rgb in block:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = self.frames
            self.container.mux(self.video.encode(frame))
            self.frames += 1

    def write_audio(self, wave: np.ndarray) -> None:
        """Append float32 [C, n] samples (channels beyond the track's are dropped)."""
        if self.audio is None:
            return
        wave = np.asarray(wave, dtype=np.float32)[: self.audio_channels]
        if wave.shape[0] < self.audio_channels:  # mono into stereo: repeat
            wave = np.repeat(wave[:1], self.audio_channels, axis=0)
        wave = np.clip(wave, -1, 1)
        self._pending = np.concatenate([self._pending, self._convert(wave) if self._convert else wave], axis=1)
        size = self.audio.codec_context.frame_size or 1024
        while self._pending.shape[1] >= size:
            self._encode_audio(self._pending[:, :size])
            self._pending = self._pending[:, size:]

    def _encode_audio(self, part: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout=self.audio.layout.name)
        frame.sample_rate = self.audio_rate
        frame.pts = self.audio_samples
        self.audio_samples += part.shape[1]
        self.container.mux(self.audio.encode(frame))

    def close(self) -> str:
        """Flush both encoders and move the finished file into place; returns its path."""
        if self.video is None:
            self.container.close()
            os.remove(self.partial)
            raise ValueError("no frames to write")
        self.container.mux(self.video.encode(None))
        if self.audio is not None:
            if self._convert is not None:
                self._pending = np.concatenate([self._pending, self._convert.flush()], axis=1)
            if self._pending.shape[1]:
                self._encode_audio(self._pending)
                self._pending = self._pending[:, :0]
            self.container.mux(self.audio.encode(None))
        self.container.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the unfinished file."""
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - best effort; the partial file is removed below
            pass
        try:
            os.remove(self.partial)
        except OSError:
            pass
