"""Small JSON state files (caches, manifests, settings): read as an object, written atomically."""
from __future__ import annotations

import json
import os
from typing import Any


def read_object(path: str) -> dict:
    """The JSON object in `path`; {} when the file is missing, unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_atomic(path: str, data: Any, indent: int | None = None) -> str:
    """Write `data` as JSON to `path` through a temporary file (a reader never sees half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=indent)
    os.replace(tmp, path)
    return path
