"""Gemma 3 from ComfyUI's single file (``text_encoders/gemma_3_12B_it*.safetensors``) for transformers.

The single file (Comfy-Org/ltx-2 ``split_files/text_encoders``; Lightricks' outpaint workflow names it
``comfy_gemma_3_12B_it.safetensors``) holds the language model under ``model.*``, the SigLIP tower under
``vision_model.*``, the projector under ``multi_modal_projector.*`` and the SentencePiece tokenizer as the uint8
tensor ``spiece_model``; it has no config. Here:

- the transformers config is inferred from tensor shapes (hidden sizes, layer counts, head size from ``q_norm``,
  heads from ``q_proj`` / head size, vision heads = hidden / 72, image size from the position table) plus Gemma 3
  12B's fixed architecture values (:data:`GEMMA3_FIXED`: RoPE 1e6 global with linear scaling 8 / 1e4 local,
  sliding window 1024 on 5 of every 6 layers, 256 image tokens, ...), the same values ComfyUI core hard-codes in
  ``comfy/text_encoders/llama.py`` ``Gemma3_12B_Config``;
- the tokenizer is rebuilt from the embedded SentencePiece model with the ``sentencepiece`` package (no protobuf):
  a ``tokenizers`` BPE with the model's pieces, merges ordered by piece score, byte fallback, its user-defined
  pieces (``<start_of_turn>``, ...) as added tokens, and a Gemma 3 chat template (tested token for token against
  ``sentencepiece``'s own encoding);
- quantized variants (``_fp8_scaled``: per-tensor scaled fp8; ``_fp4_mixed``: nvfp4 + fp8) are dequantized while
  loading (:mod:`.quant`).

:func:`prepare_folder` writes the tokenizer / processor / config files to a folder so the Hugging Face folder
code path (ltx-core's tokenizer wrapper, ``Gemma3Processor``) loads them unchanged; :func:`load_model` builds
``Gemma3ForConditionalGeneration`` with the file's weights.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re

import torch

from .quant import QuantFormatError, QuantizedSafetensors

log = logging.getLogger(__name__)

SPIECE_KEY = "spiece_model"
VISION_HEAD_DIM = 72  # SigLIP-So400m in Gemma 3: 1152 / 16
#: Gemma 3 12B's architecture values that tensor shapes do not carry (HF google/gemma-3-12b-it config.json;
#: ComfyUI 0.20.1 comfy/text_encoders/llama.py Gemma3_12B_Config: rope_theta [1e6, 1e4], rope_scale [8, 1],
#: sliding_attention [1024]*5 + [False], mm_tokens_per_image 256).
GEMMA3_FIXED = {
    "text": {"rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
             "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "sliding_window": 1024,
             "sliding_window_pattern": 6, "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
             "hidden_activation": "gelu_pytorch_tanh", "attention_bias": False, "final_logit_softcapping": None,
             "attn_logit_softcapping": None},
    "vision": {"layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh", "num_channels": 3},
    "mm_tokens_per_image": 256,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
}
SPECIAL = {"boi": "<start_of_image>", "eoi": "<end_of_image>", "image": "<image_soft_token>",
           "sot": "<start_of_turn>", "eot": "<end_of_turn>"}
#: Gemma 3's chat format (our own template): a system message is put before the first user turn's text.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(prefix='') %}"
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{% set ns.prefix = (m['content'] if m['content'] is string else m['content'][0]['text']) + '\n\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['role'] == 'user' %}{{ ns.prefix }}{% set ns.prefix = '' %}{% endif %}"
    "{% if m['content'] is string %}{{ m['content'] | trim }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<start_of_image>{% elif c['type'] == 'text' %}{{ c['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


class GemmaFileError(ValueError):
    pass


def is_single_file(path: str) -> bool:
    return os.path.isfile(path)


def _layers(keys, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pat.match(k))}
    return max(found) + 1 if found else 0


def infer_config(qs: QuantizedSafetensors) -> dict:
    """Gemma3Config kwargs from the single file's shapes and Gemma 3 12B's fixed values."""
    keys = set(qs.keys())
    need = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_norm.weight",
            "vision_model.embeddings.patch_embedding.weight", "multi_modal_projector.mm_input_projection_weight"]
    lacking = [k for k in need if k not in keys]
    if lacking or SPIECE_KEY not in qs._names:
        raise GemmaFileError(f"text_encoder: {os.path.basename(qs.path)} is not a ComfyUI Gemma 3 single file "
                             f"(lacks {', '.join(lacking + ([] if SPIECE_KEY in qs._names else [SPIECE_KEY]))}); "
                             "use gemma_3_12B_it.safetensors from https://huggingface.co/Comfy-Org/ltx-2 "
                             "(split_files/text_encoders)")
    vocab, hidden = qs.shape("model.embed_tokens.weight")
    head_dim = qs.shape("model.layers.0.self_attn.q_norm.weight")[0]
    heads = qs.shape("model.layers.0.self_attn.q_proj.weight")[0] // head_dim
    kv_heads = qs.shape("model.layers.0.self_attn.k_proj.weight")[0] // head_dim
    inter = qs.shape("model.layers.0.mlp.gate_proj.weight")[0]
    v_hidden, _, patch, _ = qs.shape("vision_model.embeddings.patch_embedding.weight")
    positions = qs.shape("vision_model.embeddings.position_embedding.weight")[0]
    v_inter = qs.shape("vision_model.encoder.layers.0.mlp.fc1.weight")[0]
    fixed = GEMMA3_FIXED["text"]
    text = {**fixed, "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": inter,
            "num_hidden_layers": _layers(keys, "model.layers."), "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "head_dim": head_dim, "query_pre_attn_scalar": head_dim}
    vision = {**GEMMA3_FIXED["vision"], "model_type": "siglip_vision_model", "hidden_size": v_hidden,
              "intermediate_size": v_inter, "num_hidden_layers": _layers(keys, "vision_model.encoder.layers."),
              "num_attention_heads": max(1, v_hidden // VISION_HEAD_DIM), "patch_size": patch,
              "image_size": int(round(math.sqrt(positions))) * patch,
              "vision_use_head": any(k.startswith("vision_model.head.") for k in keys)}
    return {"text_config": text, "vision_config": vision, "mm_tokens_per_image": GEMMA3_FIXED["mm_tokens_per_image"]}


# -- tokenizer ---------------------------------------------------------------------------------------
def _spm(qs: QuantizedSafetensors):
    import sentencepiece as spm

    data = bytes(qs.raw(SPIECE_KEY).to(torch.uint8).numpy().tobytes())
    return spm.SentencePieceProcessor(model_proto=data)


def _user_defined(sp, i: int) -> bool:
    """User-defined pieces (atomic in SentencePiece) have a score of +0.0; BPE merges score -rank (<= -0.0)."""
    score = sp.GetScore(i)
    return (score == 0.0 and math.copysign(1.0, score) > 0 and not sp.IsControl(i) and not sp.IsUnknown(i)
            and not sp.IsByte(i) and not sp.IsUnused(i) and len(sp.IdToPiece(i)) > 1)


def build_tokenizer(sp):
    """(tokenizers.Tokenizer, token ids by name) equivalent to the SentencePiece BPE model `sp`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    size = sp.GetPieceSize()
    pieces = [sp.IdToPiece(i) for i in range(size)]
    vocab = {p: i for i, p in enumerate(pieces)}
    atomic = {i for i in range(size) if sp.IsControl(i) or sp.IsUnknown(i) or _user_defined(sp, i)}
    # merges: every split of a normal piece into two known pieces, ordered by the piece's score (best first),
    # ties by the pieces' ids (how SentencePiece BPE ranks them)
    ranked = []
    for i, piece in enumerate(pieces):
        if i in atomic or sp.IsByte(i) or len(piece) < 2:
            continue
        splits = [(vocab[piece[:k]], vocab[piece[k:]]) for k in range(1, len(piece))
                  if piece[:k] in vocab and piece[k:] in vocab]
        ranked += [(-sp.GetScore(i), left, right) for left, right in sorted(splits)]
    ranked.sort()
    merges = [(pieces[left], pieces[right]) for _, left, right in ranked]
    byte_fallback = any(sp.IsByte(i) for i in range(size))
    unk = pieces[sp.unk_id()] if sp.unk_id() >= 0 else None
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=byte_fallback))
    # SentencePiece's dummy prefix ("a" -> "\u2581a") only at the start of the text, not after special tokens;
    # spaces are "\u2581" in the pieces (Gemma 3's own model has no dummy prefix)
    dummy_prefix = sp.encode("a", out_type=str)[:1] == ["\u2581a"]
    scheme = "first" if dummy_prefix else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=False)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="\u2581",
                                                                                 prepend_scheme=scheme, split=False)])
    tok.add_special_tokens([AddedToken(pieces[i], special=True, normalized=False) for i in sorted(atomic)])
    ids = {"bos": sp.bos_id(), "eos": sp.eos_id(), "pad": sp.pad_id() if sp.pad_id() >= 0 else sp.eos_id(),
           "unk": sp.unk_id()}
    for name, text in SPECIAL.items():
        if text in vocab:
            ids[name] = vocab[text]
    if "image" not in ids:  # Gemma 3 12B: <image_soft_token> is an added token right after the SentencePiece ids
        tok.add_special_tokens([AddedToken(SPECIAL["image"], special=True, normalized=False)])
        ids["image"] = tok.token_to_id(SPECIAL["image"])
    missing = [SPECIAL[n] for n in ("boi", "eoi", "sot", "eot") if n not in ids]
    if missing:
        raise GemmaFileError(f"text_encoder: the embedded tokenizer lacks {', '.join(missing)}; not a Gemma 3 file")
    bos = pieces[ids["bos"]]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, ids["bos"])])
    return tok, ids


