"""Tiny random-weight LTX-2.3 models for the tests, built at test time (never committed).

Every component is instantiated with ltx-core's own configurators from a config dict (the same
architecture as LTX-2.3: audio+video transformer with gated attention and cross-attention AdaLN, video
VAE with 32x space / 8x time compression and 128 latent channels, audio VAE, vocoder with bandwidth
extension, embeddings connectors, 2x latent upsampler), only with 2 layers and a few channels. The
files are laid out like a ComfyUI models folder with the real file names, so model discovery, the
loader and the pipeline all run unchanged:

    checkpoints/ltx-2.3-22b-dev.safetensors, checkpoints/ltx-2.3-22b-distilled.safetensors
    latent_upscale_models/ltx-2.3-spatial-upscaler-x2-1.0.safetensors
    loras/ltx-2.3-22b-distilled-lora-384.safetensors, loras/ltx-2.3-22b-ic-lora-in-outpainting-0.9.safetensors,
    loras/user-av-lora.safetensors (video, audio and cross-modal entries)
    text_encoders/gemma-3-tiny/ (a Hugging Face Gemma 3 folder: config, sentencepiece tokenizer, processor)
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file

HEADS, HEAD_DIM = 2, 16
INNER = HEADS * HEAD_DIM  # video and audio stream width (heads equal, as LTX requires)

#: check_config_value() in ltx-core insists on these (the real checkpoints carry them).
FIXED = {"dropout": 0.0, "attention_bias": True, "num_vector_embeds": None, "activation_fn": "gelu-approximate",
         "num_embeds_ada_norm": 1000, "use_linear_projection": False, "only_cross_attention": False,
         "cross_attention_norm": True, "double_self_attention": False, "upcast_attention": False,
         "standardization_norm": "rms_norm", "norm_elementwise_affine": False, "qk_norm": "rms_norm",
         "positional_embedding_type": "rope", "use_audio_video_cross_attention": True, "share_ff": False,
         "av_cross_ada_norm": True, "use_middle_indices_grid": True}
TRANSFORMER = {
    **FIXED,
    "num_layers": 2, "num_attention_heads": HEADS, "attention_head_dim": HEAD_DIM,
    "audio_num_attention_heads": HEADS, "audio_attention_head_dim": HEAD_DIM,
    "in_channels": 128, "out_channels": 128, "audio_in_channels": 128, "audio_out_channels": 128,
    "cross_attention_dim": INNER, "audio_cross_attention_dim": INNER,
    # LTX-2.3 (22B) layout: projection before the connector, gated attention, cross-attention AdaLN
    "caption_proj_before_connector": True, "caption_projection_first_linear": False,
    "caption_proj_input_norm": False, "caption_projection_second_linear": False,
    "apply_gated_attention": True, "cross_attention_adaln": True, "rope_type": "split",
    "frequencies_precision": "float64", "av_ca_timestep_scale_multiplier": 1000,
    # the text connectors (heads x dim = cross-attention width; 128 learnable registers)
    "connector_num_attention_heads": HEADS, "connector_attention_head_dim": HEAD_DIM,
    "connector_num_layers": 1, "connector_num_learnable_registers": 128,
    "audio_connector_num_attention_heads": HEADS, "audio_connector_attention_head_dim": HEAD_DIM,
    "audio_connector_num_layers": 1, "audio_connector_num_learnable_registers": 128,
    "connector_apply_gated_attention": True, "audio_connector_apply_gated_attention": True,
}
VAE = {
    "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128, "patch_size": 4,
    "norm_layer": "pixel_norm", "latent_log_var": "uniform", "spatial_padding_mode": "zeros",
    "causal_decoder": False, "timestep_conditioning": False, "decoder_base_channels": 8,
    "encoder_blocks": [["res_x", {"num_layers": 1}], ["compress_all", {"multiplier": 2}],
                       ["compress_all", {"multiplier": 2}], ["compress_all", {"multiplier": 2}]],
    # res_x at both ends, as in the real decoder (ComfyUI detects the LTX video VAE by up_blocks.0.res_blocks)
    "decoder_blocks": [["res_x", {"num_layers": 1}], ["compress_all", {"multiplier": 2}],
                       ["compress_all", {"multiplier": 2}], ["compress_all", {"multiplier": 2}],
                       ["res_x", {"num_layers": 1}]],
}
AUDIO_VAE = {
    "model": {"params": {"sampling_rate": 16000, "ddconfig": {
        "ch": 128, "out_ch": 2, "in_channels": 2, "ch_mult": [1, 1, 1], "num_res_blocks": 1,
        "attn_resolutions": [], "resolution": 64, "z_channels": 8, "double_z": True, "mel_bins": 64,
        "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height"}}},
    "preprocessing": {"stft": {"hop_length": 160, "filter_length": 1024, "causal": True},
                      "mel": {"n_mel_channels": 64}},
}
VOCODER = {
    "vocoder": {"resblock": "AMP1", "stereo": True, "activation": "snakebeta", "upsample_rates": [4, 5, 2, 2, 2],
                "upsample_kernel_sizes": [8, 11, 4, 4, 4], "upsample_initial_channel": 64,
                "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]], "use_tanh_at_final": False},
    "bwe": {"resblock": "AMP1", "stereo": True, "activation": "snakebeta", "upsample_rates": [6, 5, 2, 2, 2],
            "upsample_kernel_sizes": [12, 11, 4, 4, 4], "upsample_initial_channel": 64, "resblock_kernel_sizes": [3],
            "resblock_dilation_sizes": [[1, 3, 5]], "input_sampling_rate": 16000, "output_sampling_rate": 48000,
            "n_fft": 512, "hop_length": 80, "num_mels": 64, "use_tanh_at_final": False},
}
UPSAMPLER = {"in_channels": 128, "mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3,
             "spatial_upsample": True, "temporal_upsample": False, "spatial_scale": 2.0}
GEMMA_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 32, "sliding_window": 1024, "max_position_embeddings": 131072}
#: Gemma 3 12B's architecture values that shapes do not carry (RoPE, local RoPE, scaling), so that the tiny model's
#: ComfyUI single file loads into the same model as its folder (nodes/local/ltxcore/gemma.py GEMMA3_FIXED)
GEMMA_ROPE = {"rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
              "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
#: SigLIP tower: head size 72 as in Gemma 3 12B's (1152 / 16), so a loader can infer the head count from shapes
GEMMA_VISION = {"hidden_size": 144, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                "image_size": 224, "patch_size": 14}
#: the SentencePiece vocabulary (the ComfyUI single file embeds it; the model's embedding covers it)
SPM_VOCAB = 256
SPECIAL_TOKENS = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]


@dataclass(frozen=True)
class TinyModels:
    root: str  # a ComfyUI-style models folder
    dev: str
    distilled: str
    upsampler: str
    gemma: str  # Hugging Face folder
    comfy_gemma: str  # the same model as one ComfyUI file (text_encoders/gemma_3_12B_it.safetensors)
    distilled_lora: str
    ic_lora: str
    user_lora: str


def _init_(module: torch.nn.Module, seed: int, device: str = "cpu") -> None:
    """Random weights for a model built on the meta device (norm scales 1, VAE statistics mean 0 / std 1)."""
    g = torch.Generator(device=device).manual_seed(seed)
    module.to_empty(device=device)
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        with torch.no_grad():
            if "std-of-means" in name or re.search(r"(^|\.)(norm\w*|scale)\.weight$", name) and t.dim() == 1:
                t.copy_(torch.ones_like(t))
            elif "mean-of-means" in name:
                t.copy_(torch.zeros_like(t))
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g, device=device) * (0.02 if t.dim() > 1 else 0.01))
            else:
                t.zero_()


def _state(configurator, config: dict, seed: int, prefix: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        model = configurator.from_config(config)
    _init_(model, seed, device)
    out = {prefix + k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in model.state_dict().items()}
    del model
    return out


def write_checkpoint(path: str, seed: int, config: dict | None = None, gemma_text: dict | None = None,
                     device: str = "cpu") -> None:
    """An LTX-2.3-layout single-file checkpoint with random weights (`config`: transformer / vae /
    audio_vae / vocoder sections, default the tiny one; `gemma_text` sizes the text projection)."""
    from ltx_core.model.audio_vae import AudioDecoderConfigurator, AudioEncoderConfigurator, VocoderConfigurator
    from ltx_core.model.transformer import LTXModelConfigurator
    from ltx_core.model.video_vae import VideoDecoderConfigurator, VideoEncoderConfigurator
    from ltx_core.text_encoders.gemma.embeddings_connector import (AudioEmbeddings1DConnectorConfigurator,
                                                                   Embeddings1DConnectorConfigurator)

    config = config or {"transformer": TRANSFORMER, "vae": VAE, "audio_vae": AUDIO_VAE, "vocoder": VOCODER}
    gemma_text = gemma_text or GEMMA_TEXT
    tc = config["transformer"]
    sd: dict[str, torch.Tensor] = {}
    sd.update(_state(LTXModelConfigurator, config, seed, "model.diffusion_model.", device))
    sd.update(_state(VideoEncoderConfigurator, config, seed + 1, "vae.encoder."))
    dec = _state(VideoDecoderConfigurator, config, seed + 2, "vae.decoder.")
    sd.update({k: v for k, v in dec.items() if "per_channel_statistics" not in k})
    for k in [k for k in sd if k.startswith("vae.encoder.per_channel_statistics.")]:
        sd["vae.per_channel_statistics." + k.rsplit(".", 1)[1]] = sd.pop(k)
    sd.update(_state(AudioEncoderConfigurator, config, seed + 3, "audio_vae.encoder."))
    adec = _state(AudioDecoderConfigurator, config, seed + 4, "audio_vae.decoder.")
    sd.update({k: v for k, v in adec.items() if "per_channel_statistics" not in k})
    for k in [k for k in sd if k.startswith("audio_vae.encoder.per_channel_statistics.")]:
        sd["audio_vae.per_channel_statistics." + k.rsplit(".", 1)[1]] = sd.pop(k)
    sd.update(_state(VocoderConfigurator, config, seed + 5, "vocoder."))
    sd.update(_state(Embeddings1DConnectorConfigurator, config, seed + 6,
                     "model.diffusion_model.video_embeddings_connector."))
    sd.update(_state(AudioEmbeddings1DConnectorConfigurator, config, seed + 7,
                     "model.diffusion_model.audio_embeddings_connector."))
    g = torch.Generator().manual_seed(seed + 8)
    flat = gemma_text["hidden_size"] * (gemma_text["num_hidden_layers"] + 1)
    widths = {"video_aggregate_embed": tc["num_attention_heads"] * tc["attention_head_dim"],
              "audio_aggregate_embed": tc["audio_num_attention_heads"] * tc["audio_attention_head_dim"]}
    for name, width in widths.items():
        sd[f"text_embedding_projection.{name}.weight"] = (torch.randn(width, flat, generator=g) * 0.05).to(torch.bfloat16)
        sd[f"text_embedding_projection.{name}.bias"] = torch.zeros(width, dtype=torch.bfloat16)
    save_file(sd, path, metadata={"config": json.dumps(config), "model_version": "2.3.0"})


def write_upsampler(path: str, config: dict | None = None) -> None:
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator

    config = config or UPSAMPLER
    sd = _state(LatentUpsamplerConfigurator, config, 11, "")
    save_file(sd, path, metadata={"config": json.dumps(config)})



def write_lora(path: str, base: str, seed: int, keep, rank: int = 4, metadata: dict | None = None) -> None:
    """A LoRA over every 2-D linear weight of the base transformer that `keep(key)` accepts."""
    from safetensors import safe_open

    g = torch.Generator().manual_seed(seed)
    sd = {}
    with safe_open(base, framework="pt") as f:
        for key in f.keys():
            if not key.startswith("model.diffusion_model.transformer_blocks.") or not key.endswith(".weight"):
                continue
            shape = f.get_slice(key).get_shape()
            if len(shape) != 2 or not keep(key):
                continue
            stem = "diffusion_model." + key[len("model.diffusion_model."):-len(".weight")]
            sd[stem + ".lora_A.weight"] = (torch.randn(rank, shape[1], generator=g) * 0.5).to(torch.bfloat16)
            sd[stem + ".lora_B.weight"] = (torch.randn(shape[0], rank, generator=g) * 0.5).to(torch.bfloat16)
    save_file(sd, path, metadata=metadata or {})


def write_gemma(folder: str) -> None:
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    os.makedirs(folder, exist_ok=True)
    corpus = os.path.join(folder, "corpus.txt")
    words = ("a wide meadow at dawn with trees and a river the camera pans slowly over hills under a blue sky "
             "people walk along the beach in warm light waves city street at night neon rain describe scene "
             "video outpaint prompt user system model image style cinematic soft focus audio sound music")
    with open(corpus, "w") as f:
        for i in range(200):
            f.write(" ".join(words.split()[i % 7:]) + "\n")
    # tokenizer.model (sentencepiece; ltx-core locates the tokenizer folder by it) and tokenizer.json
    # (what transformers loads, as in the real Gemma repository: no slow-tokenizer conversion needed)
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(folder, "tokenizer"), vocab_size=SPM_VOCAB, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, user_defined_symbols=SPECIAL_TOKENS, character_coverage=1.0,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        # as Gemma 3's own tokenizer.model: no dummy prefix, text kept as is
        add_dummy_prefix=False, normalization_rule_name="identity", remove_extra_whitespaces=False,
        minloglevel=2)
    with open(corpus) as f:
        lines = f.read().splitlines()
    os.unlink(corpus)
    os.unlink(os.path.join(folder, "tokenizer.vocab"))
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=256, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", *SPECIAL_TOKENS], show_progress=False))
    tok.save(os.path.join(folder, "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    vocab_size = max(tok.get_vocab_size(), SPM_VOCAB)
    template = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
                "else 'user' }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in "
                "m['content'] %}{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] }}{% endif %}"
                "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}"
                "<start_of_turn>model\n{% endif %}")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GemmaTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>",
                   "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
                   "chat_template": template,
                   "extra_special_tokens": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                            "image_token": "<image_soft_token>"}}, f)
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
                   "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                   "image_token": "<image_soft_token>"}, f)
    side = GEMMA_VISION["image_size"]
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
                   "do_resize": True, "size": {"height": side, "width": side}, "do_rescale": True,
                   "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
                   "image_std": [0.5, 0.5, 0.5], "resample": 2, "do_convert_rgb": True,
                   "do_pan_and_scan": False}, f)
    patches = (side // GEMMA_VISION["patch_size"]) ** 2
    config = Gemma3Config(
        text_config={**GEMMA_TEXT, **GEMMA_ROPE, "vocab_size": vocab_size,
                     "query_pre_attn_scalar": GEMMA_TEXT["head_dim"]},
        vision_config={**GEMMA_VISION, "model_type": "siglip_vision_model", "vision_use_head": False},
        mm_tokens_per_image=patches,
        image_token_index=ids["<image_soft_token>"], boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], pad_token_id=0, bos_token_id=2, eos_token_id=1)
    torch.manual_seed(21)
    model = Gemma3ForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    gen = os.path.join(folder, "generation_config.json")
    with open(gen, "w") as f:
        json.dump({"bos_token_id": 2, "eos_token_id": [1, ids["<end_of_turn>"]], "pad_token_id": 0}, f)


#: HF Gemma 3 key prefixes (transformers 4.x and 5.x) -> the ComfyUI single-file layout (Comfy-Org/ltx-2
#: split_files/text_encoders/gemma_3_12B_it*.safetensors): language model under model.*, SigLIP under
#: vision_model.*, the projector under multi_modal_projector.*, no lm_head (tied embeddings).
COMFY_GEMMA_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."),
                        ("model.vision_tower.vision_model.", "vision_model."),
                        ("vision_tower.vision_model.", "vision_model."), ("model.vision_tower.", "vision_model."),
                        ("vision_tower.", "vision_model."), ("model.multi_modal_projector.", "multi_modal_projector."))


def write_comfy_gemma(hf_folder: str, path: str) -> dict:
    """The tiny Gemma of `hf_folder` as ONE file in ComfyUI's layout, its SentencePiece tokenizer embedded
    as the uint8 tensor `spiece_model` (what core's LTXAVTextEncoderLoader reads). Returns the sizes a
    test-only patch of core's hard-coded Gemma 3 12B config needs (also written to <path>.json)."""
    import glob

    from safetensors.torch import load_file

    sd = {}
    for f in sorted(glob.glob(os.path.join(hf_folder, "*.safetensors"))):
        sd.update(load_file(f))
    out = {}
    for key, value in sd.items():
        for old, new in COMFY_GEMMA_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        if key != "lm_head.weight":
            out[key] = value
    with open(os.path.join(hf_folder, "tokenizer.model"), "rb") as f:
        out["spiece_model"] = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
    save_file(out, path)
    with open(os.path.join(hf_folder, "config.json")) as f:
        cfg = json.load(f)
    sizes = {"text": {k: cfg["text_config"][k] for k in (*GEMMA_TEXT, "vocab_size")},
             "vision": dict(GEMMA_VISION), "mm_tokens_per_image": cfg["mm_tokens_per_image"],
             "transformer": {"video": TRANSFORMER["num_attention_heads"] * TRANSFORMER["attention_head_dim"],
                             "audio": TRANSFORMER["audio_num_attention_heads"]
                             * TRANSFORMER["audio_attention_head_dim"]}}
    with open(path + ".json", "w") as f:
        json.dump(sizes, f, indent=1)
    return sizes


def build_tiny_models(root: str) -> TinyModels:
    """Write the tiny models tree under `root` (a few seconds; deterministic)."""
    from ltx_outpaint.local.lora_targets import stream_of

    dirs = {k: os.path.join(root, k) for k in ("checkpoints", "loras", "latent_upscale_models", "text_encoders")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    m = TinyModels(
        root=root,
        dev=os.path.join(dirs["checkpoints"], "ltx-2.3-22b-dev.safetensors"),
        distilled=os.path.join(dirs["checkpoints"], "ltx-2.3-22b-distilled.safetensors"),
        upsampler=os.path.join(dirs["latent_upscale_models"], "ltx-2.3-spatial-upscaler-x2-1.0.safetensors"),
        gemma=os.path.join(dirs["text_encoders"], "gemma-3-tiny"),
        comfy_gemma=os.path.join(dirs["text_encoders"], "gemma_3_12B_it.safetensors"),
        distilled_lora=os.path.join(dirs["loras"], "ltx-2.3-22b-distilled-lora-384.safetensors"),
        ic_lora=os.path.join(dirs["loras"], "ltx-2.3-22b-ic-lora-in-outpainting-0.9.safetensors"),
        user_lora=os.path.join(dirs["loras"], "user-av-lora.safetensors"),
    )
    write_checkpoint(m.dev, 1)
    write_checkpoint(m.distilled, 100)
    write_upsampler(m.upsampler)
    write_gemma(m.gemma)
    write_comfy_gemma(m.gemma, m.comfy_gemma)
    video_only = lambda k: stream_of(k.removeprefix("model.")) == "video"  # noqa: E731
    write_lora(m.distilled_lora, m.dev, 31, video_only)
    write_lora(m.ic_lora, m.dev, 32, video_only, metadata={"reference_downscale_factor": "1"})
    write_lora(m.user_lora, m.dev, 33, lambda k: True)
    return m


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    """Tiny LTX-2.3 models (ltx-core required: skipped without it, except under CI=true)."""
    try:
        import ltx_core  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"ltx-core is not installed ({exc}); CI must test the local backend", pytrace=False)
        pytest.skip(f"ltx-core not installed: {exc}")
    return build_tiny_models(str(tmp_path_factory.mktemp("tiny_ltx")))


# -- the files ComfyUI users have, in their quantized and nested forms --------------------------------
FP8_MAX = 448.0
#: ComfyUI 0.20.1 from the vendored tarball (see ../shared/vendor/README.md): its comfy/float.py is the reference
#: nvfp4 quantizer (our reader must read what ComfyUI writes)
COMFYUI_TARBALL = os.environ.get("LTX_OUTPAINT_COMFYUI_TARBALL") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "vendor",
    "comfyui-0.20.1.tar.gz")


