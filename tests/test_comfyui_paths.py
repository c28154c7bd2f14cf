"""Local paths from a workflow stay inside ComfyUI's folders, through a real ComfyUI (validation and runs).

Load Video may read the input, output and temp folders; LoRA Stack the loras folders. Absolute paths,
`../` and symlinks out of those folders are refused with the same message as a missing file (no existence
oracle, no server path); the server's environment can allow more (the test server is started with
LTX_OUTPAINT_ALLOWED_PATHS = comfyui.allowed_media_dir, see conftest.py).
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from clips import clip, cut_short
from test_comfyui_graph import graph, put_input

pytestmark = pytest.mark.comfyui


def load_and_save(video="", path_or_url="", prefix="paths/out") -> dict:
    """Load Video -> Save MP4 (the smallest graph that reads a file)."""
    return {
        "1": {"class_type": "LTXOutpaintLoadVideo", "inputs": {
            "video": video, "path_or_url": path_or_url, "frame_load_cap": 0, "skip_first_frames": 0,
            "select_every_nth": 1, "force_fps": 0.0, "max_width": 0, "max_height": 0, "audio_sample_rate": 0}},
        "2": {"class_type": "LTXOutpaintSaveMP4", "inputs": {
            "video": ["1", 4], "filename_prefix": prefix, "video_quality": "low", "video_write_mode": "fast"}},
    }


def refusal(comfyui, prompt: dict, node: str) -> str:
    """The validation message ComfyUI returns (HTTP 400) for `node`; the body must name no server folder."""
    status, body = comfyui.queue(prompt)
    assert status == 400, body
    text = json.dumps(body)
    for folder in (comfyui.base_dir, os.path.dirname(comfyui.allowed_media_dir), "/tmp/"):
        assert folder not in text, (folder, text)
    (details,) = {e["details"].split(" - ", 1)[1] for e in body["node_errors"][node]["errors"]}
    return details


def run_refusal(comfyui, prompt: dict, node: str) -> str:
    """`path_or_url` is checked when the node runs (validate_inputs checks the list input only, so ComfyUI
    names each problem once): the run's error message, which names no server folder."""
    status, body = comfyui.queue(prompt)
    assert status == 200, body
    entry = comfyui.wait(body["prompt_id"])
    assert entry["status"]["status_str"] == "error", entry["status"]
    (err,) = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    assert err["node_id"] == node
    for folder in (comfyui.base_dir, os.path.dirname(comfyui.allowed_media_dir), "/tmp/"):
        assert folder not in err["exception_message"], (folder, err["exception_message"])
    return err["exception_message"].rstrip("\n")  # ComfyUI ends it with a newline


def refused(comfyui, prompt: dict, node: str, field: str) -> str:
    return refusal(comfyui, prompt, node) if field != "path_or_url" else run_refusal(comfyui, prompt, node)


