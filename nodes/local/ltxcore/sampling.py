"""The recipes' samplers on token tensors: ComfyUI's k-diffusion updates for a flow (CONST) model.

What ComfyUI 0.20.1 does (``comfy/samplers.py`` CFGGuider / KSamplerX0Inpaint, ``comfy/k_diffusion/sampling.py``,
``comfy/model_sampling.py`` CONST), reproduced on ltx-core's token states:

- start: ``x = s0 * noise + (1 - s0) * latent_image`` (CONST noise scaling), over every token;
- before each model call frozen tokens are put back: ``x_in = x * m + latent_image * (1 - m)`` (m = denoise mask;
  the model's per-token timestep is ``m * sigma``), and the model's x0 is blended the same way;
- guidance: ``x0 = u + (c - u) * cfg`` from the positive (c) and negative (u) prompt's x0; at cfg 1 plain samplers
  skip the negative pass, the ``*_cfg_pp`` samplers do not (their post-CFG hook disables that shortcut and keeps
  the negative prompt's x0 ``u``, unblended);
- ``euler``: ``x += (x - x0) / s * (t - s)``;
- ``euler_ancestral_cfg_pp`` (eta 1, s_noise 1), with ``a_s = 1 - s``, ``a_t = 1 - t`` (CONST: ``sigma * exp(-logit
  sigma)``): ``d = (x - a_s * u) / s``; ``(sd, su) = ancestral_step(s / a_s, t / a_t)``; ``x = a_t * x0 + a_t * sd * d
  + a_t * su * noise``; the last step (t = 0) returns ``x0``;
- ``euler_cfg_pp``: the same with eta 0: ``x = a_t * x0 + t * d``.

Pure torch: the model is a callable ``(x_video, x_audio, sigma, negative) -> (x0_video, x0_audio)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch

SAMPLERS = ("euler", "euler_cfg_pp", "euler_ancestral_cfg_pp")


@dataclass
class Tokens:
    """One modality during sampling: tokens [B,N,C] (float32), what frozen tokens are reset to, the mask [B,N,1]."""

    x: torch.Tensor
    clean: torch.Tensor
    mask: torch.Tensor

    def blend(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask + self.clean * (1 - self.mask)


def ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """k-diffusion's get_ancestral_step: (sigma_down, sigma_up). sigma_from may be inf (a step from sigma 1)."""
    if not eta:
        return sigma_to, 0.0
    if math.isinf(sigma_from):  # ComfyUI: min(t, nan) -> t, so all of sigma_to is fresh noise
        up = sigma_to
    else:
        up = min(sigma_to, eta * math.sqrt(sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2))
    return math.sqrt(max(sigma_to ** 2 - up ** 2, 0.0)), up


def _snr_sigma(s: float) -> float:
    """s / alpha_s for the CONST model (alpha = 1 - s); inf at s = 1."""
    return math.inf if s >= 1.0 else s / (1.0 - s)


def needs_negative(sampler: str, cfg: float) -> bool:
    """Whether the negative prompt is evaluated each step (cfg_pp samplers always; others when cfg != 1)."""
    return sampler.endswith("_cfg_pp") or cfg != 1.0


@dataclass
class SampleResult:
    video: torch.Tensor  # final x (ComfyUI's "output")
    video_denoised: torch.Tensor  # the last step's x0 ("denoised_output")
    audio: torch.Tensor | None
    audio_denoised: torch.Tensor | None
    evaluations: int


def sample(model: Callable, video: Tokens, audio: Tokens | None, sigmas: list[float], sampler: str, cfg: float,
           noise: Callable[[int], tuple[torch.Tensor, torch.Tensor | None]],
           step_noise: Callable[[int], tuple[torch.Tensor, torch.Tensor | None]] | None = None,
           before_step: Callable[[int], None] | None = None) -> SampleResult:
    """Run `sampler` over `sigmas`. `noise(0)` gives the initial noise per modality; `step_noise(i)` the ancestral
    noise of step i; `before_step(i)` runs before each step (progress, interruption)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: got {sampler!r}; this engine implements {', '.join(SAMPLERS)}")
    negative = needs_negative(sampler, cfg)
    eta = 1.0 if sampler == "euler_ancestral_cfg_pp" else 0.0
    s0 = float(sigmas[0])
    n_video, n_audio = noise(0)
    video = replace(video, x=s0 * n_video.float() + (1 - s0) * video.clean)
    if audio is not None:
        audio = replace(audio, x=s0 * n_audio.float() + (1 - s0) * audio.clean)
    evaluations = 0
    x0_v = x0_a = None
    for i in range(len(sigmas) - 1):
        s, t = float(sigmas[i]), float(sigmas[i + 1])
        if before_step is not None:
            before_step(i)
        xv_in = video.blend(video.x)
        xa_in = audio.blend(audio.x) if audio is not None else None
        cond_v, cond_a = model(xv_in, xa_in, s, False)
        evaluations += 1
        if negative:
            if before_step is not None:
                before_step(i)  # the negative pass is a second transformer evaluation: interruptible too
            unc_v, unc_a = model(xv_in, xa_in, s, True)
            evaluations += 1
            x0_v = unc_v + (cond_v - unc_v) * cfg
            x0_a = unc_a + (cond_a - unc_a) * cfg if audio is not None else None
        else:
            unc_v = unc_a = None
            x0_v, x0_a = cond_v, cond_a
        x0_v = video.blend(x0_v.float())
        x0_a = audio.blend(x0_a.float()) if audio is not None else None
        fresh = step_noise(i) if eta > 0 and t != 0 and step_noise is not None else None
        new = []
        for tok, x0, unc, j in ((video, x0_v, unc_v, 0), (audio, x0_a, unc_a, 1)):
            if tok is None:
                new.append(None)
                continue
            if sampler == "euler":
                x = tok.x + (tok.x - x0) / s * (t - s)
            elif t == 0:
                x = x0
            else:
                a_s, a_t = 1.0 - s, 1.0 - t
                d = (tok.x - a_s * unc.float()) / s
                down, up = ancestral_step(_snr_sigma(s), _snr_sigma(t), eta)
                x = a_t * x0 + (a_t * down) * d
                if fresh is not None and up > 0:
                    x = x + a_t * up * fresh[j].float()
            new.append(x)
        video = replace(video, x=new[0])
        if audio is not None:
            audio = replace(audio, x=new[1])
    return SampleResult(video.x, x0_v, audio.x if audio is not None else None, x0_a, evaluations)
