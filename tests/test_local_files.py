"""The ltx-core engine reads the files ComfyUI users have (issue 9 item 3).

- ComfyUI's single-file Gemma (``text_encoders/gemma_3_12B_it.safetensors``: language model, SigLIP, projector and
  the SentencePiece tokenizer as ``spiece_model``), bf16 and its ``_fp8_scaled`` / ``_fp4_mixed`` variants;
- LoRAs where Lightricks' workflow keeps them (``loras/ltxv/ltx2/``), no upsampler for the official recipe;
- a checkpoint with per-tensor scaled fp8 weights in ComfyUI's format (``weight_scale`` / ``input_scale``).

Every file is written by the test from the tiny random-weight models (tests/tiny_ltx.py); the nvfp4 file by
ComfyUI 0.20.1's own quantizer (comfy/float.py from the vendored tarball).
"""
from __future__ import annotations

import os

import pytest
import torch
from safetensors import safe_open

import tiny_ltx
from clips import clip
from test_local_backend import FRAMES, H, W, _config, _run
from ltx_outpaint.local.models import MissingModelsError, ModelSearch, find_models
from ltx_outpaint.media.decode import DecodeOptions, decode_video


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def source():
    return decode_video(clip("local_src.mp4", width=64, height=96, frames=12, fps=8), DecodeOptions())


@pytest.fixture(scope="module")
def quantized(tiny_models, tmp_path_factory):
    """fp8-scaled / fp4-mixed Gemma files and a scaled-fp8 checkpoint next to the tiny models."""
    d = tmp_path_factory.mktemp("quantized")
    out = {"gemma_fp8": str(d / "gemma_3_12B_it_fp8_scaled.safetensors"),
           "ckpt_fp8": str(d / "ltx-2.3-22b-dev-fp8.safetensors")}
    out["gemma_fp8_layers"] = tiny_ltx.write_gemma_fp8_scaled(tiny_models.comfy_gemma, out["gemma_fp8"])
    out["ckpt_fp8_layers"] = tiny_ltx.write_scaled_fp8_checkpoint(tiny_models.dev, out["ckpt_fp8"])
    if tiny_ltx.comfy_float_module() is not None:
        out["gemma_fp4"] = str(d / "gemma_3_12B_it_fp4_mixed.safetensors")
        out["gemma_fp4_formats"] = tiny_ltx.write_gemma_fp4_mixed(tiny_models.comfy_gemma, out["gemma_fp4"])
    return out


