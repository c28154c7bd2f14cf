"""The native local engine in a real ComfyUI 0.20.1 (core LTX-2), end to end on CPU, tiny random weights.

The models are the tests' tiny LTX-2.3 files (tests/tiny_ltx.py) in the official single-file formats:
checkpoint with its "config" metadata, the ComfyUI single-file Gemma with its embedded SentencePiece
tokenizer, the IC-LoRA and the distilled LoRA two folders deep (`loras/ltxv/ltx2/`, where Lightricks'
workflow puts them). Core hard-codes Gemma 3 12B's sizes: the TEST-ONLY pack
tests/comfyui_test_nodes/ltx_outpaint_test_support patches exactly those three sizes (see its docstring)
and adds a probe (model-call log and optional per-call delay) and a node that saves frames exactly.
Everything else is ComfyUI core's own code and ours; nothing is mocked.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import torch

from clips import clip
from comfyui_server import ComfyUIServer, ComfyUIError, error_messages
from ltx_outpaint.media.decode import DecodeOptions, decode_video

pytestmark = pytest.mark.comfyui

HERE = os.path.dirname(os.path.abspath(__file__))
SUPPORT_PACK = os.path.join(HERE, "comfyui_test_nodes", "ltx_outpaint_test_support")
ENV_DIR, ENV_PKGS = "LTX_OUTPAINT_COMFYUI_CURRENT_DIR", "LTX_OUTPAINT_COMFYUI_CURRENT_PYTHONPATH"
W, H, FRAMES, FPS = 192, 128, 9, 8.0
NESTED = os.path.join("ltxv", "ltx2")  # Lightricks' workflow: loras/ltxv/ltx2/<file>
OFFICIAL_NAMES = {  # role -> (folder kind, name under it)
    "dev": ("checkpoints", "ltx-2.3-22b-dev.safetensors"),
    "distilled": ("checkpoints", "ltx-2.3-22b-distilled.safetensors"),
    "comfy_gemma": ("text_encoders", "gemma_3_12B_it.safetensors"),
    "distilled_lora": ("loras", os.path.join(NESTED, "ltx-2.3-22b-distilled-lora-384-1.1.safetensors")),
    "ic_lora": ("loras", os.path.join(NESTED, "ltx-2.3-22b-ic-lora-in-outpainting-0.9.safetensors")),
    "upsampler": ("latent_upscale_models", "ltx-2.3-spatial-upscaler-x2-1.0.safetensors"),
    "user_lora": ("loras", "user-av-lora.safetensors"),
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def native(tmp_path_factory, tiny_models):
    """ComfyUI 0.20.1 with the pack, the test-support pack and the tiny models in its models folder."""
    comfy_dir = os.environ.get(ENV_DIR, "")
    if not os.path.isfile(os.path.join(comfy_dir, "main.py")):
        reason = f"{ENV_DIR} does not name a ComfyUI 0.20.1 folder (bash .ci/run sets it)"
        if _in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("comfyui-native")
    probe = tmp_path_factory.mktemp("probe")
    server = ComfyUIServer(comfy_dir, str(base), pythonpath=tuple(filter(None, [os.environ.get(ENV_PKGS)])),
                           extra_custom_nodes={"ltx_outpaint_test_support": SUPPORT_PACK},
                           env={"LTX_OUTPAINT_TEST_TINY_GEMMA": tiny_models.comfy_gemma + ".json",
                                "LTX_OUTPAINT_TEST_PROBE_DIR": str(probe),
                                # the models are symlinks into the tiny tree: the owner allows that folder
                                "LTX_OUTPAINT_ALLOWED_PATHS": tiny_models.root})
    server.prepare()
    for role, (kind, name) in OFFICIAL_NAMES.items():
        dst = os.path.join(server.models_dir, kind, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.symlink(getattr(tiny_models, role), dst)
    try:
        server.start(timeout=180)
    except ComfyUIError as e:
        pytest.fail(str(e), pytrace=False)
    server.probe_dir = str(probe)
    assert server.version() == "0.20.1"
    status = server.pack_import()
    assert status.seen and not status.failed, status.details or server.log_tail()
    try:
        yield server
    finally:
        server.stop()


def _graph(video_name: str, *, seed=3, recipe="official", engine="native", lora=False, prefix="native/out",
           backend_extra=None, generate_audio=True, expansion=False) -> dict:
    backend_extra = dict(backend_extra or {})
    recipe = backend_extra.pop("recipe", recipe)
    g = {
        "1": {"class_type": "LTXOutpaintLoadVideo", "inputs": {
            "video": video_name, "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1,
            "force_fps": 0.0, "max_width": 0, "max_height": 0, "audio_sample_rate": 0}},
        "2": {"class_type": "LTXOutpaintCanvas", "inputs": {
            "video": ["1", 4], "resolution": "custom", "width": W, "height": H, "source_scale": 0.75,
            "placement": "center", "offset_x": 0, "offset_y": 0}},
        "4": {"class_type": "LTXOutpaintLocalBackend", "inputs": {
            "recipe": recipe, "engine": engine, "precision": "auto", "keep_loaded": False, "model_paths": "",
            **(backend_extra or {})}},
        "5": {"class_type": "LTXOutpaint", "inputs": {
            "video": ["1", 4], "canvas": ["2", 0], "prompt": "a wide meadow", "backend": ["4", 0],
            "num_frames": FRAMES, "frames_per_second": FPS, "video_strength": 1.0, "num_inference_steps": 15,
            "guidance_scale": 1.0, "generate_audio": generate_audio,
            "negative_prompt": "blurry", "seed": seed, "enable_prompt_expansion": expansion,
            "enable_safety_checker": False, "video_quality": "high", "video_write_mode": "fast",
            "sync_mode": False}},
        "6": {"class_type": "LTXOutpaintSaveMP4", "inputs": {
            "video": ["5", 3], "filename_prefix": prefix, "video_quality": "high", "video_write_mode": "fast"}},
        "7": {"class_type": "LTXTestSaveTensor", "inputs": {"images": ["5", 0], "name": f"{prefix}-{seed}"}},
    }
    if lora:
        g["3"] = {"class_type": "LTXOutpaintLoraStack", "inputs": {
            "lora": "user-av-lora.safetensors", "path_or_url": "", "scale": 0.8, "transformer": "video"}}
        g["5"]["inputs"]["loras"] = ["3", 0]
    return g


def _put_clip(server, name="native_src.mp4") -> str:
    src = clip("native_src.mp4", width=64, height=96, frames=12, fps=8)
    shutil.copyfile(src, os.path.join(server.input_dir, name))
    return name


def _node_text(entry, node="5") -> str:
    return json.dumps(entry["outputs"].get(node, {}))


def _model_calls(server) -> int:
    path = os.path.join(server.probe_dir, "model_calls.log")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return len(f.read().splitlines())


def _frames(server, prefix, seed) -> torch.Tensor:
    return torch.load(os.path.join(server.output_dir, f"{prefix}-{seed}.pt"))


def test_native_engine_runs_the_official_recipe_end_to_end(native):
    name = _put_clip(native)
    before = _model_calls(native)
    entry = native.run(_graph(name, lora=True), timeout=600)
    assert entry["status"]["status_str"] == "success", (entry["status"], native.log_tail())
    saved = entry["outputs"]["6"]["images"][0]
    got = decode_video(os.path.join(native.output_dir, saved["subfolder"], saved["filename"]), DecodeOptions())
    assert (got.width, got.height, got.num_frames) == (W, H, FRAMES)
    assert abs(got.fps - FPS) < 1e-6 and got.audio is not None and not got.audio.silent
    assert abs(got.audio.duration - FRAMES / FPS) < 0.05
    text = json.dumps(entry["outputs"])
    assert "engine: native (ComfyUI core LTX-2), recipe official" in text
    assert "kept-region PSNR" in text  # the quality report, in the node text and in Save MP4's sidecar
    with open(os.path.join(native.output_dir, saved["subfolder"], saved["filename"] + ".json")) as f:
        sidecar = json.load(f)
    assert sidecar["backend"] == "local (native)" and sidecar["seed"] == 3
    assert set(sidecar["quality"]) >= {"kept_psnr_db", "seam_color_step", "green_leak_fraction", "temporal_flicker"}
    assert sidecar["quality"]["frames"] == FRAMES
    log = native.log_text()
    assert "lora key not loaded" not in log  # every LoRA entry reached a core weight
    assert "TEST-ONLY: ComfyUI's Gemma 3 12B sizes patched" in log
    # the expansion really ran core's nodes: this run's sampler called the model (2 stages, 8 + 2 steps)
    assert _model_calls(native) - before >= 10
    # ... and the user LoRA took part: the same run without it gives other frames
    with_lora = _frames(native, "native/out", 3)
    entry = native.run(_graph(name, prefix="native/nolora"), timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert float((with_lora - _frames(native, "native/nolora", 3)).abs().mean()) > 1e-4


def test_same_seed_is_identical_and_another_seed_differs(native):
    name = _put_clip(native)
    runs = []
    for seed in (3, 4, 3):  # the third run is a real rerun: the outpaint node's inputs changed
        before = _model_calls(native)
        entry = native.run(_graph(name, seed=seed, prefix="native/seed"), timeout=600)
        assert entry["status"]["status_str"] == "success", entry["status"]
        assert _model_calls(native) > before  # sampled again, not served from ComfyUI's cache
        runs.append(_frames(native, "native/seed", seed))
    first, four, again = runs
    assert torch.equal(first, again)
    assert float((first - four).abs().mean()) > 1e-4


def test_interrupt_stops_within_one_step(native):
    name = _put_clip(native)
    calls = os.path.join(native.probe_dir, "model_calls.log")
    delay = os.path.join(native.probe_dir, "delay")
    with open(delay, "w") as f:
        f.write("0.4")
    try:
        start = len(open(calls).read().splitlines()) if os.path.exists(calls) else 0
        status, body = native.queue(_graph(name, seed=99, prefix="native/interrupt"))
        assert status == 200, body
        deadline = time.monotonic() + 300
        while True:  # wait for the second model call of this run
            n = len(open(calls).read().splitlines()) if os.path.exists(calls) else 0
            if n - start >= 2:
                break
            assert time.monotonic() < deadline, native.log_tail()
            time.sleep(0.05)
        native.interrupt()
        at_interrupt = len(open(calls).read().splitlines())
        entry = native.wait(body["prompt_id"], timeout=120)
    finally:
        os.unlink(delay)
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, entry["status"]
    after = len(open(calls).read().splitlines()) - at_interrupt
    assert after <= 1, f"{after} model calls ran after the interrupt"  # the call in flight, at most


def test_missing_files_give_one_error_naming_all_of_them(native):
    name = _put_clip(native)
    moved = []
    for role in ("dev", "comfy_gemma", "ic_lora"):
        kind, rel = OFFICIAL_NAMES[role]
        path = os.path.join(native.models_dir, kind, rel)
        os.replace(path, path + ".away")
        moved.append(path)
    try:
        entry = native.run(_graph(name, seed=5, prefix="native/missing"), timeout=300)
    finally:
        for path in moved:
            os.replace(path + ".away", path)
    assert entry["status"]["status_str"] == "error"
    (err,) = error_messages(entry)
    msg = err["exception_message"]
    for role in ("checkpoint", "text_encoder", "ic_lora"):
        assert f"- {role}:" in msg, msg
    assert "huggingface.co/Lightricks/LTX-2.3" in msg and "Comfy-Org/ltx-2" in msg
    assert "ltx-2.3-22b-ic-lora-in-outpainting-0.9.safetensors" in msg


def test_models_from_sockets_of_core_loaders(native):
    """MODEL / CLIP / VAE / audio VAE from core's own loaders plug into the backend node; the checkpoint is
    renamed so the pack cannot find it by its official name (it must come from the sockets)."""
    name = _put_clip(native)
    kind, rel = OFFICIAL_NAMES["dev"]
    path = os.path.join(native.models_dir, kind, rel)
    custom = os.path.join(native.models_dir, kind, "my-own-ltx.safetensors")
    os.replace(path, custom)
    try:
        g = _graph(name, seed=6, prefix="native/sockets", backend_extra={
            "model": ["10", 0], "vae": ["10", 2], "clip": ["11", 0], "audio_vae": ["12", 0]})
        g["10"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "my-own-ltx.safetensors"}}
        g["11"] = {"class_type": "LTXAVTextEncoderLoader", "inputs": {
            "text_encoder": "gemma_3_12B_it.safetensors", "ckpt_name": "my-own-ltx.safetensors", "device": "default"}}
        g["12"] = {"class_type": "LTXVAudioVAELoader", "inputs": {"ckpt_name": "my-own-ltx.safetensors"}}
        entry = native.run(g, timeout=600)
    finally:
        os.replace(custom, path)
    assert entry["status"]["status_str"] == "success", (entry["status"], native.log_tail())
    assert _frames(native, "native/sockets", 6).shape == (FRAMES, H, W, 3)


def test_long_clip_chunks_run_natively_each_guided_by_the_previous_one(native):
    """Outpaint Long Video with the local backend in a ComfyUI with core LTX-2: the native engine runs every
    chunk in process, and each chunk after the first is guided by the previous chunk's last frames."""
    src = clip("native_long.mp4", width=64, height=96, frames=40, fps=8)
    shutil.copyfile(src, os.path.join(native.input_dir, "native_long.mp4"))
    request = {"video_strength": 1.0, "num_inference_steps": 15, "guidance_scale": 1.0, "generate_audio": True,
               "negative_prompt": "blurry", "seed": 8, "enable_prompt_expansion": False,
               "enable_safety_checker": False, "video_quality": "high", "video_write_mode": "fast",
               "sync_mode": False}
    g = {
        "1": {"class_type": "LTXOutpaintVideoFile", "inputs": {"video": "native_long.mp4", "path": ""}},
        "2": {"class_type": "LTXOutpaintCanvas", "inputs": {
            "video": ["1", 0], "resolution": "custom", "width": W, "height": H, "source_scale": 0.75,
            "placement": "center", "offset_x": 0, "offset_y": 0}},
        "3": {"class_type": "LTXOutpaintLocalBackend", "inputs": {
            "recipe": "official", "engine": "native", "precision": "auto", "keep_loaded": False, "model_paths": ""}},
        "4": {"class_type": "LTXOutpaintLong", "inputs": {
            "video": ["1", 0], "canvas": ["2", 0], "prompt": "a wide meadow", "backend": ["3", 0],
            "filename_prefix": "native/long", "detect_scenes": False, "scene_threshold": 27.0,
            "chunk_frames": 25, "overlap_frames": 9, **request}},
    }
    before = _model_calls(native)
    entry = native.run(g, timeout=900)
    assert entry["status"]["status_str"] == "success", (entry["status"], native.log_tail())
    shown = entry["outputs"]["4"]["images"][0]
    path = os.path.join(native.output_dir, shown["subfolder"], shown["filename"])
    got = decode_video(path, DecodeOptions())
    assert (got.width, got.height) == (W, H) and got.num_frames == 40
    with open(path + ".json") as f:
        sidecar = json.load(f)
    assert len(sidecar["chunks"]) >= 2
    notes = " ".join(sidecar["notes"])
    assert "engine: native (ComfyUI core LTX-2), recipe official" in notes
    assert "conditioned on the previous chunk's last 9 frames (whole canvas)" in notes
    assert any(j["kind"] == "chunk_join" for j in sidecar["joins"])
    assert _model_calls(native) - before >= 10 * len(sidecar["chunks"])  # every chunk sampled both stages


