"""The local fal server (tests/fal_server.py) speaks fal's protocol: plain httpx against it, no mocks."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import threading
import time
from datetime import datetime, timezone

import av
import httpx
import pytest

from fal_server import ENDPOINT_ID, FakeFal

KEY = FakeFal.KEY
AUTH = {"Authorization": f"Key {KEY}"}
APP = "fal-ai/ltx-2.3-quality"


def payload(**kw) -> dict:
    body = {"prompt": "a wide beach", "video_url": "https://example.com/v.mp4", "num_frames": 9,
            "loras": [{"path": "https://example.com/style.safetensors", "scale": 0.5, "transformer": "video"}]}
    body.update(kw)
    return body


@pytest.fixture
def fake():
    with FakeFal(max_side=64, queue_seconds=0.1, run_seconds=0.3, sse_keepalive_s=0.05) as f:
        yield f


@pytest.fixture
def client():
    with httpx.Client(headers=AUTH, timeout=10) as c:
        yield c


def submit(client, fake, **kw) -> dict:
    r = client.post(f"{fake.queue_url}/{ENDPOINT_ID}", json=payload(**kw))
    assert r.status_code == 200, r.text
    return r.json()


def wait_done(client, status_url, timeout=10.0, **params) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = client.get(status_url, params=params)
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 202, r.text
        time.sleep(0.03)
    raise AssertionError("job did not complete")


def probe(data: bytes) -> dict:
    with av.open(io.BytesIO(data)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        return {"size": (v.codec_context.width, v.codec_context.height), "frames": frames,
                "fps": float(v.average_rate), "audio": len(c.streams.audio),
                "channels": c.streams.audio[0].codec_context.channels if c.streams.audio else 0}


# ----------------------------------------------------------------------------------------------- queue


def test_submit_status_result_download(fake, client):
    fake.queue_seconds = 0.5  # room for the first status/result calls to see it queued, even on a busy machine
    h = submit(client, fake, resolution="landscape_16_9", frames_per_second=12, seed=7, enable_prompt_expansion=False)
    rid = h["request_id"]
    assert h["status"] == "IN_QUEUE" and h["queue_position"] == 0
    base = f"{fake.queue_url}/{APP}/requests/{rid}"  # owner/alias only, not the full endpoint id
    assert (h["response_url"], h["status_url"], h["cancel_url"]) == (base, base + "/status", base + "/cancel")

    first = client.get(h["status_url"])
    assert first.status_code == 202 and first.json()["status"] == "IN_QUEUE"
    assert first.json()["queue_position"] == 0 and first.json()["logs"] is None
    assert first.headers["x-fal-request-id"] == rid
    early = client.get(h["response_url"])
    assert early.status_code == 400 and early.json() == {"detail": "Request is still in progress"}

    seen, logs_seen = set(), []
    end = time.monotonic() + 10
    while time.monotonic() < end:
        r = client.get(h["status_url"], params={"logs": 1})
        body = r.json()
        seen.add(body["status"])
        logs_seen.append(len(body["logs"]))
        if r.status_code == 200:
            break
        assert r.status_code == 202 and body["status"] in ("IN_QUEUE", "IN_PROGRESS")
    assert body["status"] == "COMPLETED" and "IN_PROGRESS" in seen
    assert body["metrics"]["inference_time"] >= 0.3 and "error" not in body
    assert logs_seen == sorted(logs_seen) and logs_seen[-1] >= 3  # logs grow as the job runs
    assert set(body["logs"][0]) == {"message", "level", "source", "timestamp"}
    assert client.get(h["status_url"], params={"logs": "false"}).json()["logs"] is None

    res = client.get(h["response_url"])
    assert res.status_code == 200 and res.headers["x-fal-request-id"] == rid
    assert res.headers["x-fal-billable-units"] == str(math.ceil(1024 * 576 * 9 / 1e6)) == "6"
    out = res.json()
    assert out["seed"] == 7 and out["prompt"] == "a wide beach"
    video = out["video"]
    assert video["content_type"] == "video/mp4" and video["url"] == f"{fake.cdn_url}/files/{video['file_name']}"

    dl = httpx.get(video["url"])  # the CDN needs no key
    assert dl.status_code == 200 and dl.headers["content-type"] == "video/mp4"
    assert len(dl.content) == video["file_size"] == int(dl.headers["content-length"])
    info = probe(dl.content)
    assert info["size"] == (64, 36) and info["frames"] == 9 and info["fps"] == pytest.approx(12)
    assert info["audio"] == 1 and info["channels"] == 2

    job = fake.jobs[rid]
    assert job.requested_size == (1024, 576) and job.size == (64, 36) and job.billable_units == 6
    assert job.status == "COMPLETED" and job.completed_at > job.started_at > job.submitted_at
    assert job.input == payload(resolution="landscape_16_9", frames_per_second=12, seed=7,
                                enable_prompt_expansion=False)
    assert job.params["loras"] == [{"path": "https://example.com/style.safetensors", "scale": 0.5,
                                    "transformer": "video"}]
    assert job.params["num_inference_steps"] == 15 and job.result_size == len(dl.content)
    assert fake.submits == 1 and fake.charged_units == 6
    # the request log: fields, and one kept-alive connection for everything the client sent
    sub = fake.requests[0]
    assert (sub.method, sub.path, sub.route, sub.status) == ("POST", f"/queue/{ENDPOINT_ID}", "submit", 200)
    assert sub.headers["authorization"] == f"Key {KEY}" and sub.json["prompt"] == "a wide beach"
    assert sub.body_length > 0 and sub.time <= job.submitted_at
    assert fake.count("GET", "/status") >= 3 and fake.count("GET", "/cdn/files/") == 1
    assert len({r.client_port for r in fake.requests if r.headers.get("authorization")}) == 1


def test_prompt_expansion_random_seed_sync_mode_and_no_audio(fake, client):
    h = submit(client, fake, resolution={"width": 100, "height": 50}, generate_audio=False, sync_mode=True)
    wait_done(client, h["status_url"])
    res = client.get(h["response_url"])
    out = res.json()
    assert res.headers["x-fal-billable-units"] == "1"
    assert out["prompt"].startswith("a wide beach") and out["prompt"] != "a wide beach"  # expanded by default
    assert isinstance(out["seed"], int)
    url = out["video"]["url"]
    assert url.startswith("data:video/mp4;base64,")
    data = base64.b64decode(url.split(",", 1)[1])
    assert len(data) == out["video"]["file_size"]
    info = probe(data)
    assert info["size"] == (64, 32) and info["frames"] == 9 and info["fps"] == pytest.approx(24)
    assert info["audio"] == 0
    job = fake.jobs[h["request_id"]]
    assert job.requested_size == (100, 50) and job.result_url == url
    assert out["video"]["file_name"] not in fake.files  # inline only, not kept on the CDN


def test_sse_stream_events_keepalive_and_end(fake, client):
    fake.queue_seconds, fake.run_seconds = 0.4, 0.4
    h = submit(client, fake)
    events, pings = [], 0
    t0 = time.monotonic()
    with client.stream("GET", h["status_url"] + "/stream", params={"logs": 1},
                       headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        assert r.headers["x-fal-request-id"] == h["request_id"]
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            elif line.startswith(":"):
                pings += 1
    assert time.monotonic() - t0 < 5
    statuses = [e["status"] for e in events]
    assert statuses[0] == "IN_QUEUE" and "IN_PROGRESS" in statuses and statuses[-1] == "COMPLETED"
    assert statuses.count("COMPLETED") == 1 and events[0]["queue_position"] == 0
    assert len(events[-1]["logs"]) >= 3 and "metrics" in events[-1]
    assert pings >= 1  # ": ping" comments in the quiet queue phase
    # the connection stays usable after the chunked stream ended
    assert client.get(h["status_url"]).status_code == 200
    assert len({r.client_port for r in fake.requests}) == 1


def test_422_lists_every_invalid_field_fastapi_style(fake, client):
    bad = {"prompt": 3, "num_frames": 5000, "source_scale": 0.1, "guidance_scale": 0, "video_quality": "ultra",
           "resolution": {"width": 0, "height": 99999}, "seed": "abc", "generate_audio": "maybe",
           "frames_per_second": "fast", "num_inference_steps": 10.5,
           "loras": [{"scale": 9, "transformer": "text"}, "x"]}
    r = client.post(f"{fake.queue_url}/{ENDPOINT_ID}", json=bad)
    assert r.status_code == 422
    detail = r.json()["detail"]
    got = {tuple(e["loc"]): e for e in detail}
    expected = {
        ("body", "prompt"): "string_type",
        ("body", "video_url"): "missing",
        ("body", "resolution", "width"): "greater_than",
        ("body", "resolution", "height"): "less_than_equal",
        ("body", "source_scale"): "greater_than_equal",
        ("body", "num_frames"): "less_than_equal",
        ("body", "frames_per_second"): "float_parsing",
        ("body", "num_inference_steps"): "int_from_float",
        ("body", "guidance_scale"): "greater_than_equal",
        ("body", "generate_audio"): "bool_parsing",
        ("body", "seed"): "int_parsing",
        ("body", "video_quality"): "enum",
        ("body", "loras", 0, "path"): "missing",
        ("body", "loras", 0, "scale"): "less_than_equal",
        ("body", "loras", 0, "transformer"): "enum",
        ("body", "loras", 1): "model_attributes_type",
    }
    assert {loc: e["type"] for loc, e in got.items()} == expected
    nf = got[("body", "num_frames")]
    assert nf["msg"] == "Input should be less than or equal to 481" and nf["ctx"] == {"le": 481} and nf["input"] == 5000
    assert got[("body", "video_quality")]["msg"] == "Input should be 'low', 'medium', 'high' or 'maximum'"
    assert got[("body", "loras", 0, "transformer")]["ctx"] == {"expected": "'both', 'video' or 'audio'"}
    assert got[("body", "video_url")]["msg"] == "Field required"
    order = [e["loc"][1] for e in detail]
    assert order.index("prompt") < order.index("num_frames") < order.index("loras")  # schema order

    r = client.post(f"{fake.queue_url}/{ENDPOINT_ID}",
                    json=payload(loras=[{"path": f"https://x/{i}"} for i in range(4)], resolution="huge"))
    assert r.status_code == 422
    types = {tuple(e["loc"]): (e["type"], e.get("ctx")) for e in r.json()["detail"]}
    assert types[("body", "loras")] == ("too_long", {"field_type": "List", "max_length": 3, "actual_length": 4})
    assert types[("body", "resolution")][0] == "enum"
    no_loras = {k: v for k, v in payload().items() if k != "loras"}
    r = client.post(f"{fake.queue_url}/{ENDPOINT_ID}", json=no_loras)
    assert [(e["loc"], e["type"]) for e in r.json()["detail"]] == [(["body", "loras"], "missing")]
    r = client.post(f"{fake.queue_url}/{ENDPOINT_ID}", content=b"{not json",
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    # valid edge values pass (lax coercion like pydantic: "9" -> 9, 121.0 -> 121)
    ok = client.post(f"{fake.queue_url}/{ENDPOINT_ID}",
                     json=payload(num_frames="9", seed=None, source_scale=1, resolution={"width": 640, "height": 360},
                                  loras=[{"path": "p", "scale": 4}]))
    assert ok.status_code == 200, ok.text
    assert fake.jobs[ok.json()["request_id"]].params["num_frames"] == 9
    assert fake.submits == 1
    # unknown endpoint / the full id on a request route / unknown request
    assert client.post(f"{fake.queue_url}/fal-ai/ltx-2.3-quality/outpaint", json=payload()).status_code == 404
    rid = ok.json()["request_id"]
    assert client.get(f"{fake.queue_url}/{ENDPOINT_ID}/requests/{rid}/status").status_code == 404
    assert client.get(f"{fake.queue_url}/{APP}/requests/nope/status").status_code == 404
    assert client.put(f"{fake.queue_url}/{APP}/requests/nope/cancel").json() == {"status": "NOT_FOUND"}
    assert client.get(f"{fake.queue_url}/{APP}/requests/{rid}/cancel").status_code == 405


def test_validation_in_the_runner_mode():
    with FakeFal(max_side=64, queue_seconds=0.05, run_seconds=0.1, validate_on="result") as fake, \
            httpx.Client(headers=AUTH) as client:
        r = client.post(f"{fake.queue_url}/{ENDPOINT_ID}", json=payload(num_frames=5000))
        assert r.status_code == 200
        wait_done(client, r.json()["status_url"])
        res = client.get(r.json()["response_url"])
        assert res.status_code == 422 and res.json()["detail"][0]["loc"] == ["body", "num_frames"]
        assert res.headers["x-fal-billable-units"] == "0" and fake.charged_units == 0


def test_auth_401_403():
    with FakeFal(forbidden_keys={"broke:key"}, queue_seconds=0.05, run_seconds=0.1) as fake:
        url = f"{fake.queue_url}/{ENDPOINT_ID}"
        r = httpx.post(url, json=payload())
        assert r.status_code == 401 and isinstance(r.json()["detail"], str)
        assert httpx.post(url, json=payload(), headers={"Authorization": "Key wrong:key"}).status_code == 401
        assert httpx.post(url, json=payload(), headers={"Authorization": f"Bearer {KEY}"}).status_code == 401
        r = httpx.post(url, json=payload(), headers={"Authorization": "Key broke:key"})
        assert r.status_code == 403 and "balance" in r.json()["detail"]
        assert fake.submits == 0
        ok = httpx.post(url, json=payload(), headers=AUTH).json()
        assert httpx.get(ok["status_url"]).status_code == 401
        assert httpx.put(ok["cancel_url"]).status_code == 401
        assert httpx.get(ok["response_url"], headers={"Authorization": "Key wrong:key"}).status_code == 401
        assert httpx.post(f"{fake.rest_url}/storage/auth/token", json={}).status_code == 401
        # the CDN wants the storage token, not the key
        r = httpx.post(f"{fake.cdn_url}/files/upload", content=b"abc", headers=AUTH)
        assert r.status_code == 401
        r = httpx.post(f"{fake.cdn_url}/files/upload", content=b"abc", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401


# ----------------------------------------------------------------------------------------------- cancel


def test_cancel_queued_running_completed(client):
    with FakeFal(max_side=64, queue_seconds=5, run_seconds=5) as fake:
        queued = submit(client, fake)
        r = client.put(queued["cancel_url"])
        assert r.status_code == 202 and r.json() == {"status": "CANCELLATION_REQUESTED"}
        st = client.get(queued["status_url"])
        assert st.status_code == 200 and st.json()["status"] == "COMPLETED" and st.json()["error"]
        res = client.get(queued["response_url"])
        assert res.status_code == 499 and "cancel" in res.json()["detail"].lower()
        job = fake.jobs[queued["request_id"]]
        assert job.cancelled and job.started_at is None and job.result_path is None
        assert client.put(queued["cancel_url"]).json() == {"status": "ALREADY_COMPLETED"}

        fake.queue_seconds = 0.02
        running = submit(client, fake)
        end = time.monotonic() + 5
        while client.get(running["status_url"]).json()["status"] != "IN_PROGRESS" and time.monotonic() < end:
            time.sleep(0.02)
        t0 = time.monotonic()
        assert client.put(running["cancel_url"]).status_code == 202
        st = client.get(running["status_url"], params={"logs": 1}).json()
        assert st["status"] == "COMPLETED" and st["error_type"] == "request_cancelled"
        job = fake.jobs[running["request_id"]]
        assert job.cancelled and job.started_at is not None and job.completed_at - t0 < 0.5
        time.sleep(0.1)
        assert job.result is None and job.result_path is None

    with FakeFal(max_side=64, queue_seconds=0.02, run_seconds=0.1) as fake:
        done = submit(client, fake)
        wait_done(client, done["status_url"])
        r = client.put(done["cancel_url"])
        assert r.status_code == 400 and r.json() == {"status": "ALREADY_COMPLETED"}
        assert not fake.jobs[done["request_id"]].cancelled

        fake.cancel_is_ignored = True  # the runner ignores the signal: the job finishes anyway
        ignored = submit(client, fake)
        assert client.put(ignored["cancel_url"]).status_code == 202
        assert wait_done(client, ignored["status_url"]).get("error") is None
        job = fake.jobs[ignored["request_id"]]
        assert not job.cancelled and job.cancel_requests == 1 and job.result is not None


# ----------------------------------------------------------------------------------------------- storage


def cdn_token(fake) -> dict:
    r = httpx.post(f"{fake.rest_url}/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, json={},
                   headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def test_token_single_upload_download_and_range(fake):
    tok = cdn_token(fake)
    assert tok["token_type"] == "Bearer" and tok["base_url"] == fake.cdn_url and tok["token"]
    expires = datetime.fromisoformat(tok["expires_at"])
    assert expires.tzinfo is not None
    assert 3500 < (expires - datetime.now(timezone.utc)).total_seconds() <= 3600
    data = bytes(range(256)) * 40
    r = httpx.post(f"{tok['base_url']}/files/upload", content=data,
                   headers={"Authorization": f"{tok['token_type']} {tok['token']}", "Content-Type": "video/mp4",
                            "X-Fal-File-Name": "my clip.mp4"})
    assert r.status_code == 200, r.text
    url = r.json()["access_url"]
    assert url.startswith(f"{fake.cdn_url}/files/") and url.endswith("-my_clip.mp4")
    assert fake.requests[-1].body_length == len(data) and fake.requests[-1].json is None

    with httpx.Client() as c:
        full = c.get(url)
        assert full.status_code == 200 and full.content == data and full.headers["content-type"] == "video/mp4"
        assert full.headers["accept-ranges"] == "bytes"
        part = c.get(url, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == data[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
        assert c.get(url, headers={"Range": "bytes=100-"}).content == data[100:]
        assert c.get(url, headers={"Range": "bytes=-5"}).content == data[-5:]
        assert c.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
        head = c.head(url)
        assert head.status_code == 200 and int(head.headers["content-length"]) == len(data) and not head.content
        assert c.get(f"{fake.cdn_url}/files/nothing.mp4").status_code == 404
    assert fake.file_bytes(url) == data

    # the signed-URL fallback (storage/upload/initiate + PUT)
    r = httpx.post(f"{fake.rest_url}/storage/upload/initiate", params={"storage_type": "gcs"},
                   json={"file_name": "a.mp4", "content_type": "video/mp4"}, headers=AUTH)
    up = r.json()
    assert httpx.put(up["upload_url"], content=b"xyz", headers={"Content-Type": "video/mp4"}).status_code == 200
    assert httpx.get(up["file_url"]).content == b"xyz"


def test_expired_token_is_refused():
    with FakeFal(token_ttl_s=0) as fake:
        tok = cdn_token(fake)
        r = httpx.post(f"{fake.cdn_url}/files/upload", content=b"abc",
                       headers={"Authorization": f"Bearer {tok['token']}"})
        assert r.status_code == 401 and "expired" in r.json()["detail"].lower()


def test_multipart_upload_three_parts_and_etag_check(fake):
    tok = cdn_token(fake)
    auth = {"Authorization": f"Bearer {tok['token']}"}
    data = b"0123456789abcdefghij"
    parts_data = [data[:7], data[7:14], data[14:]]
    with httpx.Client(headers=auth) as c:
        r = c.post(f"{fake.cdn_url}/files/upload/multipart",
                   headers={"Content-Type": "video/mp4", "X-Fal-File-Name": "big.mp4"})
        assert r.status_code == 200, r.text
        access_url, upload_id = r.json()["access_url"], r.json()["uploadId"]
        assert access_url.endswith("-big.mp4")
        parts = []
        for n, chunk in enumerate(parts_data, 1):
            pr = c.put(f"{access_url}/multipart/{upload_id}/{n}", content=chunk,
                       headers={"Content-Type": "video/mp4", "Accept-Encoding": "identity"})
            assert pr.status_code == 200
            assert pr.headers["etag"] == f'"{hashlib.md5(chunk).hexdigest()}"'
            parts.append({"partNumber": n, "etag": pr.headers["etag"]})
        assert httpx.get(access_url).status_code == 404  # not assembled yet

        wrong = [dict(p) for p in parts]
        wrong[1]["etag"] = '"0123"'
        r = c.post(f"{access_url}/multipart/{upload_id}/complete", json={"parts": wrong})
        assert r.status_code == 400 and "etag" in r.json()["detail"]
        r = c.post(f"{access_url}/multipart/{upload_id}/complete", json={"parts": parts[::-1]})
        assert r.status_code == 400 and "order" in r.json()["detail"].lower()
        r = c.post(f"{access_url}/multipart/{upload_id}/complete", json={"parts": parts})
        assert r.status_code == 200 and r.json() == {"access_url": access_url}
        assert httpx.get(access_url).content == data
        # a finished upload takes no more parts; an unknown upload id is 404
        assert c.put(f"{access_url}/multipart/{upload_id}/4", content=b"x").status_code == 404
        assert c.put(f"{access_url}/multipart/nope/1", content=b"x").status_code == 404


# ----------------------------------------------------------------------------------------------- faults


def test_submit_429_and_ingress_503_create_no_job(fake, client):
    url = f"{fake.queue_url}/{ENDPOINT_ID}"
    fake.inject("submit", "429", retry_after=2)
    fake.inject("submit", "ingress_503")
    r = client.post(url, json=payload())
    assert r.status_code == 429 and r.headers["retry-after"] == "2" and "x-fal-request-id" not in r.headers
    r = client.post(url, json=payload())
    assert r.status_code == 503 and "nginx" in r.text and r.headers["content-type"] == "text/html"
    assert "x-fal-request-id" not in r.headers
    assert fake.submits == 0 and fake.jobs == {}
    assert client.post(url, json=payload()).status_code == 200
    assert fake.submits == 1
    assert [r.fault for r in fake.requests] == ["429", "ingress_503", None]


def test_503_after_create_is_billable_and_names_the_request(fake, client):
    fault = fake.inject("submit", "503_after_create")
    r = client.post(f"{fake.queue_url}/{ENDPOINT_ID}", json=payload())
    assert r.status_code == 503 and "nginx" not in r.text
    rid = r.headers["x-fal-request-id"]
    assert fake.submits == 1 and rid in fake.jobs and fault.hits == 1
    assert fake.wait_job(rid).result is not None  # the job ran anyway


def test_job_error(fake, client):
    fake.inject("submit", "job_error", error_type="runner_scheduling_failure", message="no runner available")
    h = submit(client, fake)
    st = wait_done(client, h["status_url"], logs=1)
    assert st["error"] == "no runner available" and st["error_type"] == "runner_scheduling_failure"
    assert st["logs"][-1]["level"] == "ERROR"
    res = client.get(h["response_url"])
    assert res.status_code == 500
    assert res.json() == {"detail": "no runner available", "error_type": "runner_scheduling_failure"}
    assert res.headers["x-fal-error-type"] == "runner_scheduling_failure"
    assert fake.submits == 1 and fake.charged_units == 0
    # the next job is fine (one-shot)
    h2 = submit(client, fake)
    assert wait_done(client, h2["status_url"]).get("error") is None


def test_stuck_job_and_start_timeout(fake, client):
    fake.inject("submit", "stuck", times=2)
    h = submit(client, fake)
    time.sleep(0.4)  # well past queue_seconds
    st = client.get(h["status_url"])
    assert st.status_code == 202 and st.json()["status"] == "IN_QUEUE" and st.json()["queue_position"] == 3
    assert client.put(h["cancel_url"]).status_code == 202
    # X-Fal-Request-Timeout: a job that cannot start in time fails with request_timeout
    r = client.post(f"{fake.queue_url}/{ENDPOINT_ID}", json=payload(), headers={"X-Fal-Request-Timeout": "0.2"})
    st = wait_done(client, r.json()["status_url"], timeout=3)
    assert st["error_type"] == "request_timeout"
    res = client.get(r.json()["response_url"])
    assert res.status_code == 504 and res.headers["x-fal-error-type"] == "request_timeout"


def test_slow_and_repeated_faults(fake, client):
    fake.inject("status", "slow", seconds=0.3)
    h = submit(client, fake)
    t0 = time.monotonic()
    assert client.get(h["status_url"]).status_code == 202
    assert time.monotonic() - t0 >= 0.3
    fake.inject("status", "429", times=2)
    codes = [client.get(h["status_url"]).status_code for _ in range(3)]
    assert codes[:2] == [429, 429] and codes[2] in (200, 202)
    fake.inject("result", "429", times=None)
    wait_done(client, h["status_url"])
    assert [client.get(h["response_url"]).status_code for _ in range(3)] == [429, 429, 429]
    fake.clear_faults()
    assert client.get(h["response_url"]).status_code == 200


def test_drop_before_answering(fake, client):
    url = f"{fake.queue_url}/{ENDPOINT_ID}"
    fake.inject("submit", "drop")
    with pytest.raises(httpx.TransportError):
        client.post(url, json=payload())
    assert fake.submits == 0 and fake.requests[-1].status == 0
    fake.inject("submit", "drop", after=True)  # processed, then the answer is lost: the job exists
    with pytest.raises(httpx.TransportError):
        client.post(url, json=payload())
    assert fake.submits == 1
    h = submit(client, fake)
    for route, call in [("status", lambda: client.get(h["status_url"])),
                        ("result", lambda: client.get(h["response_url"])),
                        ("cancel", lambda: client.put(h["cancel_url"])),
                        ("token", lambda: client.post(f"{fake.rest_url}/storage/auth/token", json={}))]:
        fake.inject(route, "drop")
        with pytest.raises(httpx.TransportError):
            call()
        assert fake.requests[-1].route == route and fake.requests[-1].status == 0
    assert not fake.jobs[h["request_id"]].cancelled  # the dropped cancel never arrived
    fake.inject("token", "ingress_503")
    assert client.post(f"{fake.rest_url}/storage/auth/token", json={}).status_code == 503


def test_drop_mid_stream(fake, client):
    fake.queue_seconds = 2  # stays queued while we look; stop() ends it
    h = submit(client, fake)
    fake.inject("stream", "drop", after_events=1)
    events = []
    with pytest.raises(httpx.TransportError):
        with client.stream("GET", h["status_url"] + "/stream", params={"logs": 1}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
    assert len(events) == 1 and events[0]["status"] == "IN_QUEUE"
    fake.inject("stream", "drop")  # before answering
    with pytest.raises(httpx.TransportError):
        with client.stream("GET", h["status_url"] + "/stream") as r:
            r.read()


def test_upload_and_download_drops(fake):
    tok = cdn_token(fake)
    auth = {"Authorization": f"Bearer {tok['token']}"}
    data = bytes(200_000)
    fake.inject("upload", "drop")
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{fake.cdn_url}/files/upload", content=data, headers=auth)
    rec = fake.requests[-1]
    assert rec.route == "upload" and rec.status == 0 and 0 < rec.body_length < len(data)
    assert fake.files == {}
    url = httpx.post(f"{fake.cdn_url}/files/upload", content=data, headers=auth).json()["access_url"]

    r = httpx.post(f"{fake.cdn_url}/files/upload/multipart", headers=auth).json()
    fake.inject("upload_part", "drop")
    with pytest.raises(httpx.TransportError):
        httpx.put(f"{r['access_url']}/multipart/{r['uploadId']}/1", content=data, headers=auth)
    assert httpx.put(f"{r['access_url']}/multipart/{r['uploadId']}/1", content=data, headers=auth).status_code == 200

    fake.inject("download", "drop", fraction=0.25)
    with pytest.raises(httpx.TransportError):
        httpx.get(url)
    assert fake.requests[-1].status == 0
    assert httpx.get(url).content == data


def test_webhook_is_called(fake, client):
    h = client.post(f"{fake.queue_url}/{ENDPOINT_ID}", params={"fal_webhook": f"{fake.base_url}/hook"},
                    json=payload()).json()
    job = fake.wait_job(h["request_id"])
    assert job.webhook == f"{fake.base_url}/hook"
    end = time.monotonic() + 5
    while fake.count("POST", "/hook") == 0 and time.monotonic() < end:
        time.sleep(0.02)
    hook = [r for r in fake.requests if r.path == "/hook"][0]
    assert hook.json["request_id"] == h["request_id"] and hook.json["status"] == "OK"
    assert hook.json["payload"]["video"]["url"] == job.result_url


def test_stop_ends_streams_and_connections_promptly(client):
    fake = FakeFal(queue_seconds=0.05, run_seconds=0.1, sse_keepalive_s=0.05).start()
    fake.inject("submit", "stuck")
    h = submit(client, fake)
    box = {}

    def follow():
        try:
            with httpx.stream("GET", h["status_url"] + "/stream", headers=AUTH, timeout=10) as r:
                box["lines"] = sum(1 for _ in r.iter_lines())
        except httpx.TransportError as exc:
            box["error"] = exc

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    fake.stop()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 3
    assert box  # the stream ended (cleanly or with a transport error)
    with pytest.raises(httpx.TransportError):
        httpx.get(h["status_url"], headers=AUTH, timeout=2)
    fake.stop()  # idempotent


def test_tick_stream_expired_inputs_and_billed_unsaved_accounting(client):
    """The fake's issue-10 additions: an event every tick_s, file_download_error for an expired CDN file, and
    billed_unsaved() listing outputs never delivered in full."""
    with FakeFal(max_side=64, queue_seconds=0.2, run_seconds=0.5, tick_s=0.05) as fake:
        sub = submit(client, fake)
        done = wait_done(client, sub["status_url"], logs="1")
        ticks = [x for x in done["logs"] if "tick" in x["message"] or "Waiting for a runner" in x["message"]]
        assert 10 <= len(ticks) <= 16  # 0.7 s of queue + run at one event per 50 ms
        assert fake.billed_unsaved() == [sub["request_id"]]  # billed, not downloaded yet
        url = client.get(sub["response_url"]).json()["video"]["url"]
        head = client.get(url, headers={"Range": "bytes=0-9"})
        assert head.status_code == 206 and fake.billed_unsaved() == [sub["request_id"]]  # partial: not delivered
        assert client.get(url).status_code == 200 and fake.billed_unsaved() == []
        up = httpx.post(f"{fake.cdn_url}/files/upload", content=b"video", headers={
            "Authorization": "Bearer " + client.post(f"{fake.rest_url}/storage/auth/token", json={}).json()["token"],
            "Content-Type": "video/mp4"}).json()["access_url"]
        fake.expire_file(up)
        assert httpx.get(up).status_code == 404
        sub = submit(client, fake, video_url=up)
        done = wait_done(client, sub["status_url"])
        assert done["error"] == "Unprocessable Entity"
        r = client.get(sub["response_url"])
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "file_download_error"
        assert r.json()["detail"][0]["loc"] == ["body", "video_url"] and fake.billed_unsaved() == []
