"""The native local engine: the outpaint recipe on ComfyUI core's own LTX-2 (ComfyUI 0.2x and later).

Inside a ComfyUI whose core has LTX-2, the outpaint node *expands* into a graph of core nodes (checkpoint,
LoRA and text-encoder loaders, LTXVAddGuide, CFGGuider, SamplerCustomAdvanced, tiled VAE nodes, the audio
VAE) plus the pack's small helper nodes (stage inputs, pyramid blend, frozen audio, spatially tiled decode,
LoRA targets, finish); ComfyUI's own model management, offloading, caching, progress and interrupt apply.
`graph.py` builds that graph from a resolved recipe; `models.py` finds the model files by name in
ComfyUI's folders; `ops.py` holds the helpers' tensor work on core's API.

Only imported inside ComfyUI (the adapter and these modules import ComfyUI); chosen by the local backend
when :func:`unavailable_reason` says nothing is missing.
"""
from __future__ import annotations

#: Core node classes every recipe's graph uses.
CORE_NODES = ("CheckpointLoaderSimple", "LoraLoaderModelOnly", "LTXAVTextEncoderLoader", "LTXVAudioVAELoader",
              "CLIPTextEncode", "LTXVConditioning", "EmptyLTXVLatentVideo", "LTXVAddGuide", "LTXVAudioVAEEncode",
              "LTXVEmptyLatentAudio", "LTXVConcatAVLatent", "LTXVSeparateAVLatent", "LTXVCropGuides",
              "RandomNoise", "CFGGuider", "KSamplerSelect", "ManualSigmas", "SamplerCustomAdvanced",
              "VAEDecodeTiled", "VAEEncodeTiled", "ImageScaleBy", "LTXVAudioVAEDecode", "LTXVImgToVideoInplace")
#: Extra core nodes per stage init.
INIT_NODES = {"latent_upsampler": ("LatentUpscaleModelLoader", "LTXVLatentUpsampler")}
PROMPT_NODE = "TextGenerateLTX2Prompt"


def unavailable_reason(recipe=None) -> str | None:
    """Why ComfyUI core cannot run `recipe` natively (None: it can). Call inside ComfyUI, after start-up."""
    try:
        import comfy.model_base
        import comfy.samplers
        import nodes
    except ImportError as exc:  # not inside ComfyUI
        return f"not running inside ComfyUI ({exc.name} is missing)"
    if not hasattr(comfy.model_base, "LTXAV"):
        return "this ComfyUI's core has no LTX-2 audio-video model (ComfyUI 0.2x and later have it)"
    needed = list(CORE_NODES)
    samplers = set()
    if recipe is not None:
        for stage in recipe.stages:
            needed += INIT_NODES.get(stage.init, ())
            samplers.add(stage.sampler)
    missing = [n for n in needed if n not in nodes.NODE_CLASS_MAPPINGS]
    if missing:
        return f"this ComfyUI's core lacks the nodes {', '.join(missing)}"
    names = set(getattr(comfy.samplers, "SAMPLER_NAMES", ()) or comfy.samplers.KSampler.SAMPLERS)
    if samplers - names:
        return f"this ComfyUI's core lacks the samplers {', '.join(sorted(samplers - names))}"
    return None


def prompt_generation_available() -> bool:
    import nodes

    return PROMPT_NODE in nodes.NODE_CLASS_MAPPINGS
