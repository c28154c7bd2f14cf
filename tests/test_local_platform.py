"""Where users are (issue 11): no Unix-only module on an import path, memory from psutil, ltx-core checked up front
with the pinned install command, keep_loaded memory released when switched off and on ComfyUI's unload action."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import time
from importlib import metadata

import pytest

from test_local_backend import _config, _run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "nodes")
#: modules that exist on only some operating systems (Unix: resource, fcntl, termios, pwd, grp; Windows: winreg,
#: msvcrt, _winapi)
OS_ONLY = ("resource", "fcntl", "termios", "pwd", "grp", "posix", "winreg", "msvcrt", "_winapi")


def _sources():
    for dirpath, _dirs, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def test_no_os_only_module_is_imported_anywhere_in_the_package():
    """Every import statement of the package, at any depth (functions too), read from the source."""
    found = []
    for path in _sources():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            found += [f"{os.path.relpath(path, ROOT)}:{node.lineno} {n}" for n in names
                      if n.split(".")[0] in OS_ONLY]
    assert found == []


IMPORT_ALL = textwrap.dedent("""
    import importlib, importlib.abc, os, pkgutil, sys
    import torch, safetensors, av, httpx  # third-party packages may use Unix modules themselves
    root, blocked = sys.argv[1], set(sys.argv[2].split(","))
    for name in blocked:
        sys.modules.pop(name, None)

    class Block(importlib.abc.MetaPathFinder):
        # refuse an OS-only module when the import statement is in the pack's own files (as on Windows)
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] not in blocked:
                return None
            frame = sys._getframe(1)
            while frame and ("importlib" in frame.f_code.co_filename or frame.f_code.co_filename.startswith("<")):
                frame = frame.f_back
            if frame and os.path.abspath(frame.f_code.co_filename).startswith(root):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: not on every OS)")
            return None

    sys.meta_path.insert(0, Block())
    import ltx_outpaint
    done = []
    for info in pkgutil.walk_packages(ltx_outpaint.__path__, "ltx_outpaint."):
        if info.name.startswith("ltx_outpaint.comfyui"):
            continue  # needs a running ComfyUI (its imports are checked by the source scan and the server tests)
        importlib.import_module(info.name)
        done.append(info.name)
    # the engine's lazy imports too: what a local run imports
    import ltx_outpaint.local.ltxcore.pipeline as p
    p._process_rss(); p._available_ram()
    print(",".join(done))
