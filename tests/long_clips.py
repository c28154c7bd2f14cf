"""Synthetic long clips with known scene cuts, a frame-index code and a continuous chirp (never committed).

Frame i carries its index as a 16-bit Gray code (one bit changes per frame, so the code never looks like a
cut) in a black/white band along the bottom; every scene has its own colour and brightness with slow motion
above it. The audio is one linear chirp over the whole clip (phase-continuous through every cut), so any gap,
repeat or jump in the output's audio shows up against the formula.
"""
from __future__ import annotations

import colorsys
import math
from fractions import Fraction

import av
import numpy as np

BITS = 16
BAND_ROWS = 12  # bottom rows holding the code
CHIRP = (300.0, 1200.0)  # Hz at the start and at the end of the clip
AMPLITUDE = 0.3


def scene_lengths(total: int, seed: int = 0, lo: int = 60, hi: int = 1200) -> list[int]:
    rng = np.random.default_rng(seed)
    out, left = [], total
    while left > 0:
        n = int(rng.integers(lo, hi))
        if left - n < lo:
            n = left
        out.append(n)
        left -= n
    return out


def gray(i: int) -> int:
    return i ^ (i >> 1)


def ungray(g: int) -> int:
    i = 0
    while g:
        i ^= g
        g >>= 1
    return i


def _scene_colour(s: int) -> np.ndarray:
    h = ((s * 0.381966) % 1.0)
    v = 0.9 if s % 2 == 0 else 0.35
    return np.array(colorsys.hsv_to_rgb(h, 0.85, v), np.float32) * 255


def frame(i: int, scene: int, width: int, height: int) -> np.ndarray:
    base = _scene_colour(scene)
    xs = np.arange(width, dtype=np.float32)
    wave = 12 * np.sin(2 * np.pi * (xs / width * 2 + i / 96.0))  # slow motion within a scene
    img = np.empty((height, width, 3), np.float32)
    img[:] = base[None, None, :] + wave[None, :, None]
    code = gray(i)
    cell = width // BITS
    for b in range(BITS):
        on = (code >> (BITS - 1 - b)) & 1
        img[height - BAND_ROWS:, b * cell:(b + 1) * cell] = 255.0 if on else 0.0
    return np.clip(img, 0, 255).astype(np.uint8)


def read_index(rgb: np.ndarray, x: float, y: float, w: float, h: float, width: int = 64, height: int = 48) -> int:
    """The index coded in a frame whose source (width x height) sits at (x, y) scaled to w x h."""
    cell = width // BITS
    row = y + (height - BAND_ROWS / 2) * h / height
    code = 0
    for b in range(BITS):
        col = x + (b * cell + cell / 2) * w / width
        v = float(rgb[int(row), int(col)].astype(np.float32).mean())
        code = (code << 1) | (1 if v > 127 else 0)
    return ungray(code)


def chirp(t: np.ndarray, duration: float) -> np.ndarray:
    f0, f1 = CHIRP
    return AMPLITUDE * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * duration)))


def write_long_clip(path: str, seconds: float, fps: float = 24.0, width: int = 64, height: int = 48,
                    sample_rate: int = 16000, seed: int = 0, audio: bool = True) -> list[int]:
    """Write the clip; returns the cut frames (first frame of each scene after the first)."""
    total = int(round(seconds * fps))
    lengths = scene_lengths(total, seed)
    cuts = list(np.cumsum(lengths)[:-1])
    starts = [0, *cuts]
    duration = total / fps
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(path, mode="w", format="mp4") as c:
        vs = c.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": "16", "preset": "ultrafast", "bf": "0"}
        vs.codec_context.time_base = 1 / rate
        aus = c.add_stream("aac", rate=sample_rate, layout="mono") if audio else None
        if aus is not None:
            aus.bit_rate = 96000
        scene = 0
        apos = 0
        step = 1024
        total_samples = int(round(duration * sample_rate))
        for i in range(total):
            while scene + 1 < len(starts) and i >= starts[scene + 1]:
                scene += 1
            f = av.VideoFrame.from_ndarray(frame(i, scene, width, height), format="rgb24")
            f.pts = i
            c.mux(vs.encode(f))
            if aus is not None:  # interleave: audio up to this frame's end
                until = min(total_samples, int(round((i + 1) / fps * sample_rate)))
                while apos + step <= until or (until == total_samples and apos < until):
                    n = min(step, total_samples - apos)
                    t = (apos + np.arange(n)) / sample_rate
                    af = av.AudioFrame.from_ndarray(chirp(t, duration).astype(np.float32)[None], format="fltp",
                                                    layout="mono")
                    af.sample_rate = sample_rate
                    af.pts = apos
                    c.mux(aus.encode(af))
                    apos += n
        c.mux(vs.encode(None))
        if aus is not None:
            c.mux(aus.encode(None))
    return [int(x) for x in cuts]


def window_correlation(got: np.ndarray, want: np.ndarray, window: int) -> np.ndarray:
    """Normalised correlation of got vs want in consecutive windows (1 = identical shape)."""
    n = min(len(got), len(want)) // window * window
    g, w = got[:n].reshape(-1, window), want[:n].reshape(-1, window)
    num = (g * w).sum(1)
    den = np.sqrt((g * g).sum(1) * (w * w).sum(1)) + 1e-12
    return num / den


def duration_of(frames: int, fps: float) -> float:
    return frames / fps


__all__ = ["write_long_clip", "read_index", "chirp", "window_correlation", "scene_lengths", "math"]
