"""A small on-disk journal of remote requests, so a paid result survives a crash or restart.

One JSON file per request id (written atomically) in `<settings folder>/journal/`. An entry is written
right after fal accepts a submit and updated as the request progresses; `pending()` lists those whose
result was not saved yet, and the recover node / `ltx-outpaint recover REQUEST_ID` re-attach to them.
Entries never hold the API key.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field

from ..settings import config_dir

STATES = ("submitted", "saved", "failed", "cancelled")


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


class Journal:
    def __init__(self, directory: str | None = None):
        self.directory = directory or os.path.join(config_dir(), "journal")
        os.makedirs(self.directory, exist_ok=True)

    def _path(self, request_id: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", request_id):
            raise ValueError(f"request_id: {request_id!r} is not a valid fal request id")
        return os.path.join(self.directory, f"{request_id}.json")

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
        for key, value in changes.items():
            setattr(entry, key, value)
        return self.record(entry)

    def get(self, request_id: str) -> JournalEntry | None:
        try:
            with open(self._path(request_id), encoding="utf-8") as f:
                return JournalEntry(**json.load(f))
        except FileNotFoundError:
            return None

    def pending(self) -> list[JournalEntry]:
        entries = []
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(".json"):
                entry = self.get(name[:-5])
                if entry is not None and entry.state == "submitted":
                    entries.append(entry)
        return entries
