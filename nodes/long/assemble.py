"""Assemble chunk results into one MP4 as they finish, in order, holding only an overlap's worth of frames.

For each chunk: its first `overlap` frames are cross-faded with the previous chunk's last frames (kept raw,
unwritten, until now); its last frames are kept back when the next chunk of the same scene overlaps them;
everything else is written at once. Audio: the source's own track is carried whole (read and written along
with the frames, never cut per chunk); generated audio is joined with the same cross-fade over the overlap
and declicked at scene cuts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .joins import crossfade_audio, crossfade_frames, declick
from .plan import Chunk, ChunkPlan
from .reader import AudioReader, FrameReader
from .writer import StreamingWriter

log = logging.getLogger(__name__)

BLOCK = 16


@dataclass
class ChunkOutput:
    """One chunk's result: frames in memory (in-process backends) or a saved MP4 (fal), plus its audio."""

    frames: torch.Tensor | None = None  # [n,H,W,3] float32 0..1
    path: str | None = None
    audio: np.ndarray | None = None  # [C, n] float32, generated audio of the chunk (starts at its first frame)
    audio_rate: int = 0
    seed: int | None = None
    prompt: str = ""
    notes: list[str] = field(default_factory=list)
    request_id: str | None = None
    cost_usd: float = 0.0
    seconds: float = 0.0
    reused: str = ""  # "", "saved" (an earlier run's result), "attached" (an earlier run's job followed)

    def blocks(self, count: int):
        """Its first `count` frames as float tensors, BLOCK at a time (held frames pad a short result)."""
        last = None
        done = 0
        if self.frames is not None:
            for s in range(0, min(count, self.frames.shape[0]), BLOCK):
                last = self.frames[s:min(s + BLOCK, count)]
                done += last.shape[0]
                yield last
        else:
            with FrameReader(self.path) as reader:
                for block in reader.iter_blocks(0, count, BLOCK):
                    last = torch.from_numpy(block).float().div_(255.0)
                    done += last.shape[0]
                    yield last
        if done < count and last is not None:
            self.notes.append(f"the result had {done} frames, {count} were asked; the last frame is held")
            hold = last[-1:]
            while done < count:
                n = min(BLOCK, count - done)
                yield hold.expand(n, *hold.shape[1:]).clone()
                done += n


class Assembler:
    """Feed `add(chunk, output)` in plan order, then `finish()`."""

    def __init__(self, open_writer: Callable[[int, int], StreamingWriter], plan: ChunkPlan,
                 source_audio: AudioReader | None, generated_audio: bool):
        """`open_writer(audio_rate, audio_channels)` (0, 0 = no audio track) is called at the first chunk."""
        self.open_writer, self.plan = open_writer, plan
        self.writer: StreamingWriter | None = None
        self.source_audio = source_audio
        self.generated = generated_audio and source_audio is None
        self.rate = source_audio.rate if source_audio else 0
        self.tail: torch.Tensor | None = None  # previous chunk's last frames, raw (not yet written)
        self.audio_tail: np.ndarray | None = None
        self.audio_written = 0
        self.max_held_frames = 0

    def _next_overlap(self, chunk: Chunk) -> int:
        nxt = self.plan.chunks[chunk.index + 1] if chunk.index + 1 < len(self.plan.chunks) else None
        return nxt.overlap if nxt is not None and nxt.scene == chunk.scene else 0

    def add(self, chunk: Chunk, out: ChunkOutput) -> None:
        if self.writer is None:
            if self.source_audio is not None:
                self.writer = self.open_writer(self.source_audio.rate, self.source_audio.channels)
            elif self.generated and out.audio is not None and out.audio_rate:
                self.rate = out.audio_rate
                self.writer = self.open_writer(out.audio_rate, out.audio.shape[0])
            else:
                self.generated = False
                self.writer = self.open_writer(0, 0)
        keep = self._next_overlap(chunk)
        head = chunk.overlap if self.tail is not None else 0
        kept: list[torch.Tensor] = []
        j = 0
        for block in out.blocks(chunk.length):
            n = block.shape[0]
            if j < head:  # cross-fade with the previous chunk's kept frames
                k = min(n, head - j)
                self._write(crossfade_frames(self.tail[j:j + k], block[:k]))
                block, j = block[k:], j + k
                n = block.shape[0]
            if n:
                cut = max(0, min(n, chunk.length - keep - j))
                if cut:
                    self._write(block[:cut])
                if cut < n:
                    kept.append(block[cut:].clone())
                j += n
            self.max_held_frames = max(self.max_held_frames, BLOCK + sum(t.shape[0] for t in kept) +
                                       (self.tail.shape[0] if self.tail is not None else 0))
        self.tail = torch.cat(kept) if kept else None
        if self.generated:
            self._add_generated_audio(chunk, out, head, keep)

    @property
    def raw_tail(self) -> torch.Tensor | None:
        """The last chunk's last frames as generated (for conditioning the next chunk)."""
        return self.tail

    def _write(self, frames: torch.Tensor) -> None:
        self.writer.write_frames(frames)
        if self.source_audio is not None:  # the source's own track, up to the frames written so far
            target = round(self.writer.frames * self.rate / float(self.writer.rate))
            if target > self.audio_written:
                self.writer.write_audio(self.source_audio.read(self.audio_written, target - self.audio_written))
                self.audio_written = target

    def _add_generated_audio(self, chunk: Chunk, out: ChunkOutput, head: int, keep: int) -> None:
        fps = self.plan.fps
        to_s = lambda f: round(f * self.rate / fps)  # noqa: E731 - frame index -> sample index
        wave = out.audio if out.audio is not None else np.zeros((self.writer.audio_channels, 0), np.float32)
        if out.audio is not None and out.audio_rate != self.rate:  # chunks of one run share a rate; resample a stray one linearly
            n = round(wave.shape[1] * self.rate / out.audio_rate)
            x = np.linspace(0, wave.shape[1] - 1, n)
            wave = np.stack([np.interp(x, np.arange(wave.shape[1]), c) for c in wave]).astype(np.float32)
        length = to_s(chunk.end) - to_s(chunk.start)
        if wave.shape[1] < length:
            wave = np.pad(wave, ((0, 0), (0, length - wave.shape[1])))
        wave = wave[:, :length]
        wave = declick(wave, self.rate, fade_in=chunk.overlap == 0 and chunk.index > 0, fade_out=keep == 0)
        a = to_s(chunk.start + head) - to_s(chunk.start)
        b = length - (to_s(chunk.end) - to_s(chunk.end - keep))
        pieces = []
        if head and self.audio_tail is not None:
            pieces.append(crossfade_audio(self.audio_tail, wave[:, :a]))
        pieces.append(wave[:, a:b])
        self.audio_tail = wave[:, b:] if keep else None
        for p in pieces:
            self.writer.write_audio(p)
            self.audio_written += p.shape[1]

    def finish(self) -> str:
        if self.writer is None:
            raise ValueError("no chunk was assembled")
        if self.tail is not None:  # a plan always ends a scene, so nothing is left; be safe anyway
            self._write(self.tail)
            self.tail = None
        if self.source_audio is not None:
            target = round(self.writer.frames * self.rate / float(self.writer.rate))
            if target > self.audio_written:
                self.writer.write_audio(self.source_audio.read(self.audio_written, target - self.audio_written))
                self.audio_written = target
        return self.writer.close()
