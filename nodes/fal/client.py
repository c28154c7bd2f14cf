"""fal.ai over plain httpx: queue (submit, status, SSE, result, cancel), CDN uploads and result downloads.

Follows fal's own clients (shared/notes/fal-protocol.md) with deliberate differences:
- a submit is retried only when it certainly created no job, so a job is never billed twice;
- the API key goes only to the queue and REST hosts (never to the CDN or a download URL) and never appears
  in an exception, a log line or a repr;
- every base URL can be overridden (`FalHosts`, env `LTX_OUTPAINT_FAL_*_URL`) for tests and proxies.

Use one `FalClient` per event loop: `async with FalClient(key) as fal: ...`.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import logging
import math
import mimetypes
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from urllib.parse import unquote_to_bytes

import httpx

from ..errors import InputError

log = logging.getLogger(__name__)

DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_REST_URL = "https://rest.fal.ai"
DEFAULT_CDN_URL = "https://v3.fal.media"
ENV_QUEUE_URL = "LTX_OUTPAINT_FAL_QUEUE_URL"
ENV_REST_URL = "LTX_OUTPAINT_FAL_REST_URL"
ENV_CDN_URL = "LTX_OUTPAINT_FAL_CDN_URL"
NAMESPACES = ("workflows", "comfy")  # a first segment that comes before owner/alias

MiB = 1024 * 1024
MULTIPART_THRESHOLD = 100 * MiB  # larger files go up in parts
PART_SIZE = 10 * MiB
PART_CONCURRENCY = 4
READ_CHUNK = 1 * MiB
TOKEN_MARGIN_S = 60.0  # refresh a CDN token this long before it expires
CANCEL_TIMEOUT_S = 5.0
SSE_MAX_FAILURES = 3  # consecutive broken streams before falling back to polling
SSE_DRAIN_TIMEOUT_S = 1.0  # after COMPLETED, how long to wait for the stream's end
USER_AGENT = "comfyui-ltx-outpaint (httpx)"
KEY_HELP = ("fal keys come from fal.ai/dashboard/keys; set FAL_KEY (or FAL_KEY_ID + FAL_KEY_SECRET) "
            "or store the key in the pack's settings")
CANCELLED_ERROR_TYPES = ("request_cancelled",)

OnProgress = Callable[[int, "int | None"], Any]


# ----------------------------------------------------------------------------------------------- hosts / ids


@dataclass(frozen=True)
class FalHosts:
    """Base URLs of fal's queue, REST (storage tokens) and CDN (uploads) services, without trailing '/'."""

    queue: str = DEFAULT_QUEUE_URL
    rest: str = DEFAULT_REST_URL
    cdn: str = DEFAULT_CDN_URL

    def __post_init__(self):
        for name in ("queue", "rest", "cdn"):
            value = str(getattr(self, name)).strip().rstrip("/")
            if not re.match(r"^https?://[^/]+", value):
                raise InputError(f"fal_{name}_url", f"must be an http(s) URL, got {value!r}")
            object.__setattr__(self, name, value)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "FalHosts":
        """Defaults, overridden by env LTX_OUTPAINT_FAL_QUEUE_URL / _REST_URL / _CDN_URL when set."""
        env = os.environ if environ is None else environ
        return cls(queue=env.get(ENV_QUEUE_URL, "").strip() or DEFAULT_QUEUE_URL,
                   rest=env.get(ENV_REST_URL, "").strip() or DEFAULT_REST_URL,
                   cdn=env.get(ENV_CDN_URL, "").strip() or DEFAULT_CDN_URL)


@dataclass(frozen=True)
class EndpointId:
    """A fal endpoint id split like fal's clients do: `[namespace/]owner/alias[/path]`."""

    owner: str
    alias: str
    path: str | None = None
    namespace: str | None = None

    @property
    def app(self) -> str:
        """`[namespace/]owner/alias`: the part the status, result and cancel URLs use."""
        return f"{self.namespace}/{self.owner}/{self.alias}" if self.namespace else f"{self.owner}/{self.alias}"

    def __str__(self) -> str:
        """The full id, where a submit goes."""
        return self.app + (f"/{self.path}" if self.path else "")


