import os

import pytest
import torch

from clips import (audio_only, bad_file, clip, cut_short, truncated_copy, write_audio_file, write_clip,
                   write_ts_audio_switch)
from ltx_outpaint.errors import InputError
from ltx_outpaint.media.sample import MARKER, marker_index
from ltx_outpaint.media.decode import DecodeOptions, decode_audio, decode_video, probe


def indices(c):
    return [marker_index(f) for f in c.frames]


def test_full_decode_frames_audio_fps():
    c = decode_video(clip("base.mp4", width=160, height=96, frames=24, fps=24))
    assert c.frames.shape == (24, 96, 160, 3) and c.frames.dtype == torch.float32
    assert 0.0 <= float(c.frames.min()) and float(c.frames.max()) <= 1.0
    assert indices(c) == list(range(24))
    assert c.fps == 24.0 and c.untouched and c.source_path.endswith("base.mp4")
    assert c.audio.waveform.shape[0] == 2 and not c.audio.silent
    assert abs(c.audio.duration - 1.0) < 1 / 24


def test_frames_are_one_tensor_without_copy(monkeypatch):
    """The frames returned are the very buffer the decoder preallocated and wrote into: a copy (clone,
    contiguous() of a strided view, torch.stack of frames) has other storage and fails here."""
    path = clip("base.mp4", width=160, height=96, frames=24, fps=24)
    allocated = []
    real_empty = torch.empty

    def recording_empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.dim() == 4 and tuple(t.shape[1:]) == (96, 160, 3):
            allocated.append(t)
        return t

    monkeypatch.setattr(torch, "empty", recording_empty)
    c = decode_video(path)
    monkeypatch.undo()
    assert len(allocated) == 1, "one frame buffer, allocated once"
    buffer = allocated[0]
    frames_storage, buffer_storage = c.frames.untyped_storage().data_ptr(), buffer.untyped_storage().data_ptr()
    assert frames_storage == buffer_storage
    assert c.frames.data_ptr() == buffer.data_ptr() and c.frames.is_contiguous()
    assert tuple(c.frames.shape) == (24, 96, 160, 3) and buffer.shape[0] <= 24 + 2  # a spare frame or two


@pytest.mark.parametrize("opts,expected,fps", [
    (DecodeOptions(frame_load_cap=5), [0, 1, 2, 3, 4], 24),
    (DecodeOptions(skip_first_frames=20), [20, 21, 22, 23], 24),
    (DecodeOptions(select_every_nth=3), [0, 3, 6, 9, 12, 15, 18, 21], 8),
    (DecodeOptions(skip_first_frames=2, select_every_nth=5, frame_load_cap=3), [2, 7, 12], 4.8),
    (DecodeOptions(force_fps=12), [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22], 12),
    (DecodeOptions(force_fps=48, frame_load_cap=6), [0, 0, 1, 1, 2, 2], 48),
    (DecodeOptions(force_fps=12, skip_first_frames=2, frame_load_cap=3), [4, 6, 8], 12),
])
def test_selection(opts, expected, fps):
    c = decode_video(clip("base.mp4", width=160, height=96, frames=24, fps=24), opts)
    assert indices(c) == expected
    assert c.fps == pytest.approx(fps)
    assert not c.untouched
    # audio covers exactly the selected span
    assert abs(c.audio.duration - len(expected) / fps) <= 1 / fps


def test_audio_is_trimmed_to_the_selected_span():
    path = clip("base.mp4", width=160, height=96, frames=24, fps=24)
    full = decode_audio(path)
    part = decode_video(path, DecodeOptions(skip_first_frames=12, frame_load_cap=6)).audio
    offset = int(0.5 * full.sample_rate)
    assert part.waveform.shape[1] == int(round(0.25 * full.sample_rate))
    assert torch.allclose(part.waveform, full.waveform[:, offset:offset + part.waveform.shape[1]], atol=1e-6)


