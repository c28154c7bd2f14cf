"""Benchmark: peak memory of a long-clip run stays flat with the clip's length.

    python tests/bench_long_clip.py [--minutes 1 5 10] [--chunk-frames 240]

For each length, a synthetic 64x48 clip at 24 fps with scene cuts and a chirp (tests/long_clips.py) is
outpainted to 128x64 with the preview backend in a fresh process; that process reports its own peak RSS.
Peak memory follows the longest chunk, so every clip is run with the same chunk size (each clip has scenes
longer than it; the line shows the longest chunk). Prints one line per length and the ratio of the longest
clip's peak to the shortest's (flat = close to 1.0).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, sys, time
sys.path.insert(0, {here!r})
from ltx_outpaint.long.runner import LongOptions, run_long
from ltx_outpaint.media.canvas import CanvasSpec
from ltx_outpaint.request import ImageSize, OutpaintRequest

def peak_rss():
    try:
        import resource
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    except ImportError:  # Windows
        import psutil
        return psutil.Process().memory_info().peak_wset

t = time.monotonic()
res = run_long({src!r}, {out!r}, OutpaintRequest(prompt="bench", seed=1), CanvasSpec(ImageSize(128, 64), 1.0),
               None, LongOptions(chunk_frames={chunk}))
print(json.dumps({{"peak_rss": peak_rss(), "seconds": time.monotonic() - t, "frames": res.frames,
                  "chunks": len(res.plan.chunks), "scenes": len(res.plan.scenes),
                  "longest_chunk": max(c.length for c in res.plan.chunks)}}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 10])
    p.add_argument("--chunk-frames", type=int, default=240)
    args = p.parse_args()
    sys.path.insert(0, HERE)
    from long_clips import write_long_clip

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp:
        for minutes in args.minutes:
            src = os.path.join(tmp, f"{minutes:g}min.mp4")
            write_long_clip(src, minutes * 60, seed=1)
            code = CHILD.format(here=HERE, src=src, out=os.path.join(tmp, f"{minutes:g}min_out.mp4"),
                                chunk=args.chunk_frames)
            t = time.monotonic()
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["minutes"] = minutes
            rows.append(row)
            print(f"{minutes:5g} min: {row['frames']:6d} frames, {row['scenes']:3d} scenes, {row['chunks']:3d} chunks "
                  f"(longest {row['longest_chunk']}), "
                  f"peak RSS {row['peak_rss'] / 2**20:7.1f} MiB, {row['seconds']:6.1f} s "
                  f"(process {time.monotonic() - t:.1f} s)", flush=True)
    first, last = rows[0], rows[-1]
    print(f"peak RSS ratio {last['minutes']:g} min / {first['minutes']:g} min: "
          f"{last['peak_rss'] / first['peak_rss']:.3f} (clip length ratio {last['minutes'] / first['minutes']:g})")


if __name__ == "__main__":
    main()
