"""The httpx fal client (nodes/fal/: queue, storage, transfer): unit tests, then end to end against tests/fal_server.py.

Async code runs through asyncio.run inside sync tests (no pytest-asyncio).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from fal_server import INPUT_SCHEMA, FakeFal, validate_input
from ltx_outpaint.errors import InputError
from ltx_outpaint.fal.client import FalClient
from ltx_outpaint.fal.errors import (FalAuthError, FalCancelled, FalError, FalFieldError, FalJobError,
                                     FalSubmitUnknown, FalValidationError, field_errors, redact)
from ltx_outpaint.fal.hosts import (DEFAULT_CDN_URL, DEFAULT_QUEUE_URL, DEFAULT_REST_URL, EndpointId, FalHosts,
                                    split_endpoint_id)
from ltx_outpaint.fal.http import (RetryPolicy, SecretAuth, get_status_is_retryable, is_ingress_error,
                                   parse_retry_after, submit_error_is_retryable, submit_outcome_is_unknown,
                                   submit_status_is_retryable)
from ltx_outpaint.fal.queue import QueueHandle, SSEParser, StatusUpdate
from ltx_outpaint.fal.storage import _StorageToken
from ltx_outpaint.fal.transfer import decode_data_uri

KEY = FakeFal.KEY
SECRET = KEY.split(":")[1]
ENDPOINT = "fal-ai/ltx-2.3-quality/outpaint/lora"
FAST = RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=0.05)
PAYLOAD = {"prompt": "a wide beach", "video_url": "https://example.com/v.mp4", "num_frames": 9,
           "resolution": {"width": 64, "height": 64}, "loras": []}


def hosts_of(fake: FakeFal) -> FalHosts:
    return FalHosts(fake.queue_url, fake.rest_url, fake.cdn_url)


def with_client(fake_or_hosts, fn, key=KEY, **kw):
    """asyncio.run(fn(client)) with a FalClient opened inside that loop."""
    hosts = hosts_of(fake_or_hosts) if isinstance(fake_or_hosts, FakeFal) else fake_or_hosts
    kw.setdefault("retry", FAST)

    async def main():
        async with FalClient(key, hosts, **kw) as client:
            return await fn(client)

    return asyncio.run(main())


def with_mock(handler, fn, **kw):
    """asyncio.run(fn(client)) with the network replaced by an httpx.MockTransport handler."""
    return with_client(FalHosts("https://q.test", "https://r.test", "https://c.test"), fn,
                       transport=httpx.MockTransport(handler), **kw)


@pytest.fixture
def fake():
    with FakeFal(max_side=64, queue_seconds=0.05, run_seconds=0.2) as f:
        yield f


# ============================================================================================ unit tests

# What fal-client 1.0.3's AppId.from_endpoint_id gives (checked against its code) for valid ids.
FAL_SPLITS = [
    ("fal-ai/ltx-2.3-quality/outpaint/lora", ("fal-ai", "ltx-2.3-quality", "outpaint/lora", None)),
    ("fal-ai/flux", ("fal-ai", "flux", None, None)),
    ("fal-ai/flux/dev", ("fal-ai", "flux", "dev", None)),
    ("fal-ai/x/", ("fal-ai", "x", None, None)),
    ("a/b/c/d/e", ("a", "b", "c/d/e", None)),
    ("workflows/me/my-flow", ("me", "my-flow", None, "workflows")),
    ("workflows/a/b/c", ("a", "b", "c", "workflows")),
    ("comfy/me/flow/sub/path", ("me", "flow", "sub/path", "comfy")),
    ("123-my-app", ("123", "my-app", None, None)),
    ("123-abc/x", ("123-abc", "x", None, None)),
]


@pytest.mark.parametrize("endpoint_id,parts", FAL_SPLITS)
def test_split_endpoint_id_like_fal(endpoint_id, parts):
    assert split_endpoint_id(endpoint_id) == EndpointId(*parts)


@pytest.mark.parametrize("bad", ["justname", "workflows/me", "/x/y", "fal-ai/", ""])
def test_split_endpoint_id_refuses_malformed_ids(bad):
    with pytest.raises(ValueError):
        split_endpoint_id(bad)


def test_submit_uses_the_full_id_and_status_urls_only_owner_alias():
    ep = split_endpoint_id(ENDPOINT)
    assert str(ep) == ENDPOINT and ep.app == "fal-ai/ltx-2.3-quality"
    h = QueueHandle.for_request(ENDPOINT, "r1", "https://q.test/")
    assert h.response_url == "https://q.test/fal-ai/ltx-2.3-quality/requests/r1"
    assert h.status_url == h.response_url + "/status" and h.cancel_url == h.response_url + "/cancel"
    ns = QueueHandle.for_request("comfy/me/flow/run", "r2", "https://q.test")
    assert ns.response_url == "https://q.test/comfy/me/flow/requests/r2"  # fal-client keeps the namespace


def test_queue_handle_round_trips_through_json():
    h = QueueHandle(ENDPOINT, "r1", "https://q/s", "https://q/r", "https://q/c")
    assert QueueHandle.from_dict(json.loads(json.dumps(h.to_dict()))) == h
    rebuilt = QueueHandle.from_dict({"endpoint_id": ENDPOINT, "request_id": "r9"}, "https://q.test")
    assert rebuilt == QueueHandle.for_request(ENDPOINT, "r9", "https://q.test")


def test_hosts_defaults_env_and_validation(monkeypatch):
    for var in ("LTX_OUTPAINT_FAL_QUEUE_URL", "LTX_OUTPAINT_FAL_REST_URL", "LTX_OUTPAINT_FAL_CDN_URL"):
        monkeypatch.delenv(var, raising=False)
    assert FalHosts.from_env() == FalHosts() == FalHosts(DEFAULT_QUEUE_URL, DEFAULT_REST_URL, DEFAULT_CDN_URL)
    monkeypatch.setenv("LTX_OUTPAINT_FAL_QUEUE_URL", "http://127.0.0.1:9/queue/")
    monkeypatch.setenv("LTX_OUTPAINT_FAL_CDN_URL", " ")
    h = FalHosts.from_env()
    assert h.queue == "http://127.0.0.1:9/queue" and h.rest == DEFAULT_REST_URL and h.cdn == DEFAULT_CDN_URL
    with pytest.raises(InputError, match="fal_rest_url"):
        FalHosts(rest="rest.fal.ai")


def test_backoff_is_jittered_exponential_and_capped():
    p = RetryPolicy(max_attempts=10, base_delay_s=0.1, max_delay_s=30.0)
    for attempt in range(1, 15):
        nominal = min(0.1 * 2 ** (attempt - 1), 30.0)
        samples = [p.delay(attempt) for _ in range(300)]
        assert all(0.5 * nominal - 1e-9 <= d <= min(1.5 * nominal, 30.0) + 1e-9 for d in samples), attempt
        assert len(set(samples)) > 1  # jittered
    assert max(p.delay(200) for _ in range(50)) <= 30.0


def test_retry_after_is_honoured_and_capped():
    p = RetryPolicy(max_delay_s=5.0)
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0") == 0.0 and parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    in_10s = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=10), usegmt=True)
    assert 7 <= parse_retry_after(in_10s) <= 10.5
    assert p.delay(1, retry_after=2.0) == 2.0 and p.delay(1, retry_after=3600.0) == 5.0
    assert p.delay(3, retry_after=0.0) == 0.0


def _exc(cls):
    return cls("x", request=httpx.Request("POST", "https://q.test/a/b"))


@pytest.mark.parametrize("exc,retry", [
    (httpx.ConnectError, True), (httpx.ConnectTimeout, True), (httpx.PoolTimeout, True),
    (httpx.ReadTimeout, False), (httpx.WriteTimeout, False), (httpx.ReadError, False), (httpx.WriteError, False),
    (httpx.RemoteProtocolError, False),
])
def test_submit_is_retried_only_for_failures_before_sending(exc, retry):
    assert submit_error_is_retryable(_exc(exc)) is retry


NGINX_PAGE = "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
JSON_503 = '{"detail": "No runner could be scheduled", "error_type": "runner_scheduling_failure"}'


@pytest.mark.parametrize("status,headers,body,retry,unknown", [
    (429, {}, "", True, False), (502, {}, NGINX_PAGE, True, False), (503, {}, NGINX_PAGE, True, False),
    (504, {}, NGINX_PAGE, True, False),
    # fal-client's rule: ingress = no request id AND nginx's page; a JSON 5xx without an id may have made a job
    (503, {"X-Fal-Error-Type": "runner_scheduling_failure"}, JSON_503, False, True), (502, {}, "", False, True),
    (503, {"x-fal-request-id": "r"}, NGINX_PAGE, False, False), (502, {"X-Fal-Request-Id": "r"}, "", False, False),
    (500, {}, "", False, True), (408, {}, "", False, False), (409, {}, "", False, False), (400, {}, "", False, False),
    (401, {}, "", False, False), (422, {}, "", False, False),
])
def test_submit_status_classification(status, headers, body, retry, unknown):
    assert submit_status_is_retryable(status, headers, body) is retry
    assert is_ingress_error(status, headers, body) is (retry and status != 429)
    assert submit_outcome_is_unknown(status, headers, body) is unknown


@pytest.mark.parametrize("status,retry", [(408, True), (409, True), (429, True), (500, True), (502, True),
                                          (503, True), (504, True), (400, False), (401, False), (404, False),
                                          (422, False)])
def test_get_status_classification(status, retry):
    assert get_status_is_retryable(status) is retry


def test_redact_and_reprs_hide_the_key():
    assert redact(f"Authorization: Key {KEY}!", [KEY, *KEY.split(":")]) == "Authorization: Key ***!"
    assert redact("abc", ["", None, "ab"]) == "abc"  # empty and very short "secrets" are ignored
    client = FalClient(KEY)
    assert SECRET not in repr(client) and "test-key-id" not in repr(client)
    assert SECRET not in repr(client._auth) and SECRET not in repr(vars(client).get("_auth"))
    assert "tok-123456" not in repr(_StorageToken(SecretAuth("Bearer tok-123456"), "https://c", 0.0))
    with pytest.raises(FalAuthError, match="fal.ai/dashboard/keys"):
        FalClient("  ")


def test_field_errors_from_422_detail():
    detail = [{"loc": ["body", "loras", 0, "scale"], "msg": "Input should be less than or equal to 4",
               "type": "less_than_equal"},
              {"loc": ["body", "video_url"], "msg": "Field required", "type": "missing"},
              {"loc": ["query", "x"], "msg": "bad", "type": "t"}]
    assert field_errors(detail) == [
        FalFieldError(("body", "loras", 0, "scale"), "loras.0.scale", "Input should be less than or equal to 4",
                      "less_than_equal"),
        FalFieldError(("body", "video_url"), "video_url", "Field required", "missing"),
        FalFieldError(("query", "x"), "query.x", "bad", "t")]
    assert field_errors("Prompt is too long") == []


def test_sse_parser():
    p = SSEParser()
    events = [p.feed(line) for line in [": ping", "", "event: status", "data: {\"a\":", "data:1}", "", "id: 7",
                                        "data: x\r", "\r", ": keep-alive", "data: tail"]]
    assert [e for e in events if e is not None] == ['{"a":\n1}', "x"]
    assert p.flush() == "tail" and p.flush() is None


def test_status_update_parsing():
    u = StatusUpdate.from_json({"status": "IN_QUEUE", "queue_position": 3, "logs": None})
    assert (u.status, u.queue_position, u.logs, u.done) == ("IN_QUEUE", 3, None, False)
    c = StatusUpdate.from_json({"status": "COMPLETED", "logs": [{"message": "m"}], "error": "e", "error_type": "t"})
    assert c.done and c.logs == [{"message": "m"}] and (c.error, c.error_type) == ("e", "t")
    with pytest.raises(FalError):
        StatusUpdate.from_json({"nope": 1})


def test_data_uri_decoding():
    assert decode_data_uri("data:video/mp4;base64,AAEC") == b"\x00\x01\x02"
    assert decode_data_uri("data:text/plain,a%20b") == b"a b"


# ---------------------------------------------------------------- client behaviour on a mocked network


def test_submit_retries_a_connect_failure_but_not_a_read_timeout():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(calls) == 2:
            return httpx.Response(503, text="<center>nginx</center>")  # ingress: no x-fal-request-id
        return httpx.Response(200, json={"request_id": "r1", "status_url": "https://q.test/s",
                                         "response_url": "https://q.test/r", "cancel_url": "https://q.test/c"})

    h = with_mock(handler, lambda c: c.submit(ENDPOINT, {"prompt": "p"}))
    assert h == QueueHandle(ENDPOINT, "r1", "https://q.test/s", "https://q.test/r", "https://q.test/c")
    assert len(calls) == 3 and str(calls[0].url) == f"https://q.test/{ENDPOINT}"
    assert calls[0].headers["authorization"] == f"Key {KEY}"

    calls.clear()

    def timeout(request):
        calls.append(request)
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(FalSubmitUnknown, match="not retried: it may have reached fal") as e:
        with_mock(timeout, lambda c: c.submit(ENDPOINT, {"prompt": "p"}))
    assert len(calls) == 1 and SECRET not in str(e.value)


def test_submit_500_without_request_id_is_not_retried():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(500, json={"detail": "boom"})

    with pytest.raises(FalError, match="HTTP 500") as e:
        with_mock(handler, lambda c: c.submit(ENDPOINT, {}))
    assert len(calls) == 1 and e.value.status_code == 500 and e.value.detail == "boom"


def test_429_waits_for_retry_after():
    calls = []

    def handler(request):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "0.3"}, json={"detail": "slow down"})
        return httpx.Response(200, json={"request_id": "r1"})

    policy = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=1.0)
    h = with_mock(handler, lambda c: c.submit(ENDPOINT, {}), retry=policy)
    assert h.status_url == "https://q.test/fal-ai/ltx-2.3-quality/requests/r1/status"  # built when not sent
    assert calls[1] - calls[0] >= 0.28


def test_422_with_a_plain_string_detail():
    def handler(request):
        return httpx.Response(422, json={"detail": "Prompt is too long"})

    with pytest.raises(FalValidationError, match="Prompt is too long") as e:
        with_mock(handler, lambda c: c.submit(ENDPOINT, {}))
    assert e.value.errors == [] and e.value.status_code == 422


def test_key_echoed_by_a_server_is_redacted_everywhere(caplog):
    caplog.set_level(logging.DEBUG)

    def handler(request):
        echoed = request.headers["authorization"]
        return httpx.Response(400, headers={"x-fal-request-id": "r1"},
                              json={"detail": f"bad header {echoed}", "error_type": f"t {SECRET}"})

    with pytest.raises(FalError) as e:
        with_mock(handler, lambda c: c.submit(ENDPOINT, {}))
    assert SECRET not in str(e.value) and SECRET not in str(e.value.detail) and "***" in str(e.value)
    assert e.value.request_id == "r1" and SECRET not in caplog.text


def test_result_error_uses_the_error_type_header_and_retries_only_transport_failures():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ReadError("reset", request=request)
        return httpx.Response(500, headers={"X-Fal-Error-Type": "internal_server_error", "x-fal-request-id": "r1"},
                              json={"detail": "CUDA out of memory"})

    h = QueueHandle.for_request(ENDPOINT, "r1", "https://q.test")
    with pytest.raises(FalJobError, match=r"internal_server_error.*CUDA out of memory") as e:
        with_mock(handler, lambda c: c.result(h))
    assert len(calls) == 2 and e.value.error_type == "internal_server_error" and e.value.request_id == "r1"


@pytest.mark.parametrize("status,headers,transient", [
    (503, {"X-Fal-Error-Type": "runner_disconnected"}, True), (502, {}, True), (504, {}, True), (408, {}, True),
    (409, {}, True), (429, {}, True), (500, {}, False), (500, {"X-Fal-Retryable": "true"}, True),
    (503, {"X-Fal-Retryable": "false"}, False), (404, {}, False), (422, {}, False),
])
def test_result_fetch_retries_transient_answers_and_then_says_it_is_recoverable(status, headers, transient):
    """A result GET is idempotent: a gateway hiccup after COMPLETED is retried, and when it persists the
    error is a plain FalError (the job is done and billed), never one that journals the job failed."""
    from ltx_outpaint.fal.follow import ENDED

    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(status, headers={**headers, "x-fal-request-id": "r1"}, json={"detail": "no"})

    h = QueueHandle.for_request(ENDPOINT, "r1", "https://q.test")
    with pytest.raises(FalError) as e:
        with_mock(handler, lambda c: c.result(h))
    assert len(calls) == (FAST.max_attempts if transient else 1)
    assert isinstance(e.value, ENDED) is not transient, type(e.value)  # ENDED: journaled "failed"


class _Broken(httpx.AsyncByteStream):
    def __init__(self, data: bytes, fail: bool):
        self.data, self.fail = data, fail

    async def __aiter__(self):
        yield self.data
        if self.fail:
            raise httpx.ReadError("connection reset by peer")


def test_download_restarts_when_the_server_ignores_range(tmp_path):
    body = bytes(range(256)) * 40
    seen = []

    def handler(request):
        seen.append(request.headers.get("range"))
        if len(seen) == 1:  # breaks off half-way
            return httpx.Response(200, headers={"Content-Length": str(len(body))},
                                  stream=_Broken(body[:5000], True))
        return httpx.Response(200, headers={"Content-Length": str(len(body))}, stream=_Broken(body, False))

    dest = str(tmp_path / "o.bin")
    with_mock(handler, lambda c: c.download("https://c.test/files/o.bin", dest, expected_size=len(body)))
    assert open(dest, "rb").read() == body and seen == [None, "bytes=5000-"]
    assert not os.path.exists(dest + ".partial")


def test_download_of_a_data_uri(tmp_path):
    dest = str(tmp_path / "sub" / "v.mp4")
    progress = []
    with_mock(lambda r: httpx.Response(500), lambda c: c.download(
        "data:video/mp4;base64,AAECAw==", dest, on_progress=lambda d, t: progress.append((d, t)), expected_size=4))
    assert open(dest, "rb").read() == b"\x00\x01\x02\x03" and progress[-1] == (4, 4)


def test_the_key_goes_only_to_queue_and_rest_hosts(tmp_path):
    seen = {}

    def handler(request):
        seen[request.url.host] = request.headers.get("authorization")
        return httpx.Response(200, content=b"abc")

    with_mock(handler, lambda c: c.download("https://elsewhere.test/x", str(tmp_path / "x")))
    assert seen == {"elsewhere.test": None}


def test_client_is_bound_to_its_context_and_loop():
    client = FalClient(KEY)
    with pytest.raises(RuntimeError, match="async with"):
        asyncio.run(client.status(QueueHandle.for_request(ENDPOINT, "r")))

    async def open_it():
        await client.__aenter__()

    asyncio.run(open_it())  # opened in a loop that is now closed
    with pytest.raises(RuntimeError, match="another event loop"):
        asyncio.run(client.status(QueueHandle.for_request(ENDPOINT, "r")))


# ---------------------------------------------------------------- SSE on a real socket (tiny stdlib server)


class _SSEHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # body ends when the connection closes

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.hits.append(self.path)
        if "/stream" not in self.path:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if len([p for p in srv.hits if "/stream" in p]) == 1:
            pieces = [b": ping\r\n\r\n", b'data: {"status": "IN_QUEUE",\r\n', b'data: "queue_position": 2}\r',
                      b"\n\r\n", b'data: {"status": "IN_PROGRESS", "logs": [{"message": "step 1"}]}\n\n']
        else:  # after the reconnect: the current status again, a keep-alive, then COMPLETED
            pieces = [b'data: {"status": "IN_PROGRESS", "logs": [{"message": "step 1"}]}\n\n', b": keep-alive\n\n",
                      b'data: {"status": "COMPLETED", "logs": [], "metrics": {"inference_time": 1.0}}\n\n']
        for piece in pieces:
            self.wfile.write(piece)
            self.wfile.flush()
            time.sleep(0.02)
        # the first stream ends early (no COMPLETED): the client reconnects


def test_sse_parsing_over_a_socket_with_split_chunks_and_an_early_end():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _SSEHandler)
    srv.hits = []
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        h = QueueHandle.for_request(ENDPOINT, "r1", base)

        async def collect(c):
            return [u async for u in c.watch(h)]

        updates = with_client(FalHosts(base, base, base), collect)
    finally:
        srv.shutdown()
        srv.server_close()
    assert [(u.status, u.queue_position) for u in updates] == [("IN_QUEUE", 2), ("IN_PROGRESS", None),
                                                                ("COMPLETED", None)]
    assert updates[1].logs == [{"message": "step 1"}]
    assert [p.split("?")[0].rsplit("/", 2)[-2:] for p in srv.hits] == [["status", "stream"]] * 2
    assert all("logs=1" in p for p in srv.hits)


# ============================================================================================ against FakeFal


def flow(fake, path, tmp_path, use_sse=True, payload=PAYLOAD, **client_kw):
    """upload -> submit -> watch -> result -> download; returns (updates, result, saved path, handle)."""

    async def go(c):
        url = await c.upload_file(path)
        h = await c.submit(ENDPOINT, {**payload, "video_url": url})
        updates = [u async for u in c.watch(h, use_sse=use_sse, poll_interval_s=0.05)]
        res = await c.result(h)
        video = res.data["video"]
        saved = await c.download(video["url"], str(tmp_path / "out.mp4"), expected_size=video["file_size"])
        return updates, res, saved, h

    return with_client(fake, go, **client_kw)


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "src.mp4"
    path.write_bytes(os.urandom(200_000))
    return str(path)


@pytest.mark.parametrize("use_sse", [True, False])
def test_end_to_end(fake, src, tmp_path, use_sse):
    updates, res, saved, h = flow(fake, src, tmp_path, use_sse)
    job = fake.jobs[h.request_id]
    assert updates[-1].status == "COMPLETED" and updates[-1].logs
    assert [u.status for u in updates[:-1]] and all(u.status in ("IN_QUEUE", "IN_PROGRESS") for u in updates[:-1])
    assert res.request_id == h.request_id and res.billable_units == job.billable_units == 1
    assert open(saved, "rb").read() == fake.file_bytes(res.data["video"]["url"])
    assert fake.submits == 1 and job.input["video_url"].startswith(fake.cdn_url)
    assert fake.file_bytes(job.input["video_url"]) == open(src, "rb").read()
    streams = fake.count("GET", "/status/stream")
    polls = fake.count("GET", "/status") - streams
    if use_sse:
        assert streams == 1 and polls == 0
    else:
        assert streams == 0 and polls > 0
    assert all(r.query.get("logs") == "1" for r in fake.requests if "/status" in r.path)


TRANSIENT = [
    ("submit", "429", {}), ("submit", "ingress_503", {}), ("submit", "ingress_503", {"status": 502}),
    ("submit", "ingress_503", {"status": 504}),
    ("stream", "drop", {}), ("stream", "drop", {"after_events": 1}), ("stream", "429", {}),
    ("status", "429", {}), ("status", "drop", {}), ("status", "ingress_503", {}),
    ("result", "429", {}), ("result", "ingress_503", {}), ("result", "drop", {}),
    ("token", "ingress_503", {}), ("token", "drop", {}), ("token", "429", {}),
    ("upload", "drop", {}), ("upload", "429", {}), ("upload", "ingress_503", {}),
    ("download", "drop", {}), ("download", "429", {}),
]


@pytest.mark.parametrize("route,fault,params", TRANSIENT)
def test_transient_faults_succeed_with_one_billable_submit(fake, src, tmp_path, route, fault, params):
    f = fake.inject(route, fault, **params)
    updates, res, saved, h = flow(fake, src, tmp_path, use_sse=route != "status")
    assert f.hits == 1 and updates[-1].done
    assert open(saved, "rb").read() == fake.file_bytes(res.data["video"]["url"])
    assert fake.submits == 1 and len(fake.jobs) == 1


def test_sse_that_keeps_failing_falls_back_to_polling(fake, src, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    fake.inject("stream", "drop", times=None)
    updates, res, saved, h = flow(fake, src, tmp_path, use_sse=True)
    assert updates[-1].done and fake.count("GET", "/status/stream") == 3
    assert fake.count("GET", "/status") > 3 and "polling instead" in caplog.text


def submit_posts(fake):
    return fake.count("POST", "/outpaint/lora")


def test_503_after_the_job_was_created_is_followed_not_resubmitted(fake):
    """fal answered 5xx but named the request: the job may exist, so it is followed (never submitted again)."""
    fake.inject("submit", "503_after_create")

    async def go(c):
        h = await c.submit(ENDPOINT, PAYLOAD)
        async for _ in c.watch(h):
            pass
        return h, await c.result(h)

    h, res = with_client(fake, go)
    (rid,) = fake.jobs
    assert h.request_id == rid and "HTTP 503" in h.note and rid in h.note
    assert res.data["video"]["url"] == fake.jobs[rid].result_url
    assert fake.submits == 1 and submit_posts(fake) == 1


def test_5xx_naming_an_unknown_request_fails_when_followed():
    """A 5xx with an id that fal does not know: following it fails with fal's 404, still one POST."""
    calls = []

    def handler(request):
        calls.append(request)
        if request.method == "POST":
            return httpx.Response(500, headers={"x-fal-request-id": "ghost"}, json={"detail": "boom"})
        return httpx.Response(404, json={"detail": "Request not found"})

    async def go(c):
        h = await c.submit(ENDPOINT, {"prompt": "p"})
        return await c.status(h)

    with pytest.raises(FalError, match="HTTP 404.*Request not found"):
        with_mock(handler, go)
    assert [r.method for r in calls] == ["POST", "GET"]


