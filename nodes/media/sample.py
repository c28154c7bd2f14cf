"""Generate small sample clips (no download): a textured moving scene with a tone, for demos and tests.

Frame `i` carries its index in a flat marker block at the top-left corner (grey level `MARKER_STEP*i`
mod 256) so tests can tell which frames a selection kept.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import av
import numpy as np
import torch

MARKER = 16  # marker block side in pixels
MARKER_STEP = 8


def scene_frames(width: int, height: int, count: int, seed: int = 0, start: int = 0) -> np.ndarray:
    """uint8 [count,H,W,3]: sky gradient, a moving sun, textured ground, index marker."""
    g = torch.Generator().manual_seed(seed)
    texture = torch.rand(height, width, generator=g)
    texture = torch.nn.functional.avg_pool2d(texture[None, None], 5, 1, 2)[0, 0]
    ys = torch.linspace(0, 1, height)[:, None].expand(height, width)
    xs = torch.linspace(0, 1, width)[None, :].expand(height, width)
    out = np.empty((count, height, width, 3), dtype=np.uint8)
    for j in range(count):
        i = start + j
        t = i / 24.0
        horizon = 0.6 + 0.03 * math.sin(t)
        sky = torch.stack([0.35 + 0.3 * ys, 0.55 + 0.3 * ys, 0.95 - 0.2 * ys], -1)
        shift = int(i * 2) % width
        tex = torch.roll(texture, shifts=shift, dims=1)
        ground = torch.stack([0.25 + 0.4 * tex, 0.45 + 0.35 * tex, 0.15 + 0.2 * tex], -1)
        img = torch.where((ys > horizon)[..., None], ground, sky)
        cx, cy = 0.2 + 0.6 * ((t / 4) % 1.0), 0.3
        aspect = width / max(height, 1)
        sun = ((xs - cx) * aspect) ** 2 + (ys - cy) ** 2 < 0.01
        img[sun] = torch.tensor([1.0, 0.85, 0.3])
        frame = (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        frame[:MARKER, :MARKER] = (MARKER_STEP * i) % 256
        out[j] = frame
    return out


def marker_index(frame: np.ndarray | torch.Tensor) -> int:
    """Read back the frame index written by :func:`scene_frames` (modulo 256 / MARKER_STEP)."""
    block = frame[2:MARKER - 2, 2:MARKER - 2]
    level = float(block.float().mean() * 255) if isinstance(block, torch.Tensor) else float(block.mean())
    return int(round(level / MARKER_STEP)) % (256 // MARKER_STEP)


def write_sample(path: str, width: int = 320, height: int = 576, frames: int = 48, fps: float = 24.0,
                 audio_layout: str | None = "stereo", sample_rate: int = 44100, rotation: int = 0,
                 frame_times: Sequence[float] | None = None, crf: int = 12, seed: int = 0) -> str:
    """Write an H.264 MP4 (AAC audio in `audio_layout`, or none) of the sample scene.

    `rotation` sets the display matrix (degrees CCW, like phone clips); `frame_times` (seconds) makes a
    variable-frame-rate file.
    """
    pixels = scene_frames(width, height, frames, seed=seed)
    with av.open(path, mode="w", format="mp4") as container:
        if frame_times is None:
            vs = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            tb = 1 / Fraction(fps).limit_denominator(1001)
        else:
            vs = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            tb = Fraction(1, 1000)
        vs.codec_context.time_base = tb
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": str(crf), "preset": "veryfast", "bf": "0"}
        if rotation:
            vs.set_display_rotation(rotation)
        astream = None
        if audio_layout:  # every stream must exist before the first packet is muxed
            astream = container.add_stream("aac", rate=sample_rate, layout=audio_layout)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pixels[i], format="rgb24")
            frame.pts = i if frame_times is None else int(round(frame_times[i] * 1000))
            frame.time_base = tb
            container.mux(vs.encode(frame))
        container.mux(vs.encode(None))
        if astream is not None:
            channels = astream.channels
            duration = frames / fps if frame_times is None else frame_times[-1] + 1 / fps
            total = int(duration * sample_rate)
            t = np.arange(total) / sample_rate
            wave = np.stack([0.3 * np.sin(2 * np.pi * (220 * (c + 1)) * t) for c in range(channels)])
            wave = wave.astype(np.float32)
            step = astream.codec_context.frame_size or 1024
            for pos in range(0, total, step):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, pos:pos + step]), format="fltp",
                                                layout=audio_layout)
                af.sample_rate = sample_rate
                af.pts = pos
                container.mux(astream.encode(af))
            container.mux(astream.encode(None))
    return path
