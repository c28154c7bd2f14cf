"""Continuity across long-clip chunks on the local backend (ltx-core engine, tiny random-weight LTX-2.3 models
from tests/tiny_ltx.py, CPU).

A chunk is guided at its start by the previous chunk's last generated frames (OutpaintJob.start_frames): their
VAE latent replaces the chunk's first latent frames, frozen, in both stages (ComfyUI's LTXVAddGuide at
frame_idx 0). The tiny VAE has random weights, so a frame does not survive encode -> decode: the frames are
compared with the guide's VAE round trip, decoded the way the pipeline decodes (its tiles, its seeded decoder
noise, in the context of the chunk's later latent frames), not with the guide pixels themselves.

- latent: the guided chunk's first latent frames ARE the guide's encoding, at both stages; unguided they are not;
- pixels: the guided chunk's first K frames equal that round trip in the generated area (away from the
  source's blend border) within TOLERANCE; the unguided chunk's are far from it.
"""
from __future__ import annotations

import pytest
import torch

from clips import clip
from ltx_outpaint.backends import Progress, prepare_job
from ltx_outpaint.local.backend import LocalBackend, LocalConfig
from ltx_outpaint.local.ltxcore.pipeline import OutpaintPipeline
from ltx_outpaint.local.models import ModelSearch, find_models
from ltx_outpaint.media.canvas import CanvasSpec
from ltx_outpaint.media.decode import DecodeOptions, decode_video
from ltx_outpaint.request import ImageSize, OutpaintRequest

W, H, FPS = 192, 128, 8.0
K = 9  # guide frames: two latent frames (1 + 8)
#: mean absolute difference (0..1 levels) allowed between the guided chunk's first K frames and the guide's
#: round trip, over the generated area (bf16 decode; measured 0.0000 here, unguided 0.066)
TOLERANCE = 0.01


@pytest.fixture(scope="module")
def source():
    return decode_video(clip("long_local_src.mp4", width=64, height=96, frames=40, fps=8), DecodeOptions())


def _job(tiny_models, source, start, frames=17):
    backend = LocalBackend(LocalConfig(search=ModelSearch.from_models_dir(tiny_models.root), device="cpu"))
    req = OutpaintRequest(prompt="a wide meadow", resolution=ImageSize(W, H), source_scale=0.75, num_frames=frames,
                          frames_per_second=FPS, num_inference_steps=8, seed=7, enable_prompt_expansion=False)
    from ltx_outpaint.media.decode import Clip

    piece = Clip(source.frames[start:start + frames], FPS, source.audio)
    return backend, prepare_job(req, piece, CanvasSpec(req.resolution, 0.75), backend)


def _decode_like_the_pipeline(tiny_models, latent: torch.Tensor) -> torch.Tensor:
    """The pipeline's final decode of a stage-2 latent (the recipe's spatial tiles, its seeded decoder, bf16)."""
    from ltx_pipelines.utils.model_ledger import ModelLedger

    from ltx_outpaint.local.ltxcore.pipeline import _seeded
    from ltx_outpaint.local.ltxcore.tiling import decode_spatial_tiles

    models = find_models("official", ModelSearch.from_models_dir(tiny_models.root))
    ledger = ModelLedger(dtype=torch.bfloat16, device=torch.device("cpu"), checkpoint_path=models.paths["dev"])
    dec = ledger.video_decoder()
    with torch.no_grad():
        return decode_spatial_tiles(_seeded(dec, 7, torch.device("cpu")), latent, torch.device("cpu"),
                                    torch.bfloat16, *Spy.plan.spatial_tiles)


class Spy:
    """Records the guide latents and each stage's output latent of the runs in this test."""

    plan = None
    guides: list = []
    stages: list = []
    blends: list = []  # (args, kwargs) of each pyramid blend call


@pytest.fixture
def spy(monkeypatch):
    real_guide, real_stage, real_run = (OutpaintPipeline._guide_latent, OutpaintPipeline._sample_stage,
                                        OutpaintPipeline._run)

    def guide(self, *a, **k):
        out = real_guide(self, *a, **k)
        Spy.guides.append(out)
        return out

    def stage(self, *a, **k):
        out = real_stage(self, *a, **k)
        Spy.stages.append(out[0])
        return out

    def run(self, inputs, progress):
        out = real_run(self, inputs, progress)
        Spy.plan = out.plan
        return out

    from ltx_outpaint.local.ltxcore import imageops

    real_blend = imageops.pyramid_blend

    def blend(*a, **k):
        Spy.blends.append((a[1:], k))
        return real_blend(*a, **k)

    monkeypatch.setattr(imageops, "pyramid_blend", blend)
    monkeypatch.setattr(OutpaintPipeline, "_guide_latent", guide)
    monkeypatch.setattr(OutpaintPipeline, "_sample_stage", stage)
    monkeypatch.setattr(OutpaintPipeline, "_run", run)
    Spy.guides, Spy.stages, Spy.blends = [], [], []
    return Spy


