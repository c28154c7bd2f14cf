"""A small on-disk journal of remote requests, so a paid result survives a crash or restart.

One JSON file per request id (written atomically) in `<settings folder>/journal/`. An entry is written
right after fal accepts a submit and updated as the request progresses. States (`STATES`):

- submitted: fal accepted the job; it is being followed (or the process died while following it);
- saved: the result was downloaded (`result_path`);
- failed: fal finished the job with an error (`error` has fal's message), or it could not be followed;
- cancelled: fal accepted our cancel (`error` says why: interrupt, deadline, ...); `may_still_run` until fal
  confirms it (fal only signals a running job: it may finish, and be billed, anyway);
- recoverable: the job finished (or may finish) at fal and is billed, but its result is not saved yet;
- unknown: a submit whose answer never came (the connection broke after sending): fal may have created and
  billed a job; the entry has a local id (`unknown-...`), the request and the time, to find it on fal's
  dashboard.

`pending()` lists submitted, recoverable and unknown entries, and cancelled ones that may still run; the recover node / `ltx-outpaint recover
REQUEST_ID` re-attach to a request by its fal id. Entries never hold the API key.

`job_key` (optional) names the piece of work a request is for (a long clip's chunk, a batch clip: a hash of
the input file, the frame range and the request); `find(job_key)` lets a re-run pick the request up again
instead of submitting it twice.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field, fields

from ..settings import config_dir

STATES = ("submitted", "saved", "failed", "cancelled", "recoverable", "unknown")
PENDING = ("submitted", "recoverable", "unknown")


@dataclass
class JournalEntry:
    request_id: str
    endpoint_id: str
    status_url: str
    response_url: str
    cancel_url: str
    request: dict = field(default_factory=dict)  # the request body sent (no secrets)
    cost_estimate_usd: float | None = None
    submitted_at: float = field(default_factory=time.time)
    state: str = "submitted"
    result_path: str | None = None
    error: str | None = None
    job_key: str = ""
    may_still_run: bool = False  # cancelled, unconfirmed: fal may finish (and bill) it anyway


class Journal:
    def __init__(self, directory: str | None = None):
        self.directory = directory or os.path.join(config_dir(), "journal")
        os.makedirs(self.directory, exist_ok=True)

    def _path(self, request_id: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", request_id):
            raise ValueError(f"request_id: {request_id!r} is not a valid fal request id")
        return os.path.join(self.directory, f"{request_id}.json")

    def record_unknown(self, endpoint_id: str, request: dict, error: str,
                       cost_estimate_usd: float | None = None, job_key: str = "") -> JournalEntry:
        """Journal a submit whose outcome is unknown (no request id): a local id, state "unknown"."""
        local_id = f"unknown-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"
        return self.record(JournalEntry(local_id, endpoint_id, "", "", "", request=request,
                                        cost_estimate_usd=cost_estimate_usd, state="unknown", error=error,
                                        job_key=job_key))

    def record(self, entry: JournalEntry) -> JournalEntry:
        path = self._path(entry.request_id)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(asdict(entry), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return entry

    def update(self, request_id: str, **changes) -> JournalEntry:
        entry = self.get(request_id)
        if entry is None:
            raise KeyError(request_id)
        if "state" in changes:
            changes.setdefault("may_still_run", False)  # a new state is a new fact about the job
        for key, value in changes.items():
            setattr(entry, key, value)
        return self.record(entry)

    def get(self, request_id: str) -> JournalEntry | None:
        try:
            with open(self._path(request_id), encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        known = {f.name for f in fields(JournalEntry)}
        return JournalEntry(**{k: v for k, v in data.items() if k in known})

    def find(self, job_key: str) -> list[JournalEntry]:
        """Every entry recorded for `job_key`, oldest submit first."""
        return self.by_job_key().get(job_key, []) if job_key else []

    def by_job_key(self) -> dict[str, list[JournalEntry]]:
        """job_key -> its entries (oldest submit first), for every entry that has one (one pass over the folder)."""
        found: dict[str, list[JournalEntry]] = {}
        for name in os.listdir(self.directory):
            if name.endswith(".json"):
                try:
                    entry = self.get(name[:-5])
                except (ValueError, TypeError, OSError):
                    continue
                if entry is not None and entry.job_key:
                    found.setdefault(entry.job_key, []).append(entry)
        for entries in found.values():
            entries.sort(key=lambda e: e.submitted_at)
        return found

    def pending(self) -> list[JournalEntry]:
        entries = []
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(".json"):
                entry = self.get(name[:-5])
                if entry is not None and (entry.state in PENDING or entry.may_still_run):
                    entries.append(entry)
        return entries
