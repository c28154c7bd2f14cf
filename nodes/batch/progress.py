"""Batch progress: per clip and overall. `TextBars` draws simple text bars on stderr (the CLI); the ComfyUI
node forwards the same events as progress text."""
from __future__ import annotations

import sys
import time

from ..backends import Progress


def bar(fraction: float, width: int = 20) -> str:
    fraction = min(1.0, max(0.0, fraction))
    full = int(round(fraction * width))
    return "[" + "#" * full + "-" * (width - full) + f"] {100 * fraction:5.1f}%"


class BatchProgress:
    """Sink for batch events; the base class does nothing but answer `interrupted()`."""

    def clip(self, index: int, total: int, name: str, fraction: float, text: str) -> None:
        pass

    def overall(self, done: int, total: int, text: str) -> None:
        pass

    def interrupted(self) -> bool:
        return False

    def note(self, text: str) -> None:
        pass


class TextBars(BatchProgress):
    """One line per update (throttled per clip), written to `stream` (stderr)."""

    def __init__(self, stream=None, min_interval_s: float = 1.0):
        self.stream = stream or sys.stderr
        self.min_interval_s = min_interval_s
        self._last: dict[int, tuple[float, str]] = {}

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def clip(self, index, total, name, fraction, text):
        now = time.monotonic()
        phase = text.split(":")[0] if text else ""
        last_t, last_phase = self._last.get(index, (0.0, ""))
        if fraction < 1.0 and phase == last_phase and now - last_t < self.min_interval_s:
            return
        self._last[index] = (now, phase)
        self._write(f"clip {index + 1}/{total} {bar(fraction)} {name}: {text}")

    def overall(self, done, total, text):
        self._write(f"batch    {bar(done / max(1, total))} {done}/{total} clips; {text}")

    def note(self, text):
        self._write(f"note: {text}")


class ClipProgress(Progress):
    """A clip's run reporting into the batch sink."""

    def __init__(self, sink: BatchProgress, index: int, total: int, name: str):
        self.sink, self.index, self.total, self.name = sink, index, total, name

    def report(self, done, total, text=None):
        self.sink.clip(self.index, self.total, self.name, done / total if total else 0.0, text or "")

    def interrupted(self) -> bool:
        return self.sink.interrupted()

    def note(self, text: str) -> None:
        self.sink.note(f"{self.name}: {text}")
