"""LoRAs given by URL, for the local backend: download once, check, cache under the LoRA folder.

Cache layout: ``<loras_dir>/ltx-outpaint-url-cache/<sha256(url)[:16]>-<name>.safetensors`` plus a
``.json`` sidecar with the URL (without query string or user info: they may hold tokens) and the
download time. A cached file is reused without any network request. Downloads go through the pack's
SSRF-safe downloader; files are only opened with `safetensors` (never unpickled).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from urllib.parse import unquote, urlsplit

from .download import DownloadPolicy, download, policy_from_env, redact
from .errors import InputError
from .loras import check_lora_file

log = logging.getLogger(__name__)

CACHE_DIR_NAME = "ltx-outpaint-url-cache"
MAX_LORA_BYTES = 3 << 30
_NAME_MAX = 80


def _basename(url: str) -> str:
    """A file-system-safe name from the URL path's last segment, without `.safetensors`."""
    try:
        last = unquote(urlsplit(url.strip()).path.rstrip("/").rsplit("/", 1)[-1])
    except ValueError:
        last = ""
    if last.lower().endswith(".safetensors"):
        last = last[: -len(".safetensors")]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", last).strip("._-")[:_NAME_MAX].rstrip("._-")
    return name or "lora"


def lora_cache_path(url: str, loras_dir: str) -> str:
    """Where `url`'s LoRA is (or will be) cached; stable for the same URL."""
    digest = hashlib.sha256(url.strip().encode("utf-8")).hexdigest()[:16]
    return os.path.join(os.path.abspath(loras_dir), CACHE_DIR_NAME, f"{digest}-{_basename(url)}.safetensors")


def _sidecar_path(path: str) -> str:
    return path[: -len(".safetensors")] + ".json"


def _write_sidecar(path: str, url: str, size: int) -> None:
    info = {"url": redact(url), "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "bytes": size}
    side = _sidecar_path(path)
    tmp = f"{side}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
        os.replace(tmp, side)
    except OSError as exc:  # the sidecar is informational; the cached LoRA is still good
        log.warning("could not write %s: %s", side, exc)
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_lora(url: str, loras_dir: str, *, policy: DownloadPolicy | None = None) -> str:
    """Return a local path to the safetensors LoRA at `url`, downloading it into the cache if needed.

    `policy` defaults to :func:`policy_from_env` with a 3 GiB cap. Raises :class:`InputError`
    (field "lora") if the URL is refused, the download fails, or the body is not a safetensors LoRA;
    nothing is left in the cache then.
    """
    path = lora_cache_path(url, loras_dir)
    if os.path.isfile(path):
        try:
            check_lora_file(path, field="lora")
            log.info("LoRA %s: using cached %s", redact(url), path)
            return path
        except InputError as exc:
            log.warning("cached LoRA %s is unusable (%s); downloading again", path, exc)
            os.unlink(path)
    if policy is None:
        policy = policy_from_env(max_bytes=MAX_LORA_BYTES)
    cache_dir = os.path.dirname(path)
    os.makedirs(cache_dir, exist_ok=True)
    # Temporary file in the cache folder itself, so the final move is an atomic rename.
    tmp = download(url, cache_dir, policy=policy, field="lora", suffix=".safetensors")
    try:
        try:
            check_lora_file(tmp, field="lora")
        except InputError as exc:
            reason = str(exc).split(": ", 1)[-1].replace(os.path.basename(tmp), "the downloaded file")
            raise InputError("lora", f"refused {redact(url)}: {reason}") from None
        size = os.path.getsize(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _write_sidecar(path, url, size)
    log.info("LoRA %s cached as %s", redact(url), path)
    return path
