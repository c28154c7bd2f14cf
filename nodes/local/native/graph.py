"""The native engine's graph: a resolved recipe as ComfyUI API-format nodes (core nodes + the pack's helpers).

:func:`build_graph` returns the expansion the outpaint node hands to ComfyUI; :func:`graph_parameters` reads
the recipe values back out of such a graph (what will actually run), in the format of
`ResolvedRecipe.parameters()`, so tests can compare the engines. Pure Python: builds dicts, runs nothing.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..recipe import REFERENCE_ATTENTION, ResolvedRecipe
from .models import NativeModels

#: The pack's helper node ids (registered by nodes/comfyui/nodes_native.py).
STAGE_INPUTS = "LTXOutpaintStageInputs"
FREEZE = "LTXOutpaintFreezeLatent"
BLEND = "LTXOutpaintPyramidBlend"
TILED_DECODE = "LTXOutpaintSpatialTiledDecode"
LORA = "LTXOutpaintLoraTarget"
GUIDE_ATTENTION = "LTXOutpaintGuideAttention"
FINISH = "LTXOutpaintNativeFinish"


class Graph:
    """A minimal API-format graph builder (the same shape as ComfyUI's GraphBuilder output)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: dict[str, dict] = {}

    def node(self, class_type: str, **inputs) -> "Node":
        node_id = f"{self.prefix}{len(self.nodes)}"
        self.nodes[node_id] = {"class_type": class_type, "inputs": dict(inputs)}
        return Node(node_id)

    def finalize(self) -> dict:
        return self.nodes


@dataclass(frozen=True)
class Node:
    id: str

    def out(self, index: int) -> list:
        return [self.id, index]  # a list: ComfyUI's is_link() wants exactly [str, int]


@dataclass
class NativeInputs:
    """Everything the graph needs besides the recipe: tensors and objects are passed to nodes as values."""

    models: NativeModels
    placed: Any  # [F,H,W,3] source on a grey 0.5 canvas (the workflow pads grey before the green fill)
    mask: Any  # [H,W] 1 = generate
    source_audio: dict | None  # ComfyUI AUDIO fitted to the output duration, or None (no source audio)
    loras: tuple[tuple[str, float, str], ...] = ()  # (absolute path inside a loras folder, scale, target)
    first_frame: Any = None  # [1,h,w,3] for prompt expansion from the picture
    model: Any = None  # sockets: MODEL / CLIP / VAE / audio VAE from other loaders
    clip: Any = None
    vae: Any = None
    audio_vae: Any = None
    #: [k,H,W,3] canvas frames that guide the first k frames (a long clip's previous chunk), or None
    start_frames: Any = None
    finish: dict = field(default_factory=dict)  # metadata for the finish node (seed, notes, ...)


def _sigmas(values) -> str:
    """ManualSigmas text: plain decimals (its parser reads no exponents: never "1e-05")."""
    return ", ".join(format(float(v), ".8f").rstrip("0").rstrip(".") or "0" for v in values)


def build_graph(r: ResolvedRecipe, x: NativeInputs, prefix: str, *, expand_prompt: bool) -> tuple[dict, list]:
    """(graph, outputs): outputs are links for the outpaint node's six outputs (images, audio, fps, video,
    seed, prompt), all from the finish node."""
    g = Graph(prefix)
    m, recipe = x.models, r.recipe
    ckpt = None
    if x.model is None or x.vae is None:
        ckpt = g.node("CheckpointLoaderSimple", ckpt_name=m.checkpoint)
    base_model = x.model if x.model is not None else ckpt.out(0)
    vae = x.vae if x.vae is not None else ckpt.out(2)
    clip = x.clip if x.clip is not None else g.node(
        "LTXAVTextEncoderLoader", text_encoder=m.text_encoder, ckpt_name=m.checkpoint, device="default").out(0)
    want_audio = r.generate_audio
    audio_vae = None
    if want_audio:
        audio_vae = x.audio_vae if x.audio_vae is not None else g.node(
            "LTXVAudioVAELoader", ckpt_name=m.checkpoint).out(0)

    def model_for(stage) -> Any:
        out = base_model
        if stage.distilled_lora:
            out = g.node("LoraLoaderModelOnly", model=out, lora_name=m.distilled_lora,
                         strength_model=stage.distilled_lora).out(0)
        if stage.ic_lora:
            out = g.node("LoraLoaderModelOnly", model=out, lora_name=m.ic_lora, strength_model=stage.ic_lora).out(0)
        for path, scale, target in x.loras:
            out = g.node(LORA, model=out, lora_path=path, strength=float(scale), target=target).out(0)
        return out

    models, cache = [], {}
    for stage in recipe.stages:  # the official workflow feeds one patched model to both stages
        key = (stage.distilled_lora, stage.ic_lora)
        if key not in cache:
            cache[key] = model_for(stage)
        models.append(cache[key])

    prompt: Any = r.prompt
    if expand_prompt:
        gen = g.node("TextGenerateLTX2Prompt", clip=clip, prompt=r.prompt, image=x.first_frame, max_length=256,
                     sampling_mode="off")
        prompt = gen.out(0)
    pos = g.node("CLIPTextEncode", clip=clip, text=prompt)
    neg = g.node("CLIPTextEncode", clip=clip, text=r.negative_prompt)
    cond = g.node("LTXVConditioning", positive=pos.out(0), negative=neg.out(0), frame_rate=float(r.fps))
    fill = ",".join(str(c) for c in recipe.fill_rgb)
    si = g.node(STAGE_INPUTS, placed=x.placed, mask=x.mask, fill_rgb=fill, stage1_scale=recipe.stages[0].scale)
    # outputs of the stage inputs: 0 full_ref, 1 full_mask, 2 half_ref, 3 half_mask

    st1, st2 = recipe.stages
    w1, h1 = r.stage_size(0)
    latent = g.node("EmptyLTXVLatentVideo", width=w1, height=h1, length=r.frames, batch_size=1)
    positive, negative, video = cond.out(0), cond.out(1), latent.out(0)
    if x.start_frames is not None:  # the previous chunk's last frames, in place at latent frame 0, frozen
        video = g.node("LTXVImgToVideoInplace", vae=vae, image=x.start_frames, latent=video, strength=1.0,
                       bypass=False).out(0)
    if st1.reference:
        guide = g.node("LTXVAddGuide", positive=positive, negative=negative, vae=vae, latent=video,
                       image=si.out(2), frame_idx=0, strength=r.reference_strength)
        positive, negative, video = guide.out(0), guide.out(1), guide.out(2)
        if r.reference_strength != REFERENCE_ATTENTION:
            # core's LTXVAddGuide also sets the guide's attention strength to `strength`; the official workflow's
            # guide node keeps attention at 1 whatever the strength (LTXAddVideoICLoRAGuideAdvanced
            # attention_strength 1, node 5114), as the ltx-core engine does
            att = g.node(GUIDE_ATTENTION, positive=positive, negative=negative,
                         attention_strength=REFERENCE_ATTENTION)
            positive, negative = att.out(0), att.out(1)
    audio = None
    if want_audio:
        if x.source_audio is not None:  # the source sound, frozen: the picture follows it
            encoded = g.node("LTXVAudioVAEEncode", audio=x.source_audio, audio_vae=audio_vae)
            audio = g.node(FREEZE, latent=encoded.out(0)).out(0)
        else:  # no source sound: generated with the picture
            audio = g.node("LTXVEmptyLatentAudio", frames_number=r.frames, frame_rate=max(1, round(r.fps)),
                           batch_size=1, audio_vae=audio_vae).out(0)

    def sample(stage, model, positive, negative, video_latent, audio_latent):
        av = video_latent
        if audio_latent is not None:
            av = g.node("LTXVConcatAVLatent", video_latent=video_latent, audio_latent=audio_latent).out(0)
        noise = g.node("RandomNoise", noise_seed=r.seed)
        guider = g.node("CFGGuider", model=model, positive=positive, negative=negative, cfg=r.cfg)
        sampler = g.node("KSamplerSelect", sampler_name=stage.sampler)
        sigmas = g.node("ManualSigmas", sigmas=_sigmas(stage.sigmas))
        s = g.node("SamplerCustomAdvanced", noise=noise.out(0), guider=guider.out(0), sampler=sampler.out(0),
                   sigmas=sigmas.out(0), latent_image=av)
        out = s.out(1 if stage.take == "denoised_output" else 0)
        if audio_latent is None:
            return out, None
        sep = g.node("LTXVSeparateAVLatent", av_latent=out)
        return sep.out(0), sep.out(1)

    v1, a1 = sample(st1, models[0], positive, negative, video, audio)
    if st1.reference:
        crop = g.node("LTXVCropGuides", positive=positive, negative=negative, latent=v1)
        positive, negative, v1 = crop.out(0), crop.out(1), crop.out(2)
    tile, overlap, t_tile, t_overlap = recipe.vae_tiles
    if st2.init == "pixels_x2":
        dec = g.node("VAEDecodeTiled", samples=v1, vae=vae, tile_size=tile, overlap=overlap,
                     temporal_size=t_tile, temporal_overlap=t_overlap)
        blended = g.node(BLEND, generated=dec.out(0), original=si.out(2), mask=si.out(3),
                         dilation=st1.blend_dilation, long_side=recipe.blend_long_side, levels=recipe.blend_levels)
        up = g.node("ImageScaleBy", image=blended.out(0), upscale_method="lanczos", scale_by=1.0 / st1.scale)
        v2_in = g.node("VAEEncodeTiled", pixels=up.out(0), vae=vae, tile_size=tile, overlap=overlap,
                       temporal_size=t_tile, temporal_overlap=t_overlap).out(0)
    elif st2.init == "latent_upsampler":
        loader = g.node("LatentUpscaleModelLoader", model_name=m.spatial_upsampler)
        v2_in = g.node("LTXVLatentUpsampler", samples=v1, upscale_model=loader.out(0), vae=vae).out(0)
    else:
        raise ValueError(f"stage 2 init {st2.init!r} is not implemented by the native engine")
    if x.start_frames is not None:
        v2_in = g.node("LTXVImgToVideoInplace", vae=vae, image=x.start_frames, latent=v2_in, strength=1.0,
                       bypass=False).out(0)
    a2 = g.node(FREEZE, latent=a1).out(0) if a1 is not None else None
    v2, a3 = sample(st2, models[1], positive, negative, v2_in, a2)
    h_tiles, v_tiles, tile_overlap = recipe.spatial_tiles
    final = g.node(TILED_DECODE, samples=v2, vae=vae, horizontal_tiles=h_tiles, vertical_tiles=v_tiles,
                   overlap=tile_overlap)
    blended = g.node(BLEND, generated=final.out(0), original=si.out(0), mask=si.out(1),
                     dilation=st2.blend_dilation, long_side=recipe.blend_long_side, levels=recipe.blend_levels)
    finish_inputs = dict(images=blended.out(0), placed=x.placed, mask=x.mask, fps=float(r.fps), seed=r.seed,
                         prompt=prompt, info=json.dumps(x.finish))
    if a3 is not None:
        finish_inputs["audio"] = g.node("LTXVAudioVAEDecode", samples=a3, audio_vae=audio_vae).out(0)
    fin = g.node(FINISH, **finish_inputs)
    return g.finalize(), [fin.out(i) for i in range(6)]


# ------------------------------------------------------------------ reading a graph back

def _node(graph: dict, link) -> dict:
    return graph[link[0]]


def _model_chain(graph: dict, link, models: NativeModels) -> dict:
    """Distilled / IC-LoRA strengths on the model feeding a guider (walks LoRA loaders to the base)."""
    out = {"distilled_lora": 0.0, "ic_lora": 0.0}
    while isinstance(link, list):
        n = _node(graph, link)
        if n["class_type"] == "LoraLoaderModelOnly":
            role = "ic_lora" if n["inputs"]["lora_name"] == models.ic_lora else "distilled_lora"
            out[role] = float(n["inputs"]["strength_model"])
        elif n["class_type"] != LORA:
            break
        link = n["inputs"]["model"]
    return out


#: which input carries a node's main stream through it (for looking through nodes in a read-back)
_THROUGH = {"LTXVConcatAVLatent": "video_latent", "LTXVImgToVideoInplace": "latent", "LTXVAddGuide": "latent",
            FREEZE: "latent", GUIDE_ATTENTION: "positive"}


def _source(graph: dict, link, *skip: str) -> dict:
    """The node a link comes from, looking through nodes of the `skip` types (along their main input)."""
    n = _node(graph, link)
    while n["class_type"] in skip:
        n = _node(graph, n["inputs"][_THROUGH[n["class_type"]]])
    return n


def graph_parameters(graph: dict, models: NativeModels, recipe_name: str) -> dict:
    """The recipe values a native graph will run, in `ResolvedRecipe.parameters()` form, each read from the node
    that uses it (a change to any of them in the graph changes the result)."""
    def order(k: str) -> int:
        tail = k.rsplit(".", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    by_type: dict[str, list[str]] = {}
    for node_id in sorted(graph, key=order):
        by_type.setdefault(graph[node_id]["class_type"], []).append(node_id)
    first = lambda t: graph[by_type[t][0]]["inputs"] if by_type.get(t) else None  # noqa: E731
    consumers: dict[tuple, list[str]] = {}
    for node_id, n in graph.items():
        for value in n["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and value[0] in graph:
                consumers.setdefault(tuple(value), []).append(node_id)
    si = first(STAGE_INPUTS)
    latent = first("EmptyLTXVLatentVideo")
    guide = first("LTXVAddGuide")
    attention = first(GUIDE_ATTENTION)
    cond = first("LTXVConditioning")
    texts = [graph[i]["inputs"]["text"] for i in by_type["CLIPTextEncode"]]
    blends = [graph[i]["inputs"] for i in by_type[BLEND]]
    ckpt = first("CheckpointLoaderSimple")
    enc, dec = first("VAEEncodeTiled"), first("VAEDecodeTiled")
    spatial = first(TILED_DECODE)
    placed = si["placed"]
    height, width = int(placed.shape[1]), int(placed.shape[2])
    audio = "none"
    if "LTXVConcatAVLatent" in by_type:  # what the first stage's audio latent is
        a = _source(graph, graph[by_type["LTXVConcatAVLatent"][0]]["inputs"]["audio_latent"], FREEZE)
        audio = {"LTXVAudioVAEEncode": "frozen_source", "LTXVEmptyLatentAudio": "generated"}.get(a["class_type"], "?")
    name = (ckpt or {}).get("ckpt_name", models.checkpoint or "")
    vae_tiles = None
    if enc is not None or dec is not None:
        tiles = {tuple(int(x[k]) for k in ("tile_size", "overlap", "temporal_size", "temporal_overlap"))
                 for x in (enc, dec) if x is not None}
        vae_tiles = tiles.pop() if len(tiles) == 1 else tuple(sorted(tiles))
    out = {"recipe": recipe_name,
           "checkpoint": "dev" if "dev" in os.path.basename(str(name)).lower() else "distilled",
           "fill_rgb": tuple(int(c) for c in si["fill_rgb"].split(",")), "prompt": texts[0],
           "negative_prompt": texts[1], "frames": int(latent["length"]), "fps": float(cond["frame_rate"]),
           "size": (width, height), "audio": audio,
           "blend": (int(blends[-1]["long_side"]), int(blends[-1]["levels"])),
           "reference_strength": float(guide["strength"]) if guide else None,
           "reference_frame": int(guide["frame_idx"]) if guide else None,
           "reference_attention": float(attention["attention_strength"]) if attention else (
               float(guide["strength"]) if guide else None),
           "vae_tiles": vae_tiles,
           "spatial_tiles": tuple(int(spatial[k]) for k in ("horizontal_tiles", "vertical_tiles", "overlap"))}
    for i, sampler_id in enumerate(by_type["SamplerCustomAdvanced"]):
        inp = graph[sampler_id]["inputs"]
        noise, guider = _node(graph, inp["noise"]), _node(graph, inp["guider"])
        sigmas = tuple(float(v) for v in re.findall(r"[-+]?\d*\.?\d+", _node(graph, inp["sigmas"])["inputs"]["sigmas"]))
        chain = _model_chain(graph, guider["inputs"]["model"], models)
        positive_from = _source(graph, guider["inputs"]["positive"], GUIDE_ATTENTION)
        stage = {"sigmas": sigmas, "sampler": _node(graph, inp["sampler"])["inputs"]["sampler_name"],
                 "cfg": float(guider["inputs"]["cfg"]), "seed": int(noise["inputs"]["noise_seed"]),
                 "distilled_lora": chain["distilled_lora"], "ic_lora": chain["ic_lora"],
                 "reference": positive_from["class_type"] == "LTXVAddGuide",
                 "take": "denoised_output" if consumers.get((sampler_id, 1)) else "output"}
        video_in = _source(graph, inp["latent_image"], "LTXVConcatAVLatent", "LTXVImgToVideoInplace",
                           "LTXVAddGuide")
        if i == 0:
            stage["size"] = (int(latent["width"]), int(latent["height"]))
            stage["init"] = "empty" if video_in["class_type"] == "EmptyLTXVLatentVideo" else video_in["class_type"]
            stage["decode"] = "tiled" if dec is not None else "none"
            stage["blend_dilation"] = int(blends[0]["dilation"]) if len(blends) > 1 else 0
        else:
            up = first("ImageScaleBy")
            stage["init"] = {"VAEEncodeTiled": "pixels_x2", "LTXVLatentUpsampler": "latent_upsampler"}.get(
                video_in["class_type"], video_in["class_type"])
            factor = float(up["scale_by"]) if stage["init"] == "pixels_x2" else 2.0  # the x2 upsampler model
            stage["size"] = (round(int(latent["width"]) * factor), round(int(latent["height"]) * factor))
            stage["decode"] = "spatial_tiles" if spatial is not None else "none"
            stage["blend_dilation"] = int(blends[-1]["dilation"])
        out[f"stage{i + 1}"] = stage
    return out