def split_endpoint_id(endpoint_id: str) -> EndpointId:
    """Split an endpoint id exactly as fal-client does (`123-my-app` is the legacy form of `123/my-app`)."""
    parts = str(endpoint_id).split("/")
    if len(parts) == 1:
        m = re.fullmatch(r"([0-9]+)-([a-zA-Z0-9-]+)", parts[0])
        if not m:
            raise ValueError(f"invalid fal endpoint id {endpoint_id!r}: expected owner/alias[/path]")
        parts = [m.group(1), m.group(2)]
    namespace = None
    if parts[0] in NAMESPACES:
        namespace, parts = parts[0], parts[1:]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"invalid fal endpoint id {endpoint_id!r}: expected [namespace/]owner/alias[/path]")
    return EndpointId(parts[0], parts[1], "/".join(parts[2:]) or None, namespace)


# ----------------------------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts (first try included) and jittered exponential backoff, like fal-client's."""

    max_attempts: int = 10
    base_delay_s: float = 0.1
    max_delay_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based); a server's Retry-After wins (capped)."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_delay_s)
        d = min(self.base_delay_s * 2.0 ** min(max(attempt, 1) - 1, 60), self.max_delay_s)
        return min(d * random.uniform(0.5, 1.5), self.max_delay_s)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (a number or an HTTP date), or None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def is_ingress_error(status_code: int, headers: Mapping[str, str]) -> bool:
    """A 502/503/504 from fal's ingress (no `x-fal-request-id`): the request never reached fal's queue."""
    return status_code in (502, 503, 504) and not any(k.lower() == "x-fal-request-id" for k in headers)


def submit_error_is_retryable(exc: BaseException) -> bool:
    """A submit that failed this way was certainly not sent (so created no job)."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def submit_status_is_retryable(status_code: int, headers: Mapping[str, str]) -> bool:
    """429 and ingress 5xx created no job; anything else might have."""
    return status_code == 429 or is_ingress_error(status_code, headers)


def transport_error_is_transient(exc: BaseException) -> bool:
    """Network trouble worth another try for an idempotent request."""
    return isinstance(exc, httpx.TransportError) and not isinstance(
        exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError))


def get_status_is_retryable(status_code: int) -> bool:
    """Statuses worth retrying for idempotent requests (GET status, token, CDN)."""
    return status_code in (408, 409, 429) or status_code >= 500


# ----------------------------------------------------------------------------------------------- errors


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every secret (of 4+ characters) replaced by `***`."""
    out = str(text)
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        out = out.replace(secret, "***")
    return out


def _key_secrets(key: str) -> list[str]:
    return [key, *key.split(":")] if ":" in key else [key]


