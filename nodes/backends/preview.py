"""Preview backend: a free, fast, CPU-only fill with NO AI, to check framing, timing and audio.

The area to generate is filled with a blurred, stretched copy of the source ("blur") or a mirrored
extension of it ("mirror"); the source frames are placed on top. Output frame k shows the source frame
at time k / frames_per_second (the last frame is held when the source is shorter); the source audio is
passed through, trimmed or padded with silence to the output length.
"""
from __future__ import annotations

import logging
import random

import torch
import torch.nn.functional as F

from ..media.canvas import EVEN_SNAP, CanvasLayout, place_frames
from ..media.decode import Audio
from . import OutpaintJob, OutpaintResult, PreviewConfig, Progress, register

log = logging.getLogger(__name__)

LABEL = "[preview backend: no AI, blurred/mirrored fill]"
CHUNK = 8


class PreviewBackend:
    name = "preview"
    snap = EVEN_SNAP

    def __init__(self, config: PreviewConfig):
        if config.fill not in ("blur", "mirror"):
            raise ValueError(f"fill: got {config.fill!r}; allowed: blur, mirror")
        self.config = config

    def run(self, job: OutpaintJob, progress: Progress) -> OutpaintResult:
        req, clip, lay = job.request, job.clip, job.layout
        n_out, fps = job.num_frames, float(req.frames_per_second)
        log.warning("%s %s -> %s, %d frames at %g fps", LABEL, f"{clip.width}x{clip.height}",
                    f"{lay.width}x{lay.height}", n_out, fps)
        src_index = source_indices(clip.num_frames, clip.fps, n_out, fps)
        out = torch.empty(n_out, lay.height, lay.width, 3, dtype=torch.float32)
        for start in range(0, n_out, CHUNK):
            progress.check()
            idx = src_index[start:start + CHUNK]
            src = clip.frames[idx]
            out[start:start + len(idx)] = self._background(src, lay)
            place_frames(src, lay, out[start:start + len(idx)])
            progress.report(min(start + CHUNK, n_out), n_out, f"preview fill {min(start + CHUNK, n_out)}/{n_out}")
        audio = None
        if req.generate_audio and clip.audio is not None:
            audio = fit_audio(clip.audio, n_out / fps)
        seed = req.seed if req.seed is not None else random.randint(0, 2**32 - 1)
        return OutpaintResult(out, fps, audio, seed, f"{LABEL} {req.prompt}".strip(), self.name,
                              notes=[LABEL])

    def _background(self, src: torch.Tensor, lay: CanvasLayout) -> torch.Tensor:
        if self.config.fill == "mirror":
            return mirror_fill(src, lay)
        return blur_fill(src, lay, self.config.blur_radius)


def source_indices(n_src: int, src_fps: float, n_out: int, out_fps: float) -> torch.Tensor:
    """Source frame shown at each output time k / out_fps (nearest earlier; last frame held)."""
    t = torch.arange(n_out, dtype=torch.float64) / out_fps
    return torch.clamp(torch.floor(t * src_fps + 1e-6).long(), 0, n_src - 1)


def blur_fill(src: torch.Tensor, lay: CanvasLayout, radius: int) -> torch.Tensor:
    """Source scaled to cover the canvas, blurred (down- then up-sampled) and dimmed."""
    x = src.permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    cover = max(lay.width / w, lay.height / h)
    ch, cw = max(1, round(lay.height / cover)), max(1, round(lay.width / cover))
    top, left = (h - ch) // 2, (w - cw) // 2
    x = x[:, :, top:top + ch, left:left + cw]
    factor = max(2, int(radius))
    small = F.interpolate(x, size=(max(1, lay.height // factor), max(1, lay.width // factor)),
                          mode="bilinear", antialias=True, align_corners=False)
    big = F.interpolate(small, size=(lay.height, lay.width), mode="bilinear", align_corners=False)
    return (big * 0.8).clamp_(0, 1).permute(0, 2, 3, 1)


def mirror_fill(src: torch.Tensor, lay: CanvasLayout) -> torch.Tensor:
    """The placed source reflected outwards across its edges, repeating as needed."""
    s = lay.source
    x = src.permute(0, 3, 1, 2)
    if x.shape[-2:] != (s.height, s.width):
        x = F.interpolate(x, size=(s.height, s.width), mode="bilinear", antialias=True, align_corners=False)
    ys = _fold(torch.arange(lay.height) - s.y, s.height)
    xs = _fold(torch.arange(lay.width) - s.x, s.width)
    return x[:, :, ys][:, :, :, xs].clamp_(0, 1).permute(0, 2, 3, 1)


def _fold(u: torch.Tensor, n: int) -> torch.Tensor:
    m = torch.remainder(u, 2 * n)
    return torch.where(m >= n, 2 * n - 1 - m, m)


def fit_audio(audio: Audio, duration: float) -> Audio:
    """Trim or pad (with silence) to `duration` seconds."""
    want = int(round(duration * audio.sample_rate))
    wave = audio.waveform[:, :want]
    if wave.shape[1] < want:
        wave = F.pad(wave, (0, want - wave.shape[1]))
    return Audio(wave.contiguous(), audio.sample_rate, audio.silent)


register("preview", PreviewBackend)
