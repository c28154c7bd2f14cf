"""Test clips generated on the fly (never committed), cached per test session in a temp folder."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from ltx_outpaint.media.sample import write_sample

_DIR = tempfile.mkdtemp(prefix="ltx-outpaint-clips-")
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)


def clip(name: str, **kwargs) -> str:
    """Path of a sample clip written with `write_sample(**kwargs)` (written once per session)."""
    path = os.path.join(_DIR, name)
    if not os.path.exists(path):
        write_sample(path, **kwargs)
    return path


def bad_file(name: str, data: bytes) -> str:
    path = os.path.join(_DIR, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def truncated_copy(src: str, name: str, keep_fraction: float) -> str:
    with open(src, "rb") as f:
        data = f.read()
    return bad_file(name, data[: int(len(data) * keep_fraction)])


def audio_only(name: str = "audio_only.m4a") -> str:
    """An AAC-only MP4 container (no video stream)."""
    import av
    import numpy as np

    path = os.path.join(_DIR, name)
    if os.path.exists(path):
        return path
    with av.open(path, "w", format="mp4") as c:
        s = c.add_stream("aac", rate=44100, layout="stereo")
        for pos in range(0, 44100, 1024):
            f = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
            f.sample_rate, f.pts = 44100, pos
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


def cut_short(src: str, name: str, keep_fraction: float) -> str:
    """A copy of `src` with its index first (faststart) and its media data cut: the index still lists
    every frame, the data ends early (a download or copy that stopped)."""
    import av

    whole = os.path.join(_DIR, "faststart-" + name)
    with av.open(src) as inp, av.open(whole, "w", format="mp4", options={"movflags": "+faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux(*[s for s in inp.streams if s.index in streams]):
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    with open(whole, "rb") as f:
        data = f.read()
    return bad_file(name, data[: int(len(data) * keep_fraction)])
