"""A faithful local fal.ai server for tests (stdlib HTTP server on 127.0.0.1, random port).

It speaks fal's queue, storage and CDN protocols as documented in shared/notes/fal-protocol.md, for the
one endpoint `fal-ai/ltx-2.3-quality/outpaint/lora`, so a real HTTP client can be tested without
internet or a fal key. Nothing here imports the project's own fal client.

    with FakeFal(max_side=64, queue_seconds=0.1, run_seconds=0.3) as fake:
        # point the client at fake.queue_url / fake.rest_url / fake.cdn_url with key FakeFal.KEY
        fake.inject("submit", "429")            # next submit answers 429 (one-shot)
        fake.inject("download", "drop", times=2) # the next two downloads break off half-way
        ...
        fake.submits, fake.jobs[rid].status, fake.requests[-1].status, fake.count("PUT", "/cancel")

Routes (base_url = http://127.0.0.1:PORT):
  queue (`Authorization: Key <key>`), queue_url = base_url/queue
    POST {queue}/fal-ai/ltx-2.3-quality/outpaint/lora[?fal_webhook=URL]   submit (route "submit")
    GET  {queue}/fal-ai/ltx-2.3-quality/requests/{id}/status[?logs=1]     status ("status")
    GET  {queue}/fal-ai/ltx-2.3-quality/requests/{id}/status/stream       SSE ("stream")
    GET  {queue}/fal-ai/ltx-2.3-quality/requests/{id}                     result ("result")
    PUT  {queue}/fal-ai/ltx-2.3-quality/requests/{id}/cancel              cancel ("cancel")
  REST (`Authorization: Key <key>`), rest_url = base_url/rest
    POST {rest}/storage/auth/token?storage_type=fal-cdn-v3                 CDN token ("token")
    POST {rest}/storage/upload/initiate?storage_type=gcs                   signed-URL fallback ("initiate")
  CDN (`Authorization: Bearer <token>` from the token route), cdn_url = base_url/cdn
    POST {cdn}/files/upload                                                single upload ("upload")
    POST {cdn}/files/upload/multipart                                      start multipart ("upload_init")
    PUT  {access_url}/multipart/{uploadId}/{partNumber}                    one part ("upload_part")
    POST {access_url}/multipart/{uploadId}/complete                        finish ("upload_complete")
    PUT  {cdn}/signed/{id}?signature=...  (no auth; from "initiate")       signed upload ("upload")
    GET/HEAD {cdn}/files/{name}  (no auth, Range -> 206)                   download ("download")

Choices where fal's docs are silent (kept strict so client bugs show up):
  - status/result/cancel answer only on owner/alias (the full endpoint id there is a 404).
  - result before completion: 400 {"detail": "Request is still in progress"}.
  - cancel: a queued job is removed, a running one stops at once; both then read COMPLETED with
    error "Request cancelled by the client." / error_type "request_cancelled", and the result is 499
    with that detail (fal's runner answers RequestCancelledException with 499). fal only *signals* a running
    job: `running_cancel_is_ignored` keeps a running job going after its 202 (a runner that does not
    stop), `cancel_is_ignored` every job.
  - validation: 422 at submit (default). Real fal validates in the runner, so the 422 may come from the
    result instead: FakeFal(validate_on="result") does that (the status reads COMPLETED with error
    "Unprocessable Entity", and the result answers 422 with the field errors).
  - 429 and ingress 5xx carry no x-fal-request-id and create no job; every answer tied to a job does
    (fault "503_json_no_id" breaks that rule on purpose: a job created, an answer without its id).
  - multipart complete wants parts in ascending partNumber order with matching ETags (quotes optional).
  - the canvas is the requested size exactly (no snapping); billing uses it even when max_side shrinks
    the written file.
  - the runner downloads its inputs when the job starts: a `video_url` or LoRA `path` on this server's CDN
    that no longer exists (`expire_file`) fails the job with 422 `file_download_error` (fal's error type).
  - `tick_s`: a status event (a log line) every tick_s while a job is queued or running, like fal's
    per-step logs; `download_seconds`: every download is spread over that long.
  - accounting: `billed_unsaved()` lists jobs that produced a (billed) output which was never delivered in
    full (downloaded to its last byte, or returned inline for sync_mode) and not cancelled.
  - concurrency: `in_flight` is the number of jobs submitted and not yet COMPLETED, `peak_in_flight` the most
    there ever were at once (what an account's concurrency limit counts).
  - `input_rule(params, video_bytes)`: a test hook the runner calls when a job starts; a returned list of
    422 entries fails the job with 422 (as fal's runner rejects an input it cannot use).
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

ENDPOINT_ID = "fal-ai/ltx-2.3-quality/outpaint/lora"
DEFAULT_KEY = "test-key-id:test-key-secret"

PRESETS = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
NEGATIVE_PROMPT = (
    "color distortion, overexposure, static, blurry details, subtitles, style, artwork, painting, frame, still, "
    "dim overall tone, worst quality, low quality, JPEG compression artifacts, ugly, mutilated, extra fingers, "
    "poorly drawn hands, poorly drawn face, deformed, disfigured, malformed limbs, fused fingers, motionless frame, "
    "cluttered background, three legs, crowded background, walking backwards")
PRICE_PER_UNIT_USD = 0.0024075

ROUTES = ("submit", "status", "stream", "result", "cancel", "token", "initiate", "upload", "upload_init",
          "upload_part", "upload_complete", "download")
FAULTS = ("429", "ingress_503", "503_after_create", "503_json_no_id", "job_error", "drop", "stuck", "slow")
_JOB_FAULTS = ("job_error", "stuck")  # taken when a submit creates a job, not at arrival

NGINX_503 = (b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
             b"<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n"
             b"</body>\r\n</html>\r\n")
NGINX_TITLES = {502: b"502 Bad Gateway", 503: b"503 Service Temporarily Unavailable", 504: b"504 Gateway Time-out"}

CANCELLED_MSG = "Request cancelled by the client."  # fal's RequestCancelledException message (runner -> 499)


# ----------------------------------------------------------------------------------------------- records


@dataclass
class Record:
    """One HTTP request as the server saw it (appended when its body has been read)."""

    method: str
    path: str                     # URL path without the query, e.g. "/queue/fal-ai/ltx-2.3-quality/requests/x"
    query: dict[str, str]         # last value per name
    headers: dict[str, str]       # lower-case names
    json: Any                     # parsed JSON body, or None (not JSON / no body)
    body_length: int              # bytes of body received (partial for a dropped upload)
    time: float                   # time.monotonic() at arrival
    route: str = ""               # ROUTES name, "" when no route matched
    status: int | None = None     # response status; 0 = connection dropped; None = still answering
    fault: str | None = None      # injected fault applied to this request
    client_port: int = 0          # the client's TCP port (same port = same kept-alive connection)


@dataclass
class Job:
    request_id: str
    endpoint_id: str
    input: dict                   # the JSON body as sent
    params: dict                  # validated input with defaults applied ({} if invalid in validate_on="result")
    submitted_at: float
    queue_seconds: float
    run_seconds: float
    headers: dict[str, str] = field(default_factory=dict)
    webhook: str | None = None
    status: str = "IN_QUEUE"      # IN_QUEUE -> IN_PROGRESS -> COMPLETED
    started_at: float | None = None
    completed_at: float | None = None
    stuck: bool = False
    queue_position_base: int = 0
    fail: dict | None = None      # job_error fault params
    start_timeout: float | None = None
    error: str | None = None
    error_type: str | None = None
    error_status: int | None = None
    error_detail: Any = None      # result body "detail" for a failed job
    cancelled: bool = False       # a cancel took effect
    cancel_requests: int = 0
    cancelled_in: str | None = None  # the job's status when the first cancel arrived
    logs: list[dict] = field(default_factory=list)
    requested_size: tuple[int, int] | None = None   # canvas the request asked for (W, H)
    size: tuple[int, int] | None = None             # canvas actually written (after max_side)
    num_frames: int | None = None
    fps: float | None = None
    seed: int | None = None
    prompt: str | None = None
    billable_units: int | None = None
    result: dict | None = None    # model output JSON
    result_name: str | None = None
    result_path: str | None = None
    result_size: int | None = None
    result_url: str | None = None
    result_delivered: bool = False  # the client got the whole output (file downloaded / data URI returned)
    webhook_status: int | None = None
    version: int = 0              # bumped on every visible change (SSE)

    @property
    def done(self) -> bool:
        return self.status == "COMPLETED"

    @property
    def failed(self) -> bool:
        return self.done and self.error_status is not None


@dataclass
class StoredFile:
    name: str
    path: str
    content_type: str
    size: int
    etag: str


@dataclass
class Fault:
    route: str
    kind: str
    times: int | None             # None = unlimited
    params: dict
    hits: int = 0

    @property
    def spent(self) -> bool:
        return self.times is not None and self.hits >= self.times


@dataclass
class _Resp:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Callable[["_Handler"], None] | None = None  # writes the whole response itself


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> _Resp:
    return _Resp(status, json.dumps(obj).encode(), "application/json", dict(headers or {}))


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class _Dropped(Exception):
    """Close the connection without (completing) a response."""


# ----------------------------------------------------------------------------------------------- validation

_MISSING = object()
_BAD = object()


def _fmt(x: float) -> str:
    return str(x)


def _enum_msg(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


class _Validator:
    """Pydantic-v2 / FastAPI style validation errors (lax mode, like FastAPI on a JSON body)."""

    def __init__(self):
        self.errors: list[dict] = []

    def err(self, loc, type_, msg, value, ctx=None):
        e = {"type": type_, "loc": ["body", *loc], "msg": msg, "input": value}
        if ctx is not None:
            e["ctx"] = ctx
        self.errors.append(e)
        return _BAD

    def string(self, loc, v):
        return v if isinstance(v, str) else self.err(loc, "string_type", "Input should be a valid string", v)

    def integer(self, loc, v, ge=None, le=None, gt=None):
        if isinstance(v, bool):
            out = int(v)
        elif isinstance(v, int):
            out = v
        elif isinstance(v, float):
            if not math.isfinite(v):
                return self.err(loc, "finite_number", "Input should be a finite number", v)
            if not v.is_integer():
                return self.err(loc, "int_from_float",
                                "Input should be a valid integer, got a number with a fractional part", v)
            out = int(v)
        elif isinstance(v, str):
            try:
                out = int(v.strip())
            except ValueError:
                return self.err(loc, "int_parsing",
                                "Input should be a valid integer, unable to parse string as an integer", v)
        else:
            return self.err(loc, "int_type", "Input should be a valid integer", v)
        return self._range(loc, v, out, ge, le, gt)

    def number(self, loc, v, ge=None, le=None):
        if isinstance(v, (bool, int, float)):
            out = float(v)
        elif isinstance(v, str):
            try:
                out = float(v.strip())
            except ValueError:
                return self.err(loc, "float_parsing",
                                "Input should be a valid number, unable to parse string as a number", v)
        else:
            return self.err(loc, "float_type", "Input should be a valid number", v)
        return self._range(loc, v, out, ge, le, None)

    def _range(self, loc, v, out, ge, le, gt):
        if gt is not None and not out > gt:
            return self.err(loc, "greater_than", f"Input should be greater than {_fmt(gt)}", v, {"gt": gt})
        if ge is not None and not out >= ge:
            return self.err(loc, "greater_than_equal", f"Input should be greater than or equal to {_fmt(ge)}", v,
                            {"ge": ge})
        if le is not None and not out <= le:
            return self.err(loc, "less_than_equal", f"Input should be less than or equal to {_fmt(le)}", v, {"le": le})
        return out

    def boolean(self, loc, v):
        if isinstance(v, bool):
            return v
        if isinstance(v, (int, float)):
            if v in (0, 1):
                return bool(v)
            return self.err(loc, "bool_parsing", "Input should be a valid boolean, unable to interpret input", v)
        if isinstance(v, str):
            s = v.strip().lower()
            if s in ("1", "on", "t", "true", "y", "yes"):
                return True
            if s in ("0", "off", "f", "false", "n", "no"):
                return False
            return self.err(loc, "bool_parsing", "Input should be a valid boolean, unable to interpret input", v)
        return self.err(loc, "bool_type", "Input should be a valid boolean", v)

    def enum(self, loc, v, values):
        if isinstance(v, str) and v in values:
            return v
        expected = _enum_msg(values)
        return self.err(loc, "enum", f"Input should be {expected}", v, {"expected": expected})


# name -> (kind, required, default, extra); order = the schema's field order (pydantic reports in that order)
INPUT_SCHEMA: list[tuple[str, str, bool, Any, dict]] = [
    ("prompt", "str", True, None, {}),
    ("video_url", "str", True, None, {}),
    ("resolution", "resolution", False, "landscape_16_9", {}),
    ("source_scale", "float", False, 0.75, {"ge": 0.25, "le": 1}),
    ("video_strength", "float", False, 1.0, {"ge": 0, "le": 1}),
    ("num_frames", "int", False, 121, {"ge": 9, "le": 481}),
    ("frames_per_second", "float", False, 24.0, {"ge": 1, "le": 60}),
    ("num_inference_steps", "int", False, 15, {"ge": 8, "le": 30}),
    ("guidance_scale", "float", False, 1.0, {"ge": 1, "le": 20}),
    ("generate_audio", "bool", False, True, {}),
    ("negative_prompt", "str", False, NEGATIVE_PROMPT, {}),
    ("seed", "optional_int", False, None, {}),
    ("enable_prompt_expansion", "bool", False, True, {}),
    ("enable_safety_checker", "bool", False, True, {}),
    ("video_quality", "enum", False, "high", {"values": ("low", "medium", "high", "maximum")}),
    ("video_write_mode", "enum", False, "balanced", {"values": ("fast", "balanced", "small")}),
    ("sync_mode", "bool", False, False, {}),
    ("loras", "loras", True, None, {}),
]
LORA_TRANSFORMERS = ("both", "video", "audio")
MAX_LORAS = 3
IMAGE_SIZE_MAX = 14142


def validate_input(body: Any) -> tuple[dict | None, list[dict]]:
    """-> (params with defaults, []) or (None, FastAPI-style error list naming every invalid field)."""
    v = _Validator()
    if not isinstance(body, dict):
        v.errors.append({"type": "model_attributes_type", "loc": ["body"],
                         "msg": "Input should be a valid dictionary or object to extract fields from", "input": body})
        return None, v.errors
    out: dict[str, Any] = {}
    for name, kind, required, default, extra in INPUT_SCHEMA:
        value = body.get(name, _MISSING)
        if value is _MISSING:
            if required:
                v.err((name,), "missing", "Field required", body)
            else:
                out[name] = default
            continue
        loc = (name,)
        if kind == "str":
            out[name] = v.string(loc, value)
        elif kind == "float":
            out[name] = v.number(loc, value, **extra)
        elif kind == "int":
            out[name] = v.integer(loc, value, **extra)
        elif kind == "optional_int":
            out[name] = None if value is None else v.integer(loc, value)
        elif kind == "bool":
            out[name] = v.boolean(loc, value)
        elif kind == "enum":
            out[name] = v.enum(loc, value, extra["values"])
        elif kind == "resolution":
            out[name] = _validate_resolution(v, loc, value)
        elif kind == "loras":
            out[name] = _validate_loras(v, loc, value)
    if v.errors:
        return None, v.errors
    return out, []


def _validate_resolution(v: _Validator, loc, value):
    if isinstance(value, str):
        return v.enum(loc, value, tuple(PRESETS))
    if isinstance(value, dict):  # fal's ImageSize: width/height int, 0 < x <= 14142, default 512
        w = v.integer((*loc, "width"), value.get("width", 512), gt=0, le=IMAGE_SIZE_MAX)
        h = v.integer((*loc, "height"), value.get("height", 512), gt=0, le=IMAGE_SIZE_MAX)
        return _BAD if _BAD in (w, h) else {"width": w, "height": h}
    return v.err(loc, "model_attributes_type",
                 f"Input should be a valid dictionary or object to extract fields from, or {_enum_msg(tuple(PRESETS))}",
                 value)


def _validate_loras(v: _Validator, loc, value):
    if not isinstance(value, (list, tuple)):
        return v.err(loc, "list_type", "Input should be a valid list", value)
    if len(value) > MAX_LORAS:
        return v.err(loc, "too_long", f"List should have at most {MAX_LORAS} items after validation, not {len(value)}",
                     value, {"field_type": "List", "max_length": MAX_LORAS, "actual_length": len(value)})
    out = []
    for i, item in enumerate(value):
        iloc = (*loc, i)
        if not isinstance(item, dict):
            out.append(v.err(iloc, "model_attributes_type",
                             "Input should be a valid dictionary or object to extract fields from", item))
            continue
        path = item.get("path", _MISSING)
        path = v.err((*iloc, "path"), "missing", "Field required", item) if path is _MISSING else \
            v.string((*iloc, "path"), path)
        scale = v.number((*iloc, "scale"), item.get("scale", 1.0), ge=0, le=4)
        transformer = v.enum((*iloc, "transformer"), item.get("transformer", "both"), LORA_TRANSFORMERS)
        out.append({"path": path, "scale": scale, "transformer": transformer})
    return out


def canvas_size(resolution: Any) -> tuple[int, int]:
    if isinstance(resolution, str):
        return PRESETS[resolution]
    return int(resolution["width"]), int(resolution["height"])


def billable_units(width: int, height: int, frames: int) -> int:
    return math.ceil(width * height * frames / 1e6)


def _safe_name(name: str) -> str:
    name = os.path.basename(name.replace("\\", "/")).strip() or "upload.bin"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200]


_EXT = {"video/mp4": ".mp4", "video/quicktime": ".mov", "video/webm": ".webm", "image/png": ".png",
        "image/jpeg": ".jpg", "application/octet-stream": ".bin", "application/json": ".json"}


# ----------------------------------------------------------------------------------------------- the server


def _warm_imports() -> None:
    """Import the encoder stack in the background so the first job's timing is not an import's."""
    try:
        import ltx_outpaint.media.sample  # noqa: F401
        import ltx_outpaint.media.encode  # noqa: F401
    except Exception:  # noqa: BLE001 - the job reports it
        pass


class FakeFal:
    """A local fal.ai (queue + REST storage + CDN) for one endpoint. See the module docstring for routes.

    Args:
        keys: accepted API keys (`Authorization: Key <key>`).
        queue_seconds / run_seconds: time a job spends IN_QUEUE / IN_PROGRESS (read at submit; both
            attributes may be changed while running).
        endpoint_id: the one endpoint served.
        max_side: if set, the written MP4 is scaled down so its longest side <= max_side (even sides);
            the requested canvas is still what is billed and recorded (`job.requested_size`).
        forbidden_keys: keys answered with 403 (e.g. exhausted balance).
        sse_keepalive_s: interval of `: ping` comments on the SSE stream.
        token_ttl_s: lifetime of CDN tokens (expires_at is that far ahead).
        min_part_size: every multipart part but the last must be at least this big (S3 uses 5 MiB).
        validate_on: "submit" (422 from the submit POST) or "result" (the job is accepted and its result
            answers 422, as when the runner validates).
        workdir: where files are kept (kept after stop()); default a temp dir removed by stop().
        max_stream_s: upper bound for one SSE connection.
    Attributes: base_url, queue_url, rest_url, cdn_url, requests, jobs, submits, files, faults,
        cancel_is_ignored (cancel answers 202 but the job keeps running, like a runner ignoring it),
        running_cancel_is_ignored (the same for a job already running; a queued one is removed).
    """

    KEY = DEFAULT_KEY

    def __init__(self, keys=frozenset({DEFAULT_KEY}), queue_seconds: float = 0.2, run_seconds: float = 0.5,
                 endpoint_id: str = ENDPOINT_ID, max_side: int | None = None, forbidden_keys=frozenset(),
                 sse_keepalive_s: float = 15.0, token_ttl_s: float = 3600.0, min_part_size: int = 1,
                 validate_on: str = "submit", workdir: str | None = None, max_stream_s: float = 300.0,
                 log_interval_s: float | None = None, tick_s: float | None = None, download_seconds: float = 0.0):
        if validate_on not in ("submit", "result"):
            raise ValueError("validate_on: 'submit' or 'result'")
        self.keys = set(keys)
        self.forbidden_keys = set(forbidden_keys)
        self.queue_seconds = queue_seconds
        self.run_seconds = run_seconds
        self.endpoint_id = endpoint_id
        parts = endpoint_id.split("/")
        self.app_id = "/".join(parts[:3] if parts[0] in ("workflows", "comfy") else parts[:2])  # owner/alias
        self.max_side = max_side
        self.sse_keepalive_s = sse_keepalive_s
        self.token_ttl_s = token_ttl_s
        self.min_part_size = min_part_size
        self.validate_on = validate_on
        self.max_stream_s = max_stream_s
        self.log_interval_s = log_interval_s
        self.tick_s = tick_s
        self.download_seconds = download_seconds
        self.cancel_is_ignored = False
        self.running_cancel_is_ignored = False
        self.input_rule: Callable[[dict, bytes | None], list | None] | None = None
        self._peak_in_flight = 0
        self._own_workdir = workdir is None
        self.workdir = workdir
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._requests: list[Record] = []
        self._jobs: dict[str, Job] = {}
        self._files: dict[str, StoredFile] = {}
        self._multipart: dict[str, dict] = {}
        self._signed: dict[str, dict] = {}
        self._tokens: dict[str, float] = {}  # token -> expiry (time.time())
        self._faults: list[Fault] = []
        self._workers: list[threading.Thread] = []
        self._submits = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = self.queue_url = self.rest_url = self.cdn_url = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "FakeFal":
        if self._server is not None:
            return self
        self._stopping.clear()
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="fakefal-")
        os.makedirs(self.workdir, exist_ok=True)
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.queue_url = self.base_url + "/queue"
        self.rest_url = self.base_url + "/rest"
        self.cdn_url = self.base_url + "/cdn"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fakefal-http", daemon=True)
        self._thread.start()
        threading.Thread(target=_warm_imports, name="fakefal-warm", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)
        for t in list(self._workers):
            t.join(timeout=5)
        self._server = None
        if self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "FakeFal":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[Record]:
        with self._lock:
            return list(self._requests)

    @property
    def jobs(self) -> dict[str, Job]:
        with self._lock:
            return dict(self._jobs)

    @property
    def submits(self) -> int:
        """Submits that created a job (what fal could bill), whatever answer the client got."""
        with self._lock:
            return self._submits

    @property
    def files(self) -> dict[str, StoredFile]:
        with self._lock:
            return dict(self._files)

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet COMPLETED."""
        with self._lock:
            return sum(1 for j in self._jobs.values() if not j.done)

    @property
    def peak_in_flight(self) -> int:
        """The most jobs that were in flight at once."""
        with self._lock:
            return self._peak_in_flight

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    @property
    def charged_units(self) -> int:
        """Billable units of the jobs that produced an output (fal charges only successful outputs)."""
        with self._lock:
            return sum(j.billable_units or 0 for j in self._jobs.values() if j.done and j.result is not None)

    def billed_unsaved(self) -> list[str]:
        """Request ids of jobs with a (billed) output that the client never received in full."""
        with self._lock:
            return [rid for rid, j in self._jobs.items()
                    if j.done and j.result is not None and not j.result_delivered]

    def expire_file(self, url_or_name: str) -> None:
        """Forget a stored file, as fal's CDN eventually does (its URL then answers 404)."""
        name = url_or_name.rsplit("/files/", 1)[-1]
        with self._lock:
            self._files.pop(name, None)

    def count(self, method: str | None = None, path_contains: str = "") -> int:
        with self._lock:
            return sum(1 for r in self._requests
                       if (method is None or r.method == method.upper()) and path_contains in r.path)

    def file_bytes(self, url_or_name: str) -> bytes:
        name = url_or_name.rsplit("/files/", 1)[-1]
        with self._lock:
            f = self._files[name]
        with open(f.path, "rb") as fh:
            return fh.read()

    def wait_job(self, request_id: str, timeout: float = 10.0) -> Job:
        """Block until the job is COMPLETED (or raise TimeoutError)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                job = self._jobs[request_id]
                if job.done:
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {request_id} still {job.status} after {timeout} s")
                self._cond.wait(min(left, 0.1))

    def request_urls(self, request_id: str) -> dict[str, str]:
        base = f"{self.queue_url}/{self.app_id}/requests/{request_id}"
        return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}

    # ------------------------------------------------------------------ faults

    def inject(self, route: str, fault: str, times: int | None = 1, **params) -> Fault:
        """Make the next `times` requests on `route` misbehave (None = every one until clear_faults()).

        faults: "429" (Retry-After: params retry_after, default 0), "ingress_503" (nginx HTML, no
        x-fal-request-id; params status 502/503/504), "503_after_create" (the request is processed — a
        submit creates a billable job — then a 503 JSON with x-fal-request-id comes back), "503_json_no_id"
        (the request is processed, then a 503 JSON from fal's own layers with X-Fal-Error-Type but no
        x-fal-request-id: not the ingress, so a submit may have created a job), "job_error"
        (submit: the job fails while running; params error_type, message, status, at="running"|"queued"),
        "drop" (close the connection: uploads after reading params fraction=0.5 of the body, downloads after
        sending fraction=0.5 of the bytes, stream after params after_events=0 events, others before
        answering — or, with after=True, after processing, so a submit creates its job), "stuck" (submit:
        the job never leaves the queue; params queue_position=3), "slow" (sleep params seconds=1.0 first).
        """
        if route not in ROUTES:
            raise ValueError(f"route {route!r}; one of {ROUTES}")
        if fault not in FAULTS:
            raise ValueError(f"fault {fault!r}; one of {FAULTS}")
        if fault in _JOB_FAULTS and route != "submit":
            raise ValueError(f"fault {fault!r} only applies to route 'submit'")
        f = Fault(route, fault, times, dict(params))
        with self._lock:
            self._faults.append(f)
        return f

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, route: str, kinds) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.route == route and f.kind in kinds and not f.spent:
                    f.hits += 1
                    return f
        return None

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(max(0.0, seconds))

    # ------------------------------------------------------------------ auth

    def _check_key(self, h: "_Handler") -> _Resp | None:
        auth = h.headers.get("Authorization")
        if not auth:
            return _json(401, {"detail": f"Cannot access application '{self.app_id}'. Authentication is required "
                                         "to access this application."})
        scheme, _, cred = auth.strip().partition(" ")
        cred = cred.strip()
        if scheme.lower() != "key" or not cred:
            return _json(401, {"detail": "Invalid authorization header: expected 'Key <FAL_KEY>'"})
        if cred in self.forbidden_keys:
            return _json(403, {"detail": "User is locked. Reason: Exhausted balance. Top up your balance at "
                                         "fal.ai/dashboard/billing."})
        if cred not in self.keys:
            return _json(401, {"detail": "No user found for Key ID and Secret"})
        return None

    def _check_token(self, h: "_Handler") -> _Resp | None:
        auth = h.headers.get("Authorization")
        if not auth:
            return _json(401, {"detail": "Missing authorization header"})
        scheme, _, token = auth.strip().partition(" ")
        with self._lock:
            expiry = self._tokens.get(token.strip())
        if scheme.lower() != "bearer" or expiry is None:
            return _json(401, {"detail": "Invalid token"})
        if time.time() >= expiry:
            return _json(401, {"detail": "Token expired"})
        return None

    # ------------------------------------------------------------------ routing

    def _route(self, method: str, path: str):
        """-> (route name, callable(handler, ctx) -> _Resp) or (name or "", None) for 404/405."""
        segs = [unquote(s) for s in path.split("/")[1:]]
        if not segs or segs[0] not in ("queue", "rest", "cdn"):
            return "", None
        area, rest = segs[0], segs[1:]
        if area == "queue":
            if "requests" in rest:
                i = rest.index("requests")
                app, tail = "/".join(rest[:i]), rest[i + 1:]
                if app != self.app_id or not tail or not tail[0]:
                    return "", None
                rid, tail = tail[0], tail[1:]
                table = {(): ("result", "GET", self._result),
                         ("status",): ("status", "GET", self._status),
                         ("status", "stream"): ("stream", "GET", self._stream),
                         ("cancel",): ("cancel", "PUT", self._cancel)}
                hit = table.get(tuple(tail))
                if hit is None:
                    return "", None
                name, want, fn = hit
                return name, (fn if method == want else "405"), rid
            return "submit", (self._submit if method == "POST" else "405"), "/".join(rest)
        if area == "rest":
            if rest == ["storage", "auth", "token"]:
                return "token", (self._token if method == "POST" else "405"), None
            if rest == ["storage", "upload", "initiate"]:
                return "initiate", (self._initiate if method == "POST" else "405"), None
            return "", None
        # cdn
        if rest == ["files", "upload"]:
            return "upload", (self._upload if method == "POST" else "405"), None
        if rest == ["files", "upload", "multipart"]:
            return "upload_init", (self._upload_init if method == "POST" else "405"), None
        if len(rest) == 2 and rest[0] == "signed":
            return "upload", (self._signed_put if method == "PUT" else "405"), rest[1]
        if len(rest) == 5 and rest[0] == "files" and rest[2] == "multipart":
            if rest[4] == "complete":
                return "upload_complete", (self._upload_complete if method == "POST" else "405"), (rest[1], rest[3])
            return "upload_part", (self._upload_part if method == "PUT" else "405"), (rest[1], rest[3], rest[4])
        if len(rest) == 2 and rest[0] == "files":
            return "download", (self._download if method in ("GET", "HEAD") else "405"), rest[1]
        return "", None

    # ------------------------------------------------------------------ queue

    def _submit(self, h: "_Handler", ctx: dict) -> _Resp:
        denied = self._check_key(h)
        if denied:
            return denied
        if ctx["arg"] != self.endpoint_id:
            return _json(404, {"detail": f"Application '{ctx['arg']}' not found"})
        body = ctx["json"]
        if body is _BAD:
            return _json(422, {"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error",
                                           "input": {}, "ctx": {"error": "Expecting value"}}]})
        params, errors = validate_input(body)
        if errors and self.validate_on == "submit":
            return _json(422, {"detail": errors})
        rid = str(uuid.uuid4())
        timeout = h.headers.get("X-Fal-Request-Timeout")
        job = Job(rid, self.endpoint_id, body if isinstance(body, dict) else {"_": body}, params or {},
                  time.monotonic(), float(self.queue_seconds), float(self.run_seconds),
                  headers={k.lower(): v for k, v in h.headers.items() if k.lower() != "authorization"},
                  webhook=ctx["query"].get("fal_webhook"))
        try:
            job.start_timeout = float(timeout) if timeout else None
        except ValueError:
            return _json(400, {"detail": "Invalid X-Fal-Request-Timeout header"})
        if errors:  # validate_on="result": the runner rejects it
            job.fail = {"status": 422, "detail": errors, "message": None, "error_type": None, "at": "running"}
            job.run_seconds = min(job.run_seconds, 0.05)
        fault = self._take_fault("submit", _JOB_FAULTS)
        if fault is not None:
            ctx["record"].fault = fault.kind
            if fault.kind == "stuck":
                job.stuck = True
                job.queue_position_base = int(fault.params.get("queue_position", 3))
            else:
                p = fault.params
                job.fail = {"status": int(p.get("status", 500)),
                            "error_type": p.get("error_type", "runner_scheduling_failure"),
                            "message": p.get("message", "Failed to schedule a runner for this request"),
                            "at": p.get("at", "running"), "detail": None}
        if params:
            w, hgt = canvas_size(params["resolution"])
            job.requested_size = (w, hgt)
            job.size = self._scaled(w, hgt)
            job.num_frames = params["num_frames"]
            job.fps = params["frames_per_second"]
            job.billable_units = billable_units(w, hgt, job.num_frames)
        with self._cond:
            self._jobs[rid] = job
            self._submits += 1
            self._peak_in_flight = max(self._peak_in_flight, sum(1 for j in self._jobs.values() if not j.done))
            position = self._position(job)
            self._cond.notify_all()
        t = threading.Thread(target=self._run_job, args=(job,), name=f"fakefal-job-{rid[:8]}", daemon=True)
        self._workers.append(t)
        t.start()
        return _json(200, {"status": "IN_QUEUE", "request_id": rid, **self.request_urls(rid),
                           "queue_position": position}, {"x-fal-request-id": rid})

    def _scaled(self, w: int, h: int) -> tuple[int, int]:
        if not self.max_side or max(w, h) <= self.max_side:
            return w, h
        s = self.max_side / max(w, h)
        return max(2, int(w * s / 2) * 2), max(2, int(h * s / 2) * 2)

    def _position(self, job: Job) -> int:
        """Jobs queued ahead of `job` (stuck jobs report their own fixed position)."""
        ahead = sum(1 for j in self._jobs.values()
                    if j is not job and j.status == "IN_QUEUE" and not j.stuck and j.submitted_at < job.submitted_at)
        return job.queue_position_base + ahead

    def _job(self, rid: str) -> Job | None:
        with self._lock:
            return self._jobs.get(rid)

    def _status_body(self, job: Job, logs: bool) -> dict:
        with self._lock:
            d: dict[str, Any] = {"status": job.status, "request_id": job.request_id,
                                 **self.request_urls(job.request_id)}
            if job.status == "IN_QUEUE":
                d["queue_position"] = self._position(job)
            d["logs"] = [dict(x) for x in job.logs] if logs else None
            if job.done:
                inference = (job.completed_at - job.started_at) if job.started_at and job.completed_at else None
                d["metrics"] = {"inference_time": round(inference, 4) if inference is not None else None}
                if job.error is not None:
                    d["error"] = job.error
                    d["error_type"] = job.error_type
            return d

    @staticmethod
    def _truthy(v: str | None) -> bool:
        return (v or "").strip().lower() in ("1", "true", "yes", "on")

    def _status(self, h: "_Handler", ctx: dict) -> _Resp:
        denied = self._check_key(h)
        if denied:
            return denied
        job = self._job(ctx["arg"])
        if job is None:
            return _json(404, {"detail": "Request not found"})
        body = self._status_body(job, self._truthy(ctx["query"].get("logs")))
        return _json(200 if body["status"] == "COMPLETED" else 202, body, {"x-fal-request-id": job.request_id})

    def _stream(self, h: "_Handler", ctx: dict) -> _Resp:
        denied = self._check_key(h)
        if denied:
            return denied
        job = self._job(ctx["arg"])
        if job is None:
            return _json(404, {"detail": "Request not found"})
        logs = self._truthy(ctx["query"].get("logs"))
        fault = ctx["fault"]
        drop_after = int(fault.params["after_events"]) if fault and fault.kind == "drop" else None

        def run(hh: "_Handler") -> None:
            hh.send_response(200)
            hh.send_header("Content-Type", "text/event-stream")
            hh.send_header("Cache-Control", "no-cache")
            hh.send_header("Transfer-Encoding", "chunked")
            hh.send_header("x-fal-request-id", job.request_id)
            hh.end_headers()
            ctx["record"].status = 200
            end = time.monotonic() + self.max_stream_s
            last_body = None
            last_write = time.monotonic()
            seen = -1
            events = 0
            while not self._stopping.is_set() and time.monotonic() < end:
                with self._cond:
                    wait = max(0.0, last_write + self.sse_keepalive_s - time.monotonic())
                    if job.version == seen:
                        self._cond.wait(min(wait, 0.25))
                    seen = job.version
                if self._stopping.is_set():
                    break
                body = self._status_body(job, logs)
                if body != last_body:
                    if drop_after is not None and events >= drop_after:
                        raise _Dropped()
                    hh.write_chunk(b"data: " + json.dumps(body).encode() + b"\n\n")
                    last_body, last_write = body, time.monotonic()
                    events += 1
                    if body["status"] == "COMPLETED":
                        break
                elif time.monotonic() - last_write >= self.sse_keepalive_s:
                    hh.write_chunk(b": ping\n\n")
                    last_write = time.monotonic()
            hh.write_chunk(b"")

        return _Resp(200, stream=run, headers={"x-fal-request-id": job.request_id})

    def _result(self, h: "_Handler", ctx: dict) -> _Resp:
        denied = self._check_key(h)
        if denied:
            return denied
        job = self._job(ctx["arg"])
        if job is None:
            return _json(404, {"detail": "Request not found"})
        hdr = {"x-fal-request-id": job.request_id}
        with self._lock:
            if not job.done:
                return _json(400, {"detail": "Request is still in progress"}, hdr)
            if job.error_status is not None:
                if job.error_type:
                    hdr["X-Fal-Error-Type"] = job.error_type
                body: dict[str, Any] = {"detail": job.error_detail if job.error_detail is not None else job.error}
                if job.error_type:
                    body["error_type"] = job.error_type
                hdr["x-fal-billable-units"] = "0"
                return _json(job.error_status, body, hdr)
            hdr["x-fal-billable-units"] = str(job.billable_units)
            if str(job.result_url or "").startswith("data:"):
                job.result_delivered = True  # sync_mode: the output is in this answer
            return _json(200, job.result, hdr)

    def _cancel(self, h: "_Handler", ctx: dict) -> _Resp:
        denied = self._check_key(h)
        if denied:
            return denied
        job = self._job(ctx["arg"])
        if job is None:
            return _json(404, {"status": "NOT_FOUND"})
        hdr = {"x-fal-request-id": job.request_id}
        with self._cond:
            if job.done:
                return _json(400, {"status": "ALREADY_COMPLETED"}, hdr)
            job.cancel_requests += 1
            job.cancelled_in = job.cancelled_in or job.status
            ignored = self.cancel_is_ignored or (self.running_cancel_is_ignored and job.status == "IN_PROGRESS")
            if not ignored:
                job.cancelled = True
                if job.status == "IN_PROGRESS":
                    self._log(job, "Cancellation requested; stopping", "WARNING")
                self._finish(job, error=CANCELLED_MSG, error_type="request_cancelled", status=499)
            self._cond.notify_all()
        return _json(202, {"status": "CANCELLATION_REQUESTED"}, hdr)

    # ------------------------------------------------------------------ job worker

    def _log(self, job: Job, message: str, level: str = "INFO") -> None:
        job.logs.append({"message": message, "level": level, "source": "USER", "timestamp": _now_iso()})
        job.version += 1
        self._cond.notify_all()

    def _finish(self, job: Job, error: str | None = None, error_type: str | None = None, status: int | None = None,
                detail: Any = None) -> None:
        """Mark COMPLETED (caller holds the lock)."""
        job.status = "COMPLETED"
        job.completed_at = time.monotonic()
        if status is not None:
            job.error, job.error_type, job.error_status, job.error_detail = error, error_type, status, detail
        job.version += 1
        self._cond.notify_all()

    def _wait(self, job: Job, until: float) -> bool:
        """Wait (lock held) until monotonic `until`; False if the job finished (cancel) or the server stops."""
        while not job.done and not self._stopping.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return True
            self._cond.wait(min(left, 0.1))
        return False

    def _tick(self, job: Job) -> None:
        """A log line every tick_s while the job is queued or running."""
        n = 0
        nxt = time.monotonic()
        with self._cond:
            while not job.done and not self._stopping.is_set():
                nxt += self.tick_s
                while not job.done and not self._stopping.is_set() and time.monotonic() < nxt:
                    self._cond.wait(max(0.0, nxt - time.monotonic()))
                if job.done or self._stopping.is_set():
                    return
                n += 1
                self._log(job, f"Waiting for a runner ({n})" if job.status == "IN_QUEUE" else f"Denoising: tick {n}")

    def _missing_inputs(self, job: Job) -> list[dict]:
        """fal-style 422 entries for input URLs on this CDN that no longer exist."""
        prefix = self.cdn_url + "/files/"
        urls = [(("body", "video_url"), job.params.get("video_url"))]
        urls += [(("body", "loras", i, "path"), lora.get("path")) for i, lora in enumerate(job.params.get("loras") or [])
                 if isinstance(lora, dict)]
        out = []
        for loc, url in urls:
            if isinstance(url, str) and url.startswith(prefix):
                with self._lock:
                    present = url[len(prefix):] in self._files
                if not present:
                    out.append({"loc": list(loc), "msg": "Failed to download the file. Please check if the URL is "
                                "accessible.", "type": "file_download_error",
                                "url": "https://docs.fal.ai/errors#file_download_error", "input": url})
        return out

    def _input_video(self, job: Job) -> bytes | None:
        """The bytes of the job's video_url when it is a file on this CDN."""
        url = job.params.get("video_url")
        prefix = self.cdn_url + "/files/"
        if not isinstance(url, str) or not url.startswith(prefix):
            return None
        f = self._files.get(url[len(prefix):])
        if f is None:
            return None
        with open(f.path, "rb") as fh:
            return fh.read()

    def _run_job(self, job: Job) -> None:
        if self.tick_s:
            t = threading.Thread(target=self._tick, args=(job,), name=f"fakefal-tick-{job.request_id[:8]}",
                                 daemon=True)
            self._workers.append(t)
            t.start()
        try:
            self._run_job_inner(job)
        except Exception as exc:  # noqa: BLE001 - a broken fake job must still complete
            with self._cond:
                if not job.done and not self._stopping.is_set():
                    self._log(job, f"Internal error: {exc!r}", "ERROR")
                    self._finish(job, error=f"Internal server error: {exc}", error_type="internal_server_error",
                                 status=500)

    def _run_job_inner(self, job: Job) -> None:
        with self._cond:
            # queue phase
            while True:
                if job.done or self._stopping.is_set():
                    return
                now = time.monotonic()
                waited = now - job.submitted_at
                if job.start_timeout is not None and waited >= job.start_timeout:
                    self._finish(job, error="Request timed out", error_type="request_timeout", status=504)
                    return
                if not job.stuck and waited >= job.queue_seconds:
                    break
                nxt = job.submitted_at + (job.queue_seconds if not job.stuck else 1e9)
                if job.start_timeout is not None:
                    nxt = min(nxt, job.submitted_at + job.start_timeout)
                self._cond.wait(max(0.0, min(nxt - now, 0.1)))
            if job.fail and job.fail["at"] == "queued":
                self._fail(job)
                return
            missing = self._missing_inputs(job) if job.params else []
            if not missing and job.params and self.input_rule is not None:
                missing = self.input_rule(job.params, self._input_video(job)) or []
            if missing:  # the runner could not fetch or use an input
                job.fail = {"status": 422, "detail": missing, "message": None, "error_type": None, "at": "running"}
                self._fail(job)
                return
            job.status = "IN_PROGRESS"
            job.started_at = time.monotonic()
            job.version += 1
            self._log(job, "Starting LTX-2.3 outpaint")
            if job.fail and job.fail["detail"] is None:
                if not self._wait(job, job.started_at + job.run_seconds / 2):
                    return
                self._fail(job)
                return
            rendered = None
        if not job.fail:
            rendered = self._render(job)  # outside the lock, while "running": encoding takes a moment
        with self._cond:
            if job.done or self._stopping.is_set():
                self._discard(rendered)
                return
            steps = int(job.params.get("num_inference_steps") or 1)
            n_logs = max(1, min(steps, 5))
            interval = self.log_interval_s or job.run_seconds / (n_logs + 1)
            t = job.started_at
            for i in range(n_logs):
                t += interval
                if t >= job.started_at + job.run_seconds:
                    break
                if not self._wait(job, t):
                    self._discard(rendered)
                    return
                self._log(job, f"Denoising: step {round((i + 1) * steps / n_logs)}/{steps}")
            if not self._wait(job, job.started_at + job.run_seconds):
                self._discard(rendered)
                return
            if job.fail:  # validate_on="result": the runner answers 422
                self._fail(job)
                return
            self._log(job, "Encoding output video")
            self._publish(job, rendered)
            self._finish(job)
        self._deliver_webhook(job)

    @staticmethod
    def _discard(rendered: dict | None) -> None:
        if rendered:
            try:
                os.remove(rendered["path"])
            except OSError:
                pass

    def _fail(self, job: Job) -> None:
        f = job.fail
        if f["detail"] is not None:  # validation in the runner
            self._finish(job, error="Unprocessable Entity", error_type=None, status=f["status"], detail=f["detail"])
        else:
            self._log(job, f["message"], "ERROR")
            self._finish(job, error=f["message"], error_type=f["error_type"], status=f["status"])
        threading.Thread(target=self._deliver_webhook, args=(job,), daemon=True).start()

    def _render(self, job: Job) -> dict:
        """Write the output MP4 (not yet published) -> facts for _publish."""
        import torch

        from ltx_outpaint.media.sample import scene_frames
        from ltx_outpaint.media.decode import Audio
        from ltx_outpaint.media.encode import write_mp4

        p = job.params
        seed = p["seed"] if p["seed"] is not None else random.randint(0, 2**31 - 1)
        w, h = job.size
        frames = torch.from_numpy(scene_frames(w, h, job.num_frames, seed=seed % (2**31))).float().div_(255.0)
        audio = None
        if p["generate_audio"]:
            sr = 44100
            t = torch.arange(int(math.ceil(job.num_frames / job.fps * sr)) + sr // 10, dtype=torch.float32) / sr
            audio = Audio(torch.stack([0.2 * torch.sin(2 * math.pi * 440.0 * t),
                                       0.2 * torch.sin(2 * math.pi * 660.0 * t)]), sr)
        name = f"{uuid.uuid4().hex[:12]}_outpaint.mp4"
        path = os.path.join(self.workdir, name)
        write_mp4(path, frames, job.fps, audio, p["video_quality"], p["video_write_mode"])
        prompt = p["prompt"]
        if p["enable_prompt_expansion"]:
            prompt = (f"{prompt.rstrip('. ')}. The camera frame widens to reveal the surrounding environment, "
                      "continuing the scene's lighting, textures and motion seamlessly beyond the original borders.")
        return {"name": name, "path": path, "size": os.path.getsize(path), "seed": seed, "prompt": prompt}

    def _publish(self, job: Job, r: dict) -> None:
        """Make the rendered MP4 the job's result (on the CDN, or inline as a data URI with sync_mode)."""
        name, path, size = r["name"], r["path"], r["size"]
        if job.params["sync_mode"]:
            with open(path, "rb") as fh:
                url = "data:video/mp4;base64," + base64.b64encode(fh.read()).decode()
        else:
            url = f"{self.cdn_url}/files/{name}"
            self._store(name, path, "video/mp4")
        job.seed, job.prompt = r["seed"], r["prompt"]
        job.result_name, job.result_path, job.result_size, job.result_url = name, path, size, url
        job.result = {"video": {"url": url, "content_type": "video/mp4", "file_name": name, "file_size": size},
                      "seed": r["seed"], "prompt": r["prompt"]}

    def _deliver_webhook(self, job: Job) -> None:
        if not job.webhook or self._stopping.is_set():
            return
        ok = job.error_status is None
        payload = {"request_id": job.request_id, "gateway_request_id": job.request_id,
                   "status": "OK" if ok else "ERROR", "payload": job.result if ok else {"detail": job.error},
                   "error": None if ok else f"Invalid status code: {job.error_status}"}
        try:
            req = urllib.request.Request(job.webhook, json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - tests point it at localhost
                job.webhook_status = r.status
        except Exception as exc:  # noqa: BLE001
            job.webhook_status = getattr(exc, "code", -1)

    # ------------------------------------------------------------------ storage

    def _store(self, name: str, path: str, content_type: str) -> StoredFile:
        with open(path, "rb") as fh:
            etag = '"' + hashlib.md5(fh.read()).hexdigest() + '"'  # noqa: S324
        f = StoredFile(name, path, content_type, os.path.getsize(path), etag)
        with self._lock:
            self._files[name] = f
        return f

    def _store_bytes(self, name: str, data: bytes, content_type: str) -> StoredFile:
        path = os.path.join(self.workdir, name)
        with open(path, "wb") as fh:
            fh.write(data)
        return self._store(name, path, content_type)

    def _file_name(self, h: "_Handler", content_type: str) -> str:
        given = h.headers.get("X-Fal-File-Name")
        if given:
            return _safe_name(given)
        return "file" + _EXT.get(content_type.split(";")[0].strip(), ".bin")

    def _token(self, h: "_Handler", ctx: dict) -> _Resp:
        denied = self._check_key(h)
        if denied:
            return denied
        storage_type = ctx["query"].get("storage_type", "fal-cdn-v3")
        if storage_type != "fal-cdn-v3":
            return _json(400, {"detail": f"Unsupported storage_type {storage_type!r}"})
        token = secrets.token_urlsafe(32)
        expires = datetime.now(timezone.utc) + timedelta(seconds=self.token_ttl_s)
        with self._lock:
            self._tokens[token] = time.time() + self.token_ttl_s
        return _json(200, {"token": token, "token_type": "Bearer", "base_url": self.cdn_url,
                           "expires_at": expires.isoformat()})

    def _initiate(self, h: "_Handler", ctx: dict) -> _Resp:
        denied = self._check_key(h)
        if denied:
            return denied
        body = ctx["json"] if isinstance(ctx["json"], dict) else {}
        content_type = str(body.get("content_type") or "application/octet-stream")
        name = f"{uuid.uuid4().hex}-{_safe_name(str(body.get('file_name') or 'upload.bin'))}"
        sid = uuid.uuid4().hex
        sig = secrets.token_hex(16)
        with self._lock:
            self._signed[sid] = {"name": name, "sig": sig, "content_type": content_type}
        return _json(200, {"upload_url": f"{self.cdn_url}/signed/{sid}?signature={sig}",
                           "file_url": f"{self.cdn_url}/files/{name}"})

    def _signed_put(self, h: "_Handler", ctx: dict) -> _Resp:
        with self._lock:
            s = self._signed.get(ctx["arg"])
        if s is None or ctx["query"].get("signature") != s["sig"]:
            return _Resp(403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>", "application/xml")
        self._store_bytes(s["name"], ctx["body"], h.headers.get("Content-Type") or s["content_type"])
        return _Resp(200, b"", None)

    def _upload(self, h: "_Handler", ctx: dict) -> _Resp:
        denied = self._check_token(h)
        if denied:
            return denied
        content_type = h.headers.get("Content-Type") or "application/octet-stream"
        name = f"{uuid.uuid4().hex}-{self._file_name(h, content_type)}"
        self._store_bytes(name, ctx["body"], content_type)
        return _json(200, {"access_url": f"{self.cdn_url}/files/{name}"})

    def _upload_init(self, h: "_Handler", ctx: dict) -> _Resp:
        denied = self._check_token(h)
        if denied:
            return denied
        content_type = h.headers.get("Content-Type") or "application/octet-stream"
        name = f"{uuid.uuid4().hex}-{self._file_name(h, content_type)}"
        upload_id = secrets.token_urlsafe(18)
        with self._lock:
            self._multipart[upload_id] = {"name": name, "content_type": content_type, "parts": {}, "done": False}
        return _json(200, {"access_url": f"{self.cdn_url}/files/{name}", "uploadId": upload_id})

    def _upload_part(self, h: "_Handler", ctx: dict) -> _Resp:
        denied = self._check_token(h)
        if denied:
            return denied
        name, upload_id, number = ctx["arg"]
        with self._lock:
            up = self._multipart.get(upload_id)
        if up is None or up["name"] != name or up["done"]:
            return _json(404, {"detail": "NoSuchUpload: the upload does not exist or was completed"})
        if not number.isdigit() or not 1 <= int(number) <= 10000:
            return _json(400, {"detail": f"Invalid part number {number!r}: 1..10000"})
        data = ctx["body"]
        if not data:
            return _json(400, {"detail": "Empty part"})
        etag = '"' + hashlib.md5(data).hexdigest() + '"'  # noqa: S324
        with self._lock:
            up["parts"][int(number)] = (data, etag)
        return _Resp(200, b"", None, {"ETag": etag})

    def _upload_complete(self, h: "_Handler", ctx: dict) -> _Resp:
        denied = self._check_token(h)
        if denied:
            return denied
        name, upload_id = ctx["arg"]
        with self._lock:
            up = self._multipart.get(upload_id)
        if up is None or up["name"] != name or up["done"]:
            return _json(404, {"detail": "NoSuchUpload: the upload does not exist or was completed"})
        body = ctx["json"]
        parts = body.get("parts") if isinstance(body, dict) else None
        if not isinstance(parts, list) or not parts:
            return _json(400, {"detail": "MalformedXML: 'parts' must be a non-empty list"})
        chunks, last = [], 0
        for i, part in enumerate(parts):
            if not isinstance(part, dict) or not isinstance(part.get("partNumber"), int) or \
                    not isinstance(part.get("etag"), str):
                return _json(400, {"detail": f"MalformedXML: parts[{i}] needs partNumber (int) and etag (str)"})
            n = part["partNumber"]
            if n <= last:
                return _json(400, {"detail": "InvalidPartOrder: parts must be listed in ascending partNumber order"})
            last = n
            stored = up["parts"].get(n)
            if stored is None:
                return _json(400, {"detail": f"InvalidPart: part {n} was not uploaded"})
            if part["etag"].strip().strip('"') != stored[1].strip('"'):
                return _json(400, {"detail": f"InvalidPart: etag mismatch for part {n}"})
            chunks.append(stored[0])
        for data in chunks[:-1]:
            if len(data) < self.min_part_size:
                return _json(400, {"detail": "EntityTooSmall: every part but the last must be at least "
                                             f"{self.min_part_size} bytes"})
        with self._lock:
            up["done"] = True
        self._store_bytes(name, b"".join(chunks), up["content_type"])
        return _json(200, {"access_url": f"{self.cdn_url}/files/{name}"})

    def _delivered(self, name: str) -> None:
        """The last byte of a stored file was sent: a job whose output it is has been delivered."""
        with self._lock:
            for job in self._jobs.values():
                if job.result_name == name and str(job.result_url or "").startswith(self.cdn_url):
                    job.result_delivered = True

    def _download(self, h: "_Handler", ctx: dict) -> _Resp:
        with self._lock:
            f = self._files.get(ctx["arg"])
        if f is None:
            return _json(404, {"detail": "File not found"})
        size = f.size
        start, end, status = 0, size - 1, 200
        rng = h.headers.get("Range")
        if rng:
            m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", rng)
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start, end = max(0, size - int(m.group(2))), size - 1
                if start >= size or start > end:
                    return _Resp(416, b"", None, {"Content-Range": f"bytes */{size}"})
                status = 206
        fault = ctx["fault"]
        fraction = float(fault.params.get("fraction", 0.5)) if fault and fault.kind == "drop" else None
        head = h.command == "HEAD"

        def run(hh: "_Handler") -> None:
            length = end - start + 1
            hh.send_response(status)
            hh.send_header("Content-Type", f.content_type)
            hh.send_header("Content-Length", str(length))
            hh.send_header("Accept-Ranges", "bytes")
            hh.send_header("ETag", f.etag)
            if status == 206:
                hh.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            hh.end_headers()
            ctx["record"].status = status
            if head:
                return
            limit = length if fraction is None else int(length * fraction)
            sent = 0
            throttle = self.download_seconds
            piece = 65536 if not throttle else max(1024, size // 20)
            with open(f.path, "rb") as fh:
                fh.seek(start)
                while sent < limit:
                    chunk = fh.read(min(piece, limit - sent))
                    if not chunk:
                        break
                    if throttle:
                        self._sleep(throttle * len(chunk) / max(1, size))
                    hh.wfile.write(chunk)
                    hh.wfile.flush()
                    sent += len(chunk)
            if fraction is not None:
                raise _Dropped()
            if end == size - 1 and sent == length:
                self._delivered(f.name)

        return _Resp(status, stream=run)


# ----------------------------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, handler, fake: FakeFal):
        self.fake = fake
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakefal/1.0"
    sys_version = ""
    timeout = 30  # idle keep-alive connections end after this

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    @property
    def fake(self) -> FakeFal:
        return self.server.fake

    # -- body

    def _read_body(self, limit: int | None = None) -> bytes:
        """The request body (Content-Length or chunked); at most about `limit` bytes when given."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise _Dropped()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(65537)
                if limit is not None and len(out) >= limit:
                    return bytes(out)
        n = int(self.headers.get("Content-Length") or 0)
        if limit is not None:
            n = min(n, limit)
        return self.rfile.read(n) if n > 0 else b""

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send(self, resp: _Resp, record: Record) -> None:
        self.send_response(resp.status)
        if resp.content_type:
            self.send_header("Content-Type", resp.content_type)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        record.status = resp.status
        if self.command != "HEAD" and resp.body:
            self.wfile.write(resp.body)

    def _drop(self, record: Record) -> None:
        record.status = 0
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- one request

    def _handle(self) -> None:
        fake = self.fake
        arrived = time.monotonic()
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        route, fn, arg = (fake._route(self.command, url.path) + (None,))[:3]
        fault = fake._take_fault(route, tuple(k for k in FAULTS if k not in _JOB_FAULTS)) if route else None
        record = Record(self.command, url.path, query, {k.lower(): v for k, v in self.headers.items()}, None, 0,
                        arrived, route, None, fault.kind if fault else None, self.client_address[1])
        logged = False
        try:
            partial = fault is not None and fault.kind == "drop" and route in ("upload", "upload_part") \
                and not fault.params.get("after")
            if partial:
                total = int(self.headers.get("Content-Length") or 0)
                body = self._read_body(limit=max(1, int(total * float(fault.params.get("fraction", 0.5)))))
            else:
                body = self._read_body()
            record.body_length = len(body)
            parsed: Any = None
            if body and "json" in (self.headers.get("Content-Type") or "application/json"):
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = _BAD
            record.json = None if parsed is _BAD else parsed
            with fake._lock:
                fake._requests.append(record)
            logged = True
            if partial:
                raise _Dropped()
            if fault is not None:
                if fault.kind == "slow":
                    fake._sleep(float(fault.params.get("seconds", 1.0)))
                elif fault.kind == "429":
                    self._send(_json(429, {"detail": "Too many requests, please retry later"},
                                     {"Retry-After": str(fault.params.get("retry_after", 0))}), record)
                    return
                elif fault.kind == "ingress_503":
                    status = int(fault.params.get("status", 503))
                    page = NGINX_503.replace(b"503 Service Temporarily Unavailable",
                                             NGINX_TITLES.get(status, NGINX_TITLES[503]))
                    self._send(_Resp(status, page, "text/html"), record)
                    return
                elif fault.kind == "drop" and not fault.params.get("after") and route != "download" \
                        and not (route == "stream" and "after_events" in fault.params):
                    raise _Dropped()
            if fn is None:
                resp = _json(404, {"detail": "Not Found"})
            elif fn == "405":
                resp = _json(405, {"detail": "Method Not Allowed"})
            else:
                resp = fn(self, {"arg": arg, "query": query, "body": body, "json": parsed, "record": record,
                                 "fault": fault})
            if fault is not None and fault.kind == "drop" and fault.params.get("after"):
                raise _Dropped()
            if fault is not None and fault.kind == "503_after_create":
                rid = resp.headers.get("x-fal-request-id") or str(uuid.uuid4())
                resp = _json(503, {"detail": "Service temporarily unavailable: the runner connection was lost",
                                   "error_type": "runner_disconnected"},
                             {"x-fal-request-id": rid, "X-Fal-Error-Type": "runner_disconnected"})
            if fault is not None and fault.kind == "503_json_no_id":
                resp = _json(503, {"detail": "No runner could be scheduled", "error_type": "runner_scheduling_failure"},
                             {"X-Fal-Error-Type": "runner_scheduling_failure"})
            if resp.stream is not None:
                resp.stream(self)
            else:
                self._send(resp, record)
        except _Dropped:
            if not logged:
                with fake._lock:
                    fake._requests.append(record)
            self._drop(record)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True
            if record.status is None:
                record.status = 0
        except Exception:  # a bug in the fake: answer 500 if nothing was sent yet, else break off
            import traceback

            traceback.print_exc()
            if not logged:
                with fake._lock:
                    fake._requests.append(record)
            if record.status is None:
                try:
                    self._send(_json(500, {"detail": "Internal Server Error (fake fal bug)"}), record)
                except OSError:
                    self._drop(record)
            else:
                self._drop(record)
