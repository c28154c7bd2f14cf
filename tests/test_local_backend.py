"""The local backend end to end on CPU: the ltx-core engine running the recipes, tiny random-weight LTX-2.3 models.

The models are built at test time by tests/tiny_ltx.py with ltx-core's own configurators (same
architecture as LTX-2.3, 2 layers); nothing is mocked.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from clips import clip
from ltx_outpaint.backends import Interrupted, Progress, run_outpaint
from ltx_outpaint.local.backend import SAFETY_NOTE, LocalConfig
from ltx_outpaint.media.canvas import LTX_SNAP, CanvasSpec, composite, layout_canvas
from ltx_outpaint.local.models import ModelSearch
from ltx_outpaint.request import ImageSize, LoraSpec, OutpaintRequest
from ltx_outpaint.media.decode import DecodeOptions, decode_video

W, H, FRAMES, FPS = 192, 128, 9, 8.0


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = clip("local_src.mp4", width=64, height=96, frames=12, fps=8)
    return decode_video(path, DecodeOptions())


def _request(**kw):
    base = dict(prompt="a wide meadow", resolution=ImageSize(W, H), source_scale=0.75, num_frames=FRAMES,
                frames_per_second=FPS, num_inference_steps=8, seed=7, enable_prompt_expansion=False)
    base.update(kw)
    return OutpaintRequest(**base).validate()


def _config(tiny_models, **kw):
    return LocalConfig(search=ModelSearch.from_models_dir(tiny_models.root), device="cpu", **kw)


def _run(tiny_models, source, progress=None, config=None, **kw):
    req = _request(**kw)
    canvas = CanvasSpec(req.resolution, req.source_scale)
    return run_outpaint(req, source, canvas, config or _config(tiny_models), progress or Progress())


def _expected_source(source):
    from ltx_outpaint.backends.preview import source_indices

    lay = layout_canvas(CanvasSpec(ImageSize(W, H), 0.75), source.width, source.height, LTX_SNAP)
    frames = composite(source.frames[source_indices(source.num_frames, source.fps, FRAMES, FPS)], lay)
    return lay, frames


def test_outputs_have_canvas_frames_fps_audio_and_keep_the_source(tiny_models, source):
    result = _run(tiny_models, source)
    assert result.backend == "local"
    assert tuple(result.frames.shape) == (FRAMES, H, W, 3)
    assert result.frames.dtype == torch.float32 and 0 <= float(result.frames.min()) and float(result.frames.max()) <= 1
    assert result.fps == FPS and result.seed == 7
    # the output audio is the frozen source latent decoded (the workflow's LTXVAudioVAEDecode), at the
    # vocoder's rate (the tiny vocoder's bandwidth extension: 48 kHz), trimmed to the video
    assert result.audio is not None and abs(result.audio.duration - FRAMES / FPS) < 1e-3
    assert result.audio.sample_rate == 48000 and source.audio.sample_rate != 48000
    assert any("audio VAE round trip" in n for n in result.notes)
    assert SAFETY_NOTE in result.notes
    assert any(n.startswith("peak RAM") for n in result.notes)
    assert any(n.startswith("planned peak VRAM") for n in result.notes)
    assert any(n.startswith("recipe official: stage 1 96x64 euler_ancestral_cfg_pp 8 steps") for n in result.notes)
    lay, expected = _expected_source(source)
    s = lay.source
    # Far inside the source rectangle the output stays near the source (the official pyramid blend puts the
    # original back; on a canvas this small its coarsest levels still mix in some generated colour).
    inner = (slice(None), slice(s.y + 12, s.y + s.height - 12), slice(s.x + 12, s.x + s.width - 12))
    assert float((result.frames[inner] - expected[inner]).abs().mean()) < 0.2
    # No flat green fill left in the generated area.
    outside = result.frames[:, :, : s.x]
    fill = torch.tensor([102 / 255, 1.0, 0.0])
    assert float(((outside - fill).abs().amax(-1) < 0.05).float().mean()) < 0.05


def test_same_seed_repeats_and_other_seed_changes_the_generated_area(tiny_models, source):
    a = _run(tiny_models, source, seed=3)
    b = _run(tiny_models, source, seed=3)
    c = _run(tiny_models, source, seed=4)
    lay, _ = _expected_source(source)
    s = lay.source
    gen = (slice(None), slice(None), slice(0, s.x))  # left of the source: generated
    inner = (slice(None), slice(s.y + 12, s.y + s.height - 12), slice(s.x + 12, s.x + s.width - 12))
    assert torch.equal(a.frames, b.frames)
    assert not torch.equal(a.frames[gen], c.frames[gen])
    changed_gen = float((a.frames[gen] - c.frames[gen]).abs().mean())
    changed_src = float((a.frames[inner] - c.frames[inner]).abs().mean())
    assert changed_gen > 1e-3
    assert changed_src < 0.5 * changed_gen  # the source area is the source whatever the seed


def test_ic_lora_pipeline_recipe_with_guidance_and_generate_audio_off(tiny_models, source):
    result = _run(tiny_models, source, config=_config(tiny_models, recipe="ic_lora_pipeline"), generate_audio=False,
                  guidance_scale=3.0, enable_safety_checker=False)
    assert tuple(result.frames.shape) == (FRAMES, H, W, 3)
    assert result.audio is None
    assert any(n.startswith("guidance_scale 3: CFG 3 in both stages") for n in result.notes)
    assert any(n.startswith("recipe ic_lora_pipeline: stage 1 96x64 euler 8 steps cfg 3 (ic_lora 1); "
                            "stage 2 192x128 euler 3 steps cfg 3 (no LoRA)") for n in result.notes)
    assert SAFETY_NOTE not in result.notes


def test_cfg_run_and_prompt_expansion(tiny_models, source):
    result = _run(tiny_models, source, guidance_scale=2.5, enable_prompt_expansion=True)
    assert tuple(result.frames.shape) == (FRAMES, H, W, 3)
    # Gemma rewrote the prompt (the tiny random Gemma writes gibberish, but it is its own text)
    assert isinstance(result.prompt, str) and result.prompt and result.prompt != "a wide meadow"
    assert not any("expansion failed" in n for n in result.notes)


def test_source_without_audio_gets_generated_audio(tiny_models, tmp_path):
    silent = decode_video(clip("local_noaudio.mp4", width=64, height=96, frames=12, fps=8, audio_layout=None),
                          DecodeOptions())
    assert silent.audio is None or silent.audio.silent
    result = _run(tiny_models, silent)
    assert result.audio is not None and not result.audio.silent
    assert abs(result.audio.duration - FRAMES / FPS) < 1e-3
    assert any("audio: generated" in n for n in result.notes)


class StopAfter(Progress):
    """Asks to stop once `n` progress reports of transformer steps have arrived."""

    def __init__(self, n):
        self.n, self.steps, self.stop = n, 0, False
        self.after_stop = 0

    def report(self, done, total, text=None):
        if text and "step" in text:
            self.steps += 1
            if self.stop:
                self.after_stop += 1
            if self.steps >= self.n:
                self.stop = True

    def interrupted(self):
        return self.stop


def _inputs(source, recipe="official", seed=1, **kw):
    from ltx_outpaint.local.ltxcore.pipeline import OutpaintInputs
    from ltx_outpaint.local.recipe import resolve

    lay = layout_canvas(CanvasSpec(ImageSize(W, H), 0.75), source.width, source.height, LTX_SNAP)
    placed = torch.full((FRAMES, H, W, 3), 0.5)
    from ltx_outpaint.media.canvas import place_frames

    place_frames(source.frames[:FRAMES], lay, placed)
    req = _request(seed=seed, **kw)
    resolved = resolve(recipe, req, width=W, height=H, frames=FRAMES, seed=seed)
    return OutpaintInputs(placed, lay.mask(), lay.source, resolved)


def test_interrupt_in_stage_1_stops_within_one_step_and_frees_models(tiny_models, source):
    from ltx_outpaint.local.models import find_models
    from ltx_outpaint.local.ltxcore.pipeline import OutpaintPipeline, PipelineConfig

    models = find_models("official", ModelSearch.from_models_dir(tiny_models.root))
    pipeline = OutpaintPipeline(PipelineConfig(models, device="cpu"))
    progress = StopAfter(2)
    calls = []
    from ltx_outpaint.local.ltxcore import pipeline as engine

    real = engine.sample

    def counting(model, *a, **k):  # counts transformer evaluations (the real sampler, the real model)
        def counted(*args):
            calls.append(progress.stop)
            return model(*args)
        return real(counted, *a, **k)

    engine.sample = counting
    try:
        with pytest.raises(Interrupted):
            pipeline.run(_inputs(source), progress)
    finally:
        engine.sample = real
    assert progress.steps == 2 and progress.after_stop == 0  # no step ran after the request
    assert calls == [False] * 4  # 2 steps x (positive + negative); no transformer evaluation after the request
    assert pipeline.live_models() == []


@pytest.mark.parametrize("target", ["video", "audio", "both"])
def test_lora_targets_change_only_their_weights(tiny_models, target):
    from ltx_outpaint.local.lora_targets import lora_sd_ops, stream_of
    from ltx_outpaint.local.ltxcore.weights import LoraWeights, build_transformer

    def transformer(loras=()):
        model = build_transformer(tiny_models.dev, tuple(loras))
        return {k: v.clone() for k, v in model.state_dict().items()}

    base = transformer()
    lora = tiny_models.user_lora
    fused = transformer([LoraWeights(lora, 1.0, lora_sd_ops(lora, target))])
    changed = {k for k in base if not torch.equal(base[k], fused[k])}
    assert changed, "the LoRA changed nothing"
    streams = {stream_of(k.removeprefix("velocity_model.")) for k in changed}
    if target == "both":
        assert streams == {"video", "audio", "cross"}
    else:
        assert streams == {target}
    zero = transformer([LoraWeights(lora, 0.0, lora_sd_ops(lora, target))])
    assert all(torch.equal(base[k], zero[k]) for k in base)


def test_cli_local_backend(tiny_models, tmp_path):
    src = clip("local_cli.mp4", width=64, height=96, frames=12, fps=8)
    out = tmp_path / "wide.mp4"
    env = dict(os.environ, LTX_OUTPAINT_CONFIG_DIR=str(tmp_path / "cfg"))
    env.pop("FAL_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ltx_outpaint.cli", "run", src, "-o", str(out), "--backend", "local",
         "--models-dir", tiny_models.root, "--device", "cpu", "--resolution", f"{W}x{H}",
         "--num-frames", str(FRAMES), "--frames-per-second", str(FPS), "--num-inference-steps", "8",
         "--seed", "5", "--enable-prompt-expansion", "false", "--prompt", "a wide meadow"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = decode_video(str(out), DecodeOptions())
    assert (got.width, got.height, got.num_frames) == (W, H, FRAMES)
    assert abs(got.fps - FPS) < 1e-6
    assert got.audio is not None and not got.audio.silent
    side = json.loads((tmp_path / "wide.mp4.json").read_text())
    assert side["backend"] == "local" and side["seed"] == 5


def test_cli_missing_models_names_them(tmp_path):
    src = clip("local_cli.mp4", width=64, height=96, frames=12, fps=8)
    proc = subprocess.run(
        [sys.executable, "-m", "ltx_outpaint.cli", "run", src, "-o", str(tmp_path / "x.mp4"), "--backend", "local",
         "--models-dir", str(tmp_path), "--prompt", "x"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "needed for the official recipe" in proc.stderr
    for name in ("ltx-2.3-22b-dev", "ltx-2.3-22b-distilled-lora-384", "ltx-2.3-22b-ic-lora-in-outpainting",
                 "gemma_3_12b_it.safetensors"):
        assert name in proc.stderr, name
    assert "spatial" not in proc.stderr  # the official recipe has no upsampler
    assert "huggingface.co" in proc.stderr


@pytest.mark.comfyui
def test_comfyui_graph_with_local_backend(comfyui, tiny_models):
    from test_comfyui_graph import graph, put_input, saved_files

    for kind in ("checkpoints", "loras", "latent_upscale_models", "text_encoders"):
        src_dir = os.path.join(tiny_models.root, kind)
        dst_dir = os.path.join(comfyui.base_dir, "models", kind)
        os.makedirs(dst_dir, exist_ok=True)
        for name in os.listdir(src_dir):
            if not os.path.exists(os.path.join(dst_dir, name)):
                os.symlink(os.path.join(src_dir, name), os.path.join(dst_dir, name))
    name = put_input(comfyui, clip("local_graph.mp4", width=64, height=96, frames=12, fps=8), "local_src.mp4")
    g = graph(name, width=W, height=H, num_frames=FRAMES, fps=FPS, prefix="itest/local")
    # ComfyUI without core LTX-2 (0.3.x): `auto` falls back to ltx-core and says why; with it (0.2x) this test
    # asks for ltx-core explicitly (the native engine's own tests are in test_native_engine.py)
    core_ltx2 = not comfyui.version().startswith("0.3.")
    g["4"] = {"class_type": "LTXOutpaintLocalBackend", "inputs": {
        "recipe": "official", "engine": "ltxcore" if core_ltx2 else "auto", "precision": "auto",
        "keep_loaded": False, "model_paths": ""}}
    # LoRA Stack reads local files only from folders the server allows (here the environment's extra folder)
    user_lora = os.path.join(comfyui.allowed_media_dir, os.path.basename(tiny_models.user_lora))
    shutil.copyfile(tiny_models.user_lora, user_lora)
    g["3"]["inputs"].update({"lora": "none", "path_or_url": user_lora, "scale": 0.5})
    g["5"]["inputs"].update({"num_inference_steps": 8, "enable_prompt_expansion": False})
    entry = comfyui.run(g, timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = saved_files(entry)[0]
    got = decode_video(os.path.join(comfyui.output_dir, saved["subfolder"], saved["filename"]), DecodeOptions())
    assert (got.width, got.height, got.num_frames) == (W, H, FRAMES)
    assert abs(got.fps - FPS) < 1e-6 and got.audio is not None and not got.audio.silent
    text = json.dumps(entry["outputs"]["5"])
    assert "local" in text and "peak" in text
    if core_ltx2:
        assert "engine: ltx-core, recipe official (native engine not used: engine ltxcore chosen" in text
    else:
        assert ("engine: ltx-core, recipe official (native engine not used: this ComfyUI's core has no LTX-2 "
                "audio-video model") in text, text


@pytest.fixture
def lora_server(tiny_models, monkeypatch):
    """Serves the tiny user LoRA (and a pickle named .safetensors) on 127.0.0.1; counts requests."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    with open(tiny_models.user_lora, "rb") as f:
        bodies = {"/style.safetensors": f.read(), "/evil.safetensors": b"\x80\x04\x95pickle-not-safetensors"}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.server.requests.append(self.path)
            body = bodies.get(self.path, b"")
            self.send_response(200 if self.path in bodies else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.requests = []
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    monkeypatch.setenv("LTX_OUTPAINT_ALLOW_PRIVATE_HOSTS", "1")  # the user's opt-in for a LAN/loopback server
    monkeypatch.setenv("LTX_OUTPAINT_ALLOW_HTTP", "1")
    yield srv
    srv.shutdown()
    srv.server_close()


def test_lora_from_url_is_cached_and_a_bad_body_refused(tiny_models, source, lora_server, tmp_path):
    from ltx_outpaint.errors import InputError

    loras_dir = str(tmp_path / "loras")
    config = _config(tiny_models, loras_dir=loras_dir)
    spec = LoraSpec(lora_server.url + "/style.safetensors", 0.7, "video")
    first = _run(tiny_models, source, config=config, loras=(spec,))
    assert lora_server.requests == ["/style.safetensors"]
    cached = os.listdir(os.path.join(loras_dir, "ltx-outpaint-url-cache"))
    assert any(n.endswith(".safetensors") for n in cached)
    second = _run(tiny_models, source, config=config, loras=(spec,))
    assert lora_server.requests == ["/style.safetensors"]  # no second request: the cache was used
    assert torch.equal(first.frames, second.frames)
    plain = _run(tiny_models, source, config=config)
    assert not torch.equal(first.frames, plain.frames)  # the LoRA was applied
    with pytest.raises(InputError, match="lora.*not a valid safetensors"):
        _run(tiny_models, source, config=config, loras=(LoraSpec(lora_server.url + "/evil.safetensors", 1.0),))
    assert not any("evil" in n for n in os.listdir(os.path.join(loras_dir, "ltx-outpaint-url-cache")))


def test_fp8_weights_and_keep_loaded(tiny_models, source, caplog):
    import logging

    from ltx_outpaint.local.ltxcore.pipeline import release_kept_models

    fp8 = _run(tiny_models, source, config=_config(tiny_models, precision="fp8"))
    assert tuple(fp8.frames.shape) == (FRAMES, H, W, 3) and torch.isfinite(fp8.frames).all()
    assert any("fp8" in n for n in fp8.notes)
    try:
        kept = _config(tiny_models, keep_loaded=True)
        a = _run(tiny_models, source, config=kept)
        with caplog.at_level(logging.INFO, logger="ltx_outpaint"):
            b = _run(tiny_models, source, config=kept)
        assert "prompt encoding reused (keep_loaded)" in caplog.text
        assert torch.equal(a.frames, b.frames)
    finally:
        release_kept_models()
