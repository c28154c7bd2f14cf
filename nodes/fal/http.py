"""fal HTTP plumbing shared by the queue, storage and transfer parts: retry rules, key handling, errors.

Retry rules (fal-client's, made safe for billing): idempotent requests retry on network trouble and
408/409/429/5xx with jittered exponential backoff; a submit retries only when it certainly created no job
(connection refused, 429, ingress 502/503/504 without `x-fal-request-id`). The key goes only to hosts
`FalHosts.may_receive_key` accepts, and never appears in an exception, a log line or a repr.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Mapping

import httpx

from .errors import (FalAuthError, FalError, FalValidationError, body_json, field_errors, key_secrets, redact,
                     short_text)
from .hosts import FalHosts, host_label

log = logging.getLogger(__name__)

USER_AGENT = "comfyui-ltx-outpaint (httpx)"
KEY_HELP = ("fal keys come from fal.ai/dashboard/keys; set FAL_KEY (or FAL_KEY_ID + FAL_KEY_SECRET) "
            "or store the key in the pack's settings")
OnProgress = Callable[[int, "int | None"], Any]
PENDING_WAIT_S = 600.0  # how long closing a client waits for shielded work (cancel, paid download)


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


def has_request_id(headers: Mapping[str, str]) -> bool:
    return any(k.lower() == "x-fal-request-id" for k in headers)


def is_ingress_error(status_code: int, headers: Mapping[str, str], body: str) -> bool:
    """A 502/503/504 from fal's ingress, which never reached fal's queue: no `x-fal-request-id` and nginx's
    error page in the body (fal-client's rule). A JSON 5xx without an id came from fal's own layers."""
    return status_code in (502, 503, 504) and not has_request_id(headers) and "nginx" in body.lower()


def submit_error_is_retryable(exc: BaseException) -> bool:
    """A submit that failed this way was certainly not sent (so created no job)."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def submit_status_is_retryable(status_code: int, headers: Mapping[str, str], body: str) -> bool:
    """429 and ingress 5xx created no job; anything else might have."""
    return status_code == 429 or is_ingress_error(status_code, headers, body)


def submit_outcome_is_unknown(status_code: int, headers: Mapping[str, str], body: str) -> bool:
    """A 5xx to a submit that names no job and is not nginx's: fal may have created the job."""
    return status_code >= 500 and not has_request_id(headers) and not is_ingress_error(status_code, headers, body)


def result_status_is_transient(status_code: int, headers: Mapping[str, str]) -> bool:
    """A result GET answered this way may work later: 408/409/429/502/503/504 (a 500 is the model's own error),
    or whatever fal marks `X-Fal-Retryable: true`; never what it marks false."""
    flag = str(headers.get("x-fal-retryable", "")).strip().lower()
    if flag in ("false", "0", "no"):
        return False
    return flag in ("true", "1", "yes") or status_code in (408, 409, 429, 502, 503, 504)


def transport_error_is_transient(exc: BaseException) -> bool:
    """Network trouble worth another try for an idempotent request."""
    return isinstance(exc, httpx.TransportError) and not isinstance(
        exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError))


def get_status_is_retryable(status_code: int) -> bool:
    """Statuses worth retrying for idempotent requests (GET status, token, CDN)."""
    return status_code in (408, 409, 429) or status_code >= 500


class SecretAuth(httpx.Auth):
    """Sets the Authorization header; its repr never shows the value."""

    def __init__(self, value: str):
        self._value = value

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = self._value
        yield request

    def __repr__(self) -> str:
        return "<Authorization hidden>"


class FalHttp:
    """The shared part of `FalClient`: one httpx client per event loop, retries, key and error handling.

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
        self._auth = SecretAuth(f"Key {key}")
        self._secrets: set[str] = set(key_secrets(key))
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token = None  # storage token (storage.py)
        self._token_lock: asyncio.Lock | None = None
        self._pending: set[asyncio.Task] = set()  # shielded work (a cancel, a paid download) to finish first

    def __repr__(self) -> str:
        return f"FalClient(hosts={self.hosts!r}, key=<hidden>, open={self._http is not None})"

    async def __aenter__(self):
        if self._http is not None:
            raise RuntimeError("this FalClient is already open")
        self._loop = asyncio.get_running_loop()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 15.0)),
            headers={"User-Agent": USER_AGENT}, transport=self._transport)
        self._token_lock = asyncio.Lock()
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self._pending:  # a cancel or a paid result's download still running after the caller stopped
            log.info("finishing %d fal request(s) (a cancel or a paid result's download) before closing",
                     len(self._pending))
            try:
                await asyncio.wait(set(self._pending), timeout=PENDING_WAIT_S)
            except asyncio.CancelledError:  # stopped again: close now (the journal keeps the request id)
                pass
        http, self._http, self._token = self._http, None, None
        if http is not None:
            await http.aclose()

    def keep_open_for(self, task: asyncio.Task) -> None:
        """Do not close this client before `task` ends (closing waits up to PENDING_WAIT_S)."""
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # ------------------------------------------------------------------ plumbing

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("use the FalClient inside `async with FalClient(...) as client:`")
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("this FalClient belongs to another event loop; open a new one in this loop")
        return self._http

    def _key_auth(self, url: str) -> SecretAuth:
        """The key's auth for a request to `url`; refuses hosts that may not receive the key."""
        if not self.hosts.may_receive_key(url):
            raise FalError(f"refused to send the fal key to {host_label(url)}: it is neither one of fal's hosts "
                           f"nor the configured queue / REST base")
        return self._auth

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
        body = body_json(resp)
        detail = body.get("detail") if isinstance(body, dict) else None
        if detail is None:
            detail = short_text(resp.text) or resp.reason_phrase
        detail = self._redact_detail(detail)
        error_type = (body.get("error_type") if isinstance(body, dict) else None) or \
            resp.headers.get("x-fal-error-type") or error_type
        rid = resp.headers.get("x-fal-request-id") or request_id
        text = detail if isinstance(detail, str) else short_text(json.dumps(detail), 500)
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
        data = body_json(resp)
        if data is None:
            raise FalError(self._redact(f"{what}: fal answered HTTP {resp.status_code} without JSON: "
                                        f"{short_text(resp.text)}"), status_code=resp.status_code)
        return data
