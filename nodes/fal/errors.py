"""fal errors: one exception family (never holding the key), 422 field errors, redaction helpers."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # httpx is imported only when a fal run starts (ComfyUI start-up time)
    import httpx


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every secret (of 4+ characters) replaced by `***`."""
    out = str(text)
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        out = out.replace(secret, "***")
    return out


def key_secrets(key: str) -> list[str]:
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


class FalSubmitUnknown(FalError):
    """A submit whose outcome is unknown: it was sent, then the connection broke before fal answered, or fal
    answered a 5xx that names no request id and is not its ingress' (nginx) page.

    fal may have created (and may bill) the job; it is never submitted again automatically.
    """


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


def body_json(resp: "httpx.Response") -> Any:
    try:
        return resp.json()
    except (ValueError, UnicodeDecodeError):
        return None


def short_text(text: str, limit: int = 300) -> str:
    text = re.sub(r"<[^>]+>", " ", text)  # nginx error pages
    text = re.sub(r"\s+", " ", text).strip()
    return text[:limit] + ("..." if len(text) > limit else "")
