"""The real frontend in Debian's Chromium, driven by npm's playwright-core (tests/browser/drive.mjs),
against the real ComfyUI backend with this pack: every shipped workflow loads with no missing nodes and
no console errors from our extensions; the canvas preview draws and follows source_scale; the cost
estimate shows the seed's example; the fal key set in the settings stays out of the graph; the free
preview workflow queued from the UI produces a video."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess

import pytest

from clips import clip
from workflow_format import FRONTEND_ONLY  # noqa: F401

pytestmark = pytest.mark.comfyui

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
GENERATE = [30, 90, 52, 255]  # canvas_preview.js: colour of the area to generate
KEY = "ltxtest-browser-0f9e8d7c:6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e"


def _prerequisites():
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    missing = [what for what, ok in (("Debian chromium", os.path.exists(chromium)),
                                     ("node", shutil.which("node") is not None),
                                     ("playwright-core (bash .ci/browser.sh)",
                                      os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core"))))
               if not ok]
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser test prerequisites missing: {', '.join(missing)}", pytrace=False)
        pytest.skip(f"browser test prerequisites missing: {', '.join(missing)}")
    return chromium


@pytest.fixture(scope="module")
def browser_run(comfyui, tmp_path_factory):
    chromium = _prerequisites()
    out = tmp_path_factory.mktemp("browser")
    shutil.copyfile(clip("browser_src.mp4", width=90, height=160, frames=12, fps=12),
                    os.path.join(comfyui.input_dir, "sample_vertical.mp4"))
    workflows = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
    env = dict(os.environ, CHROMIUM_PATH=chromium, LTX_TEST_FAL_KEY=KEY)
    proc = subprocess.run(["node", os.path.join(BROWSER_DIR, "drive.mjs"), comfyui.base_url, str(out), *workflows],
                          capture_output=True, text=True, timeout=600, env=env, cwd=BROWSER_DIR)
    results_path = out / "results.json"
    assert results_path.exists(), f"driver wrote no results (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    results = json.loads(results_path.read_text())
    assert not results["errors"], "\n".join(results["errors"])
    shots = os.environ.get("LTX_OUTPAINT_SCREENSHOTS_DIR")
    if shots:  # README pictures: `LTX_OUTPAINT_SCREENSHOTS_DIR=docs/images pytest tests/test_browser.py`
        os.makedirs(shots, exist_ok=True)
        for name in ("canvas_preview.png", "nodes.jpg"):
            shutil.copyfile(out / name, os.path.join(shots, name))
    return results, out


def test_extensions_load_and_workflows_have_no_missing_nodes(browser_run):
    results, out = browser_run
    assert set(results["extensions"]) >= {"ltx_outpaint.canvas_preview", "ltx_outpaint.cost_estimate",
                                          "ltx_outpaint.settings", "ltx_outpaint.node_text"}
    names = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "workflows", "*.json"))}
    assert set(results["workflows"]) == names
    for name, info in results["workflows"].items():
        assert info["missing"] == [], (name, info["missing"])
        assert "LTXOutpaint" in info["types"], name
        assert (out / f"{name}.jpg").stat().st_size > 0
    ours = [e for e in results["console_errors"] if "ltx_outpaint" in e.lower() or "ltx-outpaint" in e.lower()]
    assert ours == []


def test_canvas_preview_draws_and_follows_source_scale(browser_run):
    results, _ = browser_run
    before, after = results["preview_before"], results["preview_after"]
    assert before["left_edge_mid"] == GENERATE  # source placed right: the left edge is generated area
    assert before["source_centre"] != GENERATE  # the source rectangle is drawn there
    assert after["layout"]["w"] < before["layout"]["w"] / 2
    assert after["source_centre"] != GENERATE
    assert after["at_extra"] == GENERATE  # where the source was before, the area to generate now
    assert before["layout"]["W"] * 9 == before["layout"]["H"] * 16  # 16:9 preset canvas


def test_cost_estimate_shows_the_seed_example(browser_run):
    results, _ = browser_run
    texts = results["cost_1280x720x121"]
    assert texts and any("$0.2696" in t and "1280x720x121" in t for t in texts), texts
    assert all("$0.2696" in t for t in texts if "1280x720" in t)


def test_fal_key_from_settings_stays_out_of_the_graph(browser_run, comfyui):
    results, _ = browser_run
    key = results["fal_key"]
    assert key["status"].startswith("set (") and KEY not in key["status"]
    assert not key["in_graph"] and not key["in_prompt"] and not key["in_settings"] and not key["in_local_storage"]
    for half in KEY.split(":"):
        assert half not in key["graph"] and half not in key["prompt"]
    stored = os.path.join(comfyui.base_dir, "user", "ltx_outpaint", "fal_key")
    assert os.path.exists(stored) and oct(os.stat(stored).st_mode & 0o777) == "0o600"


def test_preview_workflow_queued_from_the_ui_gives_a_video(browser_run, comfyui):
    results, _ = browser_run
    q = results["queued"]
    assert q["status"] == "success", q
    videos = [f for f in q["files"] if f["filename"].endswith(".mp4")]
    assert videos
    f = videos[0]
    assert os.path.getsize(os.path.join(comfyui.output_dir, f.get("subfolder", ""), f["filename"])) > 0