@pytest.mark.parametrize("case", ["ic_lora_pipeline, no audio track", "no source audio, prompt expansion",
                                  "5.1 source audio, video_strength 0.6"])
def test_other_paths_of_the_graph_run(native, case):
    """The ic_lora_pipeline recipe (spatial upsampler) with generate_audio off (a video-only latent), a silent
    source (audio generated with the picture) with Gemma's prompt enhancement (core's TextGenerateLTX2Prompt),
    and a 5.1 source (its front left / right frozen) with video_strength < 1 (the guide's attention kept at 1)."""
    kw, backend, audio_layout = {}, {}, "stereo"
    if case.startswith("ic_lora_pipeline"):
        backend, kw = {"recipe": "ic_lora_pipeline"}, {"generate_audio": False}
    elif case.startswith("no source audio"):
        audio_layout, kw = None, {"expansion": True}
    else:
        audio_layout = "5.1"
    name = f"native_{case.split(',')[0].replace(' ', '_').replace('.', '')}.mp4"
    shutil.copyfile(clip(name, width=64, height=96, frames=12, fps=8, audio_layout=audio_layout),
                    os.path.join(native.input_dir, name))
    g = _graph(name, seed=12, prefix=f"native/{name[:-4]}", backend_extra=backend, **kw)
    if case.startswith("5.1"):
        g["5"]["inputs"]["video_strength"] = 0.6
    before = _model_calls(native)
    entry = native.run(g, timeout=600)
    assert entry["status"]["status_str"] == "success", (entry["status"], native.log_tail())
    assert _model_calls(native) > before
    text = json.dumps(entry["outputs"])  # the expansion's finish node reports for the outpaint node
    saved = entry["outputs"]["6"]["images"][0]
    got = decode_video(os.path.join(native.output_dir, saved["subfolder"], saved["filename"]), DecodeOptions())
    assert (got.width, got.height, got.num_frames) == (W, H, FRAMES)
    if case.startswith("ic_lora_pipeline"):
        assert "recipe ic_lora_pipeline" in text and got.audio.silent  # no audio track: read back as silence
    elif case.startswith("no source audio"):
        assert got.audio is not None and not got.audio.silent  # generated with the picture
        assert "prompt expanded by Gemma (enable_prompt_expansion)" in text
    else:
        assert got.audio is not None and got.audio.waveform.shape[0] == 2


