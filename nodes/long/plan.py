"""Chunk planning: each scene is its own run; a scene longer than one request becomes overlapping chunks.

Frame k of the output is frame k of the source timeline (the run's frame rate is the source's). A chunk is a
range [start, end) of one scene; a scene's chunks after the first start `overlap` frames before the previous
one ends (those frames are generated twice and joined: cross-faded, and locally the next chunk is also
conditioned on the previous one's last frames). Chunks of a scene are balanced (equal lengths, the last
within a frame) rather than full chunks plus a short remainder. A chunk shorter than a backend accepts is
padded with its last frame for the request (`request_frames`) and trimmed afterwards.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import InputError

#: fal's num_frames range (request model): one request is at most this many frames.
FAL_MAX_FRAMES = 481
MIN_REQUEST_FRAMES = 9
DEFAULT_OVERLAP = 17  # 8k+1: a whole number of LTX latent frames (the first latent is 1 frame, then 8 each)
#: default chunk length per backend kind (local: what the memory plan is verified for on 24 GB GPUs)
DEFAULT_CHUNK = {"fal": FAL_MAX_FRAMES, "preview": FAL_MAX_FRAMES, "local": 121}


@dataclass(frozen=True)
class ChunkRule:
    """What one request of a backend may be: at most `max_frames`, at least `min_frames`, 8k+1 or any count."""

    max_frames: int
    min_frames: int = MIN_REQUEST_FRAMES
    frames_8k1: bool = False

    def request_frames(self, n: int) -> int:
        n = max(n, self.min_frames)
        return 8 * math.ceil((n - 1) / 8) + 1 if self.frames_8k1 else n


def chunk_rule(kind: str, chunk_frames: int = 0, frames_8k1: bool = False) -> ChunkRule:
    """The rule for a backend kind; `chunk_frames` (0 = default) is the user's cap, checked against fal's."""
    limit = chunk_frames or DEFAULT_CHUNK.get(kind, FAL_MAX_FRAMES)
    if limit < MIN_REQUEST_FRAMES * 2 or limit > FAL_MAX_FRAMES and kind == "fal":
        hi = FAL_MAX_FRAMES if kind == "fal" else "any"
        raise InputError("chunk_frames", f"got {limit}; allowed {MIN_REQUEST_FRAMES * 2} to {hi} (0 = the backend's "
                                         f"default, {DEFAULT_CHUNK.get(kind, FAL_MAX_FRAMES)})")
    if frames_8k1:
        limit = 8 * ((limit - 1) // 8) + 1
    return ChunkRule(limit, MIN_REQUEST_FRAMES, frames_8k1)


@dataclass(frozen=True)
class Chunk:
    index: int
    scene: int
    start: int
    end: int
    overlap: int  # frames shared with the previous chunk of the same scene (0: a scene's first chunk)
    request_frames: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ChunkPlan:
    frames: int
    fps: float
    scenes: tuple[tuple[int, int], ...]
    chunks: tuple[Chunk, ...]
    overlap: int

    def joins(self) -> list[dict]:
        """Where consecutive pieces meet: a scene cut (hard cut) or a chunk join (`overlap` frames joined)."""
        out = []
        for prev, cur in zip(self.chunks, self.chunks[1:]):
            kind = "scene_cut" if cur.scene != prev.scene else "chunk_join"
            frame = cur.start  # a cut: the new scene's first frame; a join: the first cross-faded frame
            out.append({"kind": kind, "frame": frame, "time_s": round(frame / self.fps, 3),
                        "overlap_frames": cur.overlap, "chunk": cur.index})
        return out

    def to_dict(self) -> dict:
        return {"frames": self.frames, "fps": self.fps, "overlap": self.overlap,
                "scenes": [list(s) for s in self.scenes], "chunks": [asdict(c) for c in self.chunks]}

    @classmethod
    def from_dict(cls, data: dict) -> "ChunkPlan":
        return cls(int(data["frames"]), float(data["fps"]), tuple(tuple(s) for s in data["scenes"]),
                   tuple(Chunk(**c) for c in data["chunks"]), int(data["overlap"]))

    def requested_frames(self) -> int:
        return sum(c.request_frames for c in self.chunks)


def plan_chunks(scenes: list[tuple[int, int]], fps: float, rule: ChunkRule, overlap: int = DEFAULT_OVERLAP) -> ChunkPlan:
    """Chunks for `scenes` ([start, end) ranges covering the clip, in order)."""
    if overlap < 0 or overlap > (rule.max_frames - 1) // 2:
        raise InputError("overlap_frames", f"got {overlap}; allowed 0 to {(rule.max_frames - 1) // 2} (half a chunk "
                                           f"of {rule.max_frames} frames)")
    chunks: list[Chunk] = []
    for s, (a, b) in enumerate(scenes):
        length = b - a
        count = 1 if length <= rule.max_frames else math.ceil((length - overlap) / (rule.max_frames - overlap))
        step = (length - overlap) / count  # new frames per chunk, balanced
        start = a
        for i in range(count):
            end = b if i == count - 1 else a + overlap + round(step * (i + 1))
            chunks.append(Chunk(len(chunks), s, start, end, overlap if i else 0,
                                rule.request_frames(end - start)))
            start = end - overlap
    total = scenes[-1][1] if scenes else 0
    return ChunkPlan(total, float(fps), tuple(tuple(x) for x in scenes), tuple(chunks), overlap)
