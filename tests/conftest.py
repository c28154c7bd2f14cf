"""Shared fixtures and the test-server factory.

`comfyui`: one real ComfyUI backend per test session with this pack installed; which ComfyUI, Python
packages and frontend it runs comes from env (LTX_OUTPAINT_COMFYUI_DIR / _PYTHONPATH / LTX_OUTPAINT_FRONTEND_ROOT,
set by `bash .ci/run` for each combination it tests).
`comfyui_current`: ComfyUI 0.20.1 with its pinned packages whatever the session server is
(LTX_OUTPAINT_COMFYUI_CURRENT_DIR / _PYTHONPATH).
`start_comfyui(...)`: a server of its own for a test module that needs extra custom nodes, env or models:

    from conftest import start_comfyui

    @pytest.fixture(scope="module")
    def native_server(tmp_path_factory, tiny_models):
        with start_comfyui(tmp_path_factory, version="current",
                           extra_custom_nodes={"ltx_tiny_gemma_patch": PATCH_DIR},
                           env={"LTX_OUTPAINT_TEST_TINY_GEMMA": sizes_file},
                           models={"checkpoints": [tiny_models.dev], "text_encoders": [...]}) as server:
            yield server

Missing backends skip locally and FAIL under CI=true (`bash .ci/run` sets it), so no test vanishes in CI.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import pytest

from comfyui_server import SERVER_ENV, ComfyUIError, ComfyUIServer, env_paths, find_comfyui_dir


def in_ci() -> bool:
    """CI=true (or 1/yes): prerequisites that would skip a test locally are failures."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip the test, except under CI=true, where a missing prerequisite fails it."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing prerequisite is a failure)", pytrace=False)
    pytest.skip(reason)


def check_pack_loaded(server: ComfyUIServer) -> None:
    """Fail loudly, with ComfyUI's traceback, when the pack did not import inside ComfyUI."""
    status = server.pack_import()
    if status.failed or not status.seen:
        what = "failed to import" if status.failed else "does not appear in ComfyUI's custom-node import list"
        pytest.fail(f"the pack ({server.pack_path}) {what} inside ComfyUI:\n"
                    f"{status.details or server.log_tail()}", pytrace=False)


@contextlib.contextmanager
def start_comfyui(tmp_path_factory, version: str = "default", *, extra_custom_nodes: dict[str, str] | None = None,
                  env: dict[str, str] | None = None, models: dict[str, list[str] | dict[str, str]] | None = None,
                  front_end_root: str | None = None, name: str = "comfyui",
                  require_pack: bool = True) -> Iterator[ComfyUIServer]:
    """Start a ComfyUI test server with this pack (and the given extras); stop it on exit.

    version: "default" = the session's combination (env LTX_OUTPAINT_COMFYUI_DIR, _PYTHONPATH, FRONTEND_ROOT);
             "current" = ComfyUI 0.20.1 + its pinned packages (LTX_OUTPAINT_COMFYUI_CURRENT_DIR / _PYTHONPATH).
    extra_custom_nodes: name -> folder of a test-only node pack linked next to ours.
    env: extra environment of the server process. models: models/<folder> -> files to link there.
    front_end_root: serve this frontend static folder (default: the one the version's env names).
    """
    if version not in SERVER_ENV:
        raise ValueError(f"version: {version!r}; allowed: {', '.join(SERVER_ENV)}")
    dir_env, path_env, frontend_env = SERVER_ENV[version]
    comfyui_dir, reason = find_comfyui_dir(dir_env)
    if comfyui_dir is None:
        skip_or_fail(reason)
    if front_end_root is None and frontend_env:
        front_end_root = os.environ.get(frontend_env, "").strip() or None
    if front_end_root and not os.path.isfile(os.path.join(front_end_root, "index.html")):
        pytest.fail(f"frontend root {front_end_root} has no index.html", pytrace=False)
    # What the person starting the server allows through its environment (nothing reachable over HTTP can):
    # the local fake fal server's host for the pack's settings file, and one extra media folder (+ the caller's).
    allowed_media_dir = str(tmp_path_factory.mktemp(name + "-allowed-media"))
    env = dict(env or {})
    env["LTX_OUTPAINT_ALLOWED_PATHS"] = os.pathsep.join(filter(None, [allowed_media_dir,
                                                                       env.get("LTX_OUTPAINT_ALLOWED_PATHS")]))
    env.setdefault("LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS", "127.0.0.1")
    env.setdefault("LTX_OUTPAINT_ALLOW_ANY_PATH", "")  # never inherited from the test runner's environment
    server = ComfyUIServer(comfyui_dir, str(tmp_path_factory.mktemp(name)), pythonpath=env_paths(path_env),
                           extra_custom_nodes=extra_custom_nodes, env=env, models=models,
                           front_end_root=front_end_root)
    server.allowed_media_dir = allowed_media_dir
    try:
        server.start(timeout=float(os.environ.get("LTX_OUTPAINT_COMFYUI_START_TIMEOUT", "180")))
    except ComfyUIError as e:
        server.stop()
        pytest.fail(str(e), pytrace=False)
    try:
        if require_pack:
            check_pack_loaded(server)
        yield server
    finally:
        server.stop()


#: the TEST-ONLY pack that lets ComfyUI core load the tests' tiny Gemma (see its docstring)
TEST_SUPPORT_PACK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "comfyui_test_nodes",
                                 "ltx_outpaint_test_support")


@pytest.fixture(scope="session")
def comfyui_server(tmp_path_factory, tiny_models):
    """The session's ComfyUI process (see start_comfyui, version "default"), before the pack check. With the
    TEST-ONLY support pack (the tiny Gemma's sizes, on a ComfyUI with core LTX-2), so graphs and templates with
    the local backend run on the tiny models whichever engine `auto` picks there."""
    with start_comfyui(tmp_path_factory, require_pack=False,
                       extra_custom_nodes={"ltx_outpaint_test_support": TEST_SUPPORT_PACK},
                       env={"LTX_OUTPAINT_TEST_TINY_GEMMA": tiny_models.comfy_gemma + ".json",
                            "LTX_OUTPAINT_ALLOWED_PATHS": tiny_models.root}) as server:
        yield server


@pytest.fixture(scope="session")
def comfyui_pack_loaded(comfyui_server):
    """Fails loudly, with ComfyUI's traceback, when the pack did not import inside ComfyUI."""
    check_pack_loaded(comfyui_server)
    return comfyui_server.pack_import()


@pytest.fixture(scope="session")
def comfyui(comfyui_server, comfyui_pack_loaded):
    """The running ComfyUI backend (see tests/comfyui_server.py), after checking that the pack loaded.

    Attributes: base_url, base_dir, input_dir, output_dir, models_dir, log_path, allowed_media_dir (a folder
    outside ComfyUI's that the server's environment allows); methods: object_info(), queue(prompt) -> (status,
    json), wait(prompt_id, timeout) -> history entry, run(prompt, timeout=120) -> history entry (PromptRejected
    with node_errors on HTTP 400), interrupt(), log_text(), add_models().
    """
    return comfyui_server


@pytest.fixture(scope="session")
def comfyui_current(tmp_path_factory):
    """ComfyUI 0.20.1 with its pinned frontend / templates packages and this pack, once per session."""
    with start_comfyui(tmp_path_factory, version="current", name="comfyui-current") as server:
        yield server


from tiny_ltx import tiny_models  # noqa: E402,F401  (session fixture: tiny random-weight LTX-2.3 models)
