"""Where ltx-core 1.0.0 needs help: Gemma under transformers 5.x, machines without CUDA, meta tensors.

- ltx-core builds Gemma on the meta device from a hard-coded 12B config and fills it with raw
  checkpoint keys, then patches buffers by their transformers-4.x names (``rope_scaling``,
  ``vision_tower.vision_model``, ``rotary_emb_local``), which transformers 5.x renamed. We load Gemma
  with transformers' own ``from_pretrained`` instead (it maps checkpoint keys for the installed
  version, 4.5x and 5.x alike, and reads the folder's ``config.json``), or from ComfyUI's single file
  (:mod:`.gemma`), then wrap it in ltx-core's ``GemmaTextEncoder`` with ltx-core's tokenizer wrapper, so
  encoding and prompt enhancement are ltx-core's own code.
- The embeddings processor's feature extractor takes its input width from that hard-coded config too;
  we size it from the Gemma folder's config (identical for the real 12B model).
- ltx-pipelines calls ``torch.cuda.synchronize()`` unconditionally; :func:`cleanup_memory` only
  touches CUDA when the run is on a CUDA device.
- A missing checkpoint key leaves a parameter on the ``meta`` device without an error;
  :func:`assert_no_meta` turns that into one.

Imported only when a local run starts.
"""
from __future__ import annotations

import gc
import logging
import os
import tempfile

import torch

log = logging.getLogger(__name__)


def cleanup_memory(device: torch.device | str) -> None:
    gc.collect()
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def assert_no_meta(module: torch.nn.Module, what: str) -> None:
    """Raise if any parameter or buffer of `module` was never loaded (still on the meta device)."""
    missing = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise RuntimeError(f"{what}: {len(missing)} weights were not found in the model file ({shown}); "
                           "the file is incomplete or not an LTX-2.3 model")


def _find(root: str, name: str) -> str:
    for dirpath, _dirs, files in os.walk(root):
        if name in files:
            return dirpath
    raise FileNotFoundError(f"text_encoder: {name} not found under {root}; it must be a complete Hugging Face "
                            "Gemma 3 folder (config.json, tokenizer.model, preprocessor_config.json, weights)")


def gemma_folder(path: str) -> str:
    """The folder holding Gemma's config.json (the text_encoder path may be a parent of it)."""
    return _find(path, "config.json")


def load_text_encoder(path: str, device: torch.device | str, dtype: torch.dtype = torch.bfloat16):
    """ltx-core's ``GemmaTextEncoder`` around a Gemma 3 loaded by transformers (4.5x or 5.x), from a Hugging Face
    folder or from ComfyUI's single file (config, tokenizer and processor rebuilt by :mod:`.gemma`)."""
    if os.path.isfile(path):
        from . import gemma

        with tempfile.TemporaryDirectory(prefix="ltx-outpaint-gemma-") as folder:
            gemma.prepare_folder(path, folder)
            model = gemma.load_model(path, folder, device, dtype)
            return _wrap(model, folder, folder, dtype)
    from transformers import Gemma3ForConditionalGeneration

    folder = gemma_folder(path)
    device = torch.device(device)
    kwargs = {"dtype": dtype} if _transformers_major() >= 5 else {"torch_dtype": dtype}
    model = Gemma3ForConditionalGeneration.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=True,
                                                           device_map={"": str(device)}, **kwargs)
    return _wrap(model.eval(), _find(path, "tokenizer.model"), _find(path, "preprocessor_config.json"), dtype)


def _wrap(model, tokenizer_folder: str, processor_folder: str, dtype):
    from ltx_core.text_encoders.gemma.encoders.base_encoder import GemmaTextEncoder
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer
    from transformers import AutoImageProcessor, Gemma3Processor

    tokenizer = LTXVGemmaTokenizer(tokenizer_folder, 1024)
    image_processor = AutoImageProcessor.from_pretrained(processor_folder, local_files_only=True)
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer.tokenizer,
                                image_seq_length=int(getattr(model.config, "mm_tokens_per_image", 256)))
    encoder = GemmaTextEncoder(model=model, tokenizer=tokenizer, processor=processor, dtype=dtype)
    assert_no_meta(encoder, "text_encoder")
    return encoder