def _needs_fp4(quantized):
    if "gemma_fp4" not in quantized:
        msg = f"{tiny_ltx.COMFYUI_TARBALL} missing: ComfyUI's nvfp4 quantizer is needed to write the file"
        if _in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def _fp8_close(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Within e4m3's rounding: 2^-4 relative for normal values, the scaled subnormal step for tiny ones."""
    want = want.float()
    scale = want.abs().max() / 448
    return bool(((got.float() - want).abs() <= want.abs() * 2 ** -4 + scale * 2 ** -9 + 1e-8).all())


# -- Gemma ------------------------------------------------------------------------------------------
def test_comfy_gemma_single_file_is_the_same_model_and_tokenizer(tiny_models):
    import sentencepiece as spm

    from ltx_outpaint.local.ltxcore.compat import gemma_text_dims, load_text_encoder

    folder = load_text_encoder(tiny_models.gemma, "cpu")
    single = load_text_encoder(tiny_models.comfy_gemma, "cpu")
    a, b = folder.model.state_dict(), single.model.state_dict()
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)  # config inferred from shapes + Gemma 3's fixed values
    assert gemma_text_dims(tiny_models.comfy_gemma) == gemma_text_dims(tiny_models.gemma)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(tiny_models.gemma, "tokenizer.model"))
    for text in ("a wide meadow at dawn", "the camera pans <start_of_turn>user\nhi<end_of_turn>", " two  spaces"):
        assert single.tokenizer.tokenizer(text).input_ids == [sp.bos_id()] + sp.encode(text), text
    ids = torch.tensor([[2, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        ha = folder.model(input_ids=ids, output_hidden_states=True).hidden_states
        hb = single.model(input_ids=ids, output_hidden_states=True).hidden_states
    assert all(torch.equal(x, y) for x, y in zip(ha, hb))
    hs, mask = single.encode("a wide meadow")
    assert int(mask.sum()) == len(sp.encode("a wide meadow")) + 1  # bos + the prompt, left-padded to 1024


def test_prompt_enhancement_from_the_first_frame_with_the_single_file(tiny_models):
    from ltx_outpaint.local.ltxcore.compat import enhance_prompt, load_text_encoder

    encoder = load_text_encoder(tiny_models.comfy_gemma, "cpu")
    image = (torch.rand(64, 48, 3) * 255).to(torch.uint8)
    text = enhance_prompt(encoder, "a meadow", image, seed=3, max_new_tokens=12)
    again = enhance_prompt(encoder, "a meadow", image, seed=3, max_new_tokens=12)
    assert isinstance(text, str) and text.strip() and text == again  # the image went through the processor


def test_comfy_gemma_fp8_scaled_dequantizes_on_load(tiny_models, quantized):
    from safetensors.torch import load_file

    from ltx_outpaint.local.ltxcore.compat import load_text_encoder

    bf16 = load_file(tiny_models.comfy_gemma)
    model = load_text_encoder(quantized["gemma_fp8"], "cpu").model
    sd = {k: v for k, v in model.state_dict().items()}
    layers = quantized["gemma_fp8_layers"]
    assert layers
    for layer in layers:
        key = "model.language_model." + layer[len("model."):] + ".weight"
        key = key if key in sd else "language_model.model." + layer[len("model."):] + ".weight"
        assert sd[key].dtype == torch.bfloat16
        assert _fp8_close(sd[key], bf16[layer + ".weight"]), layer
    with safe_open(quantized["gemma_fp8"], framework="pt") as f:  # the file really is fp8
        assert f.get_tensor(layers[0] + ".weight").dtype == torch.float8_e4m3fn


def test_comfy_gemma_fp4_mixed_dequantizes_on_load(tiny_models, quantized):
    _needs_fp4(quantized)
    from safetensors.torch import load_file

    from ltx_outpaint.local.ltxcore.compat import load_text_encoder

    bf16 = load_file(tiny_models.comfy_gemma)
    encoder = load_text_encoder(quantized["gemma_fp4"], "cpu")
    sd = encoder.model.state_dict()
    kinds = set(quantized["gemma_fp4_formats"].values())
    assert kinds == {"nvfp4", "float8_e4m3fn"}
    for layer, fmt in quantized["gemma_fp4_formats"].items():
        key = next(k for k in sd if k.endswith(layer[len("model."):] + ".weight") and "language_model" in k)
        want = bf16[layer + ".weight"].float()
        got = sd[key].float()
        if fmt == "nvfp4":  # E2M1 keeps one step of 6 per 16-value block: error under half a block maximum
            block_max = want.abs().reshape(want.shape[0], -1, 16).amax(-1).repeat_interleave(16, dim=1)
            assert bool(((got - want).abs() <= 0.5 * block_max + 1e-6).all()), layer
            assert float((got - want).abs().mean()) < 0.2 * float(want.abs().mean())
        else:
            assert _fp8_close(got, want), layer
    hs, mask = encoder.encode("a wide meadow")
    assert all(torch.isfinite(h).all() for h in (hs if isinstance(hs, (list, tuple)) else [hs]))


def test_an_unreadable_quantization_names_the_file_to_get(tiny_models, tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from ltx_outpaint.local.ltxcore.compat import load_text_encoder
    from ltx_outpaint.local.ltxcore.gemma import GemmaFileError

    sd = load_file(tiny_models.comfy_gemma)
    layer = "model.layers.0.mlp.up_proj"
    bad = str(tmp_path / "gemma_3_12B_it_mxfp8.safetensors")
    save_file(sd, bad, metadata={"_quantization_metadata": json.dumps({"layers": {layer: {"format": "mxfp8"}}})})
    with pytest.raises(GemmaFileError, match=r"mxfp8.*gemma_3_12B_it\.safetensors.*Comfy-Org/ltx-2"):
        load_text_encoder(bad, "cpu")


# -- scaled-fp8 checkpoint ------------------------------------------------------------------------
def test_scaled_fp8_checkpoint_loads_in_bf16_and_as_scaled_fp8_with_loras(tiny_models, quantized):
    from ltx_outpaint.local.lora_targets import lora_sd_ops
    from ltx_outpaint.local.ltxcore.weights import LoraWeights, ScaledFp8Linear, build_transformer

    layers = quantized["ckpt_fp8_layers"]
    with safe_open(quantized["ckpt_fp8"], framework="pt") as f:
        q = {lay: (f.get_tensor(lay + ".weight"), f.get_tensor(lay + ".weight_scale")) for lay in layers}
    name = lambda lay: lay[len("model.diffusion_model."):]  # noqa: E731
    bf16 = build_transformer(quantized["ckpt_fp8"], (), fp8=False).velocity_model
    for lay, (w, s) in q.items():
        assert torch.equal(bf16.get_submodule(name(lay)).weight, (w.float() * s).to(torch.bfloat16)), lay
    kept = build_transformer(quantized["ckpt_fp8"], (), fp8=True).velocity_model
    for lay, (w, s) in q.items():  # no LoRA touches them: the file's fp8 weights and scales as they are
        mod = kept.get_submodule(name(lay))
        assert isinstance(mod, ScaledFp8Linear)
        assert torch.equal(mod.weight.view(torch.uint8), w.view(torch.uint8)) and torch.equal(mod.weight_scale, s)
    lora = tiny_models.user_lora
    fused = build_transformer(quantized["ckpt_fp8"], (LoraWeights(lora, 0.7, lora_sd_ops(lora, "video")),),
                              fp8=True).velocity_model
    with safe_open(lora, framework="pt") as f:
        touched = 0
        for lay, (w, s) in q.items():
            stem = "diffusion_model." + name(lay)
            if stem + ".lora_A.weight" not in f.keys() or "audio" in lay:
                continue
            a, b = f.get_tensor(stem + ".lora_A.weight").float(), f.get_tensor(stem + ".lora_B.weight").float()
            mod = fused.get_submodule(name(lay))
            want = w.float() * s + 0.7 * b @ a
            got = mod.weight.float() * mod.weight_scale
            assert _fp8_close(got, want), lay
            touched += 1
    assert touched > 0


def test_scaled_fp8_checkpoint_runs_end_to_end_with_a_lora(tiny_models, quantized, source):
    from ltx_outpaint.request import LoraSpec

    config = _config(tiny_models, explicit=(("dev", quantized["ckpt_fp8"]),))
    result = _run(tiny_models, source, config=config, loras=(LoraSpec(tiny_models.user_lora, 0.5, "both"),))
    assert tuple(result.frames.shape) == (FRAMES, H, W, 3) and torch.isfinite(result.frames).all()
    assert any("scaled fp8" in n for n in result.notes)  # auto precision keeps an fp8 file in fp8


# -- folders --------------------------------------------------------------------------------------
def test_nested_loras_single_file_gemma_and_no_upsampler_run_the_official_recipe(tiny_models, tmp_path, source):
    root = tiny_ltx.nested_models_tree(tiny_models, str(tmp_path / "models"))
    search = ModelSearch.from_models_dir(root)
    found = find_models("official", search)
    assert found.distilled_lora.endswith(os.path.join("loras", "ltxv", "ltx2", os.path.basename(
        tiny_models.distilled_lora)))
    assert found.ic_lora_outpaint.endswith(os.path.join("ltxv", "ltx2", os.path.basename(tiny_models.ic_lora)))
    assert found.text_encoder_form == "single_file" and found.spatial_upsampler is None
    with pytest.raises(MissingModelsError) as err:  # only the recipe that uses it asks for the upsampler
        find_models("ic_lora_pipeline", search)
    assert "spatial_upsampler" in err.value.roles and "ic_lora_outpaint" not in err.value.roles
    from ltx_outpaint.local.backend import LocalConfig

    result = _run(tiny_models, source, config=LocalConfig(search=search, device="cpu"),
                  enable_prompt_expansion=True)
    assert tuple(result.frames.shape) == (FRAMES, H, W, 3)
    assert result.prompt != "a wide meadow" and not any("expansion failed" in n for n in result.notes)