@pytest.mark.parametrize("after,jobs", [(True, 1), (False, 0)])
def test_a_submit_cut_off_after_sending_is_not_retried(fake, after, jobs):
    fake.inject("submit", "drop", after=after)
    with pytest.raises(FalError, match="may have reached fal"):
        with_client(fake, lambda c: c.submit(ENDPOINT, PAYLOAD))
    assert submit_posts(fake) == 1 and fake.submits == jobs


def test_a_submit_read_timeout_is_not_retried(fake):
    fake.inject("submit", "slow", seconds=0.8)
    with pytest.raises(FalError, match="ReadTimeout.*not retried"):
        with_client(fake, lambda c: c.submit(ENDPOINT, PAYLOAD), timeout_s=0.3)
    deadline = time.monotonic() + 3
    while fake.submits == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert submit_posts(fake) == 1 and fake.submits == 1  # the slow submit did create its (only) job


BAD_EVERYWHERE = {
    "prompt": 1, "video_url": ["x"], "resolution": "huge", "source_scale": 5, "video_strength": -1, "num_frames": 1,
    "frames_per_second": 0, "num_inference_steps": 100, "guidance_scale": 0, "generate_audio": "maybe",
    "negative_prompt": 3, "seed": "x", "enable_prompt_expansion": "maybe", "enable_safety_checker": [],
    "video_quality": "ultra", "video_write_mode": "x", "sync_mode": "maybe",
    "loras": [{"scale": 9, "transformer": "x"}, {"path": "p", "scale": "big"}],
}


