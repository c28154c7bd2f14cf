"""The planned peak VRAM per stage (nodes/local/memory_plan.py, pure arithmetic) and the sizes the engine feeds it."""
from __future__ import annotations

import pytest
import torch

from ltx_outpaint.local.memory_plan import (ACT_BYTES_PER_TOKEN_DIM, RESERVE, GiB, ModelSize, Sizes, Work,
                                            choose_offload, plan, vae_decode_bytes, vae_encode_bytes)

SIZES = Sizes(transformer=ModelSize(total=10_000, block=1_000, blocks=8), text_encoder=ModelSize(4_000, 500, 6),
              video_encoder=300, video_decoder=700, audio=50, video_width=8, audio_width=4, text_hidden=16,
              text_layers=6)
WORK = Work(text_tokens=10, stages=((100, 20), (400, 20)), decode_tiles=(("after stage 1", (2, 3, 4)),),
            encode_tiles=(("after stage 1", (9, 64, 32)),))


def test_stage_peaks_are_weights_plus_activations():
    p = plan(SIZES, WORK, offload_transformer=False, offload_text=False)
    assert [s.name for s in p.stages] == ["text", "stage 1", "decode 1", "encode 2", "stage 2", "audio"]
    text, st1, dec, enc, st2, audio = p.stages
    assert (text.weights, text.activations) == (4_000, 2 * 10 * 16 * (6 + 1 + 10))
    assert (st1.weights, st1.activations) == (10_000, ACT_BYTES_PER_TOKEN_DIM * (100 * 8 + 20 * 4))
    assert st2.activations == ACT_BYTES_PER_TOKEN_DIM * (400 * 8 + 20 * 4)
    assert (dec.weights, dec.activations) == (700, 2 * 1200 * 512 * 2 * 3 * 4) == (700, vae_decode_bytes(2, 3, 4))
    assert (enc.weights, enc.activations) == (300, 2 * 80 * 9 * 64 * 32) == (300, vae_encode_bytes(9, 64, 32))
    assert vae_encode_bytes(3, 10, 10) == 2 * 80 * 7 * 100  # ComfyUI counts at least 7 frames
    assert audio.total == 50 + RESERVE
    assert p.peak == max(s.total for s in p.stages) == dec.total  # the VAE tile dominates here


def test_block_offloading_keeps_the_rest_plus_two_blocks():
    p = plan(SIZES, WORK, offload_transformer=True, offload_text=True)
    assert p.stages[1].weights == 10_000 - 8 * 1_000 + 2 * 1_000
    assert p.stages[0].weights == 4_000 - 6 * 500 + 2 * 500
    assert ModelSize(10, 0, 0).resident(True) == 10  # nothing to stream


def test_auto_offloads_each_model_only_when_its_stages_do_not_fit():
    full = plan(SIZES, WORK, offload_transformer=False, offload_text=False)
    roomy = choose_offload(SIZES, WORK, full.peak + 1, "auto")
    assert (roomy.offload_transformer, roomy.offload_text) == (False, False)
    small = Work(10, ((100, 20), (400, 20)))  # no VAE stages: the transformer stages decide
    full = plan(SIZES, small, offload_transformer=False, offload_text=False)
    stage2 = full.stages[2].total
    assert full.stages[0].total < stage2
    tight = choose_offload(SIZES, small, stage2 - 1, "auto")  # the text stage still fits: only the transformer
    assert (tight.offload_transformer, tight.offload_text) == (True, False)
    assert not tight.notes
    hopeless = choose_offload(SIZES, WORK, 10, "auto")
    assert hopeless.offload_transformer and hopeless.offload_text and "exceeds" in hopeless.notes[0]
    assert not choose_offload(SIZES, WORK, 0, "auto").offload_transformer  # a CPU run
    assert choose_offload(SIZES, WORK, 0, "blocks").offload_transformer  # asked for: even there
    assert choose_offload(SIZES, WORK, 10**12, "blocks").offload_transformer
    assert not choose_offload(SIZES, WORK, 10, "none").offload_transformer
    assert "offload: blocks" in tight.describe() and "stage 2" in tight.describe()


