"""fal transfers: saving a result (http(s) or `data:` URI) atomically, resuming a broken download.

Downloads never carry the key. A download that breaks off resumes with a Range request (starting over when
the server does not honour it); idempotent retry rules as elsewhere.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
from urllib.parse import unquote_to_bytes

import httpx

from .errors import FalError, short_text
from .http import OnProgress, get_status_is_retryable, parse_retry_after, transport_error_is_transient

log = logging.getLogger(__name__)


class TransferMixin:
    """Downloads of `FalClient` (needs FalHttp's plumbing)."""

    async def download(self, url: str, dest_path: str | os.PathLike, *, on_progress: OnProgress | None = None,
                       expected_size: int | None = None) -> str:
        """Save `url` (http(s) or a `data:` URI) to `dest_path` atomically; resumes a broken download."""
        dest = os.fspath(dest_path)
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        partial = dest + ".partial"
        try:
            if url.startswith("data:"):
                data = decode_data_uri(url)
                _check_size(len(data), expected_size, url)
                await asyncio.to_thread(_write_file, partial, data)
                if on_progress:
                    on_progress(len(data), len(data))
            else:
                await self._download_to(url, partial, on_progress, expected_size)
            os.replace(partial, dest)
        except BaseException:
            _remove_quietly(partial)
            raise
        log.info("downloaded %s", dest)
        return dest

    async def _download_to(self, url: str, partial: str, on_progress: OnProgress | None,
                           expected_size: int | None) -> None:
        http = self._client()
        shown = short_text(url, 120)
        what = f"download of {shown}"
        done, total, failures = 0, expected_size, 0
        with open(partial, "wb") as f:
            while True:
                headers = {"Accept-Encoding": "identity"}
                if done:
                    headers["Range"] = f"bytes={done}-"
                got = 0
                try:
                    async with http.stream("GET", url, headers=headers, follow_redirects=True) as resp:
                        if resp.status_code == 416 and done and total is not None and done >= total:
                            break
                        if not resp.is_success:
                            await resp.aread()
                            failures += 1
                            if get_status_is_retryable(resp.status_code) and failures < self.retry.max_attempts:
                                await self._pause(self.retry, failures,
                                                  parse_retry_after(resp.headers.get("retry-after")), what,
                                                  f"HTTP {resp.status_code}")
                                continue
                            raise self._response_error(resp, what)
                        encoded = resp.headers.get("content-encoding", "identity").lower() not in ("", "identity")
                        if done and (resp.status_code != 206 or encoded or _range_start(resp) != done):
                            log.info("%s: the server did not resume at byte %d; starting over", what, done)
                            f.seek(0)
                            f.truncate()
                            done = 0
                        length = resp.headers.get("content-length")
                        if not encoded and length and length.isdigit():
                            total = done + int(length)
                        if on_progress:
                            on_progress(done, total)
                        async for chunk in resp.aiter_bytes():
                            f.write(chunk)
                            done += len(chunk)
                            got += len(chunk)
                            if on_progress:
                                on_progress(done, total)
                    if total is None or done >= total:
                        break
                    raise httpx.RemoteProtocolError(f"the body ended at byte {done} of {total}")
                except httpx.TransportError as exc:
                    failures = 0 if got else failures + 1
                    if not transport_error_is_transient(exc) or failures >= self.retry.max_attempts:
                        raise FalError(self._redact(f"{what} failed at byte {done}: {self._describe(exc)}")) from exc
                    log.info("%s broke off at byte %d of %s (%s); resuming", what, done, total,
                             self._redact(self._describe(exc)))
                    await asyncio.sleep(self.retry.delay(max(failures, 1)))
        _check_size(done, expected_size, shown)
        if total is not None and done != total:
            raise FalError(f"{what}: got {done} bytes, the server announced {total}")


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _range_start(resp: httpx.Response) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-", resp.headers.get("content-range", ""))
    return int(m.group(1)) if m else None


def _check_size(size: int, expected: int | None, what: str) -> None:
    if expected is not None and size != int(expected):
        raise FalError(f"download of {what}: got {size} bytes, fal said the file has {int(expected)}")


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a `data:[type][;base64],payload` URI."""
    head, sep, payload = uri.partition(",")
    if not head.startswith("data:") or not sep:
        raise FalError(f"not a data URI: {uri[:40]}...")
    if head.lower().endswith(";base64"):
        try:
            return base64.b64decode("".join(payload.split()), validate=False)
        except (binascii.Error, ValueError) as exc:
            raise FalError(f"unreadable base64 data URI: {exc}") from exc
    return unquote_to_bytes(payload)
