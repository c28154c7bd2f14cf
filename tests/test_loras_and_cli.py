import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from ltx_outpaint.errors import InputError
from ltx_outpaint.loras import check_lora_file, check_lora_spec
from ltx_outpaint.request import LoraSpec
from ltx_outpaint.media.decode import decode_video


def make_lora(path, keys=("diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight",
                          "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight")):
    save_file({k: torch.zeros(4, 4) for k in keys}, str(path))
    return str(path)


def test_safetensors_lora_accepted(tmp_path):
    assert check_lora_file(make_lora(tmp_path / "ok.safetensors")) == 2
    assert check_lora_spec(LoraSpec(make_lora(tmp_path / "ok2.safetensors"), 0.5, "video")).scale == 0.5


def test_pickle_never_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(InputError, match="not a valid safetensors file"):
        check_lora_file(str(path))
    assert not marker.exists()
    pt = tmp_path / "evil.pt"
    pt.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(InputError, match="only .safetensors"):
        check_lora_file(str(pt))
    assert not marker.exists()


def test_full_checkpoint_is_not_a_lora(tmp_path):
    path = make_lora(tmp_path / "ckpt.safetensors", keys=("model.diffusion_model.x.weight",))
    with pytest.raises(InputError, match="no LoRA weights"):
        check_lora_file(path)