def _meta_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def ltx23_sizes():
    """LTX-2.3's and Gemma 3 12B's parameter counts, from the real architectures built on the meta device
    (the transformer / VAE configs of tests/bench_local_gpu.py; Gemma 3 12B's published config)."""
    import bench_local_gpu as bench
    from ltx_core.model.transformer import LTXModelConfigurator
    from ltx_core.model.video_vae import VideoDecoderConfigurator, VideoEncoderConfigurator
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from ltx_outpaint.local.ltxcore.gemma import GEMMA3_FIXED

    cfg = {"transformer": bench.FULL_TRANSFORMER, "vae": bench.FULL_VAE}
    gcfg = Gemma3Config(text_config={**GEMMA3_FIXED["text"], "vocab_size": 262208, "hidden_size": 3840,
                                     "intermediate_size": 15360, "num_hidden_layers": 48, "num_attention_heads": 16,
                                     "num_key_value_heads": 8, "head_dim": 256},
                        vision_config={"model_type": "siglip_vision_model", "hidden_size": 1152,
                                       "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
                                       "image_size": 896, "patch_size": 14, "vision_use_head": False})
    with torch.device("meta"):
        tr = LTXModelConfigurator.from_config(cfg)
        dec, enc = VideoDecoderConfigurator.from_config(cfg), VideoEncoderConfigurator.from_config(cfg)
        gemma = Gemma3ForConditionalGeneration(gcfg)
    layers = next(m for n, m in gemma.named_modules() if n.endswith("language_model.layers")
                  or n.endswith("language_model.model.layers"))
    block = _meta_params(tr.transformer_blocks[0])
    linear = sum(m.weight.numel() for m in tr.transformer_blocks[0].modules() if isinstance(m, torch.nn.Linear))
    total = _meta_params(tr)

    def transformer(fp8):  # fp8: the blocks' Linear weights 1 byte + a 4-byte scale each, the rest bf16
        per_block = (block - linear) * 2 + (linear + 4 * 40 if fp8 else linear * 2)
        return ModelSize(total * 2 - 48 * block * 2 + 48 * per_block, per_block, 48)

    g_total = _meta_params(gemma) - gemma.lm_head.weight.numel() * 0  # tied: counted once by parameters()
    return {fp8: Sizes(transformer(fp8), ModelSize(g_total * 2, _meta_params(layers[0]) * 2, len(layers)),
                       _meta_params(enc) * 2, _meta_params(dec) * 2, 0, 0, 4096, 2048, 3840, 48)
            for fp8 in (False, True)}


def test_1280x720x121_official_recipe_fits_24_gb_with_fp8_and_block_offloading(ltx23_sizes):
    from test_local_backend import _request

    from ltx_outpaint.local.ltxcore.pipeline import plan_run, stage_work
    from ltx_outpaint.local.recipe import resolve
    from ltx_outpaint.media.canvas import LTX_SNAP

    w, h = LTX_SNAP.size(1280, 720)
    assert (w, h) == (1280, 704)
    req = _request(num_frames=121, frames_per_second=24.0)
    work = stage_work(plan_run(resolve("official", req, width=w, height=h, frames=121, seed=1)))
    assert work.stages == ((2 * 16 * 11 * 20, 126), (16 * 22 * 40, 126))  # reference tokens in stage 1
    budget = 24 * GiB
    fitted = choose_offload(ltx23_sizes[True], work, budget, "auto")
    assert fitted.offload_text and fitted.peak <= budget, fitted.describe()
    assert ltx23_sizes[True].transformer.total > 18 * GiB  # ~19 B parameters: fp8 alone is 19 GiB
    assert plan(ltx23_sizes[False], work, offload_transformer=False, offload_text=False).peak > 36 * GiB
    bf16_blocks = choose_offload(ltx23_sizes[False], work, budget, "blocks")
    assert bf16_blocks.peak <= budget, bf16_blocks.describe()  # bf16 fits too, streaming every block


def test_engine_sizes_are_the_built_models_bytes(tiny_models):
    from test_local_backend import _request

    from ltx_outpaint.local.ltxcore import pipeline, weights
    from ltx_outpaint.local.ltxcore.compat import language_layers, load_text_encoder
    from ltx_outpaint.local.models import ModelSearch, find_models
    from ltx_outpaint.local.recipe import resolve

    models = find_models("official", ModelSearch.from_models_dir(tiny_models.root))
    plan = pipeline.plan_run(resolve("official", _request(), width=192, height=128, frames=9, seed=1), models)
    for fp8 in (False, True):
        sizes = pipeline.model_sizes(models, plan, fp8)
        built = weights.build_transformer(tiny_models.dev, (), fp8=fp8).velocity_model
        nbytes = lambda m: sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])  # noqa: E731
        assert sizes.transformer == ModelSize(nbytes(built), nbytes(built.transformer_blocks[0]), 2)
    gemma = load_text_encoder(tiny_models.comfy_gemma, "cpu").model
    layers = language_layers(gemma)
    sizes = pipeline.model_sizes(models, plan, False)
    assert sizes.text_encoder.blocks == len(layers) and sizes.text_layers == len(layers)
    assert sizes.text_encoder.block == sum(p.numel() * 2 for p in layers[0].parameters())
