"""The batch manifest next to the outputs, and the per-clip summary (JSON + CSV).

`ltx-outpaint-batch.json` maps a clip key (the input file's content hash + the request's hash) to what
happened to it: status, output, seconds, cost estimate, error. Re-running the same command reads it: a clip
whose output was finished is skipped; anything else runs again, and its fal chunks are found in the journal
(by job key) so a saved result is reused and a running job followed instead of submitted twice.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field

from ..jsonfile import read_object, write_atomic

MANIFEST = "ltx-outpaint-batch.json"
SUMMARY_JSON = "batch-summary.json"
SUMMARY_CSV = "batch-summary.csv"
STATUSES = ("pending", "running", "done", "skipped", "failed", "interrupted")
CSV_FIELDS = ("input", "status", "output", "seconds", "cost_estimate_usd", "frames", "chunks", "reused_chunks",
              "recovered_chunks", "error")


def request_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def clip_key(input_sha256: str, body: dict) -> str:
    return f"{input_sha256[:24]}-{request_hash(body)}"


@dataclass
class ClipRecord:
    input: str
    sha256: str
    output: str
    status: str = "pending"
    seconds: float = 0.0
    cost_estimate_usd: float = 0.0
    frames: int = 0
    chunks: int = 0
    reused_chunks: int = 0
    recovered_chunks: int = 0
    error: str = ""
    finished_at: str = ""
    request_ids: list[str] = field(default_factory=list)

    def row(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in CSV_FIELDS}


class BatchState:
    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, MANIFEST)
        self.clips: dict[str, ClipRecord] = {}
        self.load()

    def load(self) -> None:
        clips = read_object(self.path).get("clips")
        for key, rec in (clips if isinstance(clips, dict) else {}).items():
            try:
                self.clips[key] = ClipRecord(**rec)
            except TypeError:
                continue

    def finished(self, key: str) -> ClipRecord | None:
        """The record of a clip finished earlier whose output is still there."""
        rec = self.clips.get(key)
        if rec and rec.status in ("done", "skipped") and os.path.isfile(rec.output):
            return rec
        return None

    def save(self) -> None:
        write_atomic(self.path, {"version": 1, "clips": {k: asdict(v) for k, v in self.clips.items()}}, indent=1)

    def write_summary(self, records: list[ClipRecord], totals: dict) -> tuple[str, str]:
        """batch-summary.json and .csv for this run's clips (in input order); returns their paths."""
        js = os.path.join(self.out_dir, SUMMARY_JSON)
        cs = os.path.join(self.out_dir, SUMMARY_CSV)
        write_atomic(js, {"totals": totals, "clips": [r.row() | {"request_ids": r.request_ids} for r in records],
                          "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2)
        with open(cs + ".tmp", "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            for r in records:
                w.writerow(r.row())
        os.replace(cs + ".tmp", cs)
        return js, cs
