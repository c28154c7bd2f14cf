"""ComfyUI (0.3.75, real backend) starts with the pack in custom_nodes/ and imports it cleanly and quickly."""
from __future__ import annotations

import logging
import os

import pytest

from comfyui_server import REPO_ROOT, pack_import_status

pytestmark = pytest.mark.comfyui
log = logging.getLogger(__name__)

OUR_NODES = ["LTXOutpaintLoadVideo", "LTXOutpaintCanvas", "LTXOutpaintLoraStack", "LTXOutpaintPreviewBackend",
             "LTXOutpaint", "LTXOutpaintSaveMP4"]


def test_server_starts_with_the_pack_linked_and_answers_object_info(comfyui_server):
    assert os.path.realpath(comfyui_server.pack_path) == os.path.realpath(REPO_ROOT)
    info = comfyui_server.object_info()
    assert "LoadImage" in info and "SaveVideo" in info  # core nodes: the backend itself is complete
    log.info("ComfyUI answered /object_info %.1f s after launch", comfyui_server.startup_seconds)


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