def test_chunk_is_conditioned_on_the_previous_chunks_last_frames(tiny_models, source, spy):
    backend, first = _job(tiny_models, source, 0)
    a = backend.run(first, Progress()).frames
    guide = a[-K:]  # chunk k's overlap frames (its last K), whole canvas
    assert guide.shape == (K, H, W, 3)

    spy.stages.clear()
    backend, guided_job = _job(tiny_models, source, 17 - K)
    guided_job.start_frames = guide
    guided = backend.run(guided_job, Progress())
    g1, g2 = spy.guides  # the guide encoded at stage 1 (half size) and stage 2 (full size)
    guided_latents = list(spy.stages)
    spy.stages.clear()
    _, free_job = _job(tiny_models, source, 17 - K)
    free = backend.run(free_job, Progress()).frames
    free_latents = list(spy.stages)
    assert any("conditioned on the previous chunk's last 9 frames" in n for n in guided.notes)

    # latent: the first two latent frames are the guide's encoding at both stages (frozen), only when guided
    n = g1.shape[2]
    assert n == 2
    assert torch.allclose(guided_latents[0][:, :, :n], g1, atol=1e-6)
    assert torch.allclose(guided_latents[1][:, :, :n], g2, atol=1e-6)
    assert (free_latents[1][:, :, :n] - g2).abs().mean() > 0.1

    # pixels: the guide's round trip as the pipeline makes it: decoded with its tiles and seeded decoder noise in
    # the context of the run's later latent frames, then the same final pyramid blend (whose reach covers this
    # small canvas)
    from ltx_outpaint.local.ltxcore import imageops

    blend_args, blend_kw = spy.blends[-1]

    def round_trip(later: torch.Tensor) -> torch.Tensor:
        decoded = _decode_like_the_pipeline(tiny_models, torch.cat([g2, later], 2))
        return imageops.pyramid_blend(decoded, *blend_args, **blend_kw)[:K]

    area = guided_job.layout.mask().bool()[None, :, :, None].expand(K, H, W, 3)
    d_guided = (guided.frames[:K] - round_trip(guided_latents[1][:, :, n:])).abs()[area].mean().item()
    d_free = (free[:K] - round_trip(free_latents[1][:, :, n:])).abs()[area].mean().item()
    print(f"\nfirst {K} frames vs the guide's round trip (generated area): guided {d_guided:.4f}, "
          f"unguided {d_free:.4f}")
    assert d_guided < TOLERANCE, (d_guided, d_free)
    assert d_free > 5 * TOLERANCE
    # the frames after the guide are generated: they differ from the unguided run's less than the guided ones do
    assert (guided.frames[K:] - free[K:]).abs().mean() < (guided.frames[:K] - free[:K]).abs().mean() * 2


def test_start_frames_of_the_wrong_size_are_refused(tiny_models, source):
    backend, job = _job(tiny_models, source, 0)
    job.start_frames = torch.zeros(K, H // 2, W, 3)
    with pytest.raises(ValueError, match="start_frames"):
        backend.run(job, Progress())


def test_long_run_on_the_local_backend_guides_each_chunk_after_the_first(tiny_models, tmp_path, spy):
    """End to end: the runner hands each later chunk of a scene the previous chunk's tail as its guide."""
    from ltx_outpaint.long.runner import LongOptions, run_long

    src = clip("long_local_run.mp4", width=64, height=96, frames=40, fps=8)
    config = LocalConfig(search=ModelSearch.from_models_dir(tiny_models.root), device="cpu")
    req = OutpaintRequest(prompt="a wide meadow", num_inference_steps=8, seed=3, enable_prompt_expansion=False)
    res = run_long(src, str(tmp_path / "wide.mp4"), req, CanvasSpec(ImageSize(W, H), 0.75), config,
                   LongOptions(detect_scenes=False, chunk_frames=25, overlap_frames=9))
    chunks = res.plan.chunks
    assert res.frames == 40 and len(chunks) == 2 and chunks[1].overlap == 9
    assert (chunks[0].request_frames, chunks[1].request_frames) == (25, 25)  # 8k+1, padded
    assert len(spy.guides) == 2  # the second chunk only, encoded for both stages
    assert any("conditioned on the previous chunk's last 9 frames" in n for n in res.notes)
    assert decode_video(res.path).frames.shape == (40, H, W, 3)