def lora_file(path: str) -> str:
    save_file({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 4),
               "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(4, 2)}, path)
    return path


@pytest.fixture
def outside(tmp_path):
    """A folder ComfyUI does not allow, with a real clip and a real LoRA in it."""
    d = tmp_path / "private"
    d.mkdir()
    shutil.copyfile(clip("paths_src.mp4", width=96, height=64, frames=12, fps=24), d / "secret.mp4")
    lora_file(str(d / "secret.safetensors"))
    (tmp_path / "empty").mkdir()
    return d


VIDEO_REFUSED = ("{field} (Load Video): 'secret.mp4' is not an allowed video file: no such file in ComfyUI's input, "
                 "output or temp folder (the server's owner can allow other folders with LTX_OUTPAINT_ALLOWED_PATHS)")
LORA_REFUSED = ("{field} (LoRA Stack): 'secret.safetensors' is not an allowed LoRA file: no such file in ComfyUI's "
                "loras folders (the server's owner can allow other folders with LTX_OUTPAINT_ALLOWED_PATHS)")


def test_video_paths_out_of_comfyui_folders_are_refused_like_missing_files(comfyui, outside):
    real = str(outside / "secret.mp4")
    missing = str(outside.parent / "empty" / "secret.mp4")
    link = os.path.join(comfyui.input_dir, "secret.mp4")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(real, link)  # a symlink inside input/ pointing out of it
    rel = os.path.relpath(real, comfyui.input_dir)
    assert rel.startswith("..")
    cases = {
        "absolute path, file exists": load_and_save(path_or_url=real),
        "absolute path, no such file": load_and_save(path_or_url=missing),
        "../ in path_or_url": load_and_save(path_or_url=rel),
        "../ in the video list": load_and_save(video=rel),
        "symlink out of input/": load_and_save(video="secret.mp4"),
        "symlink via path_or_url": load_and_save(path_or_url="secret.mp4"),
        "annotated output name, no such file": load_and_save(video="secret.mp4 [output]"),
    }
    for case, g in cases.items():
        field = "video" if "video list" in case or "symlink out" in case or "annotated" in case else "path_or_url"
        assert refused(comfyui, g, "1", field) == VIDEO_REFUSED.format(field=field), case
    os.unlink(link)


def test_video_in_comfyui_folders_or_allowed_by_the_environment_loads(comfyui, outside):
    allowed = os.path.join(comfyui.allowed_media_dir, "allowed.mp4")
    shutil.copyfile(outside / "secret.mp4", allowed)
    entry = comfyui.run(load_and_save(path_or_url=allowed, prefix="paths_env/out"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    os.makedirs(os.path.join(comfyui.output_dir, "clips"), exist_ok=True)
    shutil.copyfile(outside / "secret.mp4", os.path.join(comfyui.output_dir, "clips", "mine.mp4"))
    entry = comfyui.run(load_and_save(video="clips/mine.mp4 [output]", prefix="paths_out/out"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    name = put_input(comfyui, str(outside / "secret.mp4"), "inside.mp4")
    entry = comfyui.run(load_and_save(path_or_url=os.path.join(comfyui.input_dir, name), prefix="paths_in/out"))
    assert entry["status"]["status_str"] == "success", entry["status"]


def test_lora_paths_out_of_the_loras_folders_are_refused_like_missing_files(comfyui, outside):
    lora_dir = os.path.join(comfyui.base_dir, "models", "loras")
    os.makedirs(lora_dir, exist_ok=True)
    link = os.path.join(lora_dir, "secret.safetensors")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(outside / "secret.safetensors", link)  # listed in the LoRA combo, but points outside
    name = put_input(comfyui, clip("graph_src.mp4", width=144, height=256, frames=24, fps=24), "phone.mp4")

    def with_lora(lora="none", path=""):
        g = graph(name, num_frames=9, prefix="paths_lora/out")
        g["3"]["inputs"].update({"lora": lora, "path_or_url": path})
        return g

    real = str(outside / "secret.safetensors")
    cases = {
        "absolute path, file exists": ("path_or_url", with_lora(path=real)),
        "absolute path, no such file": ("path_or_url",
                                        with_lora(path=str(outside.parent / "empty" / "secret.safetensors"))),
        "../ in path_or_url": ("path_or_url", with_lora(path=os.path.relpath(real, lora_dir))),
        "symlink in the loras folder": ("lora", with_lora(lora="secret.safetensors")),
        "symlink via path_or_url": ("path_or_url", with_lora(path="secret.safetensors")),
        "../ in the lora list": ("lora", with_lora(lora="../private/secret.safetensors")),
    }
    for case, (field, g) in cases.items():
        assert refused(comfyui, g, "3", field) == LORA_REFUSED.format(field=field), case
    os.unlink(link)
    allowed = lora_file(os.path.join(comfyui.allowed_media_dir, "style.safetensors"))
    entry = comfyui.run(with_lora(path=allowed))  # a folder the server's environment allows
    assert entry["status"]["status_str"] == "success", entry["status"]


def test_a_clip_cut_short_in_its_data_warns_in_the_node_text_and_the_log(comfyui):
    src = clip("cut_src.mp4", width=96, height=64, frames=24, fps=24)
    name = put_input(comfyui, cut_short(src, "cut_in_data.mp4", 0.6))
    entry = comfyui.run(load_and_save(video=name, prefix="paths_cut/out"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    text = entry["outputs"]["1"]["text"][0]
    warning = [line for line in text.splitlines() if line.startswith("WARNING:")]
    assert len(warning) == 1 and warning[0].startswith(
        "WARNING: cut_in_data.mp4 is cut short (its index lists 24 frames but the data ends after "), text
    n = int(text.split(" frames @")[0].split(", ")[-1])
    assert 0 < n < 24 and warning[0].endswith(f"loaded the {n} frames before the cut")
    assert "cut_in_data.mp4 is cut short" in comfyui.log_text()


def test_save_prefixes_that_leave_the_output_folder_or_cut_the_name_are_refused(comfyui, outside):
    """A NUL in filename_prefix would make FFmpeg write (and overwrite) another file of the output folder; a
    prefix out of it gets the pack's message, not core's (which shows the server's folders)."""
    name = put_input(comfyui, str(outside / "secret.mp4"), "prefix_src.mp4")
    precious = os.path.join(comfyui.output_dir, "precious.json")
    with open(precious, "w") as f:
        f.write("{}")
    cases = {
        "precious.json\u0000": "filename_prefix (Save MP4): contains a control character (NUL, newline, ...); use "
                               "plain text",
        "../input/evil": "filename_prefix (Save MP4): must stay inside ComfyUI's output folder (a name or a "
                         "subfolder/name under it)",
        "/tmp/evil": "filename_prefix (Save MP4): must stay inside ComfyUI's output folder (a name or a "
                     "subfolder/name under it)",
    }
    for prefix, message in cases.items():
        assert run_refusal(comfyui, load_and_save(video=name, prefix=prefix), "2") == message, prefix
    assert open(precious).read() == "{}"
    assert not os.path.exists(os.path.join(comfyui.input_dir, "evil_00001_.mp4"))
