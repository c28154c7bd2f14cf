"""ltx-core 1.0.0 compatibility: transformers 4.x and 5.x, no CUDA calls without a GPU, no meta weights."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from clips import clip
from test_local_backend import FRAMES, H, W, _run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def test_no_cuda_only_calls_on_a_machine_without_cuda(tiny_models, monkeypatch):
    """ltx-pipelines 1.0.0 calls torch.cuda.synchronize() unconditionally and ltx-core's prompt
    enhancement forks the CUDA RNG; on a CPU run none of that may happen (here: every such call fails)."""
    from ltx_outpaint.media.decode import DecodeOptions, decode_video

    def boom(*a, **k):
        raise AssertionError("a CUDA-only function was called on a CPU run")

    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats", "max_memory_allocated",
                 "get_rng_state", "set_rng_state", "get_device_properties"):
        monkeypatch.setattr(torch.cuda, name, boom)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    src = decode_video(clip("local_src.mp4", width=64, height=96, frames=12, fps=8), DecodeOptions())
    result = _run(tiny_models, src, guidance_scale=2.0, enable_prompt_expansion=True)
    assert tuple(result.frames.shape) == (FRAMES, H, W, 3)


def test_a_weight_missing_from_the_file_is_an_error_not_a_meta_tensor(tiny_models, tmp_path):
    from ltx_pipelines.utils.model_ledger import ModelLedger
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ltx_outpaint.local.ltxcore.compat import assert_no_meta, ledger_model

    broken = str(tmp_path / "broken.safetensors")
    with safe_open(tiny_models.dev, framework="pt") as f:
        meta = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys() if k != "vae.encoder.conv_in.conv.weight"}
    save_file(sd, broken, metadata=meta)
    ok = ModelLedger(dtype=torch.bfloat16, device=torch.device("cpu"), checkpoint_path=tiny_models.dev)
    assert_no_meta(ok.video_encoder(), "video_encoder")  # the complete file loads every weight
    bad = ModelLedger(dtype=torch.bfloat16, device=torch.device("cpu"), checkpoint_path=broken)
    with pytest.raises(RuntimeError, match=r"video_encoder: 1 weights were not found.*conv_in\.conv\.weight"):
        ledger_model(bad, "video_encoder")


def test_every_model_of_a_run_is_fully_loaded(tiny_models):
    from ltx_pipelines.utils.model_ledger import ModelLedger

    from ltx_outpaint.local.ltxcore.compat import assert_no_meta, load_embeddings_processor, load_text_encoder

    cpu = torch.device("cpu")
    ledger = ModelLedger(dtype=torch.bfloat16, device=cpu, checkpoint_path=tiny_models.dev,
                         spatial_upsampler_path=tiny_models.upsampler)
    for name in ("transformer", "video_encoder", "video_decoder", "audio_encoder", "audio_decoder", "vocoder",
                 "spatial_upsampler"):
        assert_no_meta(getattr(ledger, name)(), name)
    for gemma in (tiny_models.gemma, tiny_models.comfy_gemma):  # Hugging Face folder and ComfyUI single file
        assert_no_meta(load_text_encoder(gemma, cpu), "text_encoder")
        assert_no_meta(load_embeddings_processor(tiny_models.dev, gemma, cpu), "embeddings")


def _venv_with_transformers_4(base: str) -> str:
    """A venv that sees this interpreter's packages but has its own transformers 4.x (shadowing 5.x)."""
    venv = os.path.join(base, "venv-transformers4")
    py = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, ".ready")
    if os.path.exists(marker):
        return py
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    site = subprocess.run([py, "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    parent = [p for p in sys.path if p.endswith("site-packages")][0]
    with open(os.path.join(site, "_ltx_outpaint_parent.pth"), "w") as f:
        f.write(f"import site; site.addsitedir({parent!r})\n")
    proc = subprocess.run([py, "-m", "pip", "install", "-q", "transformers>=4.52,<5"], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    open(marker, "w").close()
    return py


SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import transformers
    import tiny_ltx
    from clips import clip
    from test_local_backend import _run
    from ltx_outpaint.media.decode import DecodeOptions, decode_video

    models = tiny_ltx.build_tiny_models(sys.argv[2])   # the Gemma folder is written by transformers 4.x too
    src = decode_video(clip("local_src.mp4", width=64, height=96, frames=12, fps=8), DecodeOptions())
    r = _run(models, src, guidance_scale=2.0, enable_prompt_expansion=True)
    # the ComfyUI single-file Gemma too (config, tokenizer and weights rebuilt for transformers 4.x)
    from ltx_outpaint.local.ltxcore.compat import load_text_encoder
    folder, single = load_text_encoder(models.gemma, "cpu"), load_text_encoder(models.comfy_gemma, "cpu")
    same = all(__import__("torch").equal(a, b) for a, b in zip(folder.model.state_dict().values(),
                                                              single.model.state_dict().values()))
    print(json.dumps({"transformers": transformers.__version__, "shape": list(r.frames.shape),
                      "prompt": r.prompt, "audio": r.audio is not None, "notes": r.notes, "single_file": same,
                      "tokens": single.tokenizer.tokenizer("a wide meadow").input_ids}))
""")


def test_whole_pipeline_under_transformers_4(tmp_path):
    base = os.environ.get("LTX_OUTPAINT_CACHE") or os.path.join(ROOT, ".ci", "cache")
    if not os.path.isdir(base):
        base = str(tmp_path)
    try:
        py = _venv_with_transformers_4(base)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        if _in_ci():
            pytest.fail(f"could not set up transformers 4.x: {exc}", pytrace=False)
        pytest.skip(f"could not set up transformers 4.x (no package index?): {exc}")
    script = tmp_path / "run_tf4.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests"))
    proc = subprocess.run([py, str(script), os.path.join(ROOT, "tests"), str(tmp_path / "models")],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["transformers"].startswith("4."), out["transformers"]
    assert out["shape"] == [FRAMES, H, W, 3] and out["audio"]
    assert out["prompt"] != "a wide meadow"  # Gemma's prompt expansion ran under 4.x
    assert not any("expansion failed" in n for n in out["notes"])
    assert out["single_file"]
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "models" / "text_encoders" / "gemma-3-tiny" /
                                                   "tokenizer.model"))
    assert out["tokens"] == [sp.bos_id()] + sp.encode("a wide meadow")
    import transformers

    assert transformers.__version__.startswith("5."), "this interpreter is the transformers 5.x side"