""")


def test_every_module_imports_with_unix_only_modules_blocked(tmp_path):
    script = tmp_path / "import_all.py"
    script.write_text(IMPORT_ALL)
    proc = subprocess.run([sys.executable, str(script), PACKAGE, ",".join(OS_ONLY)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = proc.stdout.strip().splitlines()[-1].split(",")
    for name in ("ltx_outpaint.local.backend", "ltx_outpaint.local.ltxcore.pipeline", "ltx_outpaint.local.keep",
                 "ltx_outpaint.local.memory_plan", "ltx_outpaint.media.decode", "ltx_outpaint.cli"):
        assert name in imported
    # the check has teeth: a module of ours that imports `resource` fails under the same blocker
    bad = os.path.join(PACKAGE, "_platform_probe_tmp.py")
    try:
        with open(bad, "w") as f:
            f.write("import resource\n")
        proc = subprocess.run([sys.executable, str(script), PACKAGE, ",".join(OS_ONLY)], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode != 0 and "blocked: not on every OS" in proc.stderr
    finally:
        os.unlink(bad)


def test_available_memory_comes_from_psutil(monkeypatch):
    import psutil

    from ltx_outpaint.media.decode import available_memory_bytes

    class VM:  # a machine with 3 GiB free (the real figure cannot be chosen by a test)
        available = 3 * 2**30

    assert available_memory_bytes() == pytest.approx(psutil.virtual_memory().available, rel=0.2)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: VM())
    assert available_memory_bytes() == 3 * 2**30


@pytest.mark.parametrize("installed, message", [
    ({"ltx-core": "1.0.1", "ltx-pipelines": "1.0.0"}, "ltx-core 1.0.1 is installed, this pack needs 1.0.0"),
    ({"ltx-pipelines": "1.0.0"}, "ltx-core is not installed"),
])
def test_ltx_core_is_checked_first_with_the_pinned_install_command(monkeypatch, tmp_path, installed, message):
    """Package metadata is patched (the venv's real ltx-core cannot be uninstalled for a test)."""
    from ltx_outpaint.backends import Progress, run_outpaint
    from ltx_outpaint.errors import InputError
    from ltx_outpaint.local.backend import LocalConfig
    from ltx_outpaint.local.models import ModelSearch
    from ltx_outpaint.local.pins import INSTALL_COMMAND
    from ltx_outpaint.media.canvas import CanvasSpec
    from test_local_backend import _request

    real = metadata.version

    def version(dist):
        if dist in ("ltx-core", "ltx-pipelines"):
            if dist not in installed:
                raise metadata.PackageNotFoundError(dist)
            return installed[dist]
        return real(dist)

    monkeypatch.setattr(metadata, "version", version)
    assert INSTALL_COMMAND == "pip install ltx-core==1.0.0 ltx-pipelines==1.0.0"
    from clips import clip
    from ltx_outpaint.media.decode import DecodeOptions, decode_video

    src = decode_video(clip("local_src.mp4", width=64, height=96, frames=12, fps=8), DecodeOptions())
    req = _request()
    # an empty model search: had the check not run first, this would be a missing-models error
    with pytest.raises(InputError) as err:
        run_outpaint(req, src, CanvasSpec(req.resolution, req.source_scale),
                     LocalConfig(search=ModelSearch(), device="cpu"), Progress())
    assert err.value.field == "engine"
    assert message in str(err.value) and f"python -m {INSTALL_COMMAND}" in str(err.value)


def test_the_node_names_the_pinned_install_command():
    with open(os.path.join(PACKAGE, "comfyui", "nodes_local.py"), encoding="utf-8") as f:
        text = f.read()
    assert "INSTALL_COMMAND" in text and "pip install ltx-core ltx-pipelines" not in text


@pytest.fixture(scope="module")
def source():
    from clips import clip
    from ltx_outpaint.media.decode import DecodeOptions, decode_video

    return decode_video(clip("local_src.mp4", width=64, height=96, frames=12, fps=8), DecodeOptions())


def test_keep_loaded_memory_is_released_when_a_run_switches_it_off(tiny_models, source):
    from ltx_outpaint.local import keep

    keep.release()
    assert keep.empty()
    _run(tiny_models, source, config=_config(tiny_models, keep_loaded=True))
    kept = keep.summary()
    assert kept["checkpoint"] == tiny_models.dev and kept["registry"] > 0 and kept["text"] == 1
    assert kept["bytes"] >= os.path.getsize(tiny_models.dev) * 0.9  # the checkpoint's tensors are in RAM
    _run(tiny_models, source, config=_config(tiny_models, keep_loaded=False))
    assert keep.empty() and keep.summary()["bytes"] == 0


@pytest.fixture(scope="module")
def kept_server(tiny_models, tmp_path_factory):
    """A ComfyUI with the pack, the tiny models and a test-only probe route (tests/comfyui_test_nodes)."""
    from comfyui_server import ComfyUIError, ComfyUIServer, find_comfyui_dir

    comfyui_dir, reason = find_comfyui_dir()
    if comfyui_dir is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    probe = os.path.join(ROOT, "tests", "comfyui_test_nodes", "ltx_kept_probe")
    server = ComfyUIServer(comfyui_dir, str(tmp_path_factory.mktemp("comfyui-kept")),
                           extra_custom_nodes={"ltx_kept_probe": probe})
    server.prepare()
    for kind in ("checkpoints", "loras", "text_encoders"):
        os.makedirs(os.path.join(server.models_dir, kind), exist_ok=True)
        for name in os.listdir(os.path.join(tiny_models.root, kind)):
            os.symlink(os.path.join(tiny_models.root, kind, name), os.path.join(server.models_dir, kind, name))
    try:
        server.start(timeout=float(os.environ.get("LTX_OUTPAINT_COMFYUI_START_TIMEOUT", "120")))
    except ComfyUIError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def _kept(server) -> dict:
    r = server._request("GET", server.base_url + "/ltx_test/kept")
    found = r.json()
    assert len(found) <= 1, found  # the pack's copy of nodes/local/keep.py (imported by its first local run)
    return next(iter(found.values())) if found else {"checkpoint": None, "registry": 0, "text": 0, "bytes": 0}


@pytest.mark.comfyui
def test_comfyui_free_memory_releases_keep_loaded(kept_server):
    from clips import clip
    from test_comfyui_graph import graph, put_input, saved_files
    from test_local_backend import FPS, FRAMES, H, W

    assert _kept(kept_server) == {"checkpoint": None, "registry": 0, "text": 0, "bytes": 0}
    name = put_input(kept_server, clip("local_graph.mp4", width=64, height=96, frames=12, fps=8), "kept_src.mp4")
    g = graph(name, width=W, height=H, num_frames=FRAMES, fps=FPS, prefix="itest/kept")
    g["4"] = {"class_type": "LTXOutpaintLocalBackend", "inputs": {
        "recipe": "official", "engine": "ltxcore", "precision": "auto", "keep_loaded": True,
        "model_paths": ""}}  # keep_loaded is the ltx-core engine's (the native engine uses ComfyUI's cache)
    g["5"]["inputs"].update({"enable_prompt_expansion": False})
    entry = kept_server.run(g, timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert saved_files(entry)
    kept = _kept(kept_server)
    assert kept["checkpoint"] and kept["checkpoint"].endswith("ltx-2.3-22b-dev.safetensors")
    assert kept["registry"] > 0 and kept["text"] == 1 and kept["bytes"] > 0
    r = kept_server._request("POST", kept_server.base_url + "/free", json={"unload_models": True})
    assert r.status_code == 200
    deadline = time.time() + 60
    while time.time() < deadline and _kept(kept_server)["checkpoint"] is not None:
        time.sleep(0.5)  # the prompt worker applies the flag on its next loop
    assert _kept(kept_server) == {"checkpoint": None, "registry": 0, "text": 0, "bytes": 0}
    assert "keep_loaded: released" in kept_server.log_text() and "ComfyUI unloaded its models" in \
        kept_server.log_text()
