"""The ltx-core engine runs what recipe.py says, step for step (tiny models, real engine, CPU).

The engine's own functions are wrapped with recording spies (each spy calls the real function and keeps its
arguments): which sigmas and sampler each stage samples with, how many transformer evaluations, which tokens are
frozen, which LoRAs are fused at which strength, which blends, resizes and tiled decodes run. Nothing is replaced.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from test_local_backend import FRAMES, H, W, _config, _request, _run
from ltx_outpaint.local.ltxcore import imageops, pipeline, tiling, weights
from ltx_outpaint.local.models import ModelSearch, find_models
from ltx_outpaint.local.recipe import IC_LORA_PIPELINE, OFFICIAL, resolve
from ltx_outpaint.request import LoraSpec


@pytest.fixture(scope="module")
def source():
    from clips import clip
    from ltx_outpaint.media.decode import DecodeOptions, decode_video

    return decode_video(clip("local_src.mp4", width=64, height=96, frames=12, fps=8), DecodeOptions())


class Spy:
    def __init__(self, monkeypatch, module, name):
        self.calls = []
        real = getattr(module, name)

        def spy(*args, **kwargs):
            out = real(*args, **kwargs)
            self.calls.append((args, kwargs, out))
            return out

        monkeypatch.setattr(module, name, spy)


def _spies(monkeypatch):
    import ltx_core.model.upsampler as upsampler

    return {"sample": Spy(monkeypatch, pipeline, "sample"),
            "build": Spy(monkeypatch, weights, "build_transformer"),
            "blend": Spy(monkeypatch, imageops, "pyramid_blend"),
            "resize": Spy(monkeypatch, imageops, "resize"),
            "stage_inputs": Spy(monkeypatch, imageops, "official_stage_inputs"),
            "decode_tiled": Spy(monkeypatch, tiling, "decode_tiled"),
            "encode_tiled": Spy(monkeypatch, tiling, "encode_tiled"),
            "spatial": Spy(monkeypatch, tiling, "decode_spatial_tiles"),
            "upsample": Spy(monkeypatch, upsampler, "upsample_video")}


def _tokens(w, h):
    return ((FRAMES - 1) // 8 + 1) * (h // 32) * (w // 32)


def _sample_args(call):
    args, kwargs, out = call
    model, video, audio, sigmas, sampler, cfg = args
    return video, audio, tuple(sigmas), sampler, cfg, out


def test_official_recipe_runs_as_the_workflow(tiny_models, source, monkeypatch):
    spies = _spies(monkeypatch)
    result = _run(tiny_models, source, loras=(LoraSpec(tiny_models.user_lora, 0.3, "video"),))
    assert tuple(result.frames.shape) == (FRAMES, H, W, 3)
    s1, s2 = OFFICIAL.stages

    # one transformer, fused once: dev + distilled LoRA 0.5 + IC-LoRA 1.0 + the user's LoRA, used in both stages
    assert len(spies["build"].calls) == 1
    (ckpt, loras), kwargs, _ = spies["build"].calls[0]
    assert ckpt == tiny_models.dev
    assert [(lo.path, lo.strength) for lo in loras] == [(tiny_models.distilled_lora, 0.5), (tiny_models.ic_lora, 1.0),
                                                        (tiny_models.user_lora, 0.3)]

    # stage 1: half size, reference tokens frozen after the target tokens, source audio frozen, 8 steps of
    # euler_ancestral_cfg_pp with the negative prompt evaluated every step at CFG 1
    assert len(spies["sample"].calls) == 2
    video, audio, sigmas, sampler, cfg, out = _sample_args(spies["sample"].calls[0])
    n1 = _tokens(W // 2, H // 2)
    assert (sigmas, sampler, cfg) == (s1.sigmas, "euler_ancestral_cfg_pp", 1.0)
    assert video.x.shape[1] == 2 * n1
    assert torch.equal(video.mask[:, :n1], torch.ones_like(video.mask[:, :n1]))
    assert torch.equal(video.mask[:, n1:], torch.zeros_like(video.mask[:, n1:]))
    assert audio is not None and float(audio.mask.abs().sum()) == 0
    assert out.evaluations == 2 * (len(s1.sigmas) - 1)

    # between: VAEDecodeTiled(512, 64, 512, 64), blend with dilation 5 against the half-size green composite,
    # x2 lanczos, VAEEncodeTiled(512, 64, 512, 64)
    assert len(spies["decode_tiled"].calls) == 1 and spies["decode_tiled"].calls[0][0][4:] == (512, 64, 512, 64)
    refs = spies["stage_inputs"].calls[0][2]
    (gen, orig, mask), kw, half = spies["blend"].calls[0]
    assert kw == {"dilation": 5, "long_side": 64, "levels": 7}
    assert orig is refs.half_ref and mask is refs.half_mask and tuple(gen.shape) == (FRAMES, H // 2, W // 2, 3)
    lanczos = [c for c in spies["resize"].calls if c[0][3] == "lanczos"]
    assert len(lanczos) == 1 and lanczos[0][0][0] is half and lanczos[0][0][1:3] == (W, H)
    assert len(spies["encode_tiled"].calls) == 1 and spies["encode_tiled"].calls[0][0][1] is lanczos[0][2]
    assert spies["encode_tiled"].calls[0][0][4:] == (512, 64, 512, 64)
    assert not spies["upsample"].calls

    # stage 2: full size from that latent, no reference tokens, audio frozen again, euler_cfg_pp 0.725/0.4219/0
    video, audio, sigmas, sampler, cfg, out = _sample_args(spies["sample"].calls[1])
    assert (sigmas, sampler, cfg) == (s2.sigmas, "euler_cfg_pp", 1.0) == ((0.725, 0.4219, 0.0), "euler_cfg_pp", 1.0)
    assert video.x.shape[1] == _tokens(W, H) and bool((video.mask == 1).all())
    assert float(audio.mask.abs().sum()) == 0
    assert out.evaluations == 4

    # finish: LTXVTiledVAEDecode(2, 2, 6), blend with dilation 2 against the full-size composite
    assert len(spies["spatial"].calls) == 1 and spies["spatial"].calls[0][0][4:] == (2, 2, 6)
    (gen, orig, mask), kw, final = spies["blend"].calls[1]
    assert kw == {"dilation": 2, "long_side": 64, "levels": 7}
    assert orig is refs.full_ref and mask is refs.full_mask and gen is spies["spatial"].calls[0][2]
    assert torch.equal(result.frames, final)
    # the reference is painted #66FF00 where the model generates
    fill = torch.tensor([102, 255, 0]) / 255
    assert torch.allclose(refs.full_ref[0, 0, 0], fill) and bool((refs.full_mask[0, 0] == 1).all())


def test_ic_lora_pipeline_recipe_runs_as_ltx_pipelines(tiny_models, source, monkeypatch):
    spies = _spies(monkeypatch)
    result = _run(tiny_models, source, config=_config(tiny_models, recipe="ic_lora_pipeline"))
    assert tuple(result.frames.shape) == (FRAMES, H, W, 3)
    s1, s2 = IC_LORA_PIPELINE.stages
    builds = spies["build"].calls
    assert [c[0][0] for c in builds] == [tiny_models.distilled, tiny_models.distilled]
    assert [[(lo.path, lo.strength) for lo in c[0][1]] for c in builds] == [[(tiny_models.ic_lora, 1.0)], []]
    (v1, a1, sig1, smp1, cfg1, out1), (v2, a2, sig2, smp2, cfg2, out2) = map(_sample_args, spies["sample"].calls)
    assert (sig1, smp1, out1.evaluations) == (s1.sigmas, "euler", 8)  # no guidance: one evaluation per step
    assert (sig2, smp2, out2.evaluations) == ((0.909375, 0.725, 0.421875, 0.0), "euler", 3)
    assert v1.x.shape[1] == 2 * _tokens(W // 2, H // 2) and v2.x.shape[1] == _tokens(W, H)
    assert len(spies["upsample"].calls) == 1
    assert not spies["decode_tiled"].calls and not spies["encode_tiled"].calls
    assert [c[1]["dilation"] for c in spies["blend"].calls] == [2]  # only the final paste-back


def test_engine_parameters_are_the_resolved_recipes(tiny_models):
    search = ModelSearch.from_models_dir(tiny_models.root)
    for name in ("official", "ic_lora_pipeline"):
        models = find_models(name, search)
        for kw in ({}, {"guidance_scale": 2.0, "video_strength": 0.8, "generate_audio": False}):
            resolved = resolve(name, _request(**kw), width=W, height=H, frames=FRAMES, seed=5)
            user = (pipeline.UserLora(tiny_models.user_lora, 0.5, "video"),)
            engine = pipeline.parameters(resolved, models, has_source_audio=True, loras=user)
            assert engine == resolved.parameters(), (name, kw)
    # derived from the plan, not copied from the recipe: change a stage of the plan, the report follows
    plan = pipeline.plan_run(resolve("official", _request(), width=W, height=H, frames=FRAMES, seed=1), models=None)
    changed = dataclasses.replace(plan, stages=(dataclasses.replace(plan.stages[0], sampler="euler",
                                                                    blend_dilation=3), plan.stages[1]))
    assert changed.parameters()["stage1"]["sampler"] == "euler"
    assert changed.parameters()["stage1"]["blend_dilation"] == 3
    no_audio = pipeline.parameters(resolve("official", _request(), width=W, height=H, frames=FRAMES, seed=1),
                                   has_source_audio=False)
    assert no_audio["audio"] == "generated"  # named: the recipe freezes source audio, a silent source has none