def test_missing_and_url_entries(tmp_path):
    with pytest.raises(InputError, match="not found"):
        check_lora_file(str(tmp_path / "nope.safetensors"))
    assert check_lora_spec(LoraSpec("https://example.com/l.safetensors")).is_url()
    with pytest.raises(InputError, match="unsupported URL scheme"):
        check_lora_spec(LoraSpec("ftp://example.com/l.safetensors"))


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ltx_outpaint.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_cli_sample_then_outpaint(tmp_path):
    """The README's first command: generate the sample clip, outpaint it on the preview backend."""
    r = run_cli("sample", "clip.mp4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli("run", "clip.mp4", "-o", "wide.mp4", "--prompt", "a sunny field", "--num-frames", "25",
                "--frames-per-second", "12", "--resolution", "640x360", "--seed", "3", "--anchor", "left",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "PREVIEW backend" in r.stderr
    out = decode_video(str(tmp_path / "wide.mp4"))
    assert out.frames.shape == (25, 360, 640, 3) and out.fps == 12
    assert not out.audio.silent and abs(out.audio.duration - 25 / 12) < 1 / 12
    side = json.loads((tmp_path / "wide.mp4.json").read_text())
    assert side["backend"] == "preview" and side["seed"] == 3
    assert side["request"]["resolution"] == {"width": 640, "height": 360}
    assert side["request"]["num_frames"] == 25 and side["request"]["prompt"] == "a sunny field"
    assert side["fal_cost_estimate_usd"] == pytest.approx(6 * 0.0024075)


def test_cli_bad_input_is_a_clear_error(tmp_path):
    r = run_cli("run", "missing.mp4", "-o", "x.mp4", cwd=tmp_path)
    assert r.returncode == 2 and "video: file not found" in r.stderr
    r = run_cli("run", "missing.mp4", "-o", "x.mp4", "--num-frames", "5", cwd=tmp_path)
    assert r.returncode == 2 and "num_frames: got 5; allowed range 9 to 481" in r.stderr
    r = run_cli("run", "missing.mp4", "-o", "x.mp4", "--lora", "a.safetensors", "9", cwd=tmp_path)
    assert r.returncode == 2 and "scale (--lora #1): got 9.0; allowed range 0.0 to 4.0" in r.stderr
    assert not os.path.exists(tmp_path / "x.mp4")


def test_cli_help_lists_every_request_field():
    r = subprocess.run([sys.executable, "-m", "ltx_outpaint.cli", "run", "--help"], capture_output=True, text=True)
    for flag in ("--prompt", "--resolution", "--source-scale", "--video-strength", "--num-frames",
                 "--frames-per-second", "--num-inference-steps", "--guidance-scale", "--generate-audio",
                 "--negative-prompt", "--seed", "--enable-prompt-expansion", "--enable-safety-checker",
                 "--video-quality", "--video-write-mode", "--sync-mode", "--lora"):
        assert flag in r.stdout, flag


def test_cli_never_overwrites_silently_and_refuses_unusable_paths_without_a_traceback(tmp_path):
    assert run_cli("sample", "clip.mp4", "--frames", "12", cwd=tmp_path).returncode == 0
    r = run_cli("sample", "clip.mp4", cwd=tmp_path)
    assert r.returncode == 2 and "--output: clip.mp4 exists; add --overwrite to replace it" in r.stderr
    before = (tmp_path / "clip.mp4").read_bytes()
    args = ("--num-frames", "9", "--resolution", "128x72")
    r = run_cli("run", "clip.mp4", "-o", "clip.mp4", "--overwrite", *args, cwd=tmp_path)
    assert r.returncode == 2 and "--output: clip.mp4 is the input file; write to another name" in r.stderr
    r = run_cli("long", "clip.mp4", "-o", "./clip.mp4", "--overwrite", "--resolution", "128x72", cwd=tmp_path)
    assert r.returncode == 2 and "is the input file" in r.stderr
    assert (tmp_path / "clip.mp4").read_bytes() == before
    assert run_cli("run", "clip.mp4", "-o", "sub/dir/wide.mp4", *args, cwd=tmp_path).returncode == 0  # folders made
    r = run_cli("run", "clip.mp4", "-o", "sub/dir/wide.mp4", *args, cwd=tmp_path)
    assert r.returncode == 2 and "exists; add --overwrite" in r.stderr
    assert run_cli("run", "clip.mp4", "-o", "sub/dir/wide.mp4", "--overwrite", *args, cwd=tmp_path).returncode == 0
    cases = {
        ("run", "clip.mp4", "-o", "sub", *args): "--output: sub is a folder; give a file name",
        ("long", "nope.mp4", "-o", "l.mp4"): "input: nope.mp4: no such file (long takes a local video file)",
        ("long", "sub", "-o", "l.mp4"): "input: sub: no such file",
        ("run", "clip.mp4", "-o", "w.mp4", "--lora", "missing.safetensors", *args): "LoRA file not found",
        ("run", "clip.mp4", "-o", "w.mp4", "--lora", "clip.mp4", *args): "only .safetensors LoRAs are accepted",
        ("sample", "z.mp4", "--frames", "0"): "--frames: got 0; allowed 1 to 10000",
        ("sample", "z.mp4", "--width", "47"): "--width: got 47; allowed an even number 16 to 4096",
        ("sample", "z.mp4", "--fps", "0"): "--fps: got 0.0; allowed 1 to 240",
        ("batch", "clip.mp4", "-o", "sub/dir/wide.mp4"): "--output: sub/dir/wide.mp4 is a file; batch writes into a "
                                                         "folder",
    }
    for argv, message in cases.items():
        r = run_cli(*argv, cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr[-800:])
    assert not (tmp_path / "z.mp4").exists() and not (tmp_path / "w.mp4").exists()


def test_cli_checks_limits_and_scene_options_and_says_when_the_source_is_shorter(tmp_path):
    assert run_cli("sample", "clip.mp4", "--frames", "12", cwd=tmp_path).returncode == 0
    cases = {
        ("run", "clip.mp4", "-o", "a.mp4", "--backend", "fal", "--max-cost-usd", "5000"):
            "--max-cost-usd: got 5000.0; allowed 0 (no limit) to 1000",
        ("run", "clip.mp4", "-o", "a.mp4", "--backend", "fal", "--deadline-s", "nan"):
            "--deadline-s: got nan s; allowed more than 0 up to 86400 s",
        ("recover", "abc", "-o", "a.mp4", "--deadline-s", "-5"): "--deadline-s: got -5 s; allowed more than 0 up to 86400 s",
        ("long", "clip.mp4", "-o", "a.mp4", "--scene-threshold", "-1"): "scene_threshold: got -1.0; allowed 1 to 100",
        ("long", "clip.mp4", "-o", "a.mp4", "--min-scene-len", "0"): "min_scene_len: got 0; allowed 1 to 100000",
    }
    for argv, message in cases.items():
        r = run_cli(*argv, cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr, (argv, r.stderr[-600:])
    r = run_cli("run", "clip.mp4", "-o", "w.mp4", "--num-frames", "25", "--resolution", "128x72", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = ("the source has 12 frames (0.50 s) but 25 were generated: past the source there is no source picture to "
            "keep (its last frame is held); set num_frames to at most 12 to match the source")
    assert text in r.stderr and text in json.loads((tmp_path / "w.mp4.json").read_text())["notes"]
