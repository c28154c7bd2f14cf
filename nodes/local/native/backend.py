"""The native engine as a blocking backend: build the job's graph and run it in process (inside ComfyUI).

Used where one node runs many jobs (long clips, batches) and for `OutpaintJob.start_frames` (a long clip's
next chunk guided by the previous chunk's last frames). The outpaint node itself expands into the graph instead.
"""
from __future__ import annotations

from ...backends import OutpaintJob, OutpaintResult, Progress
from ...media.canvas import LTX_SNAP


class NativeBackend:
    name = "local"
    snap = LTX_SNAP
    accepts_start_frames = True

    def __init__(self, config):
        self.config = config

    def run(self, job: OutpaintJob, progress: Progress) -> OutpaintResult:
        from .prepare import native_graph
        from .run import run_graph

        graph, outputs = native_graph(job, self.config, progress, prefix="ltx-outpaint.native.")
        video = run_graph(graph, [outputs[3]])[0]  # the finish node's VIDEO carries the engine result
        result: OutpaintResult = video.result
        return result
