import os

import av
import numpy as np
import pytest
import torch

from clips import clip
from ltx_outpaint.backends import PreviewConfig, Progress, prepare_job, run_outpaint, make_backend, Interrupted
from ltx_outpaint.backends.preview import source_indices
from ltx_outpaint.media.canvas import CanvasSpec
from ltx_outpaint.request import ImageSize, OutpaintRequest
from ltx_outpaint.media.decode import DecodeOptions, decode_video
from ltx_outpaint.media.sample import marker_index
from ltx_outpaint.media.decode import Audio, decode_video
from ltx_outpaint.media.encode import QUALITY_CRF, write_mp4


@pytest.fixture(scope="module")
def source():
    return decode_video(clip("prev.mp4", width=96, height=160, frames=24, fps=24))


@pytest.mark.parametrize("fill", ["blur", "mirror"])
@pytest.mark.parametrize("anchor", ["center", "top_left", "bottom_right"])
def test_preview_fill_honours_canvas_placement_frames_fps(source, fill, anchor):
    req = OutpaintRequest(prompt="beach", num_frames=13, frames_per_second=12, seed=7)
    canvas = CanvasSpec(ImageSize(320, 180), 0.75, anchor)
    res = run_outpaint(req, source, canvas, PreviewConfig(fill=fill))
    assert res.frames.shape == (13, 180, 320, 3) and res.fps == 12 and res.seed == 7
    assert res.backend == "preview" and "no AI" in res.prompt and res.prompt.endswith("beach")
    lay = prepare_job(req, source, canvas, make_backend(PreviewConfig())).layout
    s = lay.source
    # the source region holds the (resized) source frame shown at that time: frame k at 12 fps -> src 2k (last held)
    for k in (0, 5, 12):
        region = res.frames[k, s.y:s.y + s.height, s.x:s.x + s.width]
        ref = torch.nn.functional.interpolate(source.frames[min(2 * k, 23)].permute(2, 0, 1)[None], size=(s.height, s.width),
                                              mode="bilinear", antialias=True, align_corners=False)[0].permute(1, 2, 0)
        assert (region - ref.clamp(0, 1)).abs().mean() < 1e-4
    # the generated area is filled (not flat, not the reference green)
    outside = res.frames[:, :, : max(1, s.x)] if s.x > 0 else res.frames[:, :, s.x + s.width:]
    assert float(outside.std()) > 0.01
    assert res.audio is not None and res.audio.waveform.shape[1] == round(13 / 12 * res.audio.sample_rate)


def test_preview_holds_last_frame_and_pads_audio(source):
    req = OutpaintRequest(num_frames=49, frames_per_second=24)
    res = run_outpaint(req, source, CanvasSpec("square", 1.0), PreviewConfig())
    assert source_indices(24, 24.0, 49, 24.0).tolist()[-3:] == [23, 23, 23]
    assert res.audio.waveform.shape[1] == round(49 / 24 * source.audio.sample_rate)
    assert float(res.audio.waveform[:, -1000:].abs().max()) == 0.0  # padded with silence
    assert float(res.audio.waveform[:, :1000].abs().max()) > 0.0


def test_preview_no_audio_when_generate_audio_off(source):
    res = run_outpaint(OutpaintRequest(num_frames=9, generate_audio=False), source, CanvasSpec("square"), None)
    assert res.audio is None and res.backend == "preview"


def test_preview_interrupt(source):
    class Stop(Progress):
        def interrupted(self):
            return True

    with pytest.raises(Interrupted):
        run_outpaint(OutpaintRequest(num_frames=9), source, CanvasSpec("square"), PreviewConfig(), Stop())


def _probe(path):
    with av.open(path) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
        a = c.streams.audio[0] if c.streams.audio else None
        adur = float(a.duration * a.time_base) if a is not None and a.duration else None
        return frames, v.codec_context.width, v.codec_context.height, float(v.average_rate), adur, v.codec_context.name


