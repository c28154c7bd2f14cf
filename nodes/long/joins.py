"""Joining chunks: linear cross-fades over the overlap (frames and generated audio), declicks at scene cuts.

Over an overlap of n frames, output frame i (0-based) is `(1 - w) * previous + w * next` with
w = (i + 1) / (n + 1): both ends are one step away from the chunk they leave, so no frame is taken whole
from either side inside the overlap and the ramp has no flat start. Audio uses the same ramp per sample.
"""
from __future__ import annotations

import numpy as np
import torch

DECLICK_S = 0.005  # fade out / in at a hard cut in generated audio


def ramp(n: int) -> np.ndarray:
    """Weights of the incoming side over n steps: (i + 1) / (n + 1)."""
    return (np.arange(n, dtype=np.float64) + 1.0) / (n + 1.0)


def crossfade_frames(prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
    """[n,H,W,3] float: previous chunk's last n frames blended into the next chunk's first n."""
    if prev.shape != nxt.shape:
        raise ValueError(f"overlap shapes differ: {tuple(prev.shape)} vs {tuple(nxt.shape)}")
    w = torch.from_numpy(ramp(prev.shape[0]).astype(np.float32)).view(-1, 1, 1, 1)
    return prev * (1 - w) + nxt * w


def crossfade_audio(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """[C,n] float32: the same ramp per sample."""
    n = min(prev.shape[1], nxt.shape[1])
    w = ramp(n).astype(np.float32)[None]
    return prev[:, :n] * (1 - w) + nxt[:, :n] * w


def declick(wave: np.ndarray, rate: int, fade_in: bool, fade_out: bool) -> np.ndarray:
    """Short raised-cosine fades at the ends of a piece of generated audio that meets a hard cut."""
    n = min(int(DECLICK_S * rate), wave.shape[1] // 2)
    if n <= 0:
        return wave
    wave = wave.copy()
    up = (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)
    if fade_in:
        wave[:, :n] *= up
    if fade_out:
        wave[:, -n:] *= up[::-1]
    return wave