def test_422_maps_every_field(fake):
    with pytest.raises(FalValidationError) as e:
        with_client(fake, lambda c: c.submit(ENDPOINT, BAD_EVERYWHERE))
    _, expected = validate_input(BAD_EVERYWHERE)
    assert e.value.errors == [FalFieldError(tuple(x["loc"]), ".".join(str(p) for p in x["loc"][1:]), x["msg"],
                                            x["type"]) for x in expected]
    fields_named = {err.field.split(".")[0] for err in e.value.errors}
    assert fields_named == {name for name, *_ in INPUT_SCHEMA}  # every input field was reported
    assert {"loras.0.path", "loras.0.scale", "loras.0.transformer", "loras.1.scale"} <= \
        {err.field for err in e.value.errors}
    assert "loras.0.scale: Input should be less than or equal to 4" in str(e.value)
    assert e.value.status_code == 422 and fake.submits == 0


def test_a_missing_field_and_a_422_at_result_time():
    with FakeFal(max_side=64, queue_seconds=0.05, run_seconds=0.2, validate_on="result") as fake:
        payload = {k: v for k, v in PAYLOAD.items() if k != "video_url"}

        async def go(c):
            h = await c.submit(ENDPOINT, payload)
            with pytest.raises(FalValidationError) as in_watch:
                async for _ in c.watch(h):
                    pass
            with pytest.raises(FalValidationError) as in_result:
                await c.result(h)
            return in_watch.value, in_result.value

        for err in with_client(fake, go):
            assert [(x.field, x.loc, x.msg, x.type) for x in err.errors] == \
                [("video_url", ("body", "video_url"), "Field required", "missing")]


