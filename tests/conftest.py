"""Shared fixtures. `comfyui`: one real ComfyUI backend per test session with this pack installed."""
from __future__ import annotations

import os

import pytest

from comfyui_server import ComfyUIError, ComfyUIServer, find_comfyui_dir


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def comfyui_server(tmp_path_factory):
    """A ComfyUI process on 127.0.0.1 (started once per session) with the repo linked into custom_nodes/.

    Skipped when env LTX_OUTPAINT_COMFYUI_DIR does not name a ComfyUI folder, except under CI=true, where
    a missing backend is an error (so the integration tests cannot silently vanish).
    """
    comfyui_dir, reason = find_comfyui_dir()
    if comfyui_dir is None:
        if _in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    server = ComfyUIServer(comfyui_dir, str(tmp_path_factory.mktemp("comfyui")))
    # What the person starting the server allows through its environment (nothing reachable over HTTP can):
    # the local fake fal server's host for the pack's settings file, and one extra media folder.
    server.allowed_media_dir = str(tmp_path_factory.mktemp("allowed_media"))
    opt_ins = {"LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS": "127.0.0.1",
               "LTX_OUTPAINT_ALLOWED_PATHS": server.allowed_media_dir}
    saved = {k: os.environ.get(k) for k in (*opt_ins, "LTX_OUTPAINT_ALLOW_ANY_PATH")}
    os.environ.update(opt_ins)
    os.environ.pop("LTX_OUTPAINT_ALLOW_ANY_PATH", None)
    try:
        server.start(timeout=float(os.environ.get("LTX_OUTPAINT_COMFYUI_START_TIMEOUT", "120")))
    except ComfyUIError as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def comfyui_pack_loaded(comfyui_server):
    """Fails loudly, with ComfyUI's traceback, when the pack did not import inside ComfyUI."""
    status = comfyui_server.pack_import()
    if status.failed or not status.seen:
        what = "failed to import" if status.failed else "does not appear in ComfyUI's custom-node import list"
        pytest.fail(f"the pack ({comfyui_server.pack_path}) {what} inside ComfyUI:\n"
                    f"{status.details or comfyui_server.log_tail()}", pytrace=False)
    return status


@pytest.fixture(scope="session")
def comfyui(comfyui_server, comfyui_pack_loaded):
    """The running ComfyUI backend (see tests/comfyui_server.py), after checking that the pack loaded.

    Attributes: base_url, base_dir, input_dir, output_dir, log_path, allowed_media_dir (a folder outside
    ComfyUI's that the server's environment allows); methods: object_info(), queue(prompt)
    -> (status, json), wait(prompt_id, timeout) -> history entry, run(prompt, timeout=120) -> history
    entry (PromptRejected with node_errors on HTTP 400), interrupt(), log_text().
    """
    return comfyui_server


from tiny_ltx import tiny_models  # noqa: E402,F401  (session fixture: tiny random-weight LTX-2.3 models)
