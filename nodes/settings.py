"""Where the pack keeps its settings and the user's fal key, and how the key is found.

Key sources, in order: env `FAL_KEY`; env `FAL_KEY_ID` + `FAL_KEY_SECRET`; the key the user stored through
the pack's settings (a file with mode 0600 in the settings folder). The settings folder is
`$LTX_OUTPAINT_CONFIG_DIR`, else ComfyUI's user directory + `/ltx_outpaint` (set by the adapter), else
`~/.config/ltx-outpaint`. A key is never written to a workflow, widget, log line or error text: it is
held in :class:`ApiKey`, whose repr and str are masked.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Settings:
    """Non-secret settings (settings.json in the settings folder); env vars override."""

    fal_queue_url: str = ""
    fal_rest_url: str = ""
    fal_cdn_url: str = ""
    fal_max_cost_usd: float = 0.0  # 0 = no limit
    allow_private_hosts: bool = False
    #: Backend of an outpaint node with no backend connected: preview | fal | local.
    default_backend: str = "preview"

    @classmethod
    def load(cls) -> "Settings":
        path = os.path.join(config_dir(), SETTINGS_FILE)
        data = {}
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable %s: %s", path, exc)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self) -> str:
        path = os.path.join(config_dir(), SETTINGS_FILE)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.__dict__, f, indent=2)
        return path