def prepare_folder(path: str, folder: str) -> dict:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json, preprocessor_config.json,
    processor_config.json and config.json for the single file at `path` into `folder`; returns the config."""
    os.makedirs(folder, exist_ok=True)
    with QuantizedSafetensors(path) as qs:
        config = infer_config(qs)
        sp = _spm(qs)
    tok, ids = build_tokenizer(sp)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:  # ltx-core locates the folder by this name
        f.write(sp.serialized_model_proto())
    pieces = {name: tok.id_to_token(i) for name, i in ids.items()}
    special = {"bos_token": pieces["bos"], "eos_token": pieces["eos"], "pad_token": pieces["pad"],
               "unk_token": pieces["unk"], "boi_token": pieces["boi"], "eoi_token": pieces["eoi"],
               "image_token": pieces["image"]}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **{k: special[k] for k in
                   ("bos_token", "eos_token", "pad_token", "unk_token")}, "add_bos_token": True,
                   "add_eos_token": False, "chat_template": CHAT_TEMPLATE,
                   "extra_special_tokens": {k: special[k] for k in ("boi_token", "eoi_token", "image_token")}}, f)
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(special, f)
    side = config["vision_config"]["image_size"]
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
                   "do_resize": True, "size": {"height": side, "width": side}, "do_rescale": True,
                   "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": GEMMA3_FIXED["image_mean"],
                   "image_std": GEMMA3_FIXED["image_std"], "resample": 2, "do_convert_rgb": True,
                   "do_pan_and_scan": False, "image_seq_length": config["mm_tokens_per_image"]}, f)
    with open(os.path.join(folder, "processor_config.json"), "w") as f:
        json.dump({"processor_class": "Gemma3Processor", "image_seq_length": config["mm_tokens_per_image"]}, f)
    full = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"], **config,
            "boi_token_index": ids["boi"], "eoi_token_index": ids["eoi"], "image_token_index": ids["image"],
            "pad_token_id": ids["pad"], "bos_token_id": ids["bos"], "eos_token_id": [ids["eos"], ids["eot"]]}
    full["text_config"] = {**full["text_config"], "model_type": "gemma3_text", "pad_token_id": ids["pad"],
                           "bos_token_id": ids["bos"], "eos_token_id": ids["eos"]}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(full, f, indent=1)
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": ids["bos"], "eos_token_id": [ids["eos"], ids["eot"]], "pad_token_id": ids["pad"]},
                  f)
    return full


# -- weights -----------------------------------------------------------------------------------------
#: the model's own key prefixes (transformers 4.5x and 5.x) -> the single file's
_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."),
             ("model.vision_tower.vision_model.", "vision_model."), ("vision_tower.vision_model.", "vision_model."),
             ("model.vision_tower.", "vision_model."), ("vision_tower.", "vision_model."),
             ("model.multi_modal_projector.", "multi_modal_projector."),
             ("multi_modal_projector.", "multi_modal_projector."))


def file_key(model_key: str) -> str | None:
    if model_key == "lm_head.weight":
        return "model.embed_tokens.weight"  # tied embeddings: the file has no lm_head
    for mine, theirs in _PREFIXES:
        if model_key.startswith(mine):
            return theirs + model_key[len(mine):]
    return None


@contextlib.contextmanager
def _parameters_on_meta():
    """Build modules with their parameters on the meta device but real buffers (rotary tables, scales)."""
    original = torch.nn.Module.register_parameter

    def register(module, name, param):
        original(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


def load_model(path: str, folder: str, device: torch.device | str, dtype: torch.dtype = torch.bfloat16):
    """Gemma3ForConditionalGeneration with the single file's weights (dequantized to `dtype`) on `device`."""
    from transformers import AutoConfig, Gemma3ForConditionalGeneration

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with _parameters_on_meta():
        model = Gemma3ForConditionalGeneration(config)
    device = torch.device(device)
    state, loaded = {}, {}
    missing = []
    with QuantizedSafetensors(path) as qs:
        names = set(qs.keys())
        if qs.quantized:
            kinds = sorted(set(qs.formats.values()))
            log.info("text_encoder: dequantizing %d %s layers of %s", len(qs.formats), "/".join(kinds),
                     os.path.basename(path))
        for key, param in model.state_dict(keep_vars=True).items():
            if not param.is_meta:
                continue
            src = file_key(key)
            if src is None or src not in names:
                missing.append(key)
                continue
            if src not in loaded:
                try:
                    loaded[src] = qs.get(src, dtype=dtype if param.is_floating_point() else None, device=device)
                except QuantFormatError as exc:
                    raise GemmaFileError(f"text_encoder: {exc}. Use the bf16 gemma_3_12B_it.safetensors (or "
                                         "gemma_3_12B_it_fp8_scaled.safetensors) from https://huggingface.co/"
                                         "Comfy-Org/ltx-2 (split_files/text_encoders)") from exc
            state[key] = loaded[src]  # lm_head and embed_tokens share one tensor (tied)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise GemmaFileError(f"text_encoder: {os.path.basename(path)} lacks {len(missing)} Gemma 3 weights "
                             f"({shown}); the file is incomplete or not a Gemma 3 text encoder")
    model.load_state_dict(state, strict=False, assign=True)
    del state, loaded
    for name, buf in list(model.named_buffers()):
        owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        owner._buffers[name.rsplit(".", 1)[-1]] = buf.to(device)
    return model.eval()


def text_dims(path: str) -> tuple[int, int]:
    """(hidden size, hidden-state count = layers + 1) of the single file's language model."""
    with QuantizedSafetensors(path) as qs:
        hidden = qs.shape("model.embed_tokens.weight")[1]
        return int(hidden), _layers(set(qs.keys()), "model.layers.") + 1