class FalError(Exception):
    """A fal request failed. `detail` is fal's `detail` (string or JSON), when it sent one."""

    def __init__(self, message: str, *, status_code: int | None = None, error_type: str | None = None,
                 request_id: str | None = None, detail: Any = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_type = error_type
        self.request_id = request_id
        self.detail = detail


class FalAuthError(FalError):
    """401/403: the key is missing, invalid or not allowed to do this."""


@dataclass(frozen=True)
class FalFieldError:
    """One entry of a 422: `field` is `loc` without "body", dotted (e.g. `loras.0.scale`)."""

    loc: tuple
    field: str
    msg: str
    type: str


class FalValidationError(FalError):
    """422: fal rejected the input; `errors` names every bad field (empty when fal sent plain text)."""

    def __init__(self, message: str, errors: list[FalFieldError] | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.errors = list(errors or [])


class FalJobError(FalError):
    """The job ran (or was scheduled) and failed; carries fal's message and `error_type`."""


class FalTimeout(FalError):
    """A deadline passed before the job finished."""


class FalCancelled(FalError):
    """The job was cancelled."""


def field_errors(detail: Any) -> list[FalFieldError]:
    """FastAPI-style 422 `detail` -> field errors ([] for a plain-string detail)."""
    items = detail if isinstance(detail, list) else [detail] if isinstance(detail, dict) else []
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        raw = item.get("loc") or ()
        loc = tuple(raw) if isinstance(raw, (list, tuple)) else (raw,)
        path = loc[1:] if loc and loc[0] == "body" else loc
        out.append(FalFieldError(loc, ".".join(str(p) for p in path), str(item.get("msg", "")),
                                 str(item.get("type", ""))))
    return out


def _body_json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _short_text(text: str, limit: int = 300) -> str:
    text = re.sub(r"<[^>]+>", " ", text)  # nginx error pages
    text = re.sub(r"\s+", " ", text).strip()
    return text[:limit] + ("..." if len(text) > limit else "")


# ----------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class QueueHandle:
    """A queued fal request; store `to_dict()` in a journal to re-attach later."""

    endpoint_id: str
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str

    @classmethod
    def for_request(cls, endpoint_id: str, request_id: str, queue_url: str = DEFAULT_QUEUE_URL) -> "QueueHandle":
        """The URLs fal uses for a request id (as fal-client builds them when it only has the id)."""
        base = f"{queue_url.rstrip('/')}/{split_endpoint_id(endpoint_id).app}/requests/{request_id}"
        return cls(endpoint_id, request_id, base + "/status", base, base + "/cancel")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], queue_url: str = DEFAULT_QUEUE_URL) -> "QueueHandle":
        """Inverse of `to_dict`; missing URLs are rebuilt from the endpoint id and `queue_url`."""
        built = cls.for_request(str(data["endpoint_id"]), str(data["request_id"]), queue_url)
        return cls(**{f.name: str(data.get(f.name) or getattr(built, f.name)) for f in fields(cls)})


@dataclass(frozen=True)
class StatusUpdate:
    """One status of a queued request (`raw` is fal's JSON)."""

    status: str
    queue_position: int | None = None
    logs: list | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> "StatusUpdate":
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            raise FalError(f"fal sent a status without 'status': {_short_text(json.dumps(data, default=str))}")
        pos = data.get("queue_position")
        return cls(data["status"], pos if isinstance(pos, int) else None,
                   data.get("logs") if isinstance(data.get("logs"), list) else None, data)

    @property
    def done(self) -> bool:
        return self.status == "COMPLETED"

    @property
    def error(self) -> str | None:
        return self.raw.get("error")

    @property
    def error_type(self) -> str | None:
        return self.raw.get("error_type")


@dataclass(frozen=True)
class FalResult:
    """A completed request's output. `billable_units` from `x-fal-billable-units`, when sent."""

    data: dict
    request_id: str
    billable_units: int | None = None
    headers: dict = field(default_factory=dict, repr=False)


def parse_billable_units(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        try:
            return math.ceil(float(value))
        except (ValueError, OverflowError):
            return None


# ----------------------------------------------------------------------------------------------- SSE


class SSEParser:
    """Server-sent events, line by line: `feed(line)` returns an event's data when a blank line ends it."""

    def __init__(self):
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):  # comment / keep-alive
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None  # event / id / retry fields are not needed here

    def flush(self) -> str | None:
        """The pending event's data (also at the end of the stream), or None."""
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


class _StreamBroken(Exception):
    """The SSE stream could not be used (non-2xx, not event-stream, ended early)."""


# ----------------------------------------------------------------------------------------------- client


class _SecretAuth(httpx.Auth):
    """Sets the Authorization header; its repr never shows the value."""

    def __init__(self, value: str):
        self._value = value

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = self._value
        yield request

    def __repr__(self) -> str:
        return "<Authorization hidden>"


@dataclass
class _StorageToken:
    auth: _SecretAuth = field(repr=False)
    base_url: str
    refresh_at: float  # time.time()


