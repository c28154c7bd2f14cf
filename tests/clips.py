"""Test clips generated on the fly (never committed), cached per test session in a temp folder."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from fractions import Fraction

import av
import numpy as np

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


def _add_still(container, disposition=None):
    """A 32x32 one-picture stream: PNG cover art when `disposition` is attached_pic, else an MJPEG thumbnail
    track. Returns a function that writes its picture (call it once every stream is added)."""
    pix_fmt = "rgb24" if disposition is not None else "yuvj420p"
    pic = container.add_stream("png" if disposition is not None else "mjpeg", rate=1)
    pic.width, pic.height, pic.pix_fmt = 32, 32, pix_fmt
    if disposition is not None:
        pic.disposition = disposition

    def write() -> None:
        f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24").reformat(format=pix_fmt)
        f.pts = 0
        for p in pic.encode(f) + pic.encode(None):
            container.mux(p)

    return write


def write_clip(path, fmt=None, codec="libx264", pix_fmt="yuv420p", frames=6, size=(64, 48), fps=24, audio=None,
               options=None, times=None, still_first=None):
    """A small clip written with PyAV; frame i is flat grey 8*i. `audio` = (codec, rate, layout, seconds);
    `times` (s) for VFR; `still_first` = "cover" (attached picture) or "track" (a one-frame thumbnail track)
    as the file's first stream."""
    w, h = size
    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        still = _add_still(c, av.stream.Disposition.attached_pic if still_first == "cover" else None) \
            if still_first else None
        vs = c.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        if times is not None:
            vs.codec_context.time_base = Fraction(1, 1000)
        a = c.add_stream(audio[0], rate=audio[1], layout=audio[2]) if audio else None
        if still:
            still()
        for i in range(frames):
            img = np.full((h, w, 3), (8 * i) % 256, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pix_fmt != "rgb24":
                f = f.reformat(format=pix_fmt)
            if times is not None:
                f.pts, f.time_base = int(round(times[i] * 1000)), Fraction(1, 1000)
            else:
                f.pts = i
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
        if a is not None:
            _, rate, layout, seconds = audio
            channels = av.AudioLayout(layout).nb_channels
            total, step = int(seconds * rate), a.codec_context.frame_size or 1024
            for pos in range(0, total, step):
                n = min(step, total - pos)
                af = av.AudioFrame.from_ndarray(np.full((channels, n), 0.25, np.float32), format="fltp",
                                                layout=layout)
                af.sample_rate, af.pts = rate, pos
                c.mux(a.encode(af))
            c.mux(a.encode(None))
    return str(path)


def write_audio_file(path, codec, rate=44100, seconds=1.0, cover=False):
    """A stereo audio file; `cover` adds cover art (an attached_pic stream, as taggers do)."""
    with av.open(str(path), "w", format="mp4" if str(path).endswith(".m4a") else None) as c:
        a = c.add_stream(codec, rate=rate, layout="stereo")
        if cover:
            _add_still(c, av.stream.Disposition.attached_pic)()
        total, step = int(seconds * rate), a.codec_context.frame_size or 1024
        for pos in range(0, total, step):
            n = min(step, total - pos)
            af = av.AudioFrame.from_ndarray(np.full((2, n), 0.25, np.float32), format="fltp", layout="stereo")
            af.sample_rate, af.pts = rate, pos
            c.mux(a.encode(af))
        c.mux(a.encode(None))
    return str(path)


def write_ts_audio_switch(path, first=("stereo", 48000), second=("mono", 44100), seconds=0.5, frames=24):
    """An MPEG-TS clip (24 fps H.264) whose MP2 audio switches layout / rate halfway, as broadcast recordings
    do: `seconds` of a 440 Hz tone in `first`'s (layout, rate), then `seconds` in `second`'s."""
    with av.open(str(path), "w", format="mpegts") as c:
        vs = c.add_stream("libx264", rate=24)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        track = c.add_stream("mp2", rate=first[1], layout=first[0])
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (8 * i) % 256, np.uint8), format="rgb24")
            f.pts = i
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
        t = 0.0
        for layout, rate in (first, second):
            enc = av.CodecContext.create("mp2", "w")
            enc.sample_rate, enc.layout, enc.format, enc.time_base = rate, layout, "s16", Fraction(1, rate)
            enc.open()
            channels = av.AudioLayout(layout).nb_channels
            total = int(seconds * rate)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / rate) * 32767).astype(np.int16)
            packets = []
            for pos in range(0, total, 1152):
                part = np.repeat(tone[pos:pos + 1152][:, None], channels, 1).reshape(1, -1)
                f = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="s16", layout=layout)
                f.sample_rate, f.pts = rate, pos
                packets += enc.encode(f)
            for p in packets + list(enc.encode(None)):
                p.stream, p.time_base = track, Fraction(1, 90000)
                p.pts = p.dts = int(t * 90000)
                t += 1152 / rate
                c.mux(p)
    return str(path)
