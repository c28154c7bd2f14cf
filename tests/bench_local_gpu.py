"""GPU benchmark: our local outpaint pipeline vs ltx-pipelines' ICLoraPipeline, same shapes, same run.

    python tests/bench_local_gpu.py --workdir /tmp/ltxbench            # full-size LTX-2.3, 1280x704x121
    python tests/bench_local_gpu.py --scale tiny --device cpu          # seconds: checks the script itself

Full size needs a CUDA GPU with ~80 GB (H100/H200) and ~60 GB free disk (one random bf16 checkpoint of
44 GB is written once; fp8 is the on-the-fly cast of the same file, for both pipelines).

Where the full-size dimensions come from: the transformer is ltx-core 1.0.0's ``LTXModelConfigurator``
defaults (48 layers, 32 heads x 128 video = 4096 wide, 32 x 64 audio = 2048 wide, cross-attention 4096 /
2048, 128 latent channels: the LTX-2 19B/22B layout) with the LTX-2.3 flags the released checkpoint's
metadata carries (gated attention, cross-attention AdaLN, caption projection before the connector,
split float64 RoPE), as third-party loaders read them from it. The video VAE has LTX-2's 32x/8x
compression with 128 base channels (block list as published for the 22B decoder); the upsampler is
ltx-core's defaults (512 mid channels, 4 blocks per stage); the IC-LoRA is rank 64 over the video
stream. Text encoding is NOT compared: Gemma 3 12B would not fit next to the checkpoint on the
machines' 64 GB disk, so a tiny Gemma folder is used and the prompt encoding is computed once, outside
the timed region, and handed to both pipelines.

What is compared: our ``fast`` mode (distilled checkpoint + IC-LoRA, 8 + 3 distilled steps, the same
schedule as ICLoraPipeline) against ICLoraPipeline; our ``quality`` mode (res_2s, 15 steps) is timed
too. Printed per pipeline and precision: seconds per transformer evaluation in each stage, stage
seconds, wall time (without text encoding), peak VRAM; then ours/reference ratios, and the third-party
rule of thumb for the official ComfyUI workflow on an H100 (2 M output pixels/s + 10 s).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import tiny_ltx  # noqa: E402

FULL_TRANSFORMER = {
    **tiny_ltx.FIXED,
    "num_layers": 48, "num_attention_heads": 32, "attention_head_dim": 128,
    "audio_num_attention_heads": 32, "audio_attention_head_dim": 64,
    "in_channels": 128, "out_channels": 128, "audio_in_channels": 128, "audio_out_channels": 128,
    "cross_attention_dim": 4096, "audio_cross_attention_dim": 2048,
    "caption_proj_before_connector": True, "caption_projection_first_linear": False,
    "caption_proj_input_norm": False, "caption_projection_second_linear": False,
    "apply_gated_attention": True, "cross_attention_adaln": True, "rope_type": "split",
    "frequencies_precision": "float64", "av_ca_timestep_scale_multiplier": 1000,
    "connector_num_attention_heads": 32, "connector_attention_head_dim": 128, "connector_num_layers": 2,
    "audio_connector_num_attention_heads": 32, "audio_connector_attention_head_dim": 64,
    "audio_connector_num_layers": 2, "connector_apply_gated_attention": True,
    "audio_connector_apply_gated_attention": True,
}
FULL_VAE = {
    **tiny_ltx.VAE, "decoder_base_channels": 128, "timestep_conditioning": True,
    "encoder_blocks": [["res_x", {"num_layers": 4}], ["compress_all", {"multiplier": 2}],
                       ["res_x", {"num_layers": 3}], ["compress_all", {"multiplier": 2}],
                       ["res_x", {"num_layers": 3}], ["compress_all", {"multiplier": 2}],
                       ["res_x", {"num_layers": 4}]],
    "decoder_blocks": [["res_x", {"num_layers": 4}], ["compress_all", {"multiplier": 2, "residual": False}],
                       ["res_x", {"num_layers": 3}], ["compress_all", {"multiplier": 2, "residual": False}],
                       ["res_x", {"num_layers": 3}], ["compress_all", {"multiplier": 2, "residual": False}],
                       ["res_x", {"num_layers": 4}]],
}
FULL_UPSAMPLER = {**tiny_ltx.UPSAMPLER, "mid_channels": 512, "num_blocks_per_stage": 4}


def build(workdir: str, scale: str, device: str) -> tiny_ltx.TinyModels:
    marker = os.path.join(workdir, f".built-{scale}")
    if scale == "tiny":
        return tiny_ltx.build_tiny_models(workdir)
    root = workdir
    for sub in ("checkpoints", "loras", "latent_upscale_models", "text_encoders"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    m = tiny_ltx.TinyModels(
        root=root, dev=os.path.join(root, "checkpoints", "ltx-2.3-22b-dev.safetensors"),
        distilled=os.path.join(root, "checkpoints", "ltx-2.3-22b-distilled.safetensors"),
        upsampler=os.path.join(root, "latent_upscale_models", "ltx-2.3-spatial-upscaler-x2-1.0.safetensors"),
        gemma=os.path.join(root, "text_encoders", "gemma-3-tiny"),
        distilled_lora=os.path.join(root, "loras", "ltx-2.3-22b-distilled-lora-384.safetensors"),
        ic_lora=os.path.join(root, "loras", "ltx-2.3-22b-ic-lora-in-outpainting-0.9.safetensors"),
        user_lora=os.path.join(root, "loras", "unused.safetensors"))
    if os.path.exists(marker):
        return m
    t = time.perf_counter()
    config = {"transformer": FULL_TRANSFORMER, "vae": FULL_VAE, "audio_vae": tiny_ltx.AUDIO_VAE,
              "vocoder": tiny_ltx.VOCODER}
    tiny_ltx.write_checkpoint(m.distilled, 100, config, device=device)
    # quality mode needs a dev checkpoint: the same random weights serve (timing is what matters)
    if not os.path.exists(m.dev):
        os.symlink(os.path.basename(m.distilled), m.dev)
    tiny_ltx.write_upsampler(m.upsampler, FULL_UPSAMPLER)
    tiny_ltx.write_gemma(m.gemma)
    video = lambda k: tiny_ltx_stream(k) == "video"  # noqa: E731
    tiny_ltx.write_lora(m.ic_lora, m.distilled, 32, video, rank=64, metadata={"reference_downscale_factor": "1"})
    tiny_ltx.write_lora(m.distilled_lora, m.distilled, 31, video, rank=64)
    open(marker, "w").close()
    print(f"built full-size random models in {time.perf_counter() - t:.0f} s", flush=True)
    return m


def tiny_ltx_stream(key: str) -> str:
    from ltx_outpaint.local.lora_targets import stream_of

    return stream_of(key.removeprefix("model."))


def composite_clip(width: int, height: int, frames: int, fps: float):
    """A canvas composite (source rectangle + green fill) as frames and as an MP4 for the reference."""
    from ltx_outpaint.media.canvas import CanvasSpec, LTX_SNAP, composite, layout_canvas
    from ltx_outpaint.request import ImageSize
    from ltx_outpaint.media.sample import write_sample
    from ltx_outpaint.media.decode import DecodeOptions, decode_video

    src = decode_video(write_sample(os.path.join(WORK, "src.mp4"), 400, 704, frames, fps), DecodeOptions())
    lay = layout_canvas(CanvasSpec(ImageSize(width, height), 1.0), src.width, src.height, LTX_SNAP)
    comp = composite(src.frames[:frames], lay)
    from ltx_outpaint.media.encode import write_mp4

    path = os.path.join(WORK, "composite.mp4")
    write_mp4(path, comp, fps, None, "maximum", "fast")
    return comp, lay.source, path, src.audio


def peak_reset(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def encode_prompt_once(models, device):
    """The prompt encoding both pipelines get (text encoding is outside the comparison)."""
    from ltx_outpaint.local.ltxcore import compat as ltx_compat

    te = ltx_compat.load_text_encoder(models.gemma, device)
    hs, mask = te.encode("a wide meadow at dawn")
    del te
    ep = ltx_compat.load_embeddings_processor(models.distilled, models.gemma, device)
    out = ep.process_hidden_states(hs, mask)
    del ep
    return out


def run_ours(models, mode, precision, comp, rect, fps, device, ctx, audio):
    from ltx_outpaint.local.models import find_models, ModelSearch
    from ltx_outpaint.local.ltxcore.pipeline import OutpaintInputs, OutpaintPipeline, PipelineConfig, StepTracker

    resolved = find_models(mode, ModelSearch.from_models_dir(models.root))
    pipe = OutpaintPipeline(PipelineConfig(resolved, device=str(device), precision=precision))
    pipe._encode_text = lambda inputs, ledger, cfg: ("a wide meadow at dawn", ctx.video_encoding,  # noqa: E731
                                                    ctx.audio_encoding, None, None)
    calls = {"stage": None, "times": {}}
    orig_wrap = StepTracker.wrap

    def wrap(self, fn):
        tracked = orig_wrap(self, fn)

        def timed(*a, **k):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            out = tracked(*a, **k)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            calls["times"].setdefault(self.label.split(" ")[1], []).append(time.perf_counter() - t)
            return out
        return timed

    StepTracker.wrap = wrap
    try:
        peak_reset(device)
        from ltx_outpaint.backends import Progress

        t = time.perf_counter()
        out = pipe.run(OutpaintInputs(comp, rect, fps, "a wide meadow at dawn", seed=1, source_audio=audio,
                                      num_inference_steps=15), Progress())
        wall = time.perf_counter() - t
    finally:
        StepTracker.wrap = orig_wrap
    return {"wall_s": wall, "peak_vram_gib": peak(device), "stages_s": out.seconds,
            "s_per_eval": {k: sum(v) / len(v) for k, v in calls["times"].items()},
            "evals": {k: len(v) for k, v in calls["times"].items()}}


def run_reference(models, precision, width, height, frames, fps, path, device, ctx):
    import ltx_pipelines.ic_lora as ic
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps
    from ltx_core.model.video_vae import TilingConfig
    from ltx_core.quantization import QuantizationPolicy

    stage_times: dict[str, list[float]] = {}
    orig_loop = ic.euler_denoising_loop

    def timed_loop(**kw):
        name = "1/2" if "1/2" not in stage_times else "2/2"
        fn = kw["denoise_fn"]

        def timed(*a, **k):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            out = fn(*a, **k)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stage_times.setdefault(name, []).append(time.perf_counter() - t)
            return out
        kw["denoise_fn"] = timed
        return orig_loop(**kw)

    patches = {"euler_denoising_loop": timed_loop, "encode_prompts": lambda *a, **k: [ctx]}
    saved = {k: getattr(ic, k) for k in patches}
    cuda_sync = torch.cuda.synchronize
    for k, v in patches.items():
        setattr(ic, k, v)
    if device.type != "cuda":  # the reference calls torch.cuda.synchronize() unconditionally
        torch.cuda.synchronize = lambda *a, **k: None
        ic.cleanup_memory = lambda: gc.collect()
    try:
        pipe = ic.ICLoraPipeline(
            distilled_checkpoint_path=models.distilled, spatial_upsampler_path=models.upsampler,
            gemma_root=models.gemma,
            loras=[LoraPathStrengthAndSDOps(models.ic_lora, 1.0, LTXV_LORA_COMFY_RENAMING_MAP)],
            device=device, quantization=QuantizationPolicy.fp8_cast() if precision == "fp8" else None)
        peak_reset(device)
        t = time.perf_counter()
        video, _audio = pipe(prompt="a wide meadow at dawn", seed=1, height=height, width=width,
                             num_frames=frames, frame_rate=fps, images=[], video_conditioning=[(path, 1.0)],
                             tiling_config=TilingConfig.default())
        for _chunk in video:
            pass
        wall = time.perf_counter() - t
    finally:
        for k, v in saved.items():
            setattr(ic, k, v)
        torch.cuda.synchronize = cuda_sync
    return {"wall_s": wall, "peak_vram_gib": peak(device),
            "s_per_eval": {k: sum(v) / len(v) for k, v in stage_times.items()},
            "evals": {k: len(v) for k, v in stage_times.items()}}


WORK = "."


def main() -> int:
    global WORK
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/ltx-bench")
    p.add_argument("--scale", choices=("full", "tiny"), default="full")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=704)
    p.add_argument("--frames", type=int, default=121)
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--precisions", default="bf16,fp8")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--json", help="Also write the figures here.")
    args = p.parse_args()
    if args.scale == "tiny" and (args.width, args.height, args.frames) == (1280, 704, 121):
        args.width, args.height, args.frames = 192, 128, 9
    WORK = os.path.abspath(os.path.join(args.workdir, args.scale))
    os.makedirs(WORK, exist_ok=True)
    device = torch.device(args.device)
    build_device = "cuda" if device.type == "cuda" else "cpu"
    models = build(os.path.join(WORK, "models"), args.scale, build_device)
    comp, rect, path, audio = composite_clip(args.width, args.height, args.frames, args.fps)
    with torch.inference_mode():
        ctx = encode_prompt_once(models, device)
    results: dict[str, dict] = {}
    for precision in args.precisions.split(","):
        runs = [("ours fast", lambda: run_ours(models, "fast", precision, comp, rect, args.fps, device, ctx, audio))]
        if not args.skip_quality:
            runs.append(("ours quality", lambda: run_ours(models, "quality", precision, comp, rect, args.fps, device,
                                                          ctx, audio)))
        if not args.skip_reference:
            runs.append(("ICLoraPipeline", lambda: run_reference(models, precision, args.width, args.height,
                                                                 args.frames, args.fps, path, device, ctx)))
        for name, fn in runs:
            with torch.inference_mode():
                r = fn()
            results[f"{name} {precision}"] = r
            evals = ", ".join(f"stage {k}: {v * 1000:.0f} ms/eval x {r['evals'][k]}" for k, v in r["s_per_eval"].items())
            print(f"{name:15s} {precision}: wall {r['wall_s']:.1f} s, peak VRAM {r['peak_vram_gib']:.1f} GiB; {evals}",
                  flush=True)
        ours, ref = results.get(f"ours fast {precision}"), results.get(f"ICLoraPipeline {precision}")
        if ours and ref:
            print(f"  {precision}: ours/reference wall {ours['wall_s'] / ref['wall_s']:.2f} (target <= 1.0), "
                  f"peak VRAM {ours['peak_vram_gib'] / ref['peak_vram_gib']:.2f} (target <= 0.8)")
    rule = args.width * args.height * args.frames / 2e6 + 10
    for key, r in results.items():
        print(f"{key}: {r['wall_s']:.1f} s vs rule of thumb {rule:.0f} s -> ratio {r['wall_s'] / rule:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