class FalClient:
    """Async fal client: `async with FalClient(key, hosts) as fal:` (one per event loop).

    `transport` replaces httpx's network transport (tests, proxies); leave it None normally.
    """

    def __init__(self, key: str, hosts: FalHosts = FalHosts(), retry: RetryPolicy = RetryPolicy(),
                 timeout_s: float = 60.0, *, transport: httpx.AsyncBaseTransport | None = None):
        key = (key or "").strip()
        if key.lower().startswith("key "):
            key = key[4:].strip()
        if not key:
            raise FalAuthError("no fal key given: " + KEY_HELP)
        self.hosts = hosts
        self.retry = retry
        self.timeout_s = float(timeout_s)
        self._auth = _SecretAuth(f"Key {key}")
        self._secrets: set[str] = set(_key_secrets(key))
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: _StorageToken | None = None
        self._token_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"FalClient(hosts={self.hosts!r}, key=<hidden>, open={self._http is not None})"

    async def __aenter__(self) -> "FalClient":
        if self._http is not None:
            raise RuntimeError("this FalClient is already open")
        self._loop = asyncio.get_running_loop()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 15.0)),
            headers={"User-Agent": USER_AGENT}, transport=self._transport)
        self._token_lock = asyncio.Lock()
        return self

    async def __aexit__(self, *exc_info) -> None:
        http, self._http, self._token = self._http, None, None
        if http is not None:
            await http.aclose()

    # ------------------------------------------------------------------ plumbing

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("use the FalClient inside `async with FalClient(...) as client:`")
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("this FalClient belongs to another event loop; open a new one in this loop")
        return self._http

    def _redact(self, text: Any) -> str:
        return redact(str(text), self._secrets)

    def _redact_detail(self, detail: Any) -> Any:
        if detail is None or isinstance(detail, (int, float, bool)):
            return detail
        if isinstance(detail, str):
            return self._redact(detail)
        try:
            return json.loads(self._redact(json.dumps(detail)))
        except (TypeError, ValueError):
            return self._redact(detail)

    @staticmethod
    def _describe(exc: BaseException) -> str:
        text = str(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    async def _pause(self, policy: RetryPolicy, attempt: int, retry_after: float | None, what: str,
                     why: str) -> None:
        delay = policy.delay(attempt, retry_after)
        log.info("%s: %s; retrying in %.2f s (attempt %d of %d)", what, self._redact(why), delay, attempt + 1,
                 policy.max_attempts)
        await asyncio.sleep(delay)

    async def _request(self, method: str, url: str, *, what: str,
                       retry_exc: Callable[[BaseException], bool] = transport_error_is_transient,
                       retry_status: Callable[[httpx.Response], bool] = lambda r: get_status_is_retryable(
                           r.status_code),
                       policy: RetryPolicy | None = None,
                       prepare: Callable[[], Awaitable[dict]] | None = None,
                       sent_hint: str = "", **kwargs) -> httpx.Response:
        """Send with retries; returns the last response (maybe non-2xx); raises FalError on network failure.

        `prepare()` gives per-attempt request arguments (auth, a fresh body); `sent_hint` is appended to the
        error when the request may have been sent.
        """
        policy = policy or self.retry
        http = self._client()
        attempt = 0
        while True:
            attempt += 1
            extra = await prepare() if prepare else {}
            try:
                resp = await http.request(method, url, **kwargs, **extra)
            except httpx.TransportError as exc:
                if attempt < policy.max_attempts and retry_exc(exc):
                    await self._pause(policy, attempt, None, what, self._describe(exc))
                    continue
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                hint = "" if submit_error_is_retryable(exc) else sent_hint
                raise FalError(self._redact(f"{what} failed{tries}: {self._describe(exc)}{hint}"),
                               detail=self._redact(self._describe(exc))) from exc
            if resp.is_success or attempt >= policy.max_attempts or not retry_status(resp):
                return resp
            await self._pause(policy, attempt, parse_retry_after(resp.headers.get("retry-after")), what,
                              f"HTTP {resp.status_code}")

    def _response_error(self, resp: httpx.Response, what: str, *, cls: type = FalError,
                        request_id: str | None = None, error_type: str | None = None,
                        storage: bool = False) -> FalError:
        """Map a non-2xx response to FalAuthError (401/403), FalValidationError (422) or `cls`."""
        status = resp.status_code
        body = _body_json(resp)
        detail = body.get("detail") if isinstance(body, dict) else None
        if detail is None:
            detail = _short_text(resp.text) or resp.reason_phrase
        detail = self._redact_detail(detail)
        error_type = (body.get("error_type") if isinstance(body, dict) else None) or \
            resp.headers.get("x-fal-error-type") or error_type
        rid = resp.headers.get("x-fal-request-id") or request_id
        text = detail if isinstance(detail, str) else _short_text(json.dumps(detail), 500)
        common = dict(status_code=status, error_type=error_type, request_id=rid, detail=detail)
        if status in (401, 403) and storage:
            return FalAuthError(self._redact(f"{what} failed: fal storage refused the upload token "
                                             f"(HTTP {status}: {text})"), **common)
        if status == 401:
            return FalAuthError(self._redact(f"{what} failed: fal rejected the API key (HTTP 401: {text}); the key "
                                             f"is missing or invalid. {KEY_HELP}"), **common)
        if status == 403:
            return FalAuthError(self._redact(
                f"{what} failed: forbidden (HTTP 403: {text}); the key is valid but may not do this (no access "
                f"to this endpoint, or the account is locked or out of balance: see fal.ai/dashboard)"), **common)
        if status == 422:
            errors = field_errors(detail)
            listed = "; ".join(f"{e.field or 'body'}: {e.msg}" for e in errors) if errors else text
            return FalValidationError(self._redact(f"fal rejected the input (HTTP 422): {listed}"), errors,
                                      **common)
        kind = f" ({error_type})" if error_type else ""
        ref = f" [request {rid}]" if rid and rid not in what else ""
        return cls(self._redact(f"{what} failed: HTTP {status}{kind}: {text}{ref}"), **common)

    def _json(self, resp: httpx.Response, what: str) -> Any:
        data = _body_json(resp)
        if data is None:
            raise FalError(self._redact(f"{what}: fal answered HTTP {resp.status_code} without JSON: "
                                        f"{_short_text(resp.text)}"), status_code=resp.status_code)
        return data

    # ------------------------------------------------------------------ queue

    async def submit(self, endpoint_id: str, payload: dict, *, headers: Mapping[str, str] | None = None
                     ) -> QueueHandle:
        """Queue a request. Retried only when it certainly created no job (never billed twice)."""
        ep = split_endpoint_id(endpoint_id)
        what = f"fal submit to {ep}"
        extra = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        resp = await self._request(
            "POST", f"{self.hosts.queue}/{ep}", what=what, json=payload, headers=extra, auth=self._auth,
            retry_exc=submit_error_is_retryable,
            retry_status=lambda r: submit_status_is_retryable(r.status_code, r.headers),
            sent_hint=("; it was not retried because it may have reached fal and created a job (a retry could "
                       "bill twice): check fal.ai/dashboard/requests before submitting again"))
        if not resp.is_success:
            raise self._response_error(resp, what)
        data = self._json(resp, what)
        rid = (data.get("request_id") if isinstance(data, dict) else None) or resp.headers.get("x-fal-request-id")
        if not rid:
            raise FalError(self._redact(f"{what}: fal answered without a request_id: {_short_text(resp.text)}"),
                           status_code=resp.status_code)
        built = QueueHandle.for_request(str(ep), str(rid), self.hosts.queue)
        handle = QueueHandle(str(ep), str(rid), data.get("status_url") or built.status_url,
                             data.get("response_url") or built.response_url,
                             data.get("cancel_url") or built.cancel_url)
        log.info("fal request %s queued on %s (position %s)", rid, ep, data.get("queue_position"))
        return handle

    async def status(self, handle: QueueHandle, logs: bool = True) -> StatusUpdate:
        """The request's current status (retried on network trouble, 408/409/429/5xx)."""
        what = f"status of fal request {handle.request_id}"
        resp = await self._request("GET", handle.status_url, what=what, params={"logs": "1"} if logs else None,
                                   auth=self._auth)
        if not resp.is_success:
            raise self._response_error(resp, what, request_id=handle.request_id)
        return StatusUpdate.from_json(self._json(resp, what))

    async def watch(self, handle: QueueHandle, *, use_sse: bool = True, poll_interval_s: float = 0.5,
                    logs: bool = True) -> AsyncIterator[StatusUpdate]:
        """Yield status updates until COMPLETED (inclusive); a failed job raises FalJobError (or FalCancelled).

        SSE first (reconnecting when the stream breaks); after SSE_MAX_FAILURES broken streams in a row,
        polls `status` every `poll_interval_s`.
        """
        last: dict | None = None
        failures = 0
        while use_sse and failures < SSE_MAX_FAILURES:
            try:
                async for update in self._sse(handle, logs):
                    failures = 0
                    if update.raw == last:
                        continue  # a reconnect repeats the current status
                    last = update.raw
                    if update.done:
                        await self._raise_if_failed(handle, update)
                    yield update
                    if update.done:
                        return
                why = "the stream ended before COMPLETED"
            except (_StreamBroken, httpx.TransportError) as exc:
                why = self._redact(self._describe(exc))
            failures += 1
            if failures < SSE_MAX_FAILURES:
                log.info("fal status stream of %s broke (%s); reconnecting", handle.request_id, why)
                await asyncio.sleep(self.retry.delay(failures))
            else:
                log.info("fal status stream of %s broke %d times (%s); polling instead", handle.request_id,
                         failures, why)
        while True:
            update = await self.status(handle, logs)
            if update.raw != last:
                last = update.raw
                if update.done:
                    await self._raise_if_failed(handle, update)
                yield update
            if update.done:
                return
            await asyncio.sleep(poll_interval_s)

    async def _sse(self, handle: QueueHandle, logs: bool) -> AsyncIterator[StatusUpdate]:
        what = f"status stream of fal request {handle.request_id}"
        timeout = httpx.Timeout(max(self.timeout_s, 30.0), connect=min(self.timeout_s, 15.0))
        async with self._client().stream("GET", handle.status_url + "/stream", params={"logs": "1"} if logs else None,
                                         headers={"Accept": "text/event-stream"}, auth=self._auth,
                                         timeout=timeout) as resp:
            if not resp.is_success:
                await resp.aread()
                if resp.status_code in (401, 403):
                    raise self._response_error(resp, what, request_id=handle.request_id)
                raise _StreamBroken(f"HTTP {resp.status_code}")
            if "text/event-stream" not in resp.headers.get("content-type", ""):
                raise _StreamBroken(f"not an event stream ({resp.headers.get('content-type')})")
            parser = SSEParser()
            lines = resp.aiter_lines()
            async for line in lines:
                data = parser.feed(line)
                if data is not None:
                    update = self._parse_event(data, handle)
                    if update is not None:
                        if update.done:
                            # Read to the end (fal closes the stream after COMPLETED) so the connection goes
                            # back to the pool and the result request reuses it (no new TLS handshake).
                            await _drain(lines, SSE_DRAIN_TIMEOUT_S)
                            yield update
                            return
                        yield update
            data = parser.flush()
            if data is not None:
                update = self._parse_event(data, handle)
                if update is not None:
                    yield update

    def _parse_event(self, data: str, handle: QueueHandle) -> StatusUpdate | None:
        try:
            return StatusUpdate.from_json(json.loads(data))
        except (ValueError, FalError):
            log.debug("ignoring an unreadable status event of %s: %s", handle.request_id,
                      self._redact(_short_text(data, 200)))
            return None

    async def _raise_if_failed(self, handle: QueueHandle, update: StatusUpdate) -> None:
        """Raise for a COMPLETED status that carries an error (details from the result URL, when it has them)."""
        if update.error is None and update.error_type is None:
            return
        rid = handle.request_id
        common = dict(error_type=update.error_type, request_id=rid, detail=self._redact_detail(update.error))
        if update.error_type in CANCELLED_ERROR_TYPES:
            raise FalCancelled(self._redact(f"fal request {rid} was cancelled: {update.error}"), **common)
        try:  # fal answers the result URL with the model's own error status and detail
            resp = await self._client().get(handle.response_url, auth=self._auth, timeout=10.0)
        except httpx.TransportError:
            resp = None
        if resp is not None and not resp.is_success and resp.status_code not in (401, 403):
            raise self._response_error(resp, f"fal request {rid}", cls=FalJobError, request_id=rid,
                                       error_type=update.error_type)
        kind = f" ({update.error_type})" if update.error_type else ""
        raise FalJobError(self._redact(f"fal request {rid} failed{kind}: {update.error or 'no message'}"),
                          **common)

    async def result(self, handle: QueueHandle) -> FalResult:
        """The output (retried on network trouble, 429 and ingress errors; other non-2xx -> FalJobError)."""
        rid = handle.request_id
        what = f"fal request {rid}"
        resp = await self._request("GET", handle.response_url, what=what, auth=self._auth,
                                   retry_status=lambda r: submit_status_is_retryable(r.status_code, r.headers))
        if not resp.is_success:
            raise self._response_error(resp, what, cls=FalJobError, request_id=rid)
        data = self._json(resp, what)
        if not isinstance(data, dict):
            raise FalJobError(self._redact(f"{what}: the output is not a JSON object: {_short_text(resp.text)}"),
                              request_id=rid)
        return FalResult(data, rid, parse_billable_units(resp.headers.get("x-fal-billable-units")),
                         dict(resp.headers))

    async def cancel(self, handle: QueueHandle) -> bool:
        """Ask fal to cancel: True when accepted (202), False when the request had already completed."""
        what = f"cancel of fal request {handle.request_id}"
        resp = await self._request("PUT", handle.cancel_url, what=what, auth=self._auth, timeout=CANCEL_TIMEOUT_S,
                                   policy=RetryPolicy(max_attempts=2, base_delay_s=0.2, max_delay_s=0.5),
                                   retry_status=lambda r: submit_status_is_retryable(r.status_code, r.headers))
        if resp.is_success:
            log.info("fal request %s: cancellation requested", handle.request_id)
            return True
        if resp.status_code == 400 and "ALREADY_COMPLETED" in resp.text:
            return False
        raise self._response_error(resp, what, request_id=handle.request_id)

    # ------------------------------------------------------------------ uploads

    async def _storage_token(self, force: bool = False) -> _StorageToken:
        assert self._token_lock is not None
        async with self._token_lock:
            tok = self._token
            if tok is not None and not force and time.time() < tok.refresh_at:
                return tok
            what = "fal storage token"
            resp = await self._request("POST", f"{self.hosts.rest}/storage/auth/token", what=what,
                                       params={"storage_type": "fal-cdn-v3"}, json={}, auth=self._auth,
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
            self._token = _StorageToken(_SecretAuth(f"{data.get('token_type') or 'Bearer'} {token}"),
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
            raise FalError(self._redact(f"{what}: fal answered without access_url: {_short_text(resp.text)}"))
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
                                        f"{_short_text(resp.text)}"))
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
        body = _body_json(resp)
        return str(body["access_url"]) if isinstance(body, dict) and body.get("access_url") else access_url

    # ------------------------------------------------------------------ downloads

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
        shown = _short_text(url, 120)
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


# ----------------------------------------------------------------------------------------------- helpers


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


async def _drain(lines: AsyncIterator[str], timeout_s: float) -> None:
    """Consume what is left of a stream, giving up after `timeout_s` (the connection is then dropped)."""

    async def consume() -> None:
        async for _ in lines:
            pass

    try:
        await asyncio.wait_for(consume(), timeout_s)
    except (asyncio.TimeoutError, httpx.TransportError):
        pass


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
