"""The ltx-core engine's samplers against a line-by-line transcription of ComfyUI's k-diffusion code.

The reference functions below transcribe ComfyUI 0.20.1 ``comfy/k_diffusion/sampling.py``
(sample_euler, sample_euler_ancestral_cfg_pp, get_ancestral_step) with the CONST model's half-log-SNR
(``-logit(sigma)``, ``comfy/k_diffusion/sampling.py`` sigma_to_half_log_snr) on float32 tensors, as ComfyUI runs
them; the engine's :mod:`sampling` is our own code on Python floats.
"""
from __future__ import annotations

import torch

from ltx_outpaint.local.ltxcore.sampling import Tokens, ancestral_step, needs_negative, sample
from ltx_outpaint.local.recipe import IC_LORA_PIPELINE, OFFICIAL

SHAPE = (1, 6, 4)


def comfy_get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def comfy_euler_ancestral_cfg_pp(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    lambda_fn = lambda s: -torch.logit(s)  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised, uncond_denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            alpha_s = sigmas[i] * lambda_fn(sigmas[i]).exp()
            alpha_t = sigmas[i + 1] * lambda_fn(sigmas[i + 1]).exp()
            d = (x - alpha_s * uncond_denoised) / sigmas[i]
            sigma_down, sigma_up = comfy_get_ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta=eta)
            sigma_down = alpha_t * sigma_down
            x = alpha_t * denoised + sigma_down * d
            if eta > 0 and s_noise > 0:
                x = x + alpha_t * noise(i) * s_noise * sigma_up
    return x


