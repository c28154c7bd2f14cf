"""The pack inside a real ComfyUI backend: schema, a full graph, and bad inputs."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from clips import audio_only, bad_file, clip, truncated_copy
from ltx_outpaint.media.decode import decode_video

pytestmark = pytest.mark.comfyui

OUR_NODES = ["LTXOutpaintLoadVideo", "LTXOutpaintCanvas", "LTXOutpaintLoraStack", "LTXOutpaintPreviewBackend",
             "LTXOutpaintFalBackend", "LTXOutpaintLocalBackend", "LTXOutpaintFalRecover",
             "LTXOutpaint", "LTXOutpaintSaveMP4"]


def test_object_info_lists_every_node_with_tooltips(comfyui):
    info = comfyui.object_info()
    for node_id in OUR_NODES:
        assert node_id in info, node_id
        node = info[node_id]
        assert node["category"] == "LTX-2.3 Outpaint" and node["description"]
        inputs = {**node["input"].get("required", {}), **node["input"].get("optional", {})}
        assert inputs, node_id
        for name, (_type, *opts) in inputs.items():
            assert opts and opts[0].get("tooltip"), f"{node_id}.{name} has no tooltip"
    outpaint = info["LTXOutpaint"]["input"]["required"]
    assert outpaint["num_frames"][1]["min"] == 9 and outpaint["num_frames"][1]["max"] == 481
    assert outpaint["num_inference_steps"][1]["default"] == 15
    assert outpaint["video_quality"][1]["options"] == ["low", "medium", "high", "maximum"]


def graph(video_name: str, *, skip=0, resolution="custom", width=640, height=360, num_frames=25, fps=12.0,
          lora=None, generate_audio=True, prefix="itest/out") -> dict:
    g = {
        "1": {"class_type": "LTXOutpaintLoadVideo", "inputs": {
            "video": video_name, "frame_load_cap": 0, "skip_first_frames": skip, "select_every_nth": 1,
            "force_fps": 0.0, "max_width": 0, "max_height": 0, "audio_sample_rate": 0}},
        "2": {"class_type": "LTXOutpaintCanvas", "inputs": {
            "video": ["1", 4], "resolution": resolution, "width": width, "height": height, "source_scale": 0.75,
            "placement": "center", "offset_x": 0, "offset_y": 0}},
        "3": {"class_type": "LTXOutpaintLoraStack", "inputs": {
            "lora": lora or "none", "path_or_url": "", "scale": 0.8, "transformer": "video"}},
        "4": {"class_type": "LTXOutpaintPreviewBackend", "inputs": {"fill": "blur", "blur_radius": 12}},
        "5": {"class_type": "LTXOutpaint", "inputs": {
            "video": ["1", 4], "canvas": ["2", 0], "prompt": "a wide meadow", "backend": ["4", 0],
            "loras": ["3", 0], "num_frames": num_frames, "frames_per_second": fps, "video_strength": 1.0,
            "num_inference_steps": 15, "guidance_scale": 1.0, "generate_audio": generate_audio,
            "negative_prompt": "blurry", "seed": 11, "enable_prompt_expansion": True,
            "enable_safety_checker": True, "video_quality": "high", "video_write_mode": "fast",
            "sync_mode": False}},
        "6": {"class_type": "LTXOutpaintSaveMP4", "inputs": {
            "video": ["5", 3], "filename_prefix": prefix, "video_quality": "high", "video_write_mode": "fast"}},
    }
    return g


def put_input(comfyui, path: str, name: str | None = None) -> str:
    name = name or os.path.basename(path)
    shutil.copyfile(path, os.path.join(comfyui.input_dir, name))
    return name


def saved_files(entry, node="6"):
    return entry["outputs"][node]["images"]


@pytest.fixture
def fake_fal(comfyui):
    """The local fake fal server with the pack in ComfyUI pointed at it and a key stored (the fal backend is
    the one backend here that uses a LoRA without a GPU)."""
    import httpx

    from fal_server import FakeFal

    key = "kid-graph-test:sec-graph-test"
    settings = os.path.join(comfyui.base_dir, "user", "ltx_outpaint", "settings.json")
    with FakeFal(keys={key}, queue_seconds=0.05, run_seconds=0.1) as fake:
        os.makedirs(os.path.dirname(settings), exist_ok=True)
        with open(settings, "w") as f:
            json.dump({"fal_queue_url": fake.queue_url, "fal_rest_url": fake.rest_url, "fal_cdn_url": fake.cdn_url}, f)
        assert httpx.post(comfyui.base_url + "/ltx_outpaint/fal_key", json={"key": key}).json()["configured"]
        yield fake
    os.unlink(settings)


def test_full_graph_load_canvas_lora_outpaint_save(comfyui, fake_fal):
    name = put_input(comfyui, clip("graph_src.mp4", width=144, height=256, frames=24, fps=24), "phone.mp4")
    lora_dir = os.path.join(comfyui.base_dir, "models", "loras")
    os.makedirs(lora_dir, exist_ok=True)
    lora_path = os.path.join(lora_dir, "style.safetensors")
    save_file({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.ones(2, 4),
               "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.ones(4, 2)}, lora_path)
    g = graph(name, lora="style.safetensors")
    g["4"] = {"class_type": "LTXOutpaintFalBackend",
              "inputs": {"max_cost_usd": 1.0, "deadline_minutes": 5.0, "use_sse": True}}
    entry = comfyui.run(g)
    assert entry["status"]["status_str"] == "success", entry["status"]
    # the LoRA reached the backend that uses it: uploaded byte for byte, with its scale and stream
    (body,) = [r.json for r in fake_fal.requests if r.method == "POST" and r.path.endswith("/outpaint/lora")]
    (sent,) = body["loras"]
    assert (sent["scale"], sent["transformer"]) == (0.8, "video")
    with open(lora_path, "rb") as f:
        assert fake_fal.file_bytes(sent["path"]) == f.read()
    files = saved_files(entry)
    assert len(files) == 1 and files[0]["type"] == "output" and files[0]["subfolder"] == "itest"
    path = os.path.join(comfyui.output_dir, files[0]["subfolder"], files[0]["filename"])
    out = decode_video(path)
    assert out.frames.shape == (25, 360, 640, 3)
    assert out.fps == 12
    assert not out.audio.silent and abs(out.audio.duration - 25 / 12) <= 1 / 12
    text = entry["outputs"]["5"]["text"][0]
    assert "fal" in text and "seed 11" in text and "$" in text
    assert "640x360" in entry["outputs"]["2"]["text"][0]
    assert entry["outputs"]["1"]["text"][0].startswith("144x256, 24 frames @ 24 fps; audio: 2 ch @ 44100 Hz")
    # a second save gets the next counter
    entry2 = comfyui.run(graph(name, lora="style.safetensors", num_frames=9))
    assert saved_files(entry2)[0]["filename"] != files[0]["filename"]


def test_outpaint_video_feeds_core_save_video(comfyui):
    name = put_input(comfyui, clip("graph_src.mp4", width=144, height=256, frames=24, fps=24), "phone.mp4")
    g = graph(name, num_frames=9, generate_audio=False)
    g["6"] = {"class_type": "SaveVideo", "inputs": {"video": ["5", 3], "filename_prefix": "core/out",
                                                    "format": "auto", "codec": "auto"}}
    entry = comfyui.run(g)
    assert entry["status"]["status_str"] == "success", entry["status"]
    f = saved_files(entry)[0]
    out = decode_video(os.path.join(comfyui.output_dir, f["subfolder"], f["filename"]))
    assert out.frames.shape[0] == 9 and out.audio.silent  # no audio track -> decoder reports silence


def _error_text(entry) -> str:
    for kind, data in entry["status"]["messages"]:
        if kind == "execution_error":
            return data["exception_message"]
    raise AssertionError(f"no execution_error in {entry['status']}")


@pytest.mark.parametrize("case,make,expect", [
    ("empty", lambda: bad_file("empty_in.mp4", b""), "is empty"),
    ("truncated", lambda: truncated_copy(clip("graph_src.mp4", width=144, height=256, frames=24, fps=24),
                                         "trunc_in.mp4", 0.3), "not a video PyAV can read"),
    ("text", lambda: bad_file("notes.mp4", b"hello, I am text\n" * 100), "not a video PyAV can read"),
    ("audio_only", lambda: audio_only("sound_only.mp4"), "audio-only"),
])
def test_bad_files_give_clear_errors_and_server_survives(comfyui, case, make, expect):
    name = put_input(comfyui, make())
    entry = comfyui.run(graph(name))
    assert entry["status"]["status_str"] == "error"
    msg = _error_text(entry)
    assert expect in msg and "video" in msg
    ok = comfyui.run(graph(put_input(comfyui, clip("graph_src.mp4", width=144, height=256, frames=24, fps=24),
                                     "phone.mp4"), num_frames=9, prefix=f"after_{case}/out"))
    assert ok["status"]["status_str"] == "success"


def test_zero_frame_selection_and_huge_canvas(comfyui):
    name = put_input(comfyui, clip("graph_src.mp4", width=144, height=256, frames=24, fps=24), "phone.mp4")
    entry = comfyui.run(graph(name, skip=10_000))
    assert _error_text(entry).startswith("skip_first_frames (Load Video): the selection gives 0 frames")
    entry = comfyui.run(graph(name, width=14000, height=14000, num_frames=481))
    assert _error_text(entry).startswith("resolution (Outpaint Canvas): ") and "14000x14000" in _error_text(entry) \
        and "GiB" in _error_text(entry)
    status, body = comfyui.queue(graph(name, num_frames=5))
    assert status == 400 and "num_frames" in str(body)
    ok = comfyui.run(graph(name, num_frames=9, prefix="after_bad/out"))
    assert ok["status"]["status_str"] == "success"


def test_load_video_url_goes_through_the_safe_downloader(comfyui):
    """A URL to a private / loopback / metadata address is refused by the node, before any request."""
    for url, reason in (("http://127.0.0.1:9/clip.mp4", "http"), ("https://127.0.0.1:9/clip.mp4", "127.0.0.1"),
                        ("https://169.254.169.254/latest/meta-data", "169.254.169.254")):
        g = graph("ltx-outpaint-sample.mp4", num_frames=9)  # the pack's sample is always in input/
        g["1"]["inputs"]["path_or_url"] = url
        msg = _error_text(comfyui.run(g))
        assert msg.startswith("path_or_url (Load Video):") and reason in msg, msg


def test_clip_without_audio_says_so_and_runs(comfyui):
    name = put_input(comfyui, clip("graph_noaudio.mp4", width=144, height=256, frames=12, audio_layout=None))
    entry = comfyui.run(graph(name, num_frames=9, prefix="noaudio/out"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert "audio: NONE in the file" in entry["outputs"]["1"]["text"][0]
    f = saved_files(entry)[0]
    out = decode_video(os.path.join(comfyui.output_dir, f["subfolder"], f["filename"]))
    assert out.frames.shape[0] == 9 and float(out.audio.waveform.abs().max()) == 0.0
