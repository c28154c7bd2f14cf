"""The real frontend in Debian's Chromium, driven by npm's playwright-core (tests/browser/drive.mjs), against the
real ComfyUI backend with this pack, the way a new user meets it:

- every shipped template is opened from the frontend's templates dialog (its card: title + thumbnail), opens
  with no red or missing node, fitted in the window under the top bar, with no node over another (also after a
  portrait upload through Load Video's button), and runs from the UI as opened (fewer frames): the preview
  backend for real, fal against the local fake fal server, the local GPU backend with tiny random models;
- the canvas preview draws and follows source_scale with the run's numbers; a preset hides width / height;
- the cost estimate shows the seed's example; the fal key set in the settings stays out of the graph;
- no console errors from our extensions, no 4xx for our files, no URL failing twice.

Screenshots go to $LTX_OUTPAINT_SCREENSHOTS_DIR when set (`bash .ci/run` keeps them per combination).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from collections import Counter

import pytest

from clips import clip
from conftest import skip_or_fail
from fal_server import FakeFal

pytestmark = pytest.mark.comfyui

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
PREVIEW_TEMPLATE = "LTX Outpaint - Free preview (no AI)"
GENERATE = [30, 90, 52, 255]  # canvas_preview.js: colour of the area to generate
KEY = "ltxtest-browser-0f9e8d7c:6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e"
RUN_FRAMES = 9
#: The frontend's own requests that may answer 404 (not ours): a fresh user folder's user.css and templates
#: file; and, when a newer frontend meets ComfyUI 0.3.75, the core templates' logo index its templates
#: package lacks and the /api/jobs route it polls (added in later ComfyUI).
FRONTEND_OWN_404 = ("/user.css", "/api/userdata/user.css", "comfy.templates.json", "/templates/index_logo.json",
                    "/api/jobs?")


def _prerequisites() -> str:
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    missing = [what for what, ok in (("Debian chromium", os.path.exists(chromium)),
                                     ("node", shutil.which("node") is not None),
                                     ("playwright-core (bash .ci/browser.sh)",
                                      os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core"))))
               if not ok]
    if missing:
        skip_or_fail(f"browser test prerequisites missing: {', '.join(missing)}")
    return chromium


def _link_tiny_models(comfyui, tiny_models) -> None:
    for kind in ("checkpoints", "loras", "latent_upscale_models", "text_encoders"):
        folder = os.path.join(tiny_models.root, kind)
        if os.path.isdir(folder):
            comfyui.add_models(kind, [os.path.join(folder, name) for name in sorted(os.listdir(folder))])


@pytest.fixture(scope="module")
def browser_run(comfyui, tiny_models, tmp_path_factory):
    chromium = _prerequisites()
    out = tmp_path_factory.mktemp("browser")
    _link_tiny_models(comfyui, tiny_models)  # the local templates run with tiny random-weight LTX-2.3 models
    for sub in ("workflows", "subgraphs"):  # a user folder as the frontend leaves it (no 404 for missing dirs)
        os.makedirs(os.path.join(comfyui.base_dir, "user", "default", sub), exist_ok=True)
    templates = []
    for path in WORKFLOWS:
        with open(path, encoding="utf-8") as f:
            wf = json.load(f)
        templates.append({"name": os.path.splitext(os.path.basename(path))[0], "file": path, "nodes": len(wf["nodes"])})
    templates.sort(key=lambda t: t["name"] != PREVIEW_TEMPLATE)  # the free one first: it gets the upload
    upload = clip("portrait_upload.mp4", width=360, height=640, frames=24, fps=24)
    with FakeFal(keys={KEY}, max_side=96, queue_seconds=0.1, run_seconds=0.2) as fake:
        settings_dir = os.path.join(comfyui.base_dir, "user", "ltx_outpaint")
        os.makedirs(settings_dir, exist_ok=True)
        with open(os.path.join(settings_dir, "settings.json"), "w") as f:
            json.dump({"fal_queue_url": fake.queue_url, "fal_rest_url": fake.rest_url, "fal_cdn_url": fake.cdn_url}, f)
        config = {"pack": os.path.basename(comfyui.pack_path), "templates": templates, "upload": upload,
                  "fal_key": KEY, "run_frames": RUN_FRAMES, "run_seconds": 300, "viewport": [1600, 1000]}
        (out / "config.json").write_text(json.dumps(config))
        env = dict(os.environ, CHROMIUM_PATH=chromium)
        proc = subprocess.run(["node", os.path.join(BROWSER_DIR, "drive.mjs"), comfyui.base_url, str(out),
                               str(out / "config.json")], capture_output=True, text=True, timeout=1500, env=env,
                              cwd=BROWSER_DIR)
        fal_requests = [r.json for r in fake.requests if r.method == "POST" and r.path.endswith("/outpaint/lora")]
    results_path = out / "results.json"
    assert results_path.exists(), f"driver wrote no results (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    results = json.loads(results_path.read_text())
    shots = os.environ.get("LTX_OUTPAINT_SCREENSHOTS_DIR")
    if shots:
        os.makedirs(shots, exist_ok=True)
        for name in os.listdir(out):
            if name.endswith((".jpg", ".png")):
                shutil.copyfile(out / name, os.path.join(shots, name))
    results["fal_requests"] = fal_requests
    return results, out


def _templates(results):
    return [(name, rec) for name, rec in results["templates"].items()]


def test_the_driver_ran_without_errors(browser_run):
    results, _ = browser_run
    assert not results["errors"], "\n\n".join(results["errors"])


def test_the_served_frontend_is_the_combination_under_test(browser_run):
    results, _ = browser_run
    expected = os.environ.get("LTX_OUTPAINT_EXPECT_FRONTEND")
    if not expected:
        skip_or_fail("LTX_OUTPAINT_EXPECT_FRONTEND is not set (bash .ci/run sets it per combination)")
    assert results["frontend_version"] == expected


def test_extensions_load_and_no_errors_of_ours(browser_run):
    results, _ = browser_run
    assert set(results["extensions"]) >= {"ltx_outpaint.canvas_preview", "ltx_outpaint.cost_estimate",
                                          "ltx_outpaint.settings", "ltx_outpaint.node_text"}
    ours = [e for e in results["console_errors"] if "ltx_outpaint" in e.lower() or "ltx-outpaint" in e.lower()]
    assert ours == []


def test_no_404_for_our_files_and_no_url_failing_twice(browser_run):
    results, _ = browser_run
    control = range(results["control_phase_from"], results["control_phase_to"])  # the missing-file control
    failed = [(e["status"], e["url"]) for i, e in enumerate(results["http_errors"]) if i not in control]
    ours = [f for f in failed if any(k in f[1] for k in ("ltx-outpaint", "ltx_outpaint", "LTX%20Outpaint",
                                                          "/view?", "/api/view", "workflow_templates"))]
    assert ours == [], ours
    others = [f for f in failed if not any(k in f[1] for k in FRONTEND_OWN_404)]
    assert others == [], others  # nothing else fails at all, so nothing fails twice
    repeated = [f for f, n in Counter(failed).items()  # (only ComfyUI 0.3.75 lacks those two for 1.5x frontends)
                if n > 1 and not any(k in f[1] for k in ("/api/jobs?", "/templates/index_logo.json"))]
    assert repeated == [], repeated


def test_template_cards_have_distinct_titles_and_thumbnails(browser_run):
    results, _ = browser_run
    names = {os.path.splitext(os.path.basename(p))[0] for p in WORKFLOWS}
    assert set(results["cards"]) == names
    for name, card in results["cards"].items():
        assert card["loaded"], (name, card)
        assert name in card["text"]
    thumbs = [card["thumbnail"] for card in results["cards"].values()]
    assert len(set(thumbs)) == len(thumbs)


def test_templates_open_with_no_red_or_missing_node(browser_run):
    results, _ = browser_run
    assert len(results["templates"]) == len(WORKFLOWS)
    for name, rec in _templates(results):
        assert "opened" in rec, (name, rec.get("error"))
        bad = [(n["type"], "red" if n["red"] else "not registered") for n in rec["opened"]["nodes"]
               if n["red"] or not n["registered"]]
        assert bad == [], (name, bad)
        assert any(n["type"] == "LTXOutpaint" for n in rec["opened"]["nodes"]), name


def test_the_red_node_probe_sees_a_missing_file(browser_run):
    """The control: a workflow naming a clip that is not there. Frontend 1.5x checks media on open and marks
    Load Video red (the cause of the red node the templates had when their clip was missing); older
    frontends report it on Run."""
    results, _ = browser_run
    load = next(n for n in results["control_missing"]["nodes"] if n["type"] == "LTXOutpaintLoadVideo")
    major, minor = (int(x) for x in results["frontend_version"].split(".")[:2])
    if (major, minor) >= (1, 50):
        assert load["red"], load
    ours = [e["url"] for e in results["http_errors"][results["control_phase_from"]:results["control_phase_to"]]
            if "not-in-the-input-folder" in e["url"] and "rand=" not in e["url"]]
    assert ours == []  # the canvas preview does not ask for a file the input folder does not list


def test_templates_open_fitted_under_the_top_bar(browser_run):
    results, _ = browser_run
    for name, rec in _templates(results):
        assert rec["opened"]["ds"]["scale"] < 1.0 and rec["opened"]["ds"]["offset"] != [0, 0], name
        hidden = {n["type"] + "#" + str(n["id"]): n["covered"] for n in rec["opened"]["nodes"] if n["covered"]}
        assert hidden == {}, f"{name}: nodes off-screen or under the frontend's bars: {hidden}"


def test_nothing_overlaps_also_after_a_portrait_upload(browser_run):
    results, _ = browser_run
    for name, rec in _templates(results):
        assert rec["opened"]["overlaps"] == [], (name, rec["opened"]["overlaps"])
        if "after_run" in rec:
            assert rec["after_run"]["overlaps"] == [], (name, "after the run", rec["after_run"]["overlaps"])
    upload = results["templates"][PREVIEW_TEMPLATE]["after_upload"]
    assert "portrait_upload" in upload["video"]
    load = next(n for n in upload["nodes"] if n["type"] == "LTXOutpaintLoadVideo")
    opened = next(n for n in results["templates"][PREVIEW_TEMPLATE]["opened"]["nodes"]
                  if n["type"] == "LTXOutpaintLoadVideo")
    assert load["rect"][3] > 360, load  # the portrait preview is showing (the node grew)
    assert upload["overlaps"] == [], upload["overlaps"]
    assert load["rect"][3] >= opened["rect"][3] - 1


def test_every_template_runs_from_the_ui(browser_run, comfyui):
    results, _ = browser_run
    for name, rec in _templates(results):
        run = rec.get("run")
        assert run and run["status"] == "success", (name, run)
        videos = [f for f in run["files"] if f["filename"].endswith(".mp4")]
        assert videos, (name, run)
        for f in videos:
            assert os.path.getsize(os.path.join(comfyui.output_dir, f.get("subfolder", ""), f["filename"])) > 0
        red = [n["type"] for n in rec["after_run"]["nodes"] if n["red"]]
        assert red == [], (name, red)
        prompt = json.loads(rec["prompt"])["output"]
        loads = [v["inputs"]["video"] for v in prompt.values() if v["class_type"] == "LTXOutpaintLoadVideo"]
        assert loads == ["ltx-outpaint-sample.mp4"], (name, loads)  # as opened: the shipped sample


def test_fal_templates_reached_fal_with_the_templates_request(browser_run):
    results, _ = browser_run
    fal_templates = [n for n in results["templates"] if "fal.ai" in n]
    assert len(results["fal_requests"]) == len(fal_templates)
    for body in results["fal_requests"]:
        assert body["num_frames"] == RUN_FRAMES and body["resolution"] == "landscape_16_9"
        assert body["source_scale"] in (0.75, 1.0) and body["prompt"].startswith("a sunny beach")


def test_canvas_preview_draws_with_the_runs_numbers(browser_run):
    from ltx_outpaint.media.canvas import CanvasSpec, layout_canvas
    from ltx_outpaint.media.decode import decode_video

    results, _ = browser_run
    before, after = results["preview_before"], results["preview_after"]
    assert before["left_edge_mid"] == GENERATE  # source placed right: the left edge is generated area
    assert before["source_centre"] != GENERATE  # the source rectangle is drawn there
    assert after["layout"]["w"] < before["layout"]["w"] / 2
    assert after["source_centre"] != GENERATE
    assert after["at_extra"] == GENERATE  # where the source was before, the area to generate now
    assert before["layout"]["frame"], "the sample's first frame was not shown"
    sample = decode_video(os.path.join(ROOT, "workflows", "ltx-outpaint-sample.mp4"))
    for probe, scale in ((before, 1.0), (after, 0.25)):
        lay = layout_canvas(CanvasSpec("landscape_16_9", scale, "right"), sample.width, sample.height)
        got = probe["layout"]
        assert [got[k] for k in ("W", "H", "x", "y", "w", "h")] == [
            lay.width, lay.height, lay.source.x, lay.source.y, lay.source.width, lay.source.height]


def test_a_preset_hides_width_and_height(browser_run):
    results, _ = browser_run
    preset, custom = results["preset_widgets"]["preset"], results["preset_widgets"]["custom"]
    assert (preset["width"], preset["height"]) == (False, False)
    assert (custom["width"], custom["height"]) == (True, True)
    assert custom["size"][1] > preset["size"][1]  # the node makes room for them
    assert preset["inputs"]["resolution"] == "landscape_16_9" and "width" in preset["inputs"]  # still serialized
    assert (custom["inputs"]["width"], custom["inputs"]["height"]) == (1280, 720)
    for name, rec in _templates(results):
        assert rec["opened"]["canvas_widgets_shown"] == {"width": False, "height": False,
                                                          "resolution": "landscape_16_9"}, name


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