def test_spatially_tiled_decode_equals_a_whole_decode_at_full_size(monkeypatch):
    """The final decode's 2 x 2 tiles (overlap 6 latent cells, linear ramps) at 1920x1088 (34 x 60 latent cells:
    the tiny tests' canvases are one tile) equal one whole decode when the VAE is position independent (a
    stand-in VAE: a real one is not, so only this geometry is checked here)."""
    import sys
    import types

    from ltx_outpaint.local.native.ops import spatial_tiled_decode

    mm = types.ModuleType("comfy.model_management")  # the only ComfyUI call in it: the interrupt check
    mm.throw_exception_if_processing_interrupted = lambda: None
    comfy = types.ModuleType("comfy")
    comfy.model_management = mm
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)

    class StandInVAE:
        downscale_index_formula = (8, 32, 32)

        def __init__(self):
            self.calls = []

        def decode(self, samples):
            self.calls.append(tuple(samples.shape[-2:]))
            x = samples[:, :3].repeat_interleave(8, 2)[:, :, 7:]
            x = torch.nn.functional.interpolate(x, scale_factor=(1, 32, 32), mode="nearest")
            return x.permute(0, 2, 3, 4, 1).sigmoid()

    latent = torch.randn(1, 8, 3, 34, 60)
    whole = StandInVAE().decode(latent).reshape(-1, 34 * 32, 60 * 32, 3)
    vae = StandInVAE()
    tiled = spatial_tiled_decode(vae, latent, 2, 2, 6)
    assert len(vae.calls) == 4 and vae.calls[0] == (20, 33)  # (34 + 6) // 2 rows, (60 + 6) // 2 columns
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().max()) < 1e-5
