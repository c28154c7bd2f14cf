"""Long clips and folders inside a real ComfyUI (0.3.75): Video File -> Outpaint Long Video (preview backend)
returns a file-backed VIDEO and the path; Outpaint Folder runs a confined folder and refuses others."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from comfyui_server import PromptRejected
from test_comfyui_paths import run_refusal
from long_clips import read_index, write_long_clip
from ltx_outpaint.long.reader import FrameReader
from ltx_outpaint.media.canvas import EVEN_SNAP, CanvasSpec, layout_canvas
from ltx_outpaint.media.sample import write_sample
from ltx_outpaint.request import ImageSize

pytestmark = pytest.mark.comfyui

REQUEST = {"video_strength": 1.0, "num_inference_steps": 15, "guidance_scale": 1.0, "generate_audio": True,
           "negative_prompt": "blurry", "seed": 5, "enable_prompt_expansion": True, "enable_safety_checker": True,
           "video_quality": "high", "video_write_mode": "fast", "sync_mode": False}
LONG = {"detect_scenes": True, "scene_threshold": 27.0, "chunk_frames": 120, "overlap_frames": 9}


def canvas_node(video_ref):
    return {"class_type": "LTXOutpaintCanvas", "inputs": {
        "video": video_ref, "resolution": "custom", "width": 128, "height": 64, "source_scale": 1.0,
        "placement": "center", "offset_x": 0, "offset_y": 0}}


def test_long_node_streams_to_a_file_backed_video(comfyui):
    src = os.path.join(comfyui.input_dir, "long_input.mp4")
    cuts = write_long_clip(src, 20, seed=9)
    g = {
        "1": {"class_type": "LTXOutpaintVideoFile", "inputs": {"video": "long_input.mp4", "path": ""}},
        "2": canvas_node(["1", 0]),
        "3": {"class_type": "LTXOutpaintPreviewBackend", "inputs": {"fill": "blur", "blur_radius": 12}},
        "4": {"class_type": "LTXOutpaintLong", "inputs": {
            "video": ["1", 0], "canvas": ["2", 0], "prompt": "a wide room", "backend": ["3", 0],
            "filename_prefix": "longtest/wide", **LONG, **REQUEST}},
        "5": {"class_type": "SaveVideo", "inputs": {"video": ["4", 0], "filename_prefix": "longtest/copy",
                                                    "format": "auto", "codec": "auto"}},
    }
    entry = comfyui.run(g, timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    shown = entry["outputs"]["4"]["images"][0]
    path = os.path.join(comfyui.output_dir, shown["subfolder"], shown["filename"])
    s = layout_canvas(CanvasSpec(ImageSize(128, 64), 1.0), 64, 48, EVEN_SNAP).source
    with FrameReader(path) as r:
        idx = [read_index(f, s.x, s.y, s.width, s.height) for b in r.iter_blocks(0, 10**9, 64) for f in b]
    assert idx == list(range(480))
    side = json.load(open(path + ".json"))
    assert [j["frame"] for j in side["joins"] if j["kind"] == "scene_cut"] == cuts
    text = entry["outputs"]["4"]["text"][0]
    assert "chunk joins (cross-faded over 9 frames)" in text or not [j for j in side["joins"]
                                                                      if j["kind"] == "chunk_join"]
    # core SaveVideo consumed the node's VIDEO (a VideoFromFile of the written MP4)
    copy = entry["outputs"]["5"]["images"][0]
    with FrameReader(os.path.join(comfyui.output_dir, copy["subfolder"], copy["filename"])) as r:
        assert r.count_slots() == 480


def test_video_file_path_outside_comfyui_folders_is_refused(comfyui, tmp_path):
    outside = write_sample(str(tmp_path / "secret.mp4"), 64, 48, 12)
    g = {"1": {"class_type": "LTXOutpaintVideoFile", "inputs": {"video": "", "path": outside}},
         "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "x/y", "format": "auto",
                                                     "codec": "auto"}}}
    # checked when the node runs (validate_inputs checks the list input only, so a problem is named once)
    assert run_refusal(comfyui, g, "1") == (
        "path (Video File): 'secret.mp4' is not an allowed video file: no such file in ComfyUI's input, output or "
        "temp folder (the server's owner can allow other folders with LTX_OUTPAINT_ALLOWED_PATHS)")


def folder_graph(folder: str, sub: str) -> dict:
    return {
        "2": {"class_type": "LTXOutpaintCanvas", "inputs": {
            "resolution": "custom", "width": 128, "height": 64, "source_scale": 1.0, "placement": "center",
            "offset_x": 0, "offset_y": 0}},
        "3": {"class_type": "LTXOutpaintPreviewBackend", "inputs": {"fill": "mirror", "blur_radius": 12}},
        "4": {"class_type": "LTXOutpaintFolder", "inputs": {
            "folder": folder, "canvas": ["2", 0], "prompt": "wide", "backend": ["3", 0], "output_subfolder": sub,
            "concurrency": 2, "max_total_cost_usd": 0.0, **LONG, **REQUEST}},
    }


def test_folder_node_runs_a_folder_and_resumes(comfyui):
    folder = os.path.join(comfyui.input_dir, "batch_in")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for i in range(3):
        write_sample(os.path.join(folder, f"c{i}.mp4"), 64, 48, 30, 24.0, seed=i)
    entry = comfyui.run(folder_graph("batch_in", "batchtest"), timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    text = entry["outputs"]["4"]["text"][0]
    assert text.startswith("3 clip(s): 3 done")
    out = os.path.join(comfyui.output_dir, "batchtest")
    summary = json.load(open(os.path.join(out, "batch-summary.json")))
    assert [c["status"] for c in summary["clips"]] == ["done"] * 3
    assert all(os.path.isfile(c["output"]) for c in summary["clips"])
    again = comfyui.run(folder_graph("batch_in", "batchtest"), timeout=300)
    assert again["outputs"]["4"]["text"][0].startswith("3 clip(s): 0 done, 3 skipped")


@pytest.mark.parametrize("folder", ["../..", "/etc", "no_such_folder"])
def test_folder_outside_comfyui_folders_is_refused(comfyui, folder):
    with pytest.raises(PromptRejected) as info:
        comfyui.run(folder_graph(folder, "batchtest2"))
    errors = json.dumps(info.value.node_errors)
    assert "is not an allowed video folder: no such folder in ComfyUI" in errors


def test_folder_allowed_by_the_servers_environment(comfyui):
    folder = os.path.join(comfyui.allowed_media_dir, "more")
    os.makedirs(folder, exist_ok=True)
    write_sample(os.path.join(folder, "x.mp4"), 64, 48, 20, 24.0)
    entry = comfyui.run(folder_graph(folder, "batchtest3"), timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"]["4"]["text"][0].startswith("1 clip(s): 1 done")


@pytest.mark.parametrize("sub", ["../../evil", "/tmp/evil"])
def test_folder_output_outside_the_output_folder_is_refused_when_it_runs(comfyui, sub):
    folder = os.path.join(comfyui.allowed_media_dir, "more_out")
    os.makedirs(folder, exist_ok=True)
    write_sample(os.path.join(folder, "x.mp4"), 64, 48, 12, 24.0)
    assert run_refusal(comfyui, folder_graph(folder, sub), "4") == \
        "output_subfolder (Outpaint Folder): must stay inside ComfyUI's output folder"