def comfy_euler(model, x, sigmas):
    for i in range(len(sigmas) - 1):
        denoised, _ = model(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def _toy_model(cfg):
    """x0 predictions that depend on x and sigma, different for the positive and the negative prompt."""
    def cond(x, s):
        return 0.6 * x + 0.1 * torch.sin(3 * x) + 0.2 * s

    def uncond(x, s):
        return 0.4 * x - 0.05 * torch.cos(2 * x) - 0.1 * s

    def comfy(x, s):  # CFGGuider: uncond + (cond - uncond) * cfg, the post-cfg hook keeps uncond
        c, u = cond(x, s), uncond(x, s)
        return u + (c - u) * cfg, u

    def ours(xv, xa, s, negative):
        return (uncond(xv, torch.tensor(s)) if negative else cond(xv, torch.tensor(s))), None

    return comfy, ours


def _start(seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(SHAPE, generator=g)
    noise0 = torch.randn(SHAPE, generator=g)
    steps = [torch.randn(SHAPE, generator=g) for _ in range(16)]
    return clean, noise0, steps


def test_euler_ancestral_cfg_pp_matches_comfyui_on_the_official_stage_1_sigmas():
    sigmas = OFFICIAL.stages[0].sigmas
    assert OFFICIAL.stages[0].sampler == "euler_ancestral_cfg_pp"
    for cfg in (1.0, 2.5):
        comfy, ours = _toy_model(cfg)
        clean, noise0, steps = _start()
        s = torch.tensor(sigmas, dtype=torch.float32)
        x = s[0] * noise0 + (1 - s[0]) * clean  # CONST noise_scaling
        want = comfy_euler_ancestral_cfg_pp(comfy, x, s, lambda i: steps[i])
        got = sample(ours, Tokens(clean.clone(), clean, torch.ones(1, 6, 1)), None, list(sigmas),
                     "euler_ancestral_cfg_pp", cfg, noise=lambda i: (noise0, None),
                     step_noise=lambda i: (steps[i], None))
        assert torch.allclose(got.video, want, atol=1e-5), float((got.video - want).abs().max())
        assert got.evaluations == 2 * (len(sigmas) - 1)  # the negative prompt runs every step, even at CFG 1


def test_euler_cfg_pp_matches_comfyui_on_the_official_stage_2_sigmas():
    sigmas = OFFICIAL.stages[1].sigmas
    assert OFFICIAL.stages[1].sampler == "euler_cfg_pp"
    comfy, ours = _toy_model(1.0)
    clean, noise0, _ = _start(1)
    s = torch.tensor(sigmas, dtype=torch.float32)
    x = s[0] * noise0 + (1 - s[0]) * clean
    want = comfy_euler_ancestral_cfg_pp(comfy, x, s, None, eta=0.0, s_noise=0.0)
    got = sample(ours, Tokens(clean.clone(), clean, torch.ones(1, 6, 1)), None, list(sigmas), "euler_cfg_pp", 1.0,
                 noise=lambda i: (noise0, None))
    assert torch.allclose(got.video, want, atol=1e-5)
    assert got.evaluations == 4


def test_euler_without_guidance_matches_comfyui_and_skips_the_negative_prompt():
    sigmas = IC_LORA_PIPELINE.stages[1].sigmas
    comfy, ours = _toy_model(1.0)
    calls = []

    def counted(xv, xa, s, negative):
        calls.append(negative)
        return ours(xv, xa, s, negative)

    clean, noise0, _ = _start(2)
    s = torch.tensor(sigmas, dtype=torch.float32)
    x = s[0] * noise0 + (1 - s[0]) * clean
    want = comfy_euler(comfy, x, s)
    got = sample(counted, Tokens(clean.clone(), clean, torch.ones(1, 6, 1)), None, list(sigmas), "euler", 1.0,
                 noise=lambda i: (noise0, None))
    assert torch.allclose(got.video, want, atol=1e-5)
    assert calls == [False] * (len(sigmas) - 1)
    assert not needs_negative("euler", 1.0) and needs_negative("euler", 3.0) and needs_negative("euler_cfg_pp", 1.0)


def test_frozen_tokens_are_given_to_the_model_clean_and_come_out_clean():
    """The reference tokens and the frozen audio: mask 0, KSamplerX0Inpaint puts the clean latent back."""
    clean_v, noise_v, steps = _start(3)
    mask = torch.ones(1, 6, 1)
    mask[:, 3:] = 0  # the last 3 tokens are reference tokens
    clean_a = torch.randn(1, 2, 4)
    seen = []

    def model(xv, xa, s, negative):
        seen.append((xv[:, 3:].clone(), xa.clone()))
        return xv * 0.5, xa * 0.5 - 1.0  # x0 that would move frozen tokens if not blended back

    out = sample(model, Tokens(clean_v.clone(), clean_v, mask), Tokens(clean_a.clone(), clean_a, torch.zeros(1, 2, 1)),
                 list(OFFICIAL.stages[0].sigmas), "euler_ancestral_cfg_pp", 1.0,
                 noise=lambda i: (noise_v, torch.randn(1, 2, 4)), step_noise=lambda i: (steps[i], torch.zeros(1, 2, 4)))
    assert all(torch.equal(v, clean_v[:, 3:]) and torch.equal(a, clean_a) for v, a in seen)
    assert torch.equal(out.video[:, 3:], clean_v[:, 3:]) and torch.equal(out.audio, clean_a)
    assert not torch.allclose(out.video[:, :3], clean_v[:, :3])  # the tokens to generate did move
    assert torch.equal(out.video_denoised, out.video)  # last sigma 0: denoised_output == output


def test_ancestral_step_from_sigma_1_is_all_fresh_noise_as_in_comfyui():
    t = 0.99375 / (1 - 0.99375)
    down, up = ancestral_step(float("inf"), t)
    want_down, want_up = comfy_get_ancestral_step(torch.tensor(float("inf")), torch.tensor(t))
    assert up == t and down == 0.0
    assert abs(float(want_up) - t) < 1e-4 and float(want_down) == 0.0  # float32 tensors in ComfyUI
    down, up = ancestral_step(10.0, 4.0)
    wd, wu = comfy_get_ancestral_step(10.0, 4.0)
    assert abs(down - wd) < 1e-12 and abs(up - wu) < 1e-12