def test_401_and_403(caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-id:wrong-secret-123"
    with FakeFal(forbidden_keys={"locked-id:locked-secret"}) as fake:
        with pytest.raises(FalAuthError) as e401:
            with_client(fake, lambda c: c.submit(ENDPOINT, PAYLOAD), key=wrong)
        with pytest.raises(FalAuthError) as e403:
            with_client(fake, lambda c: c.submit(ENDPOINT, PAYLOAD), key="locked-id:locked-secret")
        assert fake.submits == 0 and submit_posts(fake) == 2  # not retried
    assert e401.value.status_code == 401 and "missing or invalid" in str(e401.value)
    assert "fal.ai/dashboard/keys" in str(e401.value) and "FAL_KEY" in str(e401.value)
    assert e403.value.status_code == 403 and "forbidden" in str(e403.value) and "balance" in str(e403.value)
    for text in (str(e401.value), str(e403.value), caplog.text):
        assert "wrong-secret-123" not in text and "locked-secret" not in text


@pytest.mark.parametrize("use_sse,at", [(True, "running"), (False, "running"), (True, "queued")])
def test_job_error_carries_fals_message_and_type(fake, use_sse, at):
    fake.inject("submit", "job_error", error_type="runner_scheduling_failure", message="no runner available", at=at)

    async def go(c):
        h = await c.submit(ENDPOINT, PAYLOAD)
        async for _ in c.watch(h, use_sse=use_sse, poll_interval_s=0.05):
            pass

    with pytest.raises(FalJobError) as e:
        with_client(fake, go)
    assert "runner_scheduling_failure" in str(e.value) and "no runner available" in str(e.value)
    assert e.value.error_type == "runner_scheduling_failure" and e.value.request_id in fake.jobs
    assert fake.submits == 1


def test_cancel(fake):
    fake.inject("submit", "stuck", queue_position=4)

    async def go(c):
        h = await c.submit(ENDPOINT, PAYLOAD)
        seen = []
        with pytest.raises(FalCancelled):
            async for u in c.watch(h):
                seen.append(u)
                if u.status == "IN_QUEUE":
                    assert await c.cancel(h) is True
        assert await c.cancel(h) is False  # ALREADY_COMPLETED
        return h, seen

    h, seen = with_client(fake, go)
    assert seen[0].queue_position == 4 and fake.jobs[h.request_id].cancelled
    assert fake.count("PUT", "/cancel") == 2


def test_single_upload_headers_token_cache_and_progress(fake, src):
    progress = []

    async def go(c):
        a = await c.upload_file(src, on_progress=lambda d, t: progress.append((d, t)))
        b = await c.upload_file(src, "application/x-custom", file_name="named.bin")
        return a, b

    a, b = with_client(fake, go)
    data = open(src, "rb").read()
    assert fake.file_bytes(a) == data == fake.file_bytes(b)
    assert fake.count("POST", "/storage/auth/token") == 1  # token cached
    ups = [r for r in fake.requests if r.route == "upload"]
    assert [r.headers["x-fal-file-name"] for r in ups] == ["src.mp4", "named.bin"]
    assert [r.headers["content-type"] for r in ups] == ["video/mp4", "application/x-custom"]
    assert all(r.headers["authorization"].startswith("Bearer ") and r.body_length == len(data) for r in ups)
    assert all(KEY not in json.dumps(r.headers) for r in fake.requests if r.path.startswith("/cdn"))
    assert progress[0] == (0, len(data)) and progress[-1] == (len(data), len(data))
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_token_expiry_and_a_rejected_token_are_renewed(src):
    with FakeFal(token_ttl_s=0.6) as fake:
        async def go(c):
            await c.upload_file(src)
            await asyncio.sleep(0.4)  # past the refresh point (half the remaining life)
            await c.upload_file(src)
            c._token = _StorageToken(SecretAuth("Bearer not-a-token"), fake.cdn_url, time.time() + 999)
            return await c.upload_file(src)

        url = with_client(fake, go)
        assert fake.file_bytes(url) == open(src, "rb").read()
        assert fake.count("POST", "/storage/auth/token") == 3
        assert [r.status for r in fake.requests if r.route == "upload"] == [200, 200, 401, 200]


def test_multipart_upload_resends_only_the_dropped_part(fake, tmp_path):
    path = tmp_path / "big.mp4"
    data = os.urandom(5 * 8192 + 1234)
    path.write_bytes(data)
    fake.inject("upload_part", "drop")
    progress = []
    url = with_client(fake, lambda c: c.upload_file(str(path), multipart_threshold=10_000, part_size=8192,
                                                    concurrency=3, on_progress=lambda d, t: progress.append(d)))
    assert fake.file_bytes(url) == data
    parts = [r for r in fake.requests if r.route == "upload_part"]
    numbers = sorted(int(r.path.rsplit("/", 1)[1]) for r in parts)
    assert len(parts) == 7 and sorted(set(numbers)) == [1, 2, 3, 4, 5, 6]  # 6 parts, one sent twice
    assert [r.status for r in parts].count(0) == 1
    assert fake.count("POST", "/files/upload/multipart") == 1 and fake.count("POST", "/complete") == 1
    assert progress == sorted(progress) and progress[-1] == len(data)


def test_a_dropped_download_resumes_with_range(fake, src, tmp_path):
    fake.inject("download", "drop", times=2, fraction=0.4)
    updates, res, saved, h = flow(fake, src, tmp_path)
    assert open(saved, "rb").read() == fake.file_bytes(res.data["video"]["url"])
    ranges = [r.headers.get("range") for r in fake.requests if r.route == "download"]
    assert ranges[0] is None and len(ranges) == 3 and all(x and x.startswith("bytes=") for x in ranges[1:])
    assert int(ranges[1][6:-1]) > 0 and int(ranges[2][6:-1]) > int(ranges[1][6:-1])
    assert not os.path.exists(saved + ".partial")


def _published_file(fake):
    """A file on the fake CDN (uploaded through the client) -> its URL and bytes."""
    data = os.urandom(50_000)
    path = os.path.join(fake.workdir, "seed.bin")
    with open(path, "wb") as f:
        f.write(data)
    return with_client(fake, lambda c: c.upload_file(path)), data


def test_download_size_mismatch_leaves_nothing(fake, tmp_path):
    url, data = _published_file(fake)
    dest = str(tmp_path / "x.bin")
    with pytest.raises(FalError, match="fal said the file has"):
        with_client(fake, lambda c: c.download(url, dest, expected_size=len(data) + 1))
    assert not os.path.exists(dest) and not os.path.exists(dest + ".partial")


def test_cancelling_a_download_cleans_up(fake, tmp_path):
    url, _ = _published_file(fake)
    fake.inject("download", "slow", seconds=5)
    dest = str(tmp_path / "x.bin")

    async def go(c):
        task = asyncio.ensure_future(c.download(url, dest))
        await asyncio.sleep(0.3)
        assert os.path.exists(dest + ".partial")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with_client(fake, go)
    assert not os.path.exists(dest) and not os.path.exists(dest + ".partial")


def test_cancelling_a_multipart_upload_stops_all_parts(fake, tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(4 * 4096))
    fake.inject("upload_part", "slow", times=None, seconds=5)

    async def go(c):
        task = asyncio.ensure_future(c.upload_file(str(path), multipart_threshold=1, part_size=4096))
        await asyncio.sleep(0.4)
        task.cancel()
        t0 = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - t0

    assert with_client(fake, go) < 1.0
    assert fake.count("POST", "/complete") == 0


def test_key_never_logged_during_a_full_run(fake, src, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    fake.inject("submit", "429")
    fake.inject("stream", "drop")
    fake.inject("download", "drop")
    flow(fake, src, tmp_path)
    fake.inject("submit", "job_error", message="boom")
    with pytest.raises(FalJobError) as e:
        flow(fake, src, tmp_path)
    assert "boom" in str(e.value)
    assert SECRET not in caplog.text and SECRET not in str(e.value) and "retrying" in caplog.text
