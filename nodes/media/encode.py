"""Write frames + audio as an MP4 (H.264 + AAC) with PyAV.

Encoder settings (libx264, yuv420p, +faststart):

| video_quality | x264 CRF | AAC bitrate |      | video_write_mode | x264 preset |
|---------------|----------|-------------|------|------------------|-------------|
| low           | 28       | 96 kb/s     |      | fast             | veryfast    |
| medium        | 23       | 128 kb/s    |      | balanced         | medium      |
| high          | 18       | 192 kb/s    |      | small            | slower, CRF+3 |
| maximum       | 12       | 320 kb/s    |      |                  |             |

Lower CRF = higher quality and bigger files. `small` also raises the CRF by SMALL_MODE_CRF_BONUS (a
slower preset alone does not guarantee a smaller file at a fixed CRF).
Odd canvas sides are padded by one edge pixel (yuv420p needs even sides). Audio at a rate AAC cannot store
(192 kHz, 12345 Hz, ...) is resampled to the nearest one it can (AAC_RATES).
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction

import av
import numpy as np
import torch

from .decode import Audio

log = logging.getLogger(__name__)

QUALITY_CRF = {"low": 28, "medium": 23, "high": 18, "maximum": 12}
QUALITY_AUDIO_BITRATE = {"low": 96_000, "medium": 128_000, "high": 192_000, "maximum": 320_000}
WRITE_MODE_PRESET = {"fast": "veryfast", "balanced": "medium", "small": "slower"}
SMALL_MODE_CRF_BONUS = 3
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 8: "7.1"}
#: The sample rates the AAC encoder accepts.
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def aac_rate(rate: int) -> int:
    """`rate` if AAC can store it, else the nearest rate it can (logged)."""
    best = min(AAC_RATES, key=lambda r: (abs(r - rate), -r))
    if best != rate:
        log.warning("AAC cannot store %d Hz audio; resampling it to %d Hz", rate, best)
    return best


class RateConverter:
    """float32 [C, n] pieces at `src` Hz in, the same audio at `dst` Hz out (PyAV's resampler); `flush()` last."""

    def __init__(self, src: int, dst: int, layout: str):
        self.src, self.layout = int(src), layout
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=int(dst))
        self._channels = av.AudioLayout(layout).nb_channels

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        if not wave.shape[1]:
            return np.zeros((self._channels, 0), np.float32)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave, dtype=np.float32), format="fltp",
                                           layout=self.layout)
        frame.sample_rate = self.src
        return self._join(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        return self._join(self._resampler.resample(None))

    def _join(self, frames) -> np.ndarray:
        parts = [f.to_ndarray() for f in frames]
        return np.concatenate(parts, axis=1) if parts else np.zeros((self._channels, 0), np.float32)


def _clean_text(value) -> str:
    """Text FFmpeg stores whole: undecodable characters (surrogate escapes) become U+FFFD, NUL bytes (which
    would end the string) are dropped."""
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in str(value)).replace("\0", "")


def clean_metadata(metadata: dict | None) -> dict[str, str]:
    """Container metadata (a prompt, a workflow) as FFmpeg can write it."""
    out = {_clean_text(k): _clean_text(v) for k, v in (metadata or {}).items()}
    return {k: v for k, v in out.items() if k}


def fps_fraction(fps: float) -> Fraction:
    """A rational frame rate for the container (29.97 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001)


def check_output_path(path: str) -> str:
    """Refuse an output path FFmpeg would cut short (a NUL byte: it would write, and overwrite, another file)."""
    if "\0" in str(path):
        raise ValueError("the output file name contains a NUL byte")
    return path


def write_mp4(path: str, frames: torch.Tensor, fps: float, audio: Audio | None = None,
              video_quality: str = "high", video_write_mode: str = "balanced",
              metadata: dict[str, str] | None = None, chunk: int = 8) -> str:
    """Encode `frames` [F,H,W,3] float 0..1 at `fps` (+ `audio`, trimmed/padded to the video length)."""
    check_output_path(path)
    if video_quality not in QUALITY_CRF:
        raise ValueError(f"video_quality: got {video_quality!r}; allowed: {', '.join(QUALITY_CRF)}")
    if video_write_mode not in WRITE_MODE_PRESET:
        raise ValueError(f"video_write_mode: got {video_write_mode!r}; allowed: {', '.join(WRITE_MODE_PRESET)}")
    n, h, w, _ = frames.shape
    if n == 0:
        raise ValueError("no frames to write")
    pad_w, pad_h = w % 2, h % 2
    if pad_w or pad_h:
        log.info("padding %dx%d to even sides for H.264", w, h)
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    rate = fps_fraction(fps)
    tmp = path + ".partial"
    try:
        with av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart+use_metadata_tags"}) as container:
            if metadata:
                container.metadata.update(clean_metadata(metadata))
            vs = container.add_stream("libx264", rate=rate)
            vs.width, vs.height = w + pad_w, h + pad_h
            vs.pix_fmt = "yuv420p"
            crf = QUALITY_CRF[video_quality] + (SMALL_MODE_CRF_BONUS if video_write_mode == "small" else 0)
            vs.options = {"crf": str(crf), "preset": WRITE_MODE_PRESET[video_write_mode]}
            vs.codec_context.time_base = 1 / rate
            astream = None
            if audio is not None:
                channels = int(audio.waveform.shape[0])
                layout = _LAYOUTS.get(channels)
                if layout is None:
                    log.warning("%d audio channels have no standard layout; writing the first two", channels)
                    layout, channels = "stereo", 2
                astream = container.add_stream("aac", rate=aac_rate(audio.sample_rate), layout=layout)
                astream.bit_rate = QUALITY_AUDIO_BITRATE[video_quality]
            for start in range(0, n, chunk):
                block = frames[start:start + chunk].mul(255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
                if pad_w or pad_h:
                    block = np.pad(block, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                for i, rgb in enumerate(block):
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    frame.pts = start + i
                    container.mux(vs.encode(frame))
            container.mux(vs.encode(None))
            if astream is not None:
                _write_audio(container, astream, audio, n / float(rate))
        os.replace(tmp, path)
    except BaseException:  # no half-written file is left behind
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _write_audio(container, stream, audio: Audio, duration: float) -> None:
    wave = audio.waveform[: stream.channels] if stream.channels < audio.waveform.shape[0] else audio.waveform
    want = int(round(duration * audio.sample_rate))
    wave = wave[:, :want].float().clamp(-1, 1).numpy()
    if wave.shape[1] < want:
        wave = np.pad(wave, ((0, 0), (0, want - wave.shape[1])))
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    layout, rate = stream.layout.name, stream.codec_context.sample_rate
    if rate != audio.sample_rate:
        convert = RateConverter(audio.sample_rate, rate, layout)
        wave = np.concatenate([convert(wave), convert.flush()], axis=1)
        want = int(round(duration * rate))
        wave = np.ascontiguousarray(np.pad(wave[:, :want], ((0, 0), (0, max(0, want - wave.shape[1])))))
    frame_size = stream.codec_context.frame_size or 1024
    for pos in range(0, wave.shape[1], frame_size):
        part = np.ascontiguousarray(wave[:, pos:pos + frame_size])
        frame = av.AudioFrame.from_ndarray(part, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = pos
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
