"""Scene-cut detection: PySceneDetect's ContentDetector, reimplemented in numpy (no OpenCV at run time).

The algorithm (PySceneDetect 0.6-0.7, `detectors/content_detector.py`, BSD-3): every frame is converted to
HSV (OpenCV's 8-bit BGR2HSV: H in 0..179, S and V in 0..255); a frame's score is the mean of the mean
absolute differences of H, S and V against the previous frame (edges weighted 0 by default); a score at or
above `threshold` (27) is a cut, filtered by the "merge" flash filter so that scenes are at least
`min_scene_len` frames (15) long. Frames wider than 256 px are scaled down to about 256 px first, as
PySceneDetect's auto-downscale does. A cut is the index of the first frame of the new scene.

tests/test_long_scenes.py runs PySceneDetect itself (the test extra installs it) on clips with known cuts
and checks that both give the same cut frames, and that our HSV conversion equals OpenCV's bit for bit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 27.0
DEFAULT_MIN_SCENE_LEN = 15
DETECT_MIN_WIDTH = 256  # PySceneDetect's DEFAULT_MIN_WIDTH for auto-downscale
_HSV_SHIFT = 12


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's fixed-point division tables for 8-bit RGB -> HSV (saturate_cast rounds half to even)."""
    i = np.arange(256, dtype=np.float64)
    with np.errstate(divide="ignore"):
        sdiv = np.rint((255 << _HSV_SHIFT) / i)
        hdiv = np.rint((180 << _HSV_SHIFT) / (6.0 * i))
    sdiv[0] = hdiv[0] = 0
    return sdiv.astype(np.int64), hdiv.astype(np.int64)


_SDIV, _HDIV = _tables()


def rgb_to_hsv8(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's `cvtColor(bgr, COLOR_BGR2HSV)` for uint8 [H,W,3] RGB input, as (hue, sat, val) int arrays."""
    r = rgb[..., 0].astype(np.int64)
    g = rgb[..., 1].astype(np.int64)
    b = rgb[..., 2].astype(np.int64)
    v = np.maximum(np.maximum(r, g), b)
    vmin = np.minimum(np.minimum(r, g), b)
    diff = v - vmin
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * _SDIV[v] + half) >> _HSV_SHIFT
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV[diff] + half) >> _HSV_SHIFT
    h = np.where(h < 0, h + 180, h)
    return h, s, v


def detect_size(width: int, height: int) -> tuple[int, int]:
    """The size frames are analysed at: PySceneDetect's auto-downscale to about 256 px wide."""
    if width < DETECT_MIN_WIDTH:
        return width, height
    factor = width / float(DETECT_MIN_WIDTH)
    return max(1, round(width / factor)), max(1, round(height / factor))


class ContentDetector:
    """Feed frames in order with :meth:`push`; cut frame indices come back as they are decided."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, min_scene_len: int = DEFAULT_MIN_SCENE_LEN):
        self.threshold = float(threshold)
        self.min_scene_len = int(min_scene_len)
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._index = -1
        # merge flash filter state (PySceneDetect's FlashFilter, mode MERGE)
        self._last_above: int | None = None
        self._merge_enabled = False
        self._merge_triggered = False
        self._merge_start = 0
        self.scores: list[float] = []

    def score(self, rgb: np.ndarray) -> float:
        """Content score of this frame against the previous one (0 for the first frame)."""
        hsv = rgb_to_hsv8(rgb)
        last, self._last = self._last, hsv
        if last is None:
            return 0.0
        pixels = float(hsv[0].size)
        return sum(float(np.abs(a - b).sum()) / pixels for a, b in zip(hsv, last)) / 3.0

    def push(self, rgb: np.ndarray) -> list[int]:
        """Process the next frame (uint8 RGB [H,W,3]); returns the cuts decided at this frame."""
        self._index += 1
        value = self.score(rgb)
        self.scores.append(value)
        return self._filter(self._index, value >= self.threshold)

    def _filter(self, index: int, above: bool) -> list[int]:
        if self.min_scene_len <= 0:
            return [index] if above else []
        if self._last_above is None:
            self._last_above = index
        length_met = index - self._last_above >= self.min_scene_len
        if above:
            self._last_above = index
        if self._merge_triggered:
            if length_met and not above and self._last_above - self._merge_start >= self.min_scene_len:
                self._merge_triggered = False
                return [self._last_above]
            return []
        if not above:
            return []
        if length_met:
            self._merge_enabled = True
            return [index]
        if self._merge_enabled:
            self._merge_triggered = True
            self._merge_start = index
        return []


@dataclass(frozen=True)
class SceneCuts:
    """Cut frame indices (first frame of each new scene) and the number of frames analysed."""

    cuts: tuple[int, ...]
    frames: int

    def scenes(self) -> list[tuple[int, int]]:
        """[start, end) frame ranges covering every frame."""
        bounds = [0, *[c for c in self.cuts if 0 < c < self.frames], self.frames]
        return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def detect_cuts(frames: Iterable[np.ndarray], threshold: float = DEFAULT_THRESHOLD,
                min_scene_len: int = DEFAULT_MIN_SCENE_LEN,
                on_frame: Callable[[int], None] | None = None) -> SceneCuts:
    """Run the detector over uint8 RGB frames (already at analysis size), one at a time."""
    det = ContentDetector(threshold, min_scene_len)
    cuts: list[int] = []
    n = 0
    for rgb in frames:
        cuts += det.push(rgb)
        n += 1
        if on_frame is not None:
            on_frame(n)
    return SceneCuts(tuple(sorted(set(cuts))), n)