def _fp8_scaled(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI's per-tensor absmax fp8 (QUANTIZATION.md): scale = amax / 448, q = (w / scale) in e4m3."""
    w = w.float()
    scale = (w.abs().max() / FP8_MAX).clamp(min=1e-12)
    return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale.reshape(()).float()


def write_scaled_fp8_checkpoint(src: str, dst: str, layer_filter=None) -> list[str]:
    """`src` (an LTX-2.3 single file) with its transformer-block Linear weights in per-tensor scaled fp8, the way
    ComfyUI stores them (``<layer>.weight`` e4m3, ``<layer>.weight_scale`` / ``.input_scale`` float32 scalars,
    ``_quantization_metadata`` naming each layer's format). Returns the quantized layers."""
    from safetensors import safe_open

    layers = []
    out = {}
    with safe_open(src, framework="pt") as f:
        meta = dict(f.metadata() or {})
        for key in f.keys():
            t = f.get_tensor(key)
            blocks = key.startswith("model.diffusion_model.transformer_blocks.")
            if blocks and key.endswith(".weight") and t.dim() == 2 and (layer_filter is None or layer_filter(key)):
                layer = key[: -len(".weight")]
                out[key], out[layer + ".weight_scale"] = _fp8_scaled(t)
                out[layer + ".input_scale"] = torch.tensor(1.0)
                layers.append(layer)
            else:
                out[key] = t
    meta["_quantization_metadata"] = json.dumps({"format_version": "1.0",
                                                 "layers": {k: {"format": "float8_e4m3fn"} for k in layers}})
    save_file(out, dst, metadata=meta)
    return layers


def _gemma_linear(key: str) -> bool:
    return key.startswith("model.layers.") and key.endswith("_proj.weight")


def write_gemma_fp8_scaled(src: str, dst: str) -> list[str]:
    """The single-file Gemma at `src` as ComfyUI's older ``_fp8_scaled`` text encoders: a ``scaled_fp8`` marker
    tensor, language-model Linear weights in e4m3 with ``<layer>.scale_weight`` (comfy/utils.py
    convert_old_quants reads this layout). Returns the quantized layers."""
    from safetensors.torch import load_file

    sd = load_file(src)
    layers = []
    for key in [k for k in sd if _gemma_linear(k)]:
        layer = key[: -len(".weight")]
        sd[key], sd[layer + ".scale_weight"] = _fp8_scaled(sd[key])
        layers.append(layer)
    sd["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    save_file(sd, dst)
    return layers


def comfy_float_module():
    """ComfyUI 0.20.1's comfy/float.py (imports only torch), extracted from the vendored tarball into a temporary
    folder and imported from there; None without the tarball."""
    import importlib.util
    import tarfile
    import tempfile

    extracted = os.path.join(os.environ.get("LTX_OUTPAINT_COMFYUI_CURRENT_DIR", ""), "comfy", "float.py")
    if os.path.isfile(extracted):  # the ComfyUI 0.20.1 that .ci/run extracted from the tarball
        spec = importlib.util.spec_from_file_location("comfy_float_0_20_1", extracted)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if not os.path.isfile(COMFYUI_TARBALL):
        return None
    with tarfile.open(COMFYUI_TARBALL) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("comfy/float.py")), None)
        if member is None:
            return None
        folder = tempfile.mkdtemp(prefix="comfyui-0.20.1-float-")
        path = os.path.join(folder, "comfy_float_0_20_1.py")
        with open(path, "wb") as f:
            f.write(tar.extractfile(member).read())
    spec = importlib.util.spec_from_file_location("comfy_float_0_20_1", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_gemma_fp4_mixed(src: str, dst: str) -> dict[str, str]:
    """The single-file Gemma at `src` as ComfyUI's ``_fp4_mixed``: MLP Linear weights in nvfp4 (quantized by
    ComfyUI's own comfy/float.py: uint8 pairs of E2M1, e4m3 block scales in cuBLAS' swizzled layout as
    ``weight_scale``, the float32 per-tensor scale as ``weight_scale_2``), attention Linear weights in scaled fp8,
    the rest bf16, per-layer formats in ``_quantization_metadata``. Returns layer -> format."""
    from safetensors.torch import load_file

    comfy_float = comfy_float_module()
    if comfy_float is None:
        raise FileNotFoundError(f"{COMFYUI_TARBALL} (ComfyUI 0.20.1) is needed to write an nvfp4 file")
    sd = load_file(src)
    formats = {}
    for key in [k for k in sd if _gemma_linear(k)]:
        layer = key[: -len(".weight")]
        w = sd[key].float()
        if ".mlp." in key:
            per_tensor = (w.abs().max() / (FP8_MAX * 6.0)).float()
            q, block = comfy_float.stochastic_round_quantize_nvfp4(w, per_tensor, pad_16x=False, seed=1)
            sd[key], sd[layer + ".weight_scale"], sd[layer + ".weight_scale_2"] = q, block, per_tensor.reshape(())
            formats[layer] = "nvfp4"
        else:
            sd[key], sd[layer + ".weight_scale"] = _fp8_scaled(w)
            formats[layer] = "float8_e4m3fn"
    save_file(sd, dst, metadata={"_quantization_metadata": json.dumps(
        {"format_version": "1.0", "layers": {k: {"format": v} for k, v in formats.items()}})})
    return formats


def nested_models_tree(models: TinyModels, root: str, subdir: str = os.path.join("ltxv", "ltx2")) -> str:
    """A models folder (links to `models`' files) laid out as Lightricks' workflow expects: the distilled and the
    IC-LoRA under ``loras/ltxv/ltx2/``, the Gemma single file only (no Hugging Face folder), no upsampler."""
    for kind in ("checkpoints", "loras", "text_encoders"):
        os.makedirs(os.path.join(root, kind), exist_ok=True)
    deep = os.path.join(root, "loras", subdir)
    os.makedirs(deep, exist_ok=True)
    links = {models.dev: os.path.join(root, "checkpoints", os.path.basename(models.dev)),
             models.distilled_lora: os.path.join(deep, os.path.basename(models.distilled_lora)),
             models.ic_lora: os.path.join(deep, os.path.basename(models.ic_lora)),
             models.comfy_gemma: os.path.join(root, "text_encoders", os.path.basename(models.comfy_gemma))}
    for src, dst in links.items():
        if not os.path.exists(dst):
            os.symlink(src, dst)
    return root
