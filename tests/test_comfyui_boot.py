"""ComfyUI (real backend: 0.3.75 and 0.20.1 in CI) starts with the pack in custom_nodes/ and imports it cleanly
and quickly."""
from __future__ import annotations

import logging
import os

import pytest

from comfyui_server import REPO_ROOT, pack_import_status
from conftest import skip_or_fail

pytestmark = pytest.mark.comfyui
log = logging.getLogger(__name__)

OUR_NODES = ["LTXOutpaintLoadVideo", "LTXOutpaintCanvas", "LTXOutpaintLoraStack", "LTXOutpaintPreviewBackend",
             "LTXOutpaint", "LTXOutpaintSaveMP4"]


def test_server_starts_with_the_pack_linked_and_answers_object_info(comfyui_server):
    assert os.path.realpath(comfyui_server.pack_path) == os.path.realpath(REPO_ROOT)
    info = comfyui_server.object_info()
    assert "LoadImage" in info and "SaveVideo" in info  # core nodes: the backend itself is complete
    log.info("ComfyUI answered /object_info %.1f s after launch", comfyui_server.startup_seconds)


def test_the_server_is_the_comfyui_version_under_test(comfyui_server):
    expected = os.environ.get("LTX_OUTPAINT_EXPECT_COMFYUI")
    if not expected:
        skip_or_fail("LTX_OUTPAINT_EXPECT_COMFYUI is not set (bash .ci/run sets it per combination)")
    assert comfyui_server.version() == expected


def test_pack_imports_without_errors(comfyui_server, comfyui_pack_loaded):
    text = comfyui_server.log_text()
    assert f"IMPORT FAILED: {comfyui_server.pack_path}" not in text
    assert f"Cannot import {comfyui_server.pack_path}" not in text
    assert comfyui_pack_loaded.seen and not comfyui_pack_loaded.failed
    info = comfyui_server.object_info()
    missing = [n for n in OUR_NODES if n not in info]
    assert not missing, f"loaded, but these nodes are not registered: {missing}"


def test_pack_import_time_is_reported_and_small(comfyui_server, comfyui_pack_loaded):
    seconds = comfyui_pack_loaded.seconds
    assert seconds is not None, "no 'Import times for custom nodes:' line for the pack in the ComfyUI log"
    log.info("ComfyUI reports %.1f s to import the pack", seconds)
    print(f"\nComfyUI import time for the pack: {seconds:.1f} s")
    assert seconds < 5.0


def test_the_log_parser_reports_failures_with_their_traceback():
    pack = "/tmp/base/custom_nodes/comfyui-ltx-outpaint"
    log_text = "\n".join([
        "Traceback (most recent call last):",
        '  File "/c/nodes.py", line 2146, in load_custom_node',
        "ModuleNotFoundError: No module named 'av'",
        f"Cannot import {pack} module for custom nodes: No module named 'av'",
        "",
        "Import times for custom nodes:",
        "   0.0 seconds: /tmp/base/custom_nodes/websocket_image_save.py",
        f"   0.3 seconds (IMPORT FAILED): {pack}",
        "",
        "Starting server",
    ])
    status = pack_import_status(log_text, pack)
    assert status.seen and status.failed and status.seconds == 0.3
    assert "No module named 'av'" in status.details and status.details.startswith("Traceback")
    ok = pack_import_status(f"Import times for custom nodes:\n   1.2 seconds: {pack}\n\nStarting server\n", pack)
    assert ok.seen and not ok.failed and ok.seconds == 1.2 and not ok.details


HEAVY = ("transformers", "ltx_core", "ltx_pipelines", "httpx", "safetensors")


def test_pack_import_pulls_in_nothing_heavy():
    """Loading the pack the way ComfyUI does imports no ltx-core / transformers / httpx (start-up stays cheap)."""
    import subprocess
    import sys

    from comfyui_server import find_comfyui_dir

    comfyui_dir, reason = find_comfyui_dir()
    if comfyui_dir is None:
        skip_or_fail(reason)
    code = f"""
import importlib.util, sys, json
sys.path.insert(0, {comfyui_dir!r})
import comfy.cli_args; comfy.cli_args.args.cpu = True
import comfy_api.latest, folder_paths
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("ltx_pack", {os.path.join(REPO_ROOT, '__init__.py')!r},
                                              submodule_search_locations=[{REPO_ROOT!r}])
mod = importlib.util.module_from_spec(spec); sys.modules["ltx_pack"] = mod; spec.loader.exec_module(mod)
assert hasattr(mod, "comfy_entrypoint") and mod.WEB_DIRECTORY == "./js"
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=comfyui_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    new = json.loads(r.stdout.strip().splitlines()[-1])
    assert any(m.startswith("ltx_pack.nodes.") for m in new)
    heavy = [m for m in new if m.split(".")[0] in HEAVY]
    assert not heavy, f"the pack's start-up import pulled in {heavy}"
