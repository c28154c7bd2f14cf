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
    assert r.returncode == 2 and "scale (LoRA Stack #1): got 9.0; allowed range 0.0 to 4.0" in r.stderr
    assert not os.path.exists(tmp_path / "x.mp4")


def test_cli_help_lists_every_request_field():
    r = subprocess.run([sys.executable, "-m", "ltx_outpaint.cli", "run", "--help"], capture_output=True, text=True)
    for flag in ("--prompt", "--resolution", "--source-scale", "--video-strength", "--num-frames",
                 "--frames-per-second", "--num-inference-steps", "--guidance-scale", "--generate-audio",
                 "--negative-prompt", "--seed", "--enable-prompt-expansion", "--enable-safety-checker",
                 "--video-quality", "--video-write-mode", "--sync-mode", "--lora"):
        assert flag in r.stdout, flag
