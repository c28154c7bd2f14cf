"""TEST-ONLY custom-node pack for the native-engine tests. It never ships with the pack.

Loaded only by the tests (they link it into a test server's custom_nodes/ and set its environment):
- LTX_OUTPAINT_TEST_TINY_GEMMA = the sizes file tests/tiny_ltx.py writes: patches core's Gemma sizes (below);
- LTX_OUTPAINT_TEST_PROBE_DIR = a folder: every diffusion-model call appends a line to `model_calls.log`
  there, and sleeps the seconds written in `delay` (if that file exists) first, so a test can interrupt a
  run between steps and count what ran after;
- node `LTXTestSaveTensor`: saves an IMAGE batch as a .pt file in the output folder (exact frames to compare).

Gemma:

ComfyUI core hard-codes three Gemma 3 12B sizes that a tiny model cannot meet (see
/work/shared/notes/ltx-outpaint.md and comfy/text_encoders/{llama,lt}.py):
1. `llama.Gemma3_12B_Config` (vocab 262208, hidden 3840, 48 layers, 16/8 heads, head 256, SigLIP 1152x27);
2. the text projection of `lt.LTXAVTEModel` (3840 x 49 -> 4096 video / 2048 audio);
3. `lt.LTXAVTEModel.load_sd` takes a state dict for Gemma only if it has layer 47's q_norm.
Each is replaced by the same thing with the tiny sizes; everything else stays core's own code.
"""
import dataclasses
import json
import logging
import os

ENV = "LTX_OUTPAINT_TEST_TINY_GEMMA"
PROBE_ENV = "LTX_OUTPAINT_TEST_PROBE_DIR"


def _apply(sizes: dict) -> None:
    import comfy.ops
    import comfy.text_encoders.llama as llama
    import comfy.text_encoders.lt as lt

    text, vision = sizes["text"], sizes["vision"]
    base = llama.Gemma3_12B_Config

    @dataclasses.dataclass
    class TinyGemma3Config(base):
        vocab_size: int = text["vocab_size"]
        hidden_size: int = text["hidden_size"]
        intermediate_size: int = text["intermediate_size"]
        num_hidden_layers: int = text["num_hidden_layers"]
        num_attention_heads: int = text["num_attention_heads"]
        num_key_value_heads: int = text["num_key_value_heads"]
        max_position_embeddings: int = text["max_position_embeddings"]
        head_dim = text["head_dim"]
        sliding_attention = [text["sliding_window"], False]
        vision_config = {**llama.GEMMA3_VISION_CONFIG, **{k: vision[k] for k in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
            "patch_size")}}
        mm_tokens_per_image = sizes["mm_tokens_per_image"]

    llama.Gemma3_12B_Config = TinyGemma3Config  # 1) read at call time by llama.Gemma3_12B

    init = lt.LTXAVTEModel.__init__
    flat = text["hidden_size"] * (text["num_hidden_layers"] + 1)

    def tiny_init(self, *args, **kwargs):  # 2) the projection's input/output sizes
        init(self, *args, **kwargs)
        if self.text_projection_type == "dual_linear":
            self.text_embedding_projection = lt.DualLinearProjection(
                flat, sizes["transformer"]["video"], sizes["transformer"]["audio"],
                operations=comfy.ops.manual_cast)

    lt.LTXAVTEModel.__init__ = tiny_init

    load_sd = lt.LTXAVTEModel.load_sd
    last = f"model.layers.{text['num_hidden_layers'] - 1}.self_attn.q_norm.weight"

    def tiny_load_sd(self, sd):  # 3) recognise the tiny Gemma by ITS last layer
        if last in sd and not any(k.startswith("text_embedding_projection.") for k in sd):
            return self.gemma3_12b.load_sd(sd)
        return load_sd(self, sd)

    lt.LTXAVTEModel.load_sd = tiny_load_sd
    logging.warning("TEST-ONLY: ComfyUI's Gemma 3 12B sizes patched for the tests' tiny Gemma (%s)",
                    os.environ[ENV])


def _core_has_gemma3_12b() -> bool:
    try:
        import comfy.text_encoders.llama as llama
        import comfy.text_encoders.lt as lt
    except ImportError:
        return False
    return hasattr(llama, "Gemma3_12B_Config") and hasattr(lt, "LTXAVTEModel")


if os.environ.get(ENV):
    if _core_has_gemma3_12b():
        with open(os.environ[ENV]) as f:
            _apply(json.load(f))
    else:  # ComfyUI without core LTX-2 (0.3.x): nothing to patch
        logging.info("TEST-ONLY: this ComfyUI has no Gemma 3 12B text encoder; nothing patched")


def _probe(folder: str) -> None:
    import time

    import comfy.model_base

    apply_model = comfy.model_base.BaseModel.apply_model

    def probed(self, *args, **kwargs):
        delay_file = os.path.join(folder, "delay")
        if os.path.exists(delay_file):
            with open(delay_file) as f:
                time.sleep(float(f.read().strip() or 0))
        with open(os.path.join(folder, "model_calls.log"), "a") as f:
            f.write(f"{time.time():.3f}\n")
        return apply_model(self, *args, **kwargs)

    comfy.model_base.BaseModel.apply_model = probed


if os.environ.get(PROBE_ENV):
    _probe(os.environ[PROBE_ENV])


class SaveTensor:
    """Save an IMAGE batch exactly (torch.save) as <output>/<name>.pt."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "name": ("STRING", {"default": "frames"})}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def save(self, images, name):
        import folder_paths
        import torch

        path = os.path.join(folder_paths.get_output_directory(), f"{name}.pt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(images.clone(), path)
        return {}


NODE_CLASS_MAPPINGS = {"LTXTestSaveTensor": SaveTensor}