@pytest.mark.parametrize("fps", [24.0, 29.97, 12.5])
def test_mp4_frame_count_size_fps_audio(tmp_path, fps):
    frames = torch.rand(25, 72, 128, 3)
    sr = 48000
    audio = Audio(torch.rand(2, sr * 3) * 0.2, sr)  # longer than the video: trimmed
    path = write_mp4(str(tmp_path / "o.mp4"), frames, fps, audio, "medium", "fast")
    n, w, h, rate, adur, codec = _probe(path)
    assert (n, w, h, codec) == (25, 128, 72, "h264")
    assert rate == pytest.approx(fps, rel=1e-3)
    assert abs(adur - 25 / fps) <= 1 / fps
    assert not os.path.exists(path + ".partial")


def test_mp4_pads_odd_sizes_and_short_audio(tmp_path):
    audio = Audio(torch.zeros(1, 1000), 16000)
    path = write_mp4(str(tmp_path / "odd.mp4"), torch.rand(10, 33, 51, 3), 10, audio)
    n, w, h, _, adur, _ = _probe(path)
    assert (n, w, h) == (10, 52, 34)
    assert abs(adur - 1.0) <= 0.1


def test_quality_and_write_mode_change_the_encoding(tmp_path):
    frames = decode_video(clip("q.mp4", width=256, height=144, frames=24)).frames
    sizes = {q: os.path.getsize(write_mp4(str(tmp_path / f"{q}.mp4"), frames, 24, None, q, "fast"))
             for q in QUALITY_CRF}
    assert sizes["low"] < sizes["medium"] < sizes["high"] < sizes["maximum"]
    small = os.path.getsize(write_mp4(str(tmp_path / "s.mp4"), frames, 24, None, "high", "small"))
    balanced = os.path.getsize(write_mp4(str(tmp_path / "b.mp4"), frames, 24, None, "high", "balanced"))
    assert small < balanced and small < sizes["high"]
    with pytest.raises(ValueError, match="video_quality"):
        write_mp4(str(tmp_path / "x.mp4"), frames, 24, None, "ultra")


def test_roundtrip_pixels_close(tmp_path):
    src = decode_video(clip("q.mp4", width=256, height=144, frames=24))
    path = write_mp4(str(tmp_path / "rt.mp4"), src.frames, 24, src.audio, "maximum", "balanced")
    back = decode_video(path)
    assert back.frames.shape == src.frames.shape
    assert (back.frames - src.frames).abs().mean() < 0.02
    assert [marker_index(f) for f in back.frames] == list(range(24))


def test_huge_canvas_refused_before_allocating(source):
    from ltx_outpaint.errors import InputError

    with pytest.raises(InputError, match=r"^resolution \(Outpaint Canvas\): 481 frames of 14000x14000 need .* GiB") as e:
        run_outpaint(OutpaintRequest(num_frames=481), source, CanvasSpec(ImageSize(14000, 14000)), None)
    assert e.value.field == "resolution"


def test_every_run_gets_a_quality_report_measured_on_its_result():
    """run_outpaint attaches media/quality.py's report to a backend's result (here the preview backend, whose
    source region is the resized source: a high kept-region PSNR; its fill is no fill colour: no leak)."""
    import math

    from ltx_outpaint.backends import PreviewConfig, run_outpaint
    from ltx_outpaint.media.canvas import CanvasSpec
    from ltx_outpaint.request import ImageSize, OutpaintRequest

    src = decode_video(clip("quality_src.mp4", width=64, height=96, frames=40, fps=12), DecodeOptions())
    req = OutpaintRequest(prompt="x", resolution=ImageSize(256, 144), num_frames=40, frames_per_second=12,
                          seed=1).validate()
    result = run_outpaint(req, src, CanvasSpec(req.resolution, 0.75), PreviewConfig())
    q = result.quality
    assert q is not None and q["frames"] == 32  # a window of 32 consecutive frames of 40
    assert "quality measured on frames 4-35 of 40" in result.notes
    assert q["kept_psnr_db"] == "inf" or (isinstance(q["kept_psnr_db"], float) and q["kept_psnr_db"] > 30)
    assert q["green_leak_fraction"] == 0.0
    assert any(line.startswith("kept-region PSNR") for line in result.notes)
    assert not math.isnan(q["generated_fraction"]) and 0.3 < q["generated_fraction"] < 0.9


