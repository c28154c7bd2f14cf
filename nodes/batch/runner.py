"""Run the long-clip outpaint over many files: plan all, estimate, then run (fal: N requests at a time).

Order of work:
1. list the inputs, hash each file, read the manifest: a clip finished earlier (same file content, same
   request, output present) is skipped;
2. plan every other clip (scene detection, chunks; kept in `<output>.state.json`) and add up fal's cost
   estimate; refuse, before anything is uploaded, when it is above `max_total_cost_usd`;
3. run: fal clips concurrently, every fal request (upload -> saved result) holding one of `concurrency`
   slots, each journaled under its job key; local and preview clips one after another. A clip that fails
   does not stop the others; Ctrl-C / an interrupt leaves submitted fal jobs running (journaled), and the
   manifest says which clips were interrupted;
4. write `batch-summary.json` / `.csv` (per clip: status, output, seconds, cost estimate, error).

Re-running the same command resumes: finished clips skipped, saved chunk results reused, running jobs
followed by their request id, nothing submitted twice.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field

from ..backends import Interrupted
from ..errors import InputError
from ..media.canvas import CanvasSpec
from ..request import OutpaintRequest
from ..long.runner import (LongOptions, backend_kind, estimate_fal_cost, file_sha256, prepare_clip,
                           run_long_async)
from .inputs import output_names
from .progress import BatchProgress, ClipProgress
from .state import BatchState, ClipRecord, clip_key

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 2


@dataclass
class BatchSummary:
    records: list[ClipRecord]
    totals: dict
    summary_json: str = ""
    summary_csv: str = ""
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        t = self.totals
        lines = [f"{t['clips']} clip(s): {t['done']} done, {t['skipped']} skipped (finished earlier), "
                 f"{t['failed']} failed, {t['interrupted']} interrupted; {t['seconds']:.0f} s"
                 + (f"; fal estimate ${t['cost_estimate_usd']:.4f}" if t["cost_estimate_usd"] else "")]
        for r in self.records:
            extra = f" - {r.error}" if r.error else ""
            lines.append(f"{r.status:11s} {os.path.basename(r.input)} -> {os.path.basename(r.output)}"
                         f" ({r.seconds:.0f} s{f', ${r.cost_estimate_usd:.4f}' if r.cost_estimate_usd else ''}){extra}")
        return "\n".join(lines + self.notes)


def _own_output(record: ClipRecord | None, out_dir: str) -> str | None:
    """The output an earlier run of this batch chose for a clip, when the manifest names one directly in
    `out_dir` (a manifest is a file in the output folder: any other path in it is not trusted)."""
    if record is None or not isinstance(record.output, str):
        return None
    output = os.path.abspath(record.output)
    return output if os.path.dirname(output) == os.path.abspath(out_dir) else None


def _free_path(out_dir: str, name: str, taken: set[str]) -> str:
    """`out_dir/name`, or `name_2`, `name_3`, ... when a file this batch did not write is already there."""
    stem, ext = os.path.splitext(name)
    candidate, n = os.path.abspath(os.path.join(out_dir, name)), 1
    while candidate in taken or os.path.exists(candidate) or os.path.exists(candidate + ".json"):
        n += 1
        candidate = os.path.abspath(os.path.join(out_dir, f"{stem}_{n}{ext}"))
    return candidate


def _totals(records: list[ClipRecord], seconds: float) -> dict:
    count = {s: sum(1 for r in records if r.status == s) for s in ("done", "skipped", "failed", "interrupted")}
    return {"clips": len(records), **count, "seconds": round(seconds, 1),
            "cost_estimate_usd": round(sum(r.cost_estimate_usd for r in records if r.status != "skipped"), 6)}


async def run_batch_async(inputs: list[str], out_dir: str, request: OutpaintRequest, canvas: CanvasSpec, config=None,
                          options: LongOptions = LongOptions(), *, concurrency: int = DEFAULT_CONCURRENCY,
                          max_total_cost_usd: float = 0.0, sink: BatchProgress | None = None) -> BatchSummary:
    """Outpaint every file of `inputs` into `out_dir` (see the module docstring)."""
    sink = sink or BatchProgress()
    started = time.monotonic()
    if concurrency < 1 or concurrency > 64:
        raise InputError("concurrency", f"got {concurrency}; allowed 1 to 64")
    if not max_total_cost_usd >= 0 or max_total_cost_usd == float("inf"):  # NaN too
        raise InputError("max_total_cost_usd", f"got {max_total_cost_usd}; must be >= 0 (0 = no cap)")
    request = request.replace(resolution=canvas.resolution, source_scale=canvas.source_scale).validate()
    options.validate()
    kind = backend_kind(config)
    if kind == "fal":  # a batch leaves submitted jobs running on Ctrl-C; a re-run collects them
        config = dataclasses.replace(config, on_stop="detach")
    os.makedirs(out_dir, exist_ok=True)
    state = BatchState(out_dir)
    body = request.to_fal_input()
    n = len(inputs)

    # 1. hash + manifest
    digests = []
    for i, path in enumerate(inputs):
        sink.overall(0, n, f"hashing {os.path.basename(path)} ({i + 1}/{n})")
        digests.append(await asyncio.to_thread(file_sha256, path))
    names = output_names(inputs, digests)
    records: list[ClipRecord] = []
    keys: list[str] = []
    taken: set[str] = set()
    for path, digest, name in zip(inputs, digests, names):
        key = clip_key(digest, body)
        keys.append(key)
        output = _own_output(state.clips.get(key), out_dir) or _free_path(out_dir, name, taken)
        taken.add(output)
        earlier = state.finished(key)
        if earlier is not None and os.path.abspath(earlier.output) == output:
            records.append(dataclasses.replace(earlier, input=path, status="skipped"))
        else:
            records.append(ClipRecord(path, digest, output))

    # 2. plan + estimate, before anything is uploaded
    plans = {}
    for i, rec in enumerate(records):
        if rec.status == "skipped":
            continue
        sink.overall(0, n, f"planning {os.path.basename(rec.input)} ({i + 1}/{n})")
        progress = ClipProgress(sink, i, n, os.path.basename(rec.input))
        try:
            analysis, plan, _seed, _ = await asyncio.to_thread(prepare_clip, rec.input, rec.output, request, config,
                                                               options, progress, rec.sha256)
        except InputError as exc:
            rec.status, rec.error = "failed", str(exc)
            continue
        plans[i] = plan
        rec.frames, rec.chunks = plan.frames, len(plan.chunks)
        rec.cost_estimate_usd = round(estimate_fal_cost(plan, request), 6) if kind == "fal" else 0.0
    total = sum(r.cost_estimate_usd for r in records if r.status == "pending")
    todo = sum(1 for r in records if r.status == "pending")
    if kind == "fal":
        sink.overall(0, n, f"fal estimate for the {todo} clip(s) to run: ${total:.4f} "
                           f"({sum(len(p.chunks) for p in plans.values())} request(s)); chunks saved by an earlier "
                           f"run are reused, not paid again")
        if max_total_cost_usd and total > max_total_cost_usd:
            raise InputError("max_total_cost_usd", f"the batch's estimated fal cost ${total:.4f} ({todo} clip(s)) is "
                                                   f"above the cap of ${max_total_cost_usd:.4f}; nothing was uploaded. "
                                                   f"Raise the cap, or run fewer clips / a smaller canvas")
    for rec, key in zip(records, keys):
        state.clips[key] = rec
    state.save()

    # 3. run
    finished = {"n": sum(1 for r in records if r.status in ("skipped", "failed"))}

    async def one(i: int) -> None:
        rec = records[i]
        name = os.path.basename(rec.input)
        progress = ClipProgress(sink, i, n, name)
        rec.status, t = "running", time.monotonic()
        state.save()
        try:
            res = await run_long_async(rec.input, rec.output, request, canvas, config, options, progress,
                                       semaphore=semaphore)
        except (asyncio.CancelledError, KeyboardInterrupt, Interrupted):
            rec.status, rec.error = "interrupted", "stopped; re-run the same command to resume"
            raise
        except Exception as exc:  # noqa: BLE001 - one clip's failure does not stop the batch
            rec.status, rec.error = "failed", str(exc) or type(exc).__name__
            log.warning("batch: %s failed: %s", name, rec.error)
        else:
            rec.status, rec.error = "done", ""
            rec.frames, rec.chunks = res.frames, len(res.plan.chunks)
            rec.reused_chunks = sum(1 for c in res.chunks if c["reused"] == "saved")
            rec.recovered_chunks = sum(1 for c in res.chunks if c["reused"] == "attached")
            rec.request_ids = [c["request_id"] for c in res.chunks if c["request_id"]]
            rec.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        finally:
            rec.seconds = round(time.monotonic() - t, 2)
            state.save()
        finished["n"] += 1
        sink.overall(finished["n"], n, f"{name}: {rec.status}")

    semaphore = asyncio.Semaphore(concurrency)
    pending = [i for i, r in enumerate(records) if r.status == "pending"]
    try:
        if kind == "fal":
            clip_slots = asyncio.Semaphore(concurrency)

            async def gated(i: int) -> None:
                async with clip_slots:
                    await one(i)

            tasks = [asyncio.create_task(gated(i)) for i in pending]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        else:
            for i in pending:  # one GPU (or the CPU): one clip after another
                if sink.interrupted():
                    raise Interrupted("interrupted by the user")
                await one(i)
    finally:
        for rec in records:
            if rec.status in ("running", "pending"):
                rec.status, rec.error = "interrupted", "stopped before it finished; re-run the same command to resume"
        state.save()
        summary = BatchSummary(records, _totals(records, time.monotonic() - started))
        summary.summary_json, summary.summary_csv = state.write_summary(records, summary.totals)
    return summary


def run_batch(*args, **kwargs) -> BatchSummary:
    return asyncio.run(run_batch_async(*args, **kwargs))
