"""fal storage: CDN upload tokens, single uploads and multipart uploads (large files in parallel parts).

The key only fetches the storage token (from the REST host); uploads carry the token, never the key.
Uploads are idempotent: they retry on network trouble and 408/409/429/5xx, plus once on a 401 after a
fresh token.
"""
from __future__ import annotations

import asyncio
import logging
import math
import mimetypes
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import httpx

from .errors import FalError, body_json, short_text
from .hosts import DEFAULT_CDN_URL
from .http import OnProgress, SecretAuth, get_status_is_retryable, submit_error_is_retryable, \
    transport_error_is_transient

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MULTIPART_THRESHOLD = 100 * MiB  # larger files go up in parts
PART_SIZE = 10 * MiB
PART_CONCURRENCY = 4
READ_CHUNK = 1 * MiB
TOKEN_MARGIN_S = 60.0  # refresh a CDN token this long before it expires


@dataclass
class _StorageToken:
    auth: SecretAuth = field(repr=False)
    base_url: str
    refresh_at: float  # time.time()


class StorageMixin:
    """Uploads of `FalClient` (needs FalHttp's plumbing)."""

    async def _storage_token(self, force: bool = False) -> _StorageToken:
        assert self._token_lock is not None
        async with self._token_lock:
            tok = self._token
            if tok is not None and not force and time.time() < tok.refresh_at:
                return tok
            what = "fal storage token"
            url = f"{self.hosts.rest}/storage/auth/token"
            resp = await self._request("POST", url, what=what,
                                       params={"storage_type": "fal-cdn-v3"}, json={}, auth=self._key_auth(url),
                                       headers={"Accept": "application/json"})
            if not resp.is_success:
                raise self._response_error(resp, what)
            data = self._json(resp, what)
            if not isinstance(data, dict) or not data.get("token"):
                raise FalError(f"{what}: fal answered without a token")
            token = str(data["token"])
            self._secrets.add(token)
            now = time.time()
            expires = _parse_expiry(data.get("expires_at"), now)
            self._token = _StorageToken(SecretAuth(f"{data.get('token_type') or 'Bearer'} {token}"),
                                        str(data.get("base_url") or "").rstrip("/"),
                                        expires - min(TOKEN_MARGIN_S, max(0.0, expires - now) / 2))
            return self._token

    def _upload_base(self, tok: _StorageToken) -> str:
        """An overridden CDN host wins (proxies, tests); otherwise the token's base_url, then the default."""
        if self.hosts.cdn != DEFAULT_CDN_URL:
            return self.hosts.cdn
        return tok.base_url or self.hosts.cdn

    def _cdn_retry(self) -> Callable[[httpx.Response], bool]:
        """Retry rule for CDN requests: the usual statuses, plus one 401 after dropping the cached token."""
        state = {"renewed": False}

        def retry(resp: httpx.Response) -> bool:
            if resp.status_code == 401 and not state["renewed"]:
                state["renewed"] = True
                self._token = None
                return True
            return get_status_is_retryable(resp.status_code)

        return retry

    async def _token_auth(self) -> dict:
        return {"auth": (await self._storage_token()).auth}

    async def upload_file(self, path: str | os.PathLike, content_type: str | None = None, *,
                          file_name: str | None = None, on_progress: OnProgress | None = None,
                          multipart_threshold: int = MULTIPART_THRESHOLD, part_size: int = PART_SIZE,
                          concurrency: int = PART_CONCURRENCY) -> str:
        """Upload a local file to fal's CDN; returns its URL. Files over `multipart_threshold` go in parts."""
        path = os.fspath(path)
        file_name = file_name or os.path.basename(path) or "upload.bin"
        content_type = content_type or mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        size = os.path.getsize(path)
        if on_progress:
            on_progress(0, size)
        if size > multipart_threshold:
            url = await self._upload_multipart(path, size, content_type, file_name, on_progress,
                                               max(1, int(part_size)), max(1, int(concurrency)))
        else:
            url = await self._upload_single(path, size, content_type, file_name, on_progress)
        if on_progress:
            on_progress(size, size)
        log.info("uploaded %s (%d bytes) to fal storage", file_name, size)
        return url

    async def _upload_single(self, path: str, size: int, content_type: str, file_name: str,
                             on_progress: OnProgress | None) -> str:
        what = f"upload of {file_name}"
        bodies: list[_FileBody] = []

        async def prepare() -> dict:
            body = _FileBody(path, 0, size, on_progress, size)
            bodies.append(body)
            return {**await self._token_auth(), "content": body if size else b""}

        tok = await self._storage_token()
        try:
            resp = await self._request(
                "POST", f"{self._upload_base(tok)}/files/upload", what=what, prepare=prepare,
                retry_status=self._cdn_retry(),
                headers={"Content-Type": content_type, "X-Fal-File-Name": file_name, "Content-Length": str(size),
                         "Accept": "application/json"})
        finally:
            for body in bodies:
                body.close()
        if not resp.is_success:
            raise self._response_error(resp, what, storage=resp.status_code == 401)
        return self._access_url(resp, what)

    def _access_url(self, resp: httpx.Response, what: str) -> str:
        data = self._json(resp, what)
        if not isinstance(data, dict) or not data.get("access_url"):
            raise FalError(self._redact(f"{what}: fal answered without access_url: {short_text(resp.text)}"))
        return str(data["access_url"])

    async def _upload_multipart(self, path: str, size: int, content_type: str, file_name: str,
                                on_progress: OnProgress | None, part_size: int, concurrency: int) -> str:
        what = f"multipart upload of {file_name}"
        tok = await self._storage_token()
        resp = await self._request(
            "POST", f"{self._upload_base(tok)}/files/upload/multipart", what=what, prepare=self._token_auth,
            retry_status=self._cdn_retry(),
            headers={"Content-Type": content_type, "X-Fal-File-Name": file_name, "Accept": "application/json"})
        if not resp.is_success:
            raise self._response_error(resp, what, storage=resp.status_code == 401)
        data = self._json(resp, what)
        if not isinstance(data, dict) or not data.get("access_url") or not data.get("uploadId"):
            raise FalError(self._redact(f"{what}: fal answered without access_url/uploadId: "
                                        f"{short_text(resp.text)}"))
        access_url, upload_id = str(data["access_url"]).rstrip("/"), str(data["uploadId"])
        n_parts = max(1, math.ceil(size / part_size))
        etags: dict[int, str] = {}
        done = [0]
        sem = asyncio.Semaphore(concurrency)

        async def put_part(number: int) -> None:
            async with sem:
                start = (number - 1) * part_size
                length = min(part_size, size - start)
                data = await asyncio.to_thread(_read_range, path, start, length)
                part_what = f"{what}, part {number} of {n_parts}"
                r = await self._request(
                    "PUT", f"{access_url}/multipart/{upload_id}/{number}", what=part_what, content=data,
                    headers={"Content-Type": content_type, "Accept-Encoding": "identity"},
                    prepare=self._token_auth, retry_status=self._cdn_retry())
                if not r.is_success:
                    raise self._response_error(r, part_what, storage=r.status_code == 401)
                etag = r.headers.get("etag")
                if not etag:
                    raise FalError(f"{part_what}: fal answered without an ETag")
                etags[number] = etag
                done[0] += length
                if on_progress:
                    on_progress(done[0], size)

        await _gather_or_cancel([put_part(n) for n in range(1, n_parts + 1)])
        sent = {"once": False}

        def retry_exc(exc: BaseException) -> bool:
            sent["once"] = sent["once"] or not submit_error_is_retryable(exc)
            return transport_error_is_transient(exc)

        resp = await self._request(
            "POST", f"{access_url}/multipart/{upload_id}/complete", what=what, prepare=self._token_auth,
            json={"parts": [{"partNumber": n, "etag": etags[n]} for n in sorted(etags)]},
            retry_exc=retry_exc, retry_status=self._cdn_retry())
        if resp.status_code == 404 and sent["once"]:
            log.info("%s: an earlier 'complete' got through before the connection broke", what)
            return access_url
        if not resp.is_success:
            raise self._response_error(resp, what, storage=resp.status_code == 401)
        body = body_json(resp)
        return str(body["access_url"]) if isinstance(body, dict) and body.get("access_url") else access_url


