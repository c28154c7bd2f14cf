"""What ``keep_loaded`` keeps between local runs, and releasing it (pure: no torch import unless kept).

A run with ``keep_loaded`` on keeps the checkpoint's tensors in RAM (``checkpoint``), ltx-core's state-dict
registry for the VAE / audio / upsampler / text-projection weights (``registry``) and the last prompt encodings
(``text``). A run with it off, ComfyUI's unload / free-memory action (``nodes/comfyui/nodes_local.py`` hooks
``comfy.model_management.unload_all_models``) and :func:`release` drop all of it.
"""
from __future__ import annotations

import gc
import logging
import sys
import threading

log = logging.getLogger(__name__)


class Kept:
    lock = threading.Lock()
    checkpoint: tuple[str, object] | None = None  # (path, preloaded tensors)
    registry: object = None  # ltx-core StateDictRegistry
    registry_key: tuple | None = None
    text: dict = {}


def summary() -> dict:
    """What is kept now: {"checkpoint": path or None, "registry": state dicts, "text": encodings, "bytes": n}."""
    with Kept.lock:
        nbytes = getattr(Kept.checkpoint[1], "_handle", None) if Kept.checkpoint else None
        nbytes = getattr(nbytes, "nbytes", 0) if nbytes is not None else 0
        registry = len(getattr(Kept.registry, "_state_dicts", {}) or {}) if Kept.registry is not None else 0
        if Kept.registry is not None:
            nbytes += sum(sd.size for sd in getattr(Kept.registry, "_state_dicts", {}).values())
        return {"checkpoint": Kept.checkpoint[0] if Kept.checkpoint else None, "registry": registry,
                "text": len(Kept.text), "bytes": int(nbytes)}


def empty() -> bool:
    s = summary()
    return s["checkpoint"] is None and not s["registry"] and not s["text"]


def release(reason: str = "") -> int:
    """Drop everything kept; returns the bytes released (0 when nothing was kept)."""
    if empty():
        return 0
    nbytes = summary()["bytes"]
    with Kept.lock:
        Kept.checkpoint = None
        if Kept.registry is not None and hasattr(Kept.registry, "clear"):
            Kept.registry.clear()
        Kept.registry = None
        Kept.registry_key = None
        Kept.text = {}
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    log.info("keep_loaded: released %.2f GiB of kept model weights%s", nbytes / 2**30,
             f" ({reason})" if reason else "")
    return nbytes
