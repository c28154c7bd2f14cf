"""One pass over a clip before anything runs: its timeline length and, optionally, its scene cuts.

Frames are decoded at the detector's small size (about 256 px wide) in blocks, so the pass holds a few
small frames whatever the clip's length. Without scene detection only the packets are read (no decoding).
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Callable

from ..errors import InputError
from .reader import FrameReader
from .scenes import DEFAULT_MIN_SCENE_LEN, DEFAULT_THRESHOLD, ContentDetector, detect_size

log = logging.getLogger(__name__)

FPS_RANGE = (1.0, 60.0)  # the request model's frames_per_second range


@dataclass(frozen=True)
class Analysis:
    frames: int
    fps: float
    width: int
    height: int
    t0: float
    has_audio: bool
    cuts: tuple[int, ...]
    detected: bool  # False: scene detection was off (one scene)

    def scenes(self) -> list[tuple[int, int]]:
        bounds = [0, *[c for c in self.cuts if 0 < c < self.frames], self.frames]
        return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Analysis":
        return cls(**{**data, "cuts": tuple(data["cuts"])})


def analyze_clip(path: str, detect_scenes: bool = True, threshold: float = DEFAULT_THRESHOLD,
                 min_scene_len: int = DEFAULT_MIN_SCENE_LEN,
                 on_progress: Callable[[int, int], None] | None = None) -> Analysis:
    """Timeline length, frame rate and scene cuts of `path` (see scenes.py for the detector)."""
    with FrameReader(path) as probe_reader:
        info, t0 = probe_reader.info, probe_reader.t0
        if not FPS_RANGE[0] <= info.fps <= FPS_RANGE[1]:
            raise InputError("video", f"{os.path.basename(path)} runs at {info.fps:g} fps; a long-clip run keeps the "
                                      f"source's rate, which must be {FPS_RANGE[0]:g} to {FPS_RANGE[1]:g} fps "
                                      f"(re-encode it at a lower rate first)")
        if not detect_scenes:
            frames = probe_reader.count_slots()
            return Analysis(frames, info.fps, info.width, info.height, t0, info.has_audio, (), False)
    det = ContentDetector(threshold, min_scene_len)
    cuts: list[int] = []
    frames = 0
    expected = max(1, info.frame_count)
    with FrameReader(path, size=detect_size(info.width, info.height)) as reader:
        for block in reader.iter_blocks(0, 2**62, 32):
            for rgb in block:
                cuts += det.push(rgb)
            frames += len(block)
            if on_progress is not None:
                on_progress(frames, max(expected, frames))
    if frames == 0:
        raise InputError("video", f"{os.path.basename(path)}: no decodable frames")
    log.info("%s: %d frames, %d scene cut(s) at %s", os.path.basename(path), frames, len(cuts), cuts[:20])
    return Analysis(frames, info.fps, info.width, info.height, t0, info.has_audio, tuple(sorted(set(cuts))), True)