class _FileBody:
    """An async byte stream of path[start:start+length], read from disk in chunks; reports progress."""

    def __init__(self, path: str, start: int, length: int, on_progress: OnProgress | None, total: int):
        self.path, self.start, self.length = path, start, length
        self.on_progress, self.total = on_progress, total
        self._files: list = []

    async def __aiter__(self):
        f = open(self.path, "rb")
        self._files.append(f)
        try:
            f.seek(self.start)
            sent = 0
            while sent < self.length:
                chunk = await asyncio.to_thread(f.read, min(READ_CHUNK, self.length - sent))
                if not chunk:
                    raise FalError(f"{self.path} shrank while it was being uploaded")
                sent += len(chunk)
                if self.on_progress:
                    self.on_progress(self.start + sent, self.total)
                yield chunk
        finally:
            f.close()

    def close(self) -> None:
        for f in self._files:
            f.close()


async def _gather_or_cancel(coros: list[Awaitable]) -> list:
    """gather(); on the first failure (or our own cancellation) cancel the rest and wait for them."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _read_range(path: str, start: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(length)
    if len(data) != length:
        raise FalError(f"{path} shrank while it was being uploaded")
    return data


def _parse_expiry(value: Any, now: float) -> float:
    """`expires_at` (ISO 8601, maybe with Z) -> time.time() seconds; 5 minutes from now if unreadable."""
    if isinstance(value, (int, float)):
        return float(value)
    try:
        when = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return now + 300.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()