def test_remux_reads_only_single_file_formats(tmp_path):
    from ltx_outpaint.media.remux import remux_with_metadata

    src = clip("remux_src.mp4", width=64, height=48, frames=12, audio_layout=None)
    out = remux_with_metadata(src, str(tmp_path / "ok.mp4"), {"prompt": "x"})
    assert _probe(out)[0] == 12
    playlist = tmp_path / "p.m3u8"  # an HLS playlist naming a file elsewhere
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:9\n#EXTINF:1,\n{src}\n#EXT-X-ENDLIST\n")
    with pytest.raises(av.error.FFmpegError):
        remux_with_metadata(str(playlist), str(tmp_path / "bad.mp4"))
    assert not os.path.exists(tmp_path / "bad.mp4") and not os.path.exists(tmp_path / "bad.mp4.partial")


def _audio_track(path):
    """(sample rate, decoded seconds, peak) of the first audio track, plus the video frame count."""
    with av.open(path) as c:
        a = c.streams.audio[0]
        rate = a.codec_context.sample_rate
        chunks = [f.to_ndarray() for f in c.decode(a)]
    wave = np.concatenate(chunks, axis=1)
    return rate, float(a.duration * a.time_base), float(np.abs(wave).max())


@pytest.mark.parametrize("rate,stored", [(192000, 96000), (176400, 96000), (12345, 12000), (100, 7350)])
def test_mp4_audio_at_a_rate_aac_cannot_store_is_resampled(tmp_path, rate, stored):
    t = torch.arange(rate * 2) / rate
    audio = Audio(torch.stack([0.5 * torch.sin(2 * torch.pi * 20 * t)] * 2), rate)  # 2 s, longer than the video
    path = write_mp4(str(tmp_path / "r.mp4"), torch.rand(10, 32, 32, 3), 10, audio, "medium", "fast")
    got_rate, seconds, peak = _audio_track(path)
    assert got_rate == stored and abs(seconds - 1.0) < 0.03 and peak > 0.3
    assert _probe(path)[0] == 10


def test_metadata_text_ffmpeg_cannot_store_is_cleaned(tmp_path):
    """A prompt with an undecodable (surrogate-escaped) character or a NUL byte is written whole, cleaned, by
    write_mp4, the long-clip writer and the remux; it never fails the end of a run nor cuts the text."""
    from ltx_outpaint.long.writer import StreamingWriter
    from ltx_outpaint.media.remux import remux_with_metadata

    metadata = {"comment": "caf\udce9 at dusk\0, wide", "k\0ey": "v"}
    want = {"comment": "caf\ufffd at dusk, wide", "key": "v"}
    one = write_mp4(str(tmp_path / "a.mp4"), torch.rand(2, 16, 16, 3), 10, None, metadata=metadata)
    w = StreamingWriter(str(tmp_path / "b.mp4"), 10, metadata=metadata)
    w.write_frames(torch.rand(2, 16, 16, 3))
    two = w.close()
    three = remux_with_metadata(one, str(tmp_path / "c.mp4"), metadata)
    for path in (one, two, three):
        with av.open(path) as c:
            assert {k: c.metadata.get(k) for k in want} == want, path


def test_write_mp4_leaves_no_partial_file_when_it_fails(tmp_path, monkeypatch):
    from ltx_outpaint.media import encode

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(encode, "_write_audio", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mp4(str(tmp_path / "o.mp4"), torch.rand(2, 16, 16, 3), 10, Audio(torch.zeros(2, 8000), 8000))
    assert os.listdir(tmp_path) == []
