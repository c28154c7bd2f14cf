"""Where the pack keeps its settings and the user's fal key, and how the key is found.

Key sources, in order: env `FAL_KEY`; env `FAL_KEY_ID` + `FAL_KEY_SECRET`; the key the user stored through
the pack's settings (a file with mode 0600 in the settings folder). The settings folder is
`$LTX_OUTPAINT_CONFIG_DIR`, else ComfyUI's user directory + `/ltx_outpaint` (set by the adapter), else
`~/.config/ltx-outpaint`. A key is never written to a workflow, widget, log line or error text: it is
held in :class:`ApiKey`, whose repr and str are masked.

Non-secret settings live in `settings.json` (:class:`Settings`). Every value is type-checked: the HTTP route
refuses a wrong one with the reason (`Settings.updated`), a hand-edited file falls back to the default for
it (with a warning). Precedence of the fal base URLs: an explicit value (code, CLI) > the environment
(`LTX_OUTPAINT_FAL_*_URL`) > `settings.json` > fal's default; a settings file may only name a non-fal host
when the server's environment allows it (`ltx_outpaint.fal.hosts`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from .jsonfile import write_atomic

log = logging.getLogger(__name__)

ENV_CONFIG_DIR = "LTX_OUTPAINT_CONFIG_DIR"
KEY_FILE = "fal_key"
SETTINGS_FILE = "settings.json"
_default_dir: str | None = None  # ComfyUI's user dir, set by the adapter at load time


def set_default_config_dir(path: str) -> None:
    global _default_dir
    _default_dir = path


def config_dir() -> str:
    path = os.environ.get(ENV_CONFIG_DIR) or _default_dir or os.path.join(
        os.path.expanduser("~"), ".config", "ltx-outpaint")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class ApiKey:
    """A secret. `value` is the key; repr/str never show it."""

    __slots__ = ("value", "source")

    def __init__(self, value: str, source: str):
        self.value = value
        self.source = source

    def masked(self) -> str:
        return f"...{self.value[-4:]}" if len(self.value) > 12 else "****"

    def __repr__(self) -> str:
        return f"ApiKey(<hidden>, source={self.source!r})"

    __str__ = __repr__


def find_fal_key() -> ApiKey | None:
    """The fal key from the environment or the stored file, or None."""
    if os.environ.get("FAL_KEY", "").strip():
        return ApiKey(os.environ["FAL_KEY"].strip(), "env FAL_KEY")
    key_id, secret = os.environ.get("FAL_KEY_ID", "").strip(), os.environ.get("FAL_KEY_SECRET", "").strip()
    if key_id and secret:
        return ApiKey(f"{key_id}:{secret}", "env FAL_KEY_ID + FAL_KEY_SECRET")
    path = os.path.join(config_dir(), KEY_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except FileNotFoundError:
        return None
    return ApiKey(value, "stored key") if value else None


def store_fal_key(value: str) -> str:
    """Store (or with an empty value, delete) the user's key in a 0600 file; returns its path."""
    path = os.path.join(config_dir(), KEY_FILE)
    value = value.strip()
    if not value:
        if os.path.exists(path):
            os.unlink(path)
        return path
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    log.info("fal key stored in the pack's settings folder (mode 0600)")
    return path


def missing_key_message() -> str:
    return ("no fal key configured: set the FAL_KEY environment variable (or FAL_KEY_ID + FAL_KEY_SECRET), "
            "or store a key in the pack's settings; get one at fal.ai/dashboard/keys")


BACKENDS = ("preview", "fal", "local")
MAX_COST_LIMIT_USD = 1000.0
URL_SETTINGS = ("fal_queue_url", "fal_rest_url", "fal_cdn_url")


def _check_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string (an http(s) URL or empty), got {type(value).__name__}")
    value = value.strip()
    if value and not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"must be an http(s) URL or empty, got {value[:80]!r}")
    return value.rstrip("/")


def _check_cost(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number of US dollars, got {type(value).__name__}")
    if not math.isfinite(value) or not 0 <= value <= MAX_COST_LIMIT_USD:
        raise ValueError(f"got {value!r}; allowed 0 (no limit) to {MAX_COST_LIMIT_USD:g}")
    return float(value)


def _check_backend(value: Any) -> str:
    if value not in BACKENDS:
        raise ValueError(f"got {value!r}; allowed: {', '.join(BACKENDS)}")
    return value


_CHECKS = {"fal_queue_url": _check_url, "fal_rest_url": _check_url, "fal_cdn_url": _check_url,
           "fal_max_cost_usd": _check_cost, "default_backend": _check_backend}


@dataclass(frozen=True)
class Settings:
    """Non-secret settings (settings.json in the settings folder). See the module docstring for precedence."""

    fal_queue_url: str = ""
    fal_rest_url: str = ""
    fal_cdn_url: str = ""
    fal_max_cost_usd: float = 0.0  # 0 = no limit
    #: Backend of an outpaint node with no backend connected: preview | fal | local.
    default_backend: str = "preview"

    @classmethod
    def load(cls) -> "Settings":
        """The saved settings; an unreadable file or a wrong value falls back to the default (logged)."""
        path = os.path.join(config_dir(), SETTINGS_FILE)
        data: Any = {}
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable %s: %s", SETTINGS_FILE, exc)
        if not isinstance(data, dict):
            log.warning("ignoring %s: not a JSON object", SETTINGS_FILE)
            data = {}
        values = {}
        for name, value in data.items():
            if name not in _CHECKS:
                continue
            try:
                values[name] = _CHECKS[name](value)
            except ValueError as exc:
                log.warning("%s: ignoring %s (%s); using the default", SETTINGS_FILE, name, exc)
        return cls(**values)

    def updated(self, body: Any) -> "Settings":
        """A copy with `body`'s values; raises ValueError naming the first bad field and why."""
        if not isinstance(body, Mapping):
            raise ValueError(f"the body must be a JSON object of settings ({', '.join(_CHECKS)})")
        unknown = sorted(set(body) - set(_CHECKS))
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown setting; known: {', '.join(_CHECKS)}")
        values = {}
        for name, value in body.items():
            try:
                values[name] = _CHECKS[name](value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return Settings(**{**asdict(self), **values})

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def save(self) -> str:
        return write_atomic(os.path.join(config_dir(), SETTINGS_FILE), self.as_dict(), indent=2)