def language_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """Gemma's decoder layers (the blocks block offloading streams), under transformers 4.5x or 5.x names."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.endswith("layers") and "language_model" in name:
            return module
    raise ValueError("text_encoder: no language-model layers found in the Gemma model")


def gemma_text_dims(path: str) -> tuple[int, int]:
    """(hidden size, hidden-state count = layers + 1) of the Gemma folder's or single file's language model."""
    if os.path.isfile(path):
        from .gemma import text_dims

        return text_dims(path)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(gemma_folder(path), local_files_only=True)
    text = getattr(config, "text_config", config)
    return int(text.hidden_size), int(text.num_hidden_layers) + 1


def load_embeddings_processor(checkpoint: str, gemma_path: str, device: torch.device | str,
                              dtype: torch.dtype = torch.bfloat16, registry=None):
    """ltx-core's EmbeddingsProcessor (feature extractor + connectors) sized for this Gemma."""
    from ltx_core.loader import DummyRegistry, SingleGPUModelBuilder
    from ltx_core.text_encoders.gemma import EMBEDDINGS_PROCESSOR_KEY_OPS, EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.embeddings_connector import (AudioEmbeddings1DConnectorConfigurator,
                                                                   Embeddings1DConnectorConfigurator)
    from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1, FeatureExtractorV2

    hidden, states = gemma_text_dims(gemma_path)

    class Configurator:  # ltx-core's EmbeddingsProcessorConfigurator, with the Gemma dims from the folder
        @classmethod
        def from_config(cls, config: dict) -> EmbeddingsProcessor:
            tc = config.get("transformer", {})
            flat = hidden * states
            if tc.get("caption_proj_before_connector", False):
                extractor = FeatureExtractorV2(
                    video_aggregate_embed=torch.nn.Linear(flat, tc["num_attention_heads"] * tc["attention_head_dim"]),
                    embedding_dim=hidden,
                    audio_aggregate_embed=torch.nn.Linear(
                        flat, tc["audio_num_attention_heads"] * tc["audio_attention_head_dim"]))
            else:
                extractor = FeatureExtractorV1(aggregate_embed=torch.nn.Linear(flat, hidden, bias=False), is_av=True)
            return EmbeddingsProcessor(video_connector=Embeddings1DConnectorConfigurator.from_config(config),
                                       audio_connector=AudioEmbeddings1DConnectorConfigurator.from_config(config),
                                       feature_extractor=extractor)

    builder = SingleGPUModelBuilder(model_path=checkpoint, model_class_configurator=Configurator,
                                    model_sd_ops=EMBEDDINGS_PROCESSOR_KEY_OPS, registry=registry or DummyRegistry())
    model = builder.build(device=torch.device(device), dtype=dtype).to(device).eval()
    assert_no_meta(model, "embeddings processor")
    return model


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def enhance_prompt(encoder, prompt: str, image: torch.Tensor | None, seed: int, max_new_tokens: int = 512) -> str:
    """Gemma's prompt enhancement as ltx-core's ``GemmaTextEncoder.enhance_i2v`` / ``enhance_t2v`` do it,
    without their ``fork_rng(devices=[model.device])``, which calls into CUDA even for a CPU model."""
    from ltx_core.text_encoders.gemma.encoders.base_encoder import _pad_inputs_for_attention_alignment

    if image is not None:
        content = [{"type": "image"}, {"type": "text", "text": f"User Raw Input Prompt: {prompt}."}]
        system = encoder.default_gemma_i2v_system_prompt
    else:
        content, system = f"user prompt: {prompt}", encoder.default_gemma_t2v_system_prompt
    messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
    processor, model = encoder.processor, encoder.model
    text = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=text, images=image, return_tensors="pt").to(model.device)
    pad = processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None else 0
    inputs = _pad_inputs_for_attention_alignment(inputs, pad_token_id=pad)
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.inference_mode(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.7)
    return processor.tokenizer.decode(out[0][inputs.input_ids.shape[1]:], skip_special_tokens=True)


LEDGER_BUILDERS = {"transformer": "transformer_builder", "video_encoder": "vae_encoder_builder",
                   "video_decoder": "vae_decoder_builder", "audio_encoder": "audio_encoder_builder",
                   "audio_decoder": "audio_decoder_builder", "vocoder": "vocoder_builder",
                   "spatial_upsampler": "upsampler_builder"}


def ledger_model(ledger, name: str, what: str | None = None):
    """``getattr(ledger, name)()`` with missing weights reported by name. ltx-core's ledger moves a
    half-loaded model with ``.to(device)``, which fails with torch's "Cannot copy out of meta tensor";
    then the model is built again without moving it, to say which weights the file lacks."""
    what = what or name
    try:
        model = getattr(ledger, name)()
    except (NotImplementedError, RuntimeError) as exc:
        builder = getattr(ledger, LEDGER_BUILDERS.get(name, ""), None)
        if "meta tensor" not in str(exc) or builder is None:
            raise
        assert_no_meta(builder.build(device=torch.device("cpu")), what)
        raise
    assert_no_meta(model, what)
    return model
