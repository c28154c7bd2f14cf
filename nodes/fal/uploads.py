"""Content-hash cache of fal uploads, so the same clip or LoRA goes up once.

`uploads.json` (settings folder) maps a file's sha256 to the fal URL it was uploaded to. fal does not publish
how long its CDN keeps uploads: an entry is trusted for `UPLOAD_CACHE_TTL_S`, and one that fal can no longer
download is dropped with `forget()` (the backend then uploads the file again, once).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time

from ..backends import Progress
from ..jsonfile import read_object, write_atomic
from ..settings import config_dir

log = logging.getLogger(__name__)

UPLOAD_CACHE_TTL_S = 7 * 24 * 3600


class UploadCache:
    """Content-hash -> fal URL (JSON file, rewritten atomically)."""

    def __init__(self, path: str | None = None):
        self.path = path or os.path.join(config_dir(), "uploads.json")

    def _load(self) -> dict:
        return read_object(self.path)

    def _save(self, cache: dict) -> None:
        write_atomic(self.path, cache)

    async def upload(self, client, file_path: str, progress: Progress | None = None) -> str:
        return (await self.upload_info(client, file_path, progress))[0]

    async def upload_info(self, client, file_path: str, progress: Progress | None = None) -> tuple[str, bool]:
        """(fal URL, True when it came from the cache) for `file_path`, uploading it when needed."""
        digest = await asyncio.to_thread(sha256_file, file_path)
        name = os.path.basename(file_path)
        hit = self._load().get(digest)
        if isinstance(hit, dict) and hit.get("url") and time.time() - hit.get("uploaded_at", 0) < UPLOAD_CACHE_TTL_S:
            log.info("reusing the fal upload of %s (same content)", name)
            return str(hit["url"]), True

        def report(done: int, total: int | None) -> None:
            if progress is not None and total:
                progress.report(2 + 18 * done / total, 100,
                                f"fal: uploading {name} {done / 2**20:.1f}/{total / 2**20:.1f} MiB")

        url = await client.upload_file(file_path, on_progress=report)
        cache = self._load()
        cache[digest] = {"url": url, "uploaded_at": time.time(), "name": name}
        self._save(cache)
        return url, False

    def forget(self, url: str) -> int:
        """Drop every entry pointing at `url` (fal could not download it); returns how many."""
        cache = self._load()
        stale = [k for k, v in cache.items() if isinstance(v, dict) and v.get("url") == url]
        for k in stale:
            del cache[k]
        if stale:
            self._save(cache)
        return len(stale)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