def test_max_size_keeps_aspect():
    c = decode_video(clip("base.mp4", width=160, height=96, frames=24, fps=24), DecodeOptions(max_width=80))
    assert c.frames.shape[1:3] == (48, 80)
    levels = [round(float(f[1:7, 1:7].mean()) * 255 / 8) for f in c.frames[:4]]  # marker is 8x8 now
    assert levels == [0, 1, 2, 3]
    full = decode_video(clip("base.mp4", width=160, height=96, frames=24, fps=24))
    assert abs(float(full.frames[5].mean()) - float(c.frames[5].mean())) < 0.01


@pytest.mark.parametrize("rotation", [90, 270, 180])
def test_rotation_metadata_is_applied(rotation):
    path = clip(f"rot{rotation}.mp4", width=128, height=64, frames=3, rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation
    c = decode_video(path)
    if rotation in (90, 270):
        assert c.frames.shape[1:3] == (128, 64)  # displayed portrait
    else:
        assert c.frames.shape[1:3] == (64, 128)
    # The marker block (top-left in the coded picture) moves with a counter-clockwise rotation.
    H, W = c.frames.shape[1:3]
    corner = {90: (slice(H - MARKER, H), slice(0, MARKER)), 270: (slice(0, MARKER), slice(W - MARKER, W)),
              180: (slice(H - MARKER, H), slice(W - MARKER, W))}[rotation]
    f2 = c.frames[2]
    block = f2[corner[0], corner[1]]
    assert abs(float(block.mean()) * 255 - 16) < 3  # frame 2 -> grey level 16
    assert float(block.std()) < 0.02


def test_no_audio_gives_clear_silence(caplog):
    c = decode_video(clip("noaudio.mp4", width=64, height=64, frames=12, audio_layout=None))
    assert c.audio.silent and float(c.audio.waveform.abs().max()) == 0.0
    assert abs(c.audio.duration - 12 / 24) < 1 / 24
    assert "no audio track" in caplog.text


@pytest.mark.parametrize("layout,channels", [("mono", 1), ("5.1", 6), ("2.1", 3), ("quad", 4)])
def test_any_channel_layout(layout, channels):
    c = decode_video(clip(f"audio_{layout}.mp4", width=64, height=64, frames=12, audio_layout=layout))
    assert c.audio.waveform.shape[0] == channels
    assert float(c.audio.waveform.abs().max()) > 0.1


def test_audio_resampled_only_when_asked():
    path = clip("base.mp4", width=160, height=96, frames=24, fps=24)
    assert decode_video(path).audio.sample_rate == 44100
    c = decode_video(path, DecodeOptions(audio_sample_rate=16000))
    assert c.audio.sample_rate == 16000 and abs(c.audio.waveform.shape[1] - 16000) <= 1


def test_variable_frame_rate():
    times = [0, 0.1, 0.15, 0.2, 0.5, 0.55, 0.6, 0.9, 1.0, 1.05]
    path = clip("vfr.mp4", width=64, height=64, frames=10, frame_times=times, audio_layout="mono")
    assert indices(decode_video(path)) == list(range(10))
    c = decode_video(path, DecodeOptions(force_fps=10))
    # output frame k shows the last source frame at or before k/10 s
    assert indices(c) == [0, 1, 3, 3, 3, 4, 6, 6, 6, 7, 8]
    assert c.fps == 10


def test_memory_estimate_refuses_before_decoding():
    path = clip("base.mp4", width=160, height=96, frames=24, fps=24)
    with pytest.raises(InputError, match=r"frame_load_cap: 24 frames of 160x96 need .* GiB .* set frame_load_cap"):
        decode_video(path, DecodeOptions(max_memory_bytes=1000))


@pytest.mark.parametrize("maker,pattern", [
    (lambda: bad_file("empty.mp4", b""), "empty"),
    (lambda: bad_file("text.mp4", b"this is not a video\n" * 50), "not a video"),
    (lambda: truncated_copy(clip("base.mp4", width=160, height=96, frames=24), "trunc.mp4", 0.3), "video"),
    (lambda: audio_only(), "audio-only"),
    (lambda: "/nonexistent/x.mp4", "not found"),
])
def test_bad_files_give_clear_errors(maker, pattern):
    with pytest.raises(InputError, match=pattern) as e:
        decode_video(maker())
    assert e.value.field == "video"


def test_zero_frame_selection():
    with pytest.raises(InputError, match=r"skip_first_frames: the selection gives 0 frames.*24 frames"):
        decode_video(clip("base.mp4", width=160, height=96, frames=24), DecodeOptions(skip_first_frames=100))


@pytest.mark.parametrize("opts,field", [(DecodeOptions(select_every_nth=0), "select_every_nth"),
                                        (DecodeOptions(force_fps=-1), "force_fps"),
                                        (DecodeOptions(force_fps=float("nan")), "force_fps"),
                                        (DecodeOptions(force_fps=float("inf")), "force_fps"),
                                        (DecodeOptions(force_fps=1e-6), "force_fps"),
                                        (DecodeOptions(force_fps=0.5), "force_fps"),
                                        (DecodeOptions(force_fps=241), "force_fps"),
                                        (DecodeOptions(audio_sample_rate=1), "audio_sample_rate"),
                                        (DecodeOptions(audio_sample_rate=7999), "audio_sample_rate"),
                                        (DecodeOptions(audio_sample_rate=200000), "audio_sample_rate"),
                                        (DecodeOptions(frame_load_cap=-2), "frame_load_cap")])
def test_option_validation(opts, field):
    with pytest.raises(InputError) as e:
        decode_video(clip("base.mp4", width=160, height=96, frames=24), opts)
    assert e.value.field == field
    if field in ("force_fps", "audio_sample_rate"):
        assert "allowed 0 (keep the file's rate) or " in str(e.value)


def test_rate_options_at_their_limits():
    path = clip("base.mp4", width=160, height=96, frames=24, fps=24)
    c = decode_video(path, DecodeOptions(force_fps=1, audio_sample_rate=8000))
    assert c.num_frames == 1 and c.fps == 1 and c.audio.sample_rate == 8000
    assert c.audio.waveform.shape[1] == 8000


def test_audio_padding_is_bounded_by_the_span_asked_for():
    """Silence before late audio is padded only as far as the span kept (not the whole gap, then cut)."""
    a = decode_audio(clip("base.mp4", width=160, height=96, frames=24, fps=24), start=-1e7, duration=0.5)
    assert a.waveform.shape[1] == 22050 and float(a.waveform.abs().max()) == 0.0


@pytest.mark.parametrize("name,text", [
    ("list.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:9\n#EXTINF:1,\n{target}\n#EXT-X-ENDLIST\n"),
    ("list.ffconcat", "ffconcat version 1.0\nfile '{target}'\n"),
])
def test_playlists_cannot_read_other_files(tmp_path, name, text):
    """A playlist in an allowed folder would decode files anywhere on disk: refused like any non-video, with the
    same message whether the file it names exists or not."""
    secret = write_clip(tmp_path / "secret.mp4", frames=4)
    messages = []
    for target in (secret, str(tmp_path / "missing.mp4")):
        playlist = tmp_path / name  # concat reads names relative to itself, HLS any path
        playlist.write_text(text.format(target=target if name.endswith("m3u8") else os.path.basename(target)))
        with pytest.raises(InputError, match="not a video") as e:
            decode_video(str(playlist))
        assert e.value.field == "video"
        messages.append(str(e.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("name,fmt,codec,pix_fmt", [
    ("c.mp4", None, "libx264", "yuv420p"), ("c.mkv", None, "libx264", "yuv420p"),
    ("c.webm", None, "libvpx-vp9", "yuv420p"), ("c.gif", None, "gif", "rgb8"), ("c.ts", None, "libx264", "yuv420p"),
])
def test_ordinary_containers_load(tmp_path, name, fmt, codec, pix_fmt):
    c = decode_video(write_clip(tmp_path / name, fmt, codec, pix_fmt, frames=6))
    assert c.frames.shape == (6, 48, 64, 3) and not c.warnings  # (a GIF decodes to BGRA, opaque)


@pytest.mark.parametrize("name,codec", [("a.wav", "pcm_s16le"), ("a.mp3", "libmp3lame"), ("a.flac", "flac"),
                                        ("a.ogg", "libopus"), ("a.aac", "aac")])
def test_audio_only_formats_say_so(tmp_path, name, codec):
    with pytest.raises(InputError, match="audio-only file"):
        decode_video(write_audio_file(tmp_path / name, codec, 48000))


def test_memory_guard_holds_when_the_file_gives_no_frame_count(tmp_path):
    """A live-written MKV lists neither frame count nor duration: the buffer grows as frames come, and every
    growth is checked against the limit."""
    path = write_clip(tmp_path / "live.mkv", "matroska", frames=40, options={"live": "1"})
    assert probe(path).frame_count == 0
    frame_bytes = 64 * 48 * 3 * 4
    with pytest.raises(InputError, match=r"frames of 64x48 need .* GiB as float32 but only .* GiB .* does not say "
                                         r"how many frames .* set frame_load_cap") as e:
        decode_video(path, DecodeOptions(max_memory_bytes=10 * frame_bytes))
    assert e.value.field == "frame_load_cap"
    c = decode_video(path, DecodeOptions(max_memory_bytes=40 * frame_bytes))  # exactly enough
    assert c.num_frames == 40


@pytest.mark.parametrize("name,codec", [("song.mp3", "libmp3lame"), ("song.m4a", "aac")])
def test_audio_with_cover_art_is_an_audio_only_file(tmp_path, name, codec):
    with pytest.raises(InputError, match="audio-only file"):
        decode_video(write_audio_file(tmp_path / name, codec, cover=True))


@pytest.mark.parametrize("name,still", [("cover_first.mp4", "cover"), ("thumb_first.mkv", "track")])
def test_cover_art_and_thumbnail_tracks_are_not_the_video(tmp_path, name, still):
    path = write_clip(tmp_path / name, frames=12, still_first=still, audio=("aac", 44100, "stereo", 0.5))
    c = decode_video(path)
    assert c.frames.shape == (12, 48, 64, 3) and c.fps == 24
    assert [round(float(f.mean()) * 255 / 8) for f in c.frames] == list(range(12))
    assert not c.audio.silent and c.audio.duration == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("first,second", [(("stereo", 48000), ("mono", 48000)), (("stereo", 48000), ("stereo", 44100)),
                                          (("mono", 44100), ("stereo", 48000))])
def test_audio_that_changes_layout_or_rate_mid_stream(tmp_path, first, second):
    """Broadcast TS audio switches stereo -> mono or 48 -> 44.1 kHz: one layout and rate out, the whole tone kept."""
    path = write_ts_audio_switch(tmp_path / "switch.ts", first, second)
    a = decode_audio(path)
    assert a.waveform.shape[0] in (1, 2) and a.sample_rate in (44100, 48000)
    assert 0.95 < a.duration < 1.2
    n = a.sample_rate // 4
    for part in (a.waveform[:, n:2 * n], a.waveform[:, -2 * n:-n]):  # the tone in both halves
        assert 0.2 < float(part.abs().max()) < 0.5  # (a stereo part downmixed to mono adds up)
    c = decode_video(path)
    assert c.num_frames == 24 and not c.audio.silent and c.audio.duration == pytest.approx(1.0, abs=0.01)


def test_force_fps_on_a_stream_without_timestamps(tmp_path):
    """Raw Annex-B H.264 frames carry no time: force_fps resamples them by index at the stream's rate."""
    path = write_clip(tmp_path / "cam.h264", "h264", frames=12)
    fps = probe(path).fps
    for factor, expected in ((0.5, list(range(0, 12, 2))), (1, list(range(12))), (2, [i // 2 for i in range(24)])):
        c = decode_video(path, DecodeOptions(force_fps=fps * factor))
        assert [round(float(f.mean()) * 255 / 8) for f in c.frames] == expected, factor


@pytest.mark.parametrize("fps", [24, 30])
def test_a_raw_stream_plays_at_its_own_rate_not_the_demuxers_default(tmp_path, fps):
    """A raw .h264 has no container: FFmpeg's demuxer says 25 fps; the stream's own timing (SPS) is used."""
    path = write_clip(tmp_path / "cam.h264", "h264", frames=12, fps=fps)
    assert probe(path).fps == pytest.approx(fps)
    c = decode_video(path)
    assert c.fps == pytest.approx(fps) and c.num_frames == 12


def test_variable_frame_rate_with_long_gaps_warns():
    """A screen recording that stood still for 3 s: loaded frame after frame (unchanged), with a warning that
    points to force_fps; steady or jittery rates give none."""
    times = [i / 30 for i in range(10)] + [3.3 + i / 30 for i in range(10)]
    path = clip("vfr_screen.mp4", width=64, height=64, frames=20, fps=30, frame_times=times, audio_layout="mono")
    c = decode_video(path)
    assert indices(c) == list(range(20)) and c.untouched
    assert len(c.warnings) == 1 and "variable frame rate" in c.warnings[0] and "force_fps" in c.warnings[0]
    assert "3.00 s gap" in c.warnings[0]
    resampled = decode_video(path, DecodeOptions(force_fps=30))
    assert not resampled.warnings and resampled.num_frames == 109  # 3.63 s at 30 fps
    jitter = [i / 30 + (0.008 if i % 3 == 1 else 0.0) for i in range(20)]
    assert not decode_video(clip("vfr_jitter.mp4", width=64, height=64, frames=20, fps=30, frame_times=jitter,
                                 audio_layout=None)).warnings
    assert not decode_video(clip("base.mp4", width=160, height=96, frames=24, fps=24)).warnings


@pytest.mark.parametrize("name,codec,acodec", [("long_audio.mkv", "libx264", "aac"), ("long_audio.ts", "libx264", "aac"),
                                               ("long_audio.webm", "libvpx-vp9", "libopus")])
def test_every_frame_decoded_is_untouched_whatever_the_container_duration(tmp_path, name, codec, acodec):
    """MKV/WebM give no frame count: the estimate from the container's duration counts the longer audio. Untouched
    means every frame decoded with no selection, so the fal path uploads such files as they are."""
    c = decode_video(write_clip(tmp_path / name, codec=codec, frames=12, audio=(acodec, 48000, "stereo", 2.0)))
    assert c.num_frames == 12 and c.untouched and not c.warnings
    assert not decode_video(c.source_path, DecodeOptions(frame_load_cap=12)).untouched  # a selection
    cut = decode_video(cut_short(clip("base.mp4", width=160, height=96, frames=24), "cut_in_data.mp4", 0.6))
    assert cut.warnings and not cut.untouched


@pytest.mark.parametrize("codec,pix_fmt", [("png", "rgba"), ("qtrle", "argb")])
def test_transparency_that_is_dropped_is_warned_about(tmp_path, codec, pix_fmt):
    import av
    import numpy as np

    def write(name, alpha):
        with av.open(str(tmp_path / name), "w") as c:
            vs = c.add_stream(codec, rate=24)
            vs.width, vs.height, vs.pix_fmt = 32, 32, pix_fmt
            for i in range(3):
                rgba = np.full((32, 32, 4), 120, np.uint8)
                rgba[..., 3] = 255
                rgba[:16, :, 3] = alpha  # the top half see-through
                f = av.VideoFrame.from_ndarray(rgba, format="rgba").reformat(format=pix_fmt)
                f.pts = i
                c.mux(vs.encode(f))
            c.mux(vs.encode(None))
        return str(tmp_path / name)

    c = decode_video(write("alpha.mov", 0))
    assert c.num_frames == 3 and len(c.warnings) == 1 and "transparency" in c.warnings[0]
    assert c.untouched  # the frames are still the file's frames
    assert not decode_video(write("opaque.mov", 255)).warnings
