"""Benchmark: the official paste-back blend (nodes/local/blend.py) on a full clip, on CPU.

Not a pytest test. Run it as a script::

    python tests/bench_blend.py [--frames 121 --width 1280 --height 704 --dilation 2 --chunk 8 --quality]

Prints the wall time, the peak RSS of this process (sampled every 10 ms by a thread, with psutil) and both
relative to the size of one [F,H,W,3] float32 clip. The inputs (generated, green composite) and the output
are three such clips, so a chunked blend peaks near 3 clips + a few chunks' pyramids; a blend that held every
frame's pyramids at once would need several more clips. `--quality` also times the quality report.
"""
from __future__ import annotations

import argparse
import os
import threading
import time

import psutil
import torch


class PeakRSS:
    """Peak resident memory of this process while the block runs (polled)."""

    def __enter__(self):
        self.proc, self.peak, self._stop = psutil.Process(os.getpid()), 0, threading.Event()
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=121)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=704)
    ap.add_argument("--dilation", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--quality", action="store_true", help="also time the quality report")
    args = ap.parse_args()

    from ltx_outpaint.local.blend import pyramid_blend
    from ltx_outpaint.local.recipe import OFFICIAL

    f, h, w = args.frames, args.height, args.width
    g = torch.Generator().manual_seed(0)
    generated = torch.rand(f, h, w, 3, generator=g)
    composite = torch.rand(f, h, w, 3, generator=g)
    mask = torch.ones(h, w)
    mask[h // 8:h - h // 8, w // 8:w - w // 8] = 0
    fill = torch.tensor(OFFICIAL.fill_rgb, dtype=torch.float32) / 255
    composite[:, mask > 0] = fill
    clip_bytes = generated.numel() * 4
    before = psutil.Process(os.getpid()).memory_info().rss
    print(f"blend {f} frames {w}x{h}, dilation {args.dilation}, chunk {args.chunk}, "
          f"{torch.get_num_threads()} torch threads; one clip = {clip_bytes / 2**30:.2f} GiB; "
          f"RSS before (2 input clips) {before / 2**30:.2f} GiB")
    with PeakRSS() as mem:
        t = time.perf_counter()
        out = pyramid_blend(generated, composite, mask, dilation=args.dilation, chunk=args.chunk)
        seconds = time.perf_counter() - t
    extra = mem.peak - before
    print(f"  {seconds:.1f} s ({seconds / f * 1000:.0f} ms/frame); peak RSS {mem.peak / 2**30:.2f} GiB = "
          f"{mem.peak / clip_bytes:.2f} clips; above the inputs {extra / 2**30:.2f} GiB = "
          f"{extra / clip_bytes:.2f} clips (the output is 1.00)")
    if args.quality:
        from ltx_outpaint.media.quality import quality_report

        with PeakRSS() as mem:
            t = time.perf_counter()
            report = quality_report(out, composite, mask)
            seconds = time.perf_counter() - t
        print(f"quality report: {seconds:.1f} s; peak RSS {mem.peak / 2**30:.2f} GiB")
        for line in report.lines():
            print("  " + line)


if __name__ == "__main__":
    main()
