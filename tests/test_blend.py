"""The paste-back blend: original pixels survive inside the source, no fill colour leaks, seams are soft."""
import torch

from ltx_outpaint.local.blend import blend_frames, seam_alpha
from ltx_outpaint.media.canvas import Rect
from ltx_outpaint.local.lora_targets import stream_of, wanted


def _frames(f, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(f, h, w, 3, generator=g)


def test_interior_is_exact_and_band_is_between():
    f, h, w = 3, 96, 160
    rect = Rect(40, 16, 64, 64)
    generated, original = _frames(f, h, w, 1), _frames(f, h, w, 2)
    original[:, :rect.y] = torch.tensor([0.0, 1.0, 0.0])  # fill colour outside the source
    out = blend_frames(generated.clone(), original, rect, band=8)
    inner = (slice(None), slice(rect.y + 8, rect.y + rect.height - 8), slice(rect.x + 8, rect.x + rect.width - 8))
    assert torch.equal(out[inner], original[inner])
    # outside the source, far from it, the result is the generated picture
    assert torch.allclose(out[:, :, :8], generated[:, :, :8], atol=1e-5)
    # across the band the result differs from both inputs (a blend, not a hard cut)
    band = (slice(None), slice(rect.y + 20, rect.y + 40), slice(rect.x + 1, rect.x + 4))
    assert not torch.allclose(out[band], original[band], atol=1e-3)
    assert not torch.allclose(out[band], generated[band], atol=1e-3)


def test_no_fill_colour_leaks_into_the_result():
    f, h, w = 1, 64, 128
    rect = Rect(32, 0, 64, 64)  # touches top and bottom: only left/right get a band
    generated = torch.full((f, h, w, 3), 0.5)
    original = torch.zeros(f, h, w, 3)
    original[..., 1] = 1.0  # pure green everywhere...
    original[:, :, rect.x:rect.x + rect.width] = 0.25  # ...except the source
    out = blend_frames(generated.clone(), original, rect, band=8)
    outside = torch.cat([out[:, :, :rect.x], out[:, :, rect.x + rect.width:]], dim=2)
    assert outside[..., 1].max() <= 0.5 + 1e-4  # never greener than the generated picture
    alpha = seam_alpha(w, h, rect, 8)
    assert alpha[0, rect.x + 32] == 1 and alpha[h - 1, rect.x + 32] == 1  # no band along the canvas edge
    assert 0 < alpha[10, rect.x + 2] < 1 and alpha[10, rect.x - 1] == 0


def test_lora_streams():
    assert stream_of("diffusion_model.transformer_blocks.3.attn1.to_q.lora_A.weight") == "video"
    assert stream_of("transformer_blocks.3.audio_attn1.to_q") == "audio"
    assert stream_of("transformer_blocks.12.audio_ff.net.0.proj") == "audio"
    assert stream_of("transformer_blocks.0.audio_to_video_attn.to_k") == "cross"
    assert stream_of("transformer_blocks.0.video_to_audio_attn.to_k") == "cross"
    assert stream_of("audio_patchify_proj") == "audio" and stream_of("patchify_proj") == "video"
    assert wanted("transformer_blocks.0.video_to_audio_attn.to_k", "both")
    assert not wanted("transformer_blocks.0.video_to_audio_attn.to_k", "video")
    assert not wanted("transformer_blocks.0.attn2.to_k", "audio")
