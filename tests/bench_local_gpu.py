"""GPU benchmark: the official recipe on our ltx-core engine vs ltx-pipelines' ICLoraPipeline, same shapes, one run.

    python tests/bench_local_gpu.py --workdir /tmp/ltxbench            # full-size LTX-2.3, 1280x704x121
    python tests/bench_local_gpu.py --scale tiny --device cpu          # seconds: checks the script itself

Full size needs a CUDA GPU with ~80 GB (H100/H200) and ~60 GB free disk (one random bf16 checkpoint of
44 GB is written once; fp8 is our scaled-fp8 storage of the same file, and ltx-core's fp8 cast for the reference).

Where the full-size dimensions come from: the transformer is ltx-core 1.0.0's ``LTXModelConfigurator``
defaults (48 layers, 32 heads x 128 video = 4096 wide, 32 x 64 audio = 2048 wide, cross-attention 4096 /
2048, 128 latent channels: the LTX-2 19B/22B layout) with the LTX-2.3 flags the released checkpoint's
metadata carries (gated attention, cross-attention AdaLN, caption projection before the connector,
split float64 RoPE), as third-party loaders read them from it. The video VAE has LTX-2's 32x/8x
compression with 128 base channels (block list as published for the 22B decoder); the upsampler is
ltx-core's defaults (512 mid channels, 4 blocks per stage); the IC-LoRA and the distilled LoRA are rank 64 over
the video stream. Text encoding is NOT compared: Gemma 3 12B would not fit next to the checkpoint on the
machines' 64 GB disk, so a tiny Gemma folder is used and the prompt encodings (positive and negative) are
computed once, outside the timed region, and handed to every pipeline.

What is compared: our engine running the ``official`` recipe (dev + distilled LoRA 0.5 + IC-LoRA, 8 steps of
euler_ancestral_cfg_pp and 2 of euler_cfg_pp, both with the negative pass: 2 transformer evaluations per step;
pixel x2 between the stages, tiled decodes, pyramid blends), with and without block offloading, and the
``ic_lora_pipeline`` recipe (8 + 3 Euler steps, the same schedule as ICLoraPipeline) against ICLoraPipeline itself.
Printed per pipeline and precision: seconds per transformer evaluation in each stage, wall time (without text
encoding), peak VRAM (and ours: planned vs measured per stage); then ratios, and the third-party rule of thumb for
the official ComfyUI workflow on an H100 (2 M output pixels/s + 10 s).

The native engine (ComfyUI core's LTX-2, ``--native``; needs LTX_OUTPAINT_COMFYUI_CURRENT_DIR = a ComfyUI 0.20.1
folder): :func:`run_native` runs the graph the outpaint node expands into, in this process, bf16 only.
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
        comfy_gemma=os.path.join(root, "text_encoders", "not-written.safetensors"),  # the folder is used
        distilled_lora=os.path.join(root, "loras", "ltx-2.3-22b-distilled-lora-384.safetensors"),
        ic_lora=os.path.join(root, "loras", "ltx-2.3-22b-ic-lora-in-outpainting-0.9.safetensors"),
        user_lora=os.path.join(root, "loras", "unused.safetensors"))
    if os.path.exists(marker):
        return m
    t = time.perf_counter()
    config = {"transformer": FULL_TRANSFORMER, "vae": FULL_VAE, "audio_vae": tiny_ltx.AUDIO_VAE,
              "vocoder": tiny_ltx.VOCODER}
    tiny_ltx.write_checkpoint(m.distilled, 100, config, device=device)
    # the official recipe needs a dev checkpoint: the same random weights serve (timing is what matters)
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


def canvas_clip(width: int, height: int, frames: int, fps: float):
    """The placed canvas (source + grey pad), its mask, the green composite as an MP4 for the reference, the audio."""
    from ltx_outpaint.media.canvas import CanvasSpec, LTX_SNAP, composite, layout_canvas, place_frames
    from ltx_outpaint.media.decode import DecodeOptions, decode_video
    from ltx_outpaint.media.encode import write_mp4
    from ltx_outpaint.media.sample import write_sample
    from ltx_outpaint.request import ImageSize

    src = decode_video(write_sample(os.path.join(WORK, "src.mp4"), 400, 704, frames, fps), DecodeOptions())
    lay = layout_canvas(CanvasSpec(ImageSize(width, height), 1.0), src.width, src.height, LTX_SNAP)
    placed = torch.full((frames, lay.height, lay.width, 3), 0.5)
    place_frames(src.frames[:frames], lay, placed)
    path = os.path.join(WORK, "composite.mp4")
    write_mp4(path, composite(src.frames[:frames], lay), fps, None, "maximum", "fast")
    return placed, lay.mask(), lay.source, path, src.audio


def peak_reset(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def encode_prompts_once(models, device):
    """The prompt encodings every pipeline gets (text encoding is outside the comparison)."""
    from ltx_outpaint.local.ltxcore import compat as ltx_compat
    from ltx_outpaint.local.recipe import OFFICIAL

    te = ltx_compat.load_text_encoder(models.gemma, device)
    raw = [te.encode(p) for p in (PROMPT, OFFICIAL.negative_prompt)]
    del te
    ep = ltx_compat.load_embeddings_processor(models.distilled, models.gemma, device)
    out = [ep.process_hidden_states(hs, mask) for hs, mask in raw]
    del ep
    return out


PROMPT = "a wide meadow at dawn"


def run_ours(models, recipe, precision, offload, placed, mask, rect, fps, device, ctx, audio):
    from ltx_outpaint.backends import Progress
    from ltx_outpaint.local.ltxcore import pipeline as engine
    from ltx_outpaint.local.models import ModelSearch, find_models
    from ltx_outpaint.local.recipe import resolve
    from ltx_outpaint.request import ImageSize, OutpaintRequest

    f, h, w, _ = placed.shape
    req = OutpaintRequest(prompt=PROMPT, resolution=ImageSize(w, h), num_frames=f, frames_per_second=fps,
                          seed=1, enable_prompt_expansion=False).validate()
    resolved = resolve(recipe, req, width=w, height=h, frames=f, seed=1)
    found = find_models(recipe, ModelSearch.from_models_dir(models.root))
    pipe = engine.OutpaintPipeline(engine.PipelineConfig(found, device=str(device), precision=precision,
                                                         offload=offload))
    contexts = {False: (ctx[0].video_encoding, ctx[0].audio_encoding),
                True: (ctx[1].video_encoding, ctx[1].audio_encoding)}
    pipe._encode_text = lambda inputs, plan, ledger, off: (PROMPT, contexts)  # noqa: E731
    stages: list[list[float]] = []
    real_sample = engine.sample

    def timed_sample(model, *a, **k):  # times every transformer evaluation of each stage
        times: list[float] = []
        stages.append(times)

        def timed(*args):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            out = model(*args)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
            return out
        return real_sample(timed, *a, **k)

    engine.sample = timed_sample
    try:
        peak_reset(device)
        t = time.perf_counter()
        out = pipe.run(engine.OutpaintInputs(placed, mask, rect, resolved, audio), Progress())
        wall = time.perf_counter() - t
    finally:
        engine.sample = real_sample
    return {"wall_s": wall, "peak_vram_gib": peak(device), "stages_s": out.seconds,
            "s_per_eval": {f"{i + 1}/2": sum(v) / len(v) for i, v in enumerate(stages) if v},
            "evals": {f"{i + 1}/2": len(v) for i, v in enumerate(stages)},
            "planned": out.memory_plan.describe() if out.memory_plan else "",
            "measured_stage_gib": {k: v / 2**30 for k, v in out.stage_peaks.items()}}


_NATIVE = {}


def run_native(models, recipe, precision, placed, mask, rect, fps, device, ctx, audio):
    """The native engine: ComfyUI 0.20.1's core LTX-2 nodes + the pack's helpers, run in this process on the same
    models and canvas (the graph the outpaint node expands into, executed node by node by
    tests/native_inprocess.py: no server, no caching). ComfyUI's text encoding (tiny Gemma through the test-only
    size patch) runs inside the graph and is subtracted from the wall time, as for the other pipelines."""
    import json as _json

    from native_inprocess import load_comfyui, run_graph

    from ltx_outpaint.local.native.graph import NativeInputs, build_graph
    from ltx_outpaint.local.native.models import NativeModels
    from ltx_outpaint.local.recipe import get_recipe, resolve
    from ltx_outpaint.request import ImageSize, OutpaintRequest

    comfy_dir = os.environ.get("LTX_OUTPAINT_COMFYUI_CURRENT_DIR", "")
    if not os.path.isfile(os.path.join(comfy_dir, "main.py")):
        raise NotImplementedError("set LTX_OUTPAINT_COMFYUI_CURRENT_DIR to a ComfyUI 0.20.1 folder")
    if precision != "bf16":
        raise NotImplementedError("ComfyUI runs the checkpoint file's own dtype; the benchmark writes bf16 only")
    gemma = os.path.join(models.root, "text_encoders", "gemma_3_12B_it.safetensors")
    if not os.path.exists(gemma):
        tiny_ltx.write_comfy_gemma(models.gemma, gemma)
        cfg = _json.loads(__import__("safetensors").safe_open(models.distilled, "pt").metadata()["config"])
        with open(gemma + ".json") as f:
            sizes = _json.load(f)
        t = cfg["transformer"]
        sizes["transformer"] = {"video": t["num_attention_heads"] * t["attention_head_dim"],
                                "audio": t["audio_num_attention_heads"] * t["audio_attention_head_dim"]}
        with open(gemma + ".json", "w") as f:
            _json.dump(sizes, f)
    if "nodes" not in _NATIVE:
        _NATIVE["nodes"] = load_comfyui(comfy_dir, models.root, cpu=device.type != "cuda",
                                        tiny_gemma_sizes=gemma + ".json")
    nodes = _NATIVE["nodes"]
    import comfy.model_base

    f, h, w, _ = placed.shape
    req = OutpaintRequest(prompt=PROMPT, resolution=ImageSize(w, h), num_frames=f, frames_per_second=fps,
                          seed=1, enable_prompt_expansion=False).validate()
    r = resolve(get_recipe(recipe), req, width=w, height=h, frames=f, seed=1)
    names = NativeModels(checkpoint=os.path.basename(models.dev if r.recipe.checkpoint == "dev" else models.distilled),
                         text_encoder=os.path.basename(gemma), distilled_lora=os.path.basename(models.distilled_lora),
                         ic_lora=os.path.basename(models.ic_lora), spatial_upsampler=os.path.basename(models.upsampler))
    comfy_audio = None
    if audio is not None and not audio.silent:
        comfy_audio = {"waveform": audio.waveform.unsqueeze(0), "sample_rate": int(audio.sample_rate)}
    x = NativeInputs(models=names, placed=placed, mask=mask, source_audio=comfy_audio)
    graph, outputs = build_graph(r, x, prefix="bench.", expand_prompt=False)
    stage = {"n": 0, "text": 0.0, "t": 0.0}
    evals: dict[str, list[float]] = {}

    def on_node(node_id, class_type, phase):
        if phase == "start":
            stage["t"] = time.perf_counter()
            if class_type == "SamplerCustomAdvanced":
                stage["n"] += 1
        elif class_type in ("LTXAVTextEncoderLoader", "CLIPTextEncode"):
            stage["text"] += time.perf_counter() - stage["t"]

    apply_model = comfy.model_base.BaseModel.apply_model

    def timed(self, *a, **k):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        out = apply_model(self, *a, **k)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        evals.setdefault(f"{stage['n']}/2", []).append(time.perf_counter() - t)
        return out

    comfy.model_base.BaseModel.apply_model = timed
    try:
        peak_reset(device)
        t = time.perf_counter()
        run_graph(nodes, graph, outputs, on_node=on_node)
        wall = time.perf_counter() - t - stage["text"]
    finally:
        comfy.model_base.BaseModel.apply_model = apply_model
    return {"wall_s": wall, "peak_vram_gib": peak(device),
            "s_per_eval": {k: sum(v) / len(v) for k, v in evals.items()},
            "evals": {k: len(v) for k, v in evals.items()}}


def run_reference(models, precision, width, height, frames, fps, path, device, ctx):
    """ltx-pipelines' ICLoraPipeline as published (distilled checkpoint, IC-LoRA, upsampler, Euler, no guidance)."""
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

    patches = {"euler_denoising_loop": timed_loop, "encode_prompts": lambda *a, **k: [ctx[0]]}
    saved = {k: getattr(ic, k) for k in patches}
    cuda_sync = torch.cuda.synchronize
    for k, v in patches.items():
        setattr(ic, k, v)
    if device.type != "cuda":  # the reference calls torch.cuda.synchronize() unconditionally
        torch.cuda.synchronize = lambda *a, **k: None
        ic.cleanup_memory = lambda: gc.collect()
    try:
        if precision == "fp8" and not hasattr(QuantizationPolicy, "fp8_cast"):
            raise RuntimeError("this ltx-core has no fp8 cast")
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
    p.add_argument("--precisions", default="fp8,bf16")
    p.add_argument("--offloads", default="none,blocks", help="Our engine's offload modes to time.")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--skip-ic-lora-recipe", action="store_true")
    p.add_argument("--native", action="store_true", help="Also time the native engine (needs LTX_OUTPAINT_COMFYUI_CURRENT_DIR).")
    p.add_argument("--json", help="Also write the figures here.")
    args = p.parse_args()
    if args.scale == "tiny" and (args.width, args.height, args.frames) == (1280, 704, 121):
        args.width, args.height, args.frames = 192, 128, 9
    WORK = os.path.abspath(os.path.join(args.workdir, args.scale))
    os.makedirs(WORK, exist_ok=True)
    device = torch.device(args.device)
    build_device = "cuda" if device.type == "cuda" else "cpu"
    models = build(os.path.join(WORK, "models"), args.scale, build_device)
    placed, mask, rect, path, audio = canvas_clip(args.width, args.height, args.frames, args.fps)
    with torch.inference_mode():
        ctx = encode_prompts_once(models, device)
    print(f"{time.strftime('%Y-%m-%d')} {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"{args.width}x{args.height}x{args.frames}, scale {args.scale}", flush=True)
    results: dict[str, dict] = {}
    for precision in args.precisions.split(","):
        runs = [(f"ours official offload={off}", lambda off=off: run_ours(
            models, "official", precision, off, placed, mask, rect, args.fps, device, ctx, audio))
            for off in args.offloads.split(",")]
        if not args.skip_ic_lora_recipe:
            runs.append(("ours ic_lora_pipeline", lambda: run_ours(models, "ic_lora_pipeline", precision, "none",
                                                                   placed, mask, rect, args.fps, device, ctx, audio)))
        if args.native:
            runs.append(("native official", lambda: run_native(models, "official", precision, placed, mask, rect,
                                                               args.fps, device, ctx, audio)))
        if not args.skip_reference:
            runs.append(("ICLoraPipeline", lambda: run_reference(models, precision, args.width, args.height,
                                                                 args.frames, args.fps, path, device, ctx)))
        for name, fn in runs:
            try:
                with torch.inference_mode():
                    r = fn()
            except NotImplementedError as exc:
                print(f"{name:34s} {precision}: not run ({exc})", flush=True)
                continue
            results[f"{name} {precision}"] = r
            evals = ", ".join(f"stage {k}: {v * 1000:.0f} ms/eval x {r['evals'][k]}" for k, v in r["s_per_eval"].items())
            print(f"{name:34s} {precision}: wall {r['wall_s']:.1f} s, peak VRAM {r['peak_vram_gib']:.1f} GiB; {evals}",
                  flush=True)
            if r.get("planned"):
                measured = ", ".join(f"{k} {v:.1f}" for k, v in r["measured_stage_gib"].items())
                print(f"    {r['planned']}\n    measured GiB per stage: {measured or 'n/a (no CUDA)'}", flush=True)
        ours, ref = results.get(f"ours ic_lora_pipeline {precision}"), results.get(f"ICLoraPipeline {precision}")
        if ours and ref:
            print(f"  {precision}: ic_lora_pipeline ours/reference wall {ours['wall_s'] / ref['wall_s']:.2f}, "
                  f"peak VRAM {ours['peak_vram_gib'] / ref['peak_vram_gib']:.2f}, s/eval stage 1 "
                  f"{ours['s_per_eval'].get('1/2', 0) / max(ref['s_per_eval'].get('1/2', 1e-9), 1e-9):.2f}")
        off = results.get(f"ours official offload=blocks {precision}")
        on = results.get(f"ours official offload=none {precision}")
        if off and on:
            print(f"  {precision}: official with block offloading: wall x{off['wall_s'] / on['wall_s']:.2f}, "
                  f"peak VRAM {off['peak_vram_gib']:.1f} vs {on['peak_vram_gib']:.1f} GiB")
    rule = args.width * args.height * args.frames / 2e6 + 10
    for key, r in results.items():
        print(f"{key}: {r['wall_s']:.1f} s vs rule of thumb {rule:.0f} s -> ratio {r['wall_s'] / rule:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
