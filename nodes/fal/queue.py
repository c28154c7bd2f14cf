"""fal's queue: submit, status (polling and SSE), result and cancel.

A submit is retried only when it certainly created no job. When fal answers a submit with a 5xx that names a
request id, the job may exist: the returned handle follows it (see `QueueHandle.note`) instead of submitting
again. When the connection breaks after the request was sent, or fal answers a 5xx that names no job and is not
nginx's, `FalSubmitUnknown` says the job may exist.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, AsyncIterator, Mapping

import httpx

from .errors import FalCancelled, FalError, FalJobError, FalSubmitUnknown, short_text
from .hosts import DEFAULT_QUEUE_URL, split_endpoint_id
from .http import (RetryPolicy, result_status_is_transient, submit_error_is_retryable, submit_outcome_is_unknown,
                   submit_status_is_retryable)

log = logging.getLogger(__name__)

CANCEL_TIMEOUT_S = 5.0
SSE_MAX_FAILURES = 3  # consecutive broken streams before falling back to polling
SSE_DRAIN_TIMEOUT_S = 1.0  # after COMPLETED, how long to wait for the stream's end
CANCELLED_ERROR_TYPES = ("request_cancelled",)


@dataclass(frozen=True)
class QueueHandle:
    """A queued fal request; store `to_dict()` in a journal to re-attach later."""

    endpoint_id: str
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    #: Why the handle was built from a request id alone (an ambiguous submit), else "".
    note: str = field(default="", compare=False)

    @classmethod
    def for_request(cls, endpoint_id: str, request_id: str, queue_url: str = DEFAULT_QUEUE_URL,
                    note: str = "") -> "QueueHandle":
        """The URLs fal uses for a request id (as fal-client builds them when it only has the id)."""
        base = f"{queue_url.rstrip('/')}/{split_endpoint_id(endpoint_id).app}/requests/{request_id}"
        return cls(endpoint_id, request_id, base + "/status", base, base + "/cancel", note)

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
            raise FalError(f"fal sent a status without 'status': {short_text(json.dumps(data, default=str))}")
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




class QueueMixin:
    """Queue requests of `FalClient` (needs FalHttp's plumbing)."""

    async def submit(self, endpoint_id: str, payload: dict, *, headers: Mapping[str, str] | None = None
                     ) -> QueueHandle:
        """Queue a request. Retried only when it certainly created no job (never billed twice)."""
        ep = split_endpoint_id(endpoint_id)
        what = f"fal submit to {ep}"
        extra = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        url = f"{self.hosts.queue}/{ep}"
        try:
            resp = await self._request(
                "POST", url, what=what, json=payload, headers=extra, auth=self._key_auth(url),
                retry_exc=submit_error_is_retryable,
                retry_status=lambda r: submit_status_is_retryable(r.status_code, r.headers, r.text),
                sent_hint="; it was not retried: it may have reached fal and created a job (a retry could bill twice)")
        except FalError as exc:
            cause = exc.__cause__
            if isinstance(cause, httpx.TransportError) and not submit_error_is_retryable(cause):
                raise FalSubmitUnknown(exc.message, detail=exc.detail) from cause
            raise
        rid = resp.headers.get("x-fal-request-id")
        if resp.status_code >= 500 and rid:  # fal tied the answer to a job: it may exist and run
            note = (f"fal answered the submit with HTTP {resp.status_code} but named request {rid}; following "
                    f"that request instead of submitting again")
            log.warning("%s", self._redact(note))
            return QueueHandle.for_request(str(ep), str(rid), self.hosts.queue, note=self._redact(note))
        if submit_outcome_is_unknown(resp.status_code, resp.headers, resp.text):
            error = self._response_error(resp, what)
            raise FalSubmitUnknown(self._redact(f"fal answered the submit with HTTP {resp.status_code} without a "
                                                f"request id ({short_text(resp.text, 200)})"),
                                   status_code=resp.status_code, error_type=error.error_type, detail=error.detail)
        if not resp.is_success:
            raise self._response_error(resp, what)
        data = self._json(resp, what)
        rid = (data.get("request_id") if isinstance(data, dict) else None) or resp.headers.get("x-fal-request-id")
        if not rid:
            raise FalError(self._redact(f"{what}: fal answered without a request_id: {short_text(resp.text)}"),
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
                                   auth=self._key_auth(handle.status_url))
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
                                         headers={"Accept": "text/event-stream"},
                                         auth=self._key_auth(handle.status_url),
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
                      self._redact(short_text(data, 200)))
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
            resp = await self._client().get(handle.response_url, auth=self._key_auth(handle.response_url),
                                            timeout=10.0)
        except httpx.TransportError:
            resp = None
        if resp is not None and not resp.is_success and resp.status_code not in (401, 403):
            raise self._response_error(resp, f"fal request {rid}", cls=FalJobError, request_id=rid,
                                       error_type=update.error_type)
        kind = f" ({update.error_type})" if update.error_type else ""
        raise FalJobError(self._redact(f"fal request {rid} failed{kind}: {update.error or 'no message'}"),
                          **common)

    async def result(self, handle: QueueHandle) -> FalResult:
        """The output of a job fal reported COMPLETED. The GET is idempotent: network trouble and transient
        statuses (408/409/429/502/503/504, or `X-Fal-Retryable: true`) are retried; when they persist, a plain
        FalError (the job is done and billed: recoverable later). 404 -> FalJobError (unknown id, or fal no
        longer keeps the result); other non-2xx -> FalJobError (the model's own error, not billed)."""
        rid = handle.request_id
        what = f"fal request {rid}"
        resp = await self._request("GET", handle.response_url, what=what, auth=self._key_auth(handle.response_url),
                                   retry_status=lambda r: result_status_is_transient(r.status_code, r.headers))
        if not resp.is_success:
            if result_status_is_transient(resp.status_code, resp.headers):
                raise self._response_error(resp, f"{what}: fetching its result", request_id=rid)
            if resp.status_code == 404:
                raise FalJobError(self._redact(
                    f"{what}: fal has no result for it (HTTP 404): the id is unknown, or the result has expired "
                    f"(fal keeps results about an hour, inline sync_mode results not at all)"),
                    status_code=404, request_id=rid)
            raise self._response_error(resp, what, cls=FalJobError, request_id=rid)
        data = self._json(resp, what)
        if not isinstance(data, dict):
            raise FalJobError(self._redact(f"{what}: the output is not a JSON object: {short_text(resp.text)}"),
                              request_id=rid)
        return FalResult(data, rid, parse_billable_units(resp.headers.get("x-fal-billable-units")),
                         dict(resp.headers))

    async def cancel(self, handle: QueueHandle) -> bool:
        """Ask fal to cancel: True when accepted (202), False when the request had already completed."""
        what = f"cancel of fal request {handle.request_id}"
        resp = await self._request("PUT", handle.cancel_url, what=what, auth=self._key_auth(handle.cancel_url),
                                   timeout=CANCEL_TIMEOUT_S,
                                   policy=RetryPolicy(max_attempts=2, base_delay_s=0.2, max_delay_s=0.5),
                                   retry_status=lambda r: submit_status_is_retryable(r.status_code, r.headers, r.text))
        if resp.is_success:
            log.info("fal request %s: cancellation requested", handle.request_id)
            return True
        if resp.status_code == 400 and "ALREADY_COMPLETED" in resp.text:
            return False
        raise self._response_error(resp, what, request_id=handle.request_id)

    # ------------------------------------------------------------------ uploads


async def _drain(lines: AsyncIterator[str], timeout_s: float) -> None:
    """Consume what is left of a stream, giving up after `timeout_s` (the connection is then dropped)."""

    async def consume() -> None:
        async for _ in lines:
            pass

    try:
        await asyncio.wait_for(consume(), timeout_s)
    except (asyncio.TimeoutError, httpx.TransportError):
        pass
