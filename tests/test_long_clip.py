"""Clips of any length through the preview backend: every frame in order, audio continuous, cuts on scene
boundaries, memory bounded by a chunk (instrumented, not timed; tests/bench_long_clip.py prints peak RSS)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from long_clips import chirp, read_index, window_correlation, write_long_clip
from ltx_outpaint.errors import InputError
from ltx_outpaint.long import runner as long_runner
from ltx_outpaint.long.assemble import Assembler, ChunkOutput
from ltx_outpaint.long.joins import crossfade_frames, ramp
from ltx_outpaint.long.plan import Chunk, ChunkRule, chunk_rule, plan_chunks
from ltx_outpaint.long.reader import AudioReader, FrameReader
from ltx_outpaint.long.runner import LongOptions, run_long
from ltx_outpaint.long.writer import StreamingWriter
from ltx_outpaint.media.canvas import EVEN_SNAP, CanvasSpec, layout_canvas
from ltx_outpaint.media.decode import DecodeOptions, decode_audio, decode_video
from ltx_outpaint.request import ImageSize, OutpaintRequest

CANVAS = CanvasSpec(ImageSize(128, 64), 1.0)
FPS = 24.0


def output_indices(path: str) -> list[int]:
    s = layout_canvas(CANVAS, 64, 48, EVEN_SNAP).source
    out = []
    with FrameReader(path) as r:
        for block in r.iter_blocks(0, 10**9, 64):
            out += [read_index(rgb, s.x, s.y, s.width, s.height) for rgb in block]
    return out


@pytest.fixture(scope="module")
def ten_minutes(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("long") / "ten_minutes.mp4")
    cuts = write_long_clip(path, 600, fps=FPS, seed=1)
    return path, cuts


@pytest.mark.slow
def test_ten_minute_clip_every_frame_continuous_audio_cuts_on_scenes(ten_minutes, tmp_path):
    path, cuts = ten_minutes
    out = str(tmp_path / "wide.mp4")
    res = run_long(path, out, OutpaintRequest(prompt="a wide view", seed=4), CANVAS)
    total = int(600 * FPS)
    # every frame, in order (the source's frame index is read back from the output's source area)
    assert res.frames == total
    assert output_indices(out) == list(range(total))
    # cuts fall on scene boundaries: the plan's scenes are the clip's, and no chunk crosses one
    scenes = [(a, b) for a, b in zip([0, *cuts], [*cuts, total])]
    assert [tuple(s) for s in res.plan.scenes] == scenes
    for c in res.plan.chunks:
        a, b = scenes[c.scene]
        assert a <= c.start < c.end <= b and c.length <= 481
    assert [j["frame"] for j in res.joins() if j["kind"] == "scene_cut"] == cuts
    assert any(j["kind"] == "chunk_join" for j in res.joins())  # some scenes are longer than one request
    side = json.load(open(out + ".json"))
    assert side["joins"] == res.joins() and side["output"]["audio"] == "source"
    # the audio is the source's chirp, continuous: every 20 ms window matches the formula, joins included
    audio = decode_audio(out)
    wave = audio.waveform[0].numpy()
    n = int(total / FPS * audio.sample_rate)
    assert abs(wave.shape[0] - n) <= audio.sample_rate // 10
    t = np.arange(n) / audio.sample_rate
    corr = window_correlation(wave[:n], chirp(t, total / FPS), audio.sample_rate // 50)
    assert corr[5:].min() > 0.99, f"audio breaks at {np.argmin(corr[5:]) * 0.02 + 0.1:.2f} s"
    for j in res.joins():
        w = int(j["time_s"] * 50)
        assert corr[max(5, w - 3):w + 3].min() > 0.99


def test_streaming_holds_a_chunk_not_the_clip(tmp_path, monkeypatch):
    """Instrumented: the whole-clip decoder is never used, no read is longer than a chunk, the reader and the
    assembler hold at most a chunk + overlap, every backend job is one chunk."""
    path = str(tmp_path / "clip.mp4")
    write_long_clip(path, 40, fps=FPS, seed=2)

    def no_whole_clip(*a, **k):
        raise AssertionError("decode_video (the whole clip) must not be used by a long-clip run")

    monkeypatch.setattr("ltx_outpaint.media.decode.decode_video", no_whole_clip)
    reads, readers, jobs, assemblers = [], [], [], []
    real_read, real_init = FrameReader.read, FrameReader.__init__

    def read(self, start, count):
        reads.append(count)
        return real_read(self, start, count)

    def init(self, *a, **k):
        real_init(self, *a, **k)
        readers.append(self)

    monkeypatch.setattr(FrameReader, "read", read)
    monkeypatch.setattr(FrameReader, "__init__", init)
    from ltx_outpaint.backends.preview import PreviewBackend

    real_run = PreviewBackend.run

    def run(self, job, progress):
        jobs.append(job.clip.num_frames)
        return real_run(self, job, progress)

    monkeypatch.setattr(PreviewBackend, "run", run)
    real_add = Assembler.add

    def add(self, chunk, output):
        assemblers.append(self)
        return real_add(self, chunk, output)

    monkeypatch.setattr(Assembler, "add", add)
    import tracemalloc

    from ltx_outpaint.backends import Progress

    held = []  # Python-allocated memory after each chunk (a chunk's frames or audio kept by mistake shows here)

    class Sample(Progress):
        def report(self, done, total, text=None):
            if text and " done (" in text:
                held.append(tracemalloc.get_traced_memory()[0])

    opts = LongOptions(chunk_frames=60, overlap_frames=9)
    tracemalloc.start()
    try:
        res = run_long(path, str(tmp_path / "out.mp4"), OutpaintRequest(prompt="x", seed=1), CANVAS, None, opts,
                       Sample())
    finally:
        tracemalloc.stop()
    assert res.frames == 960 and len(res.plan.chunks) >= 16
    assert len(held) == len(res.plan.chunks) and held[-1] - held[2] < 256 * 1024, held
    assert max(jobs) <= 60 and len(jobs) == len(res.plan.chunks)
    big = [r for r in readers if r.width == 64]  # full-size readers (the analysis reads small frames)
    assert max(reads) <= 64 and all(r.stats["max_held"] <= 60 + 9 for r in big)
    assert max(a.max_held_frames for a in assemblers) <= 16 + 2 * 9
    assert output_indices(str(tmp_path / "out.mp4")) == list(range(960))


def test_plan_balances_overlapping_chunks_and_pads_short_scenes():
    rule = ChunkRule(481)
    plan = plan_chunks([(0, 1000), (1000, 1005), (1005, 1400)], 24.0, rule, 17)
    c = plan.chunks
    # 1000 frames, 17 overlap, at most 481: ceil(983 / 464) = 3 chunks of 983 / 3 = 327.7 new frames each
    assert [(x.start, x.end, x.overlap, x.scene) for x in c] == [(0, 345, 0, 0), (328, 672, 17, 0),
                                                                 (655, 1000, 17, 0), (1000, 1005, 0, 1),
                                                                 (1005, 1400, 0, 2)]
    assert c[3].request_frames == 9 and c[4].request_frames == 395  # short scene padded to fal's minimum
    assert all(x.length <= 481 for x in c)
    local = chunk_rule("local", 121, frames_8k1=True)
    plan = plan_chunks([(0, 1000)], 24.0, local, 17)
    assert all((x.request_frames - 1) % 8 == 0 and x.length <= x.request_frames <= 121 for x in plan.chunks)
    covered = set()
    for x in plan.chunks:
        covered |= set(range(x.start, x.end))
    assert covered == set(range(1000))
    with pytest.raises(InputError, match="chunk_frames"):
        chunk_rule("fal", 600)
    with pytest.raises(InputError, match="overlap_frames"):
        plan_chunks([(0, 100)], 24.0, ChunkRule(40), 30)


def test_crossfade_ramp():
    assert np.allclose(ramp(3), [0.25, 0.5, 0.75])
    a, b = torch.zeros(3, 2, 2, 3), torch.ones(3, 2, 2, 3)
    assert torch.allclose(crossfade_frames(a, b)[:, 0, 0, 0], torch.tensor([0.25, 0.5, 0.75]))


def test_reader_ranges_equal_the_whole_clip_decoder(tmp_path):
    from ltx_outpaint.media.sample import write_sample

    path = write_sample(str(tmp_path / "s.mp4"), 64, 64, 150, 24.0)
    full = (decode_video(path).frames.numpy() * 255).round().astype(np.uint8)
    with FrameReader(path, keep=10) as r:
        assert r.count_slots() == 150
        for start, count in ((0, 40), (30, 50), (120, 40), (5, 3), (100, 10)):
            got = r.read(start, count)
            assert np.array_equal(got, full[start:start + count]), (start, count)
        assert r.stats["seeks"] >= 1
    ref = decode_audio(path).waveform.numpy()
    ar = AudioReader(path)
    for start, count in ((0, 30000), (25000, 30000), (100000, 5000), (10, 10)):
        assert np.abs(ar.read(start, count) - ref[:, start:start + count]).max() < 1e-4, (start, count)
    tail = ar.read(ref.shape[1] - 10, 100)
    assert np.all(tail[:, 20:] == 0)  # silence past the end
    ar.close()


def test_variable_frame_rate_reads_on_a_constant_timeline(tmp_path):
    from ltx_outpaint.media.decode import DecodeOptions
    from ltx_outpaint.media.sample import write_sample

    times = [0.0, 0.04, 0.05, 0.15, 0.2, 0.21, 0.3, 0.4, 0.45, 0.5]
    path = write_sample(str(tmp_path / "vfr.mp4"), 64, 64, len(times), 20.0, frame_times=times)
    with FrameReader(path) as r:
        n = r.count_slots()
        got = r.read(0, n)
    ref = decode_video(path, DecodeOptions(force_fps=r.fps)).frames
    assert n == ref.shape[0]
    assert np.array_equal(got, (ref.numpy() * 255).round().astype(np.uint8))


def test_reader_skips_cover_art_and_thumbnail_tracks(tmp_path):
    from clips import write_audio_file, write_clip

    path = write_clip(tmp_path / "thumb_first.mkv", frames=12, fps=25, still_first="track")  # whole ms per frame
    with FrameReader(path) as r:
        assert r.count_slots() == 12
        got = r.read(0, 20)
    assert got.shape == (12, 48, 64, 3)
    assert [int(round(f.mean() / 8)) for f in got] == list(range(12))
    with pytest.raises(InputError, match="audio-only file"):
        FrameReader(write_audio_file(tmp_path / "song.mp3", "libmp3lame", cover=True))


def test_audio_reader_follows_layout_and_rate_changes(tmp_path):
    from clips import write_ts_audio_switch

    path = write_ts_audio_switch(tmp_path / "switch.ts", ("stereo", 48000), ("mono", 44100))
    r = AudioReader(path)
    wave = r.read(0, 2 * r.rate)
    r.close()
    n = r.rate // 4
    for part in (wave[:, n:2 * n], wave[:, 3 * n:4 * n]):  # the tone before and after the switch
        assert 0.2 < float(np.abs(part).max()) < 0.5
    assert float(np.abs(wave[:, int(1.2 * r.rate):]).max()) == 0.0  # silence past the end


@pytest.mark.parametrize("detect_scenes", [True, False])
def test_raw_h264_that_cannot_seek(tmp_path, detect_scenes):
    """Raw Annex-B H.264 has no timestamps and cannot seek: read by index, reopened for a backward jump."""
    from clips import write_clip

    path = write_clip(tmp_path / "cam.h264", "h264", frames=12)
    level = lambda block: [int(round(f.mean() / 8)) for f in block]  # noqa: E731 - frame i is grey 8*i
    with FrameReader(path, keep=2) as r:
        assert r.count_slots() == 12
        assert level(r.read(0, 20)) == list(range(12))
        assert level(r.read(2, 3)) == [2, 3, 4]  # backward: opened again
    res = run_long(path, str(tmp_path / "o.mp4"), OutpaintRequest(prompt="x"), CANVAS,
                   options=LongOptions(detect_scenes=detect_scenes))
    assert res.frames == 12
    assert decode_video(res.path).num_frames == 12


def test_generated_audio_is_crossfaded_at_joins_and_declicked_at_cuts(tmp_path):
    """Chunks whose generated audio starts at an unrelated phase: joined, the wave has no jump; naive
    concatenation would."""
    rate, fps = 8000, 24.0
    plan = plan_chunks([(0, 96), (96, 150)], fps, ChunkRule(60), 12)
    writer_holder = {}

    def open_writer(r, ch):
        writer_holder["w"] = StreamingWriter(str(tmp_path / "g.mp4"), fps, audio_rate=r, audio_channels=ch)
        return writer_holder["w"]

    asm = Assembler(open_writer, plan, None, True)
    written = []
    real = StreamingWriter.write_audio

    def capture(self, wave):
        written.append(np.asarray(wave))
        return real(self, wave)

    StreamingWriter.write_audio = capture
    try:
        for c in plan.chunks:
            n = round(c.length * rate / fps)
            t = np.arange(n) / rate
            wave = 0.5 * np.sin(2 * np.pi * 440 * t + 1.7 * c.index)[None].astype(np.float32)
            asm.add(c, ChunkOutput(frames=torch.full((c.length, 8, 8, 3), 0.5), audio=wave, audio_rate=rate))
        asm.finish()
    finally:
        StreamingWriter.write_audio = real
    wave = np.concatenate(written, axis=1)[0]
    assert wave.shape[0] == round(150 * rate / fps)
    step = 2 * np.pi * 440 / rate * 0.5  # the largest sample-to-sample change of the tone itself
    jumps = np.abs(np.diff(wave))
    assert jumps.max() < 1.6 * step, f"click of {jumps.max():.3f} at sample {np.argmax(jumps)}"
    naive = np.concatenate([0.5 * np.sin(2 * np.pi * 440 * np.arange(1000) / rate + 1.7 * k) for k in range(2)])
    assert np.abs(np.diff(naive)).max() > 3 * step  # the check can fail


def test_fps_outside_the_request_range_is_refused(tmp_path):
    from ltx_outpaint.media.sample import write_sample

    path = write_sample(str(tmp_path / "fast.mp4"), 64, 64, 30, 120.0)
    with pytest.raises(InputError, match="120 fps"):
        run_long(path, str(tmp_path / "o.mp4"), OutpaintRequest(prompt="x"), CANVAS)
    assert not os.path.exists(str(tmp_path / "o.mp4"))


def test_rerun_keeps_the_seed_and_the_analysis(tmp_path, monkeypatch):
    path = str(tmp_path / "c.mp4")
    write_long_clip(path, 8, fps=FPS, seed=3)
    out = str(tmp_path / "o.mp4")
    first = run_long(path, out, OutpaintRequest(prompt="x"), CANVAS)
    monkeypatch.setattr(long_runner, "analyze_clip", lambda *a, **k: pytest.fail("analysed twice"))
    second = run_long(path, out, OutpaintRequest(prompt="x"), CANVAS)
    assert first.seed == second.seed


def test_cli_long_and_batch_with_the_preview_backend(tmp_path):
    import subprocess
    import sys

    src = str(tmp_path / "in" / "a.mp4")
    os.makedirs(os.path.dirname(src))
    cuts = write_long_clip(src, 12, fps=FPS, seed=4)
    write_long_clip(str(tmp_path / "in" / "b.mp4"), 5, fps=FPS, seed=5)
    env = {**os.environ, "LTX_OUTPAINT_CONFIG_DIR": str(tmp_path / "cfg")}
    env.pop("FAL_KEY", None)
    base = [sys.executable, "-m", "ltx_outpaint.cli"]
    common = ["--backend", "preview", "--resolution", "128x64", "--source-scale", "1.0", "--prompt", "x", "--seed", "2"]
    out = str(tmp_path / "wide.mp4")
    done = subprocess.run(base + ["long", src, "-o", out, "--chunk-frames", "100", *common], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    side = json.load(open(out + ".json"))
    assert side["output"]["frames"] == 288 and [j["frame"] for j in side["joins"]
                                                if j["kind"] == "scene_cut"] == cuts
    assert "clip 1/1 [" in done.stderr  # text bars on stderr
    batch = subprocess.run(base + ["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *common], env=env,
                           capture_output=True, text=True, timeout=300)
    assert batch.returncode == 0, batch.stderr
    assert "batch    [####################] 100.0% 2/2 clips" in batch.stderr
    rows = open(tmp_path / "out" / "batch-summary.csv").read().splitlines()
    assert len(rows) == 3 and all(",done," in r for r in rows[1:])
    assert sorted(os.path.basename(p) for p in os.listdir(tmp_path / "out") if p.endswith(".mp4")) == \
        ["a_outpaint.mp4", "b_outpaint.mp4"]


def test_streaming_writer_resamples_audio_aac_cannot_store(tmp_path):
    import av

    rate = 192000
    w = StreamingWriter(str(tmp_path / "hi.mp4"), 10, audio_rate=rate, audio_channels=2)
    w.write_frames(torch.rand(10, 32, 32, 3))
    t = np.arange(rate) / rate
    wave = np.stack([0.5 * np.sin(2 * np.pi * 20 * t)] * 2).astype(np.float32)
    for i in range(0, rate, 7000):  # pieces of any size, as the assembler writes them
        w.write_audio(wave[:, i:i + 7000])
    path = w.close()
    with av.open(path) as c:
        a = c.streams.audio[0]
        assert a.codec_context.sample_rate == 96000
        assert abs(float(a.duration * a.time_base) - 1.0) < 0.03
        assert c.streams.video[0].frames == 10


@pytest.mark.parametrize("fmt,fps", [("matroska", 24), ("webm", 24), ("matroska", 30000 / 1001), ("mp4", 24)])
def test_millisecond_timestamps_put_every_frame_on_its_own_slot(tmp_path, fmt, fps):
    """MKV/WebM store whole milliseconds (frame 1 at 24 fps reads 0.042 s, past its slot at 0.04167 s): each
    frame still lands on its own slot, none repeated or skipped, in the long reader and force_fps."""
    from fractions import Fraction

    from clips import write_clip

    codec = "libvpx-vp9" if fmt == "webm" else "libx264"
    rate = Fraction(fps).limit_denominator(1001)
    path = write_clip(tmp_path / f"c.{'mkv' if fmt == 'matroska' else fmt}", fmt, codec=codec, frames=12, fps=rate)
    level = lambda block: [int(round(float(f.mean()) / 8)) for f in block]  # noqa: E731 - frame i is grey 8*i
    with FrameReader(str(path)) as r:
        assert r.count_slots() == 12
        assert level(r.read(0, 12)) == list(range(12))
    clip = decode_video(str(path), DecodeOptions(force_fps=float(rate)))
    assert level(clip.frames.numpy() * 255) == list(range(12))


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to a child process")
@pytest.mark.parametrize("command", ["long", "batch"])
def test_ctrl_c_mid_run_stops_cleanly_on_the_preview_backend(tmp_path, command):
    """Ctrl-C while a worker thread decodes and writes: the worker is stopped and waited for before the writer
    and the audio are closed (closing them under it crashed the process: SIGSEGV)."""
    import signal
    import subprocess
    import sys
    import time

    from ltx_outpaint.media.sample import write_sample

    (tmp_path / "in").mkdir()
    src = write_sample(str(tmp_path / "in" / "long.mp4"), 64, 48, 720, 24.0)
    out = str(tmp_path / ("o.mp4" if command == "long" else "out"))
    cmd = [sys.executable, "-m", "ltx_outpaint.cli", command, src if command == "long" else str(tmp_path / "in"),
           "-o", out, "--backend", "preview", "--resolution", "640x360", "--chunk-frames", "240", "--prompt", "x"]
    env = {**os.environ, "LTX_OUTPAINT_CONFIG_DIR": str(tmp_path / "cfg")}
    for attempt in range(3):
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2.5 + attempt)  # mid-run: the worker is decoding, generating and writing chunks
        assert child.poll() is None, child.communicate()[0][-2000:]
        child.send_signal(signal.SIGINT)
        rest = child.communicate(timeout=120)[0]
        assert child.returncode in (130, 4), (attempt, child.returncode, rest[-2000:])
        assert "interrupted" in rest and "Traceback" not in rest, rest[-2000:]
        partial = [f for f in os.listdir(os.path.dirname(out) if command == "long" else out) if f.endswith(".partial")]
        assert partial == []
