"""The recipes (nodes/local/recipe.py) against their sources, and the native engine's graph against the recipe.

The official workflow is read from tests/data/official_outpaint_workflow.excerpt.json, an excerpt of
Lightricks/ComfyUI-LTXVideo example_workflows/2.3/LTX-2.3_ICLoRA_Outpaint_Two_Stage_Distilled.json (commit
and blob in the file; regenerate with tests/data/make_official_excerpt.py). ltx-pipelines' constants are
read from the installed ltx-pipelines 1.0.0 itself.
"""
from __future__ import annotations

import json
import os
import re

import pytest
import torch

from ltx_outpaint.local.native.graph import NativeInputs, build_graph, graph_parameters
from ltx_outpaint.local.native.models import NativeModels
from ltx_outpaint.local.recipe import IC_LORA_PIPELINE, OFFICIAL, RECIPES, WORKFLOW_COMMIT, resolve
from ltx_outpaint.media.canvas import FILL_RGB
from ltx_outpaint.request import DEFAULT_NEGATIVE_PROMPT, ImageSize, OutpaintRequest

EXCERPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "official_outpaint_workflow.excerpt.json")


@pytest.fixture(scope="module")
def workflow():
    with open(EXCERPT) as f:
        data = json.load(f)
    data["by_id"] = {n["id"]: n for n in data["nodes"]}
    return data


def _widget(workflow, node: int, index: int):
    n = workflow["by_id"][node]
    assert n["mode"] == 0, f"node {node} is bypassed in the official workflow"
    return n["widgets_values"][index]


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in re.findall(r"[-+]?\d*\.?\d+", text))


def test_excerpt_is_the_cited_commit(workflow):
    assert workflow["source"]["commit"] == WORKFLOW_COMMIT
    assert workflow["source"]["path"].endswith("LTX-2.3_ICLoRA_Outpaint_Two_Stage_Distilled.json")


@pytest.mark.parametrize("key", sorted(k for k, s in OFFICIAL.sources.items() if s.node is not None))
def test_every_cited_workflow_line_is_that_node(workflow, key):
    src = OFFICIAL.sources[key]
    assert workflow["by_id"][src.node]["line"] == src.line, f"{key}: {src}"


# one test per recipe value, each against the workflow's own node
OFFICIAL_VALUES = {
    "checkpoint": lambda wf: ("dev" if "dev" in _widget(wf, 3940, 0) else "distilled", OFFICIAL.checkpoint),
    "negative_prompt": lambda wf: (_widget(wf, 2612, 0), OFFICIAL.negative_prompt),
    "cfg stage 1": lambda wf: (float(_widget(wf, 4828, 0)), OFFICIAL.cfg),
    "cfg stage 2": lambda wf: (float(_widget(wf, 5209, 0)), OFFICIAL.cfg),
    "stage 1 scale": lambda wf: (float(_widget(wf, 5364, 1)), OFFICIAL.stages[0].scale),
    "stage 2 scale (x2 after stage 1)": lambda wf: (float(_widget(wf, 5379, 1)) * OFFICIAL.stages[0].scale,
                                                    OFFICIAL.stages[1].scale),
    "stage 1 sigmas": lambda wf: (_floats(_widget(wf, 5025, 0)), OFFICIAL.stages[0].sigmas),
    "stage 2 sigmas": lambda wf: (_floats(_widget(wf, 5211, 0)), OFFICIAL.stages[1].sigmas),
    "stage 1 sampler": lambda wf: (_widget(wf, 4831, 0), OFFICIAL.stages[0].sampler),
    "stage 2 sampler": lambda wf: (_widget(wf, 5215, 0), OFFICIAL.stages[1].sampler),
    "distilled LoRA strength": lambda wf: (float(_widget(wf, 4922, 1)), OFFICIAL.stages[0].distilled_lora),
    "distilled LoRA stage 2": lambda wf: (float(_widget(wf, 4922, 1)), OFFICIAL.stages[1].distilled_lora),
    "distilled LoRA file": lambda wf: ("distilled-lora-384" in _widget(wf, 4922, 0), True),
    "IC-LoRA strength": lambda wf: (float(_widget(wf, 5011, 1)), OFFICIAL.stages[0].ic_lora),
    "IC-LoRA stage 2": lambda wf: (float(_widget(wf, 5011, 1)), OFFICIAL.stages[1].ic_lora),
    "IC-LoRA file": lambda wf: ("ic-lora-in-outpainting" in _widget(wf, 5011, 0), True),
    "reference guide strength": lambda wf: (float(_widget(wf, 5114, 1)), 1.0),
    "reference attention strength": lambda wf: (float(_widget(wf, 5114, 7)), 1.0),
    "reference frame index": lambda wf: (int(_widget(wf, 5114, 0)), 0),
    "reference downscale factor": lambda wf: (float(_widget(wf, 5114, 2)), 1.0),
    "stage 1 blend dilation": lambda wf: (int(_widget(wf, 5266, 1)), OFFICIAL.stages[0].blend_dilation),
    "stage 2 blend dilation": lambda wf: (int(_widget(wf, 5226, 1)), OFFICIAL.stages[1].blend_dilation),
    "vae encode tiles": lambda wf: (tuple(_widget(wf, 5267, i) for i in range(4)), OFFICIAL.vae_tiles),
    "vae decode tiles": lambda wf: (tuple(_widget(wf, 4851, i) for i in range(4)), OFFICIAL.vae_tiles),
    "final decode tiles": lambda wf: (tuple(_widget(wf, 5380, i) for i in range(3)), OFFICIAL.spatial_tiles),
    "both stages same seed": lambda wf: (_widget(wf, 4832, 0), _widget(wf, 5210, 0)),
    "fill colour": lambda wf: (tuple(wf["constants"]["fill_rgb"]["value"]), OFFICIAL.fill_rgb),
    "blend grid": lambda wf: (wf["constants"]["blend_mask_long_side"]["value"], OFFICIAL.blend_long_side),
    "blend levels": lambda wf: (wf["constants"]["blend_max_level"]["value"], OFFICIAL.blend_levels),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_VALUES))
def test_official_recipe_value_matches_the_workflow(workflow, name):
    got, ours = OFFICIAL_VALUES[name](workflow)
    assert got == ours, name


def test_official_stage_links_match_the_workflow(workflow):
    """What feeds what: stage 1 takes the sampler's denoised_output, stage 2 its output; stage 2 has no guide
    (its guider's conditioning comes from LTXVCropGuides); the source audio is frozen into both stages."""
    links = {l["id"]: l for l in workflow["links"]}
    by_id = workflow["by_id"]

    def source_of(node: int, name: str) -> tuple[int, int]:
        link = links[by_id[node]["input_links"][name]]
        return tuple(link["from"])

    assert source_of(5386, "av_latent") == (5093, 1)  # stage 1: denoised_output
    assert source_of(5388, "av_latent") == (5214, 0)  # stage 2: output
    assert OFFICIAL.stages[0].take == "denoised_output" and OFFICIAL.stages[1].take == "output"
    assert by_id[source_of(5209, "positive")[0]]["type"] == "LTXVCropGuides"
    assert not OFFICIAL.stages[1].reference and OFFICIAL.stages[0].reference
    assert by_id[source_of(5383, "audio_latent")[0]]["type"] == "LTXVSetAudioRefTokens"
    assert by_id[source_of(5387, "audio_latent")[0]]["type"] == "LTXVSetAudioRefTokens"
    assert OFFICIAL.audio == "frozen_source"
    # stage 2 starts from the blended, x2 upscaled stage-1 frames, re-encoded (no latent upsampler)
    assert by_id[source_of(5267, "pixels")[0]]["type"] == "ResizeImageMaskNode"
    assert by_id[source_of(5379, "input")[0]]["type"] == "LTXVLaplacianPyramidBlend"
    assert OFFICIAL.stages[1].init == "pixels_x2"
    assert not any(n["type"] == "LTXVLatentUpsampler" for n in workflow["nodes"])
    # the two image-to-video nodes are wired in but bypassed by the "bypass_i2v" switch (True)
    assert _widget(workflow, 5088, 0) is True
    assert source_of(3159, "bypass")[0] == 5088 and source_of(5213, "bypass")[0] == 5088


def test_the_canvas_fill_is_the_recipes():
    assert tuple(round(c * 255) for c in FILL_RGB) == OFFICIAL.fill_rgb


def test_ic_lora_pipeline_values_are_ltx_pipelines_own():
    constants = pytest.importorskip("ltx_pipelines.utils.constants")
    assert IC_LORA_PIPELINE.stages[0].sigmas == tuple(constants.DISTILLED_SIGMA_VALUES)
    assert IC_LORA_PIPELINE.stages[1].sigmas == tuple(constants.STAGE_2_DISTILLED_SIGMA_VALUES)
    assert IC_LORA_PIPELINE.checkpoint == "distilled" and IC_LORA_PIPELINE.stages[1].ic_lora == 0.0
    assert IC_LORA_PIPELINE.stages[1].init == "latent_upsampler"
    import inspect

    from ltx_pipelines import ic_lora

    src = inspect.getsource(ic_lora)
    assert "EulerDiffusionStep()" in src and "loras=[]" in src and "width=width // 2" in src


def _request(**kw):
    base = dict(prompt="a wide meadow", resolution=ImageSize(192, 128), num_frames=9, frames_per_second=8,
                seed=5, enable_prompt_expansion=False)
    return OutpaintRequest(**{**base, **kw}).validate()


def test_fal_fields_map_as_documented():
    r = resolve(OFFICIAL, _request(), width=192, height=128, frames=9, seed=5)
    assert r.negative_prompt == OFFICIAL.negative_prompt  # fal's default -> the recipe's own
    assert r.cfg == 1.0 and r.reference_strength == 1.0 and not r.notes
    r = resolve(OFFICIAL, _request(negative_prompt="text, watermark", guidance_scale=3.0, video_strength=0.8,
                                   num_inference_steps=20), width=192, height=128, frames=9, seed=5)
    assert r.negative_prompt == "text, watermark" and r.cfg == 3.0 and r.reference_strength == 0.8
    assert any("num_inference_steps 20 does not apply" in n and "8+2 steps" in n for n in r.notes)
    assert any(n.startswith("guidance_scale 3") for n in r.notes)
    assert DEFAULT_NEGATIVE_PROMPT != OFFICIAL.negative_prompt


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("audio", [True, False])
def test_native_graph_runs_exactly_the_resolved_recipe(recipe, audio):
    """The native engine's graph, read back node by node, holds every value of the resolved recipe."""
    r = resolve(RECIPES[recipe], _request(generate_audio=audio), width=192, height=128, frames=9, seed=5)
    models = _names(recipe)
    x = NativeInputs(models=models, placed=torch.zeros(9, 128, 192, 3), mask=torch.ones(128, 192),
                     source_audio={"waveform": torch.zeros(1, 2, 16000), "sample_rate": 16000} if audio else None)
    graph, outputs = build_graph(r, x, prefix="5.ltx.", expand_prompt=False)
    assert len(outputs) == 6 and all(o[0] in graph for o in outputs)
    for node in graph.values():  # every link points at a node of the graph
        for value in node["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                assert value[0] in graph
    assert graph_parameters(graph, models, recipe) == r.parameters(has_source_audio=audio)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("kw", [{}, {"guidance_scale": 2.5, "video_strength": 0.7, "negative_prompt": "dark"},
                                {"generate_audio": False}])
def test_both_engines_run_the_same_parameters_for_the_same_request(recipe, kw):
    """The native engine's graph and the ltx-core engine's stage plans, each read from what that engine will
    run, agree value for value (and with the resolved recipe)."""
    pipeline = pytest.importorskip("ltx_outpaint.local.ltxcore.pipeline")
    r = resolve(RECIPES[recipe], _request(**kw), width=192, height=128, frames=9, seed=5)
    models = NativeModels(checkpoint=f"ltx-2.3-22b-{RECIPES[recipe].checkpoint}.safetensors",
                          text_encoder="gemma_3_12B_it.safetensors",
                          distilled_lora="ltx-2.3-22b-distilled-lora-384-1.1.safetensors",
                          ic_lora="ltx-2.3-22b-ic-lora-in-outpainting-0.9.safetensors",
                          spatial_upsampler="ltx-2.3-spatial-upscaler-x2-1.0.safetensors")
    audio = {"waveform": torch.zeros(1, 2, 16000), "sample_rate": 16000}
    x = NativeInputs(models=models, placed=torch.zeros(9, 128, 192, 3), mask=torch.ones(128, 192),
                     source_audio=audio)
    graph, _ = build_graph(r, x, prefix="9.ltx.", expand_prompt=False)
    native = graph_parameters(graph, models, recipe)
    ltxcore = pipeline.parameters(r, None, has_source_audio=True)
    assert native == ltxcore
    assert native == r.parameters()


def _names(recipe: str) -> NativeModels:
    return NativeModels(checkpoint=f"ltx-2.3-22b-{RECIPES[recipe].checkpoint}.safetensors",
                        text_encoder="gemma_3_12B_it.safetensors",
                        distilled_lora="ltxv/ltx2/ltx-2.3-22b-distilled-lora-384-1.1.safetensors",
                        ic_lora="ltxv/ltx2/ltx-2.3-22b-ic-lora-in-outpainting-0.9.safetensors",
                        spatial_upsampler="ltx-2.3-spatial-upscaler-x2-1.0.safetensors")


def _official_graph(**request_kw):
    r = resolve(OFFICIAL, _request(**request_kw), width=192, height=128, frames=9, seed=5)
    audio = {"waveform": torch.zeros(1, 2, 16000), "sample_rate": 16000}
    x = NativeInputs(models=_names("official"), placed=torch.zeros(9, 128, 192, 3), mask=torch.ones(128, 192),
                     source_audio=audio)
    graph, _ = build_graph(r, x, prefix="7.ltx.", expand_prompt=False)
    return r, graph


def _nodes(graph, class_type):
    return [n for _k, n in sorted(graph.items(), key=lambda kv: int(kv[0].rsplit(".", 1)[-1]))
            if n["class_type"] == class_type]


#: (what is changed in the built graph) -> a function changing it; each must change the read-back
MUTATIONS = {
    "x2 upscale factor": lambda g: _nodes(g, "ImageScaleBy")[0]["inputs"].update(scale_by=1.5),
    "VAE encode tile": lambda g: _nodes(g, "VAEEncodeTiled")[0]["inputs"].update(tile_size=256),
    "VAE decode temporal tile": lambda g: _nodes(g, "VAEDecodeTiled")[0]["inputs"].update(temporal_size=64),
    "spatial tile overlap": lambda g: _nodes(g, "LTXOutpaintSpatialTiledDecode")[0]["inputs"].update(overlap=1),
    "guide frame": lambda g: _nodes(g, "LTXVAddGuide")[0]["inputs"].update(frame_idx=8),
    "guide strength": lambda g: _nodes(g, "LTXVAddGuide")[0]["inputs"].update(strength=0.5),
    "stage 1 seed": lambda g: _nodes(g, "RandomNoise")[0]["inputs"].update(noise_seed=99),
    "stage 2 seed": lambda g: _nodes(g, "RandomNoise")[1]["inputs"].update(noise_seed=99),
    "stage 1 cfg": lambda g: _nodes(g, "CFGGuider")[0]["inputs"].update(cfg=7.0),
    "stage 2 cfg": lambda g: _nodes(g, "CFGGuider")[1]["inputs"].update(cfg=7.0),
    "checkpoint": lambda g: _nodes(g, "CheckpointLoaderSimple")[0]["inputs"].update(
        ckpt_name="ltx-2.3-22b-distilled.safetensors"),
    "stage 1 sampler": lambda g: _nodes(g, "KSamplerSelect")[0]["inputs"].update(sampler_name="euler"),
    "stage 2 sampler": lambda g: _nodes(g, "KSamplerSelect")[1]["inputs"].update(sampler_name="dpmpp_2m"),
    "stage 1 sigmas": lambda g: _nodes(g, "ManualSigmas")[0]["inputs"].update(sigmas="1.0, 0.5, 0.0"),
    "stage 2 sigmas": lambda g: _nodes(g, "ManualSigmas")[1]["inputs"].update(sigmas="0.9, 0.4219, 0.0"),
    "distilled LoRA strength": lambda g: _nodes(g, "LoraLoaderModelOnly")[0]["inputs"].update(strength_model=0.25),
    "IC-LoRA strength": lambda g: _nodes(g, "LoraLoaderModelOnly")[1]["inputs"].update(strength_model=0.5),
    "stage 1 blend": lambda g: _nodes(g, "LTXOutpaintPyramidBlend")[0]["inputs"].update(dilation=2),
    "final blend": lambda g: _nodes(g, "LTXOutpaintPyramidBlend")[1]["inputs"].update(dilation=5),
    "fill colour": lambda g: _nodes(g, "LTXOutpaintStageInputs")[0]["inputs"].update(fill_rgb="0,255,0"),
    "negative prompt": lambda g: _nodes(g, "CLIPTextEncode")[1]["inputs"].update(text="x"),
    "frame rate": lambda g: _nodes(g, "LTXVConditioning")[0]["inputs"].update(frame_rate=25.0),
    "frames": lambda g: _nodes(g, "EmptyLTXVLatentVideo")[0]["inputs"].update(length=17),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_the_read_back_sees_every_change_to_the_graph(name):
    r, graph = _official_graph()
    assert graph_parameters(graph, _names("official"), "official") == r.parameters()
    MUTATIONS[name](graph)
    assert graph_parameters(graph, _names("official"), "official") != r.parameters(), name


def test_video_strength_keeps_the_reference_attention_at_one_as_the_workflow_does():
    """Core's LTXVAddGuide would also cut the guide's attention to video_strength; the graph restores 1 (the
    official guide node's attention_strength), as the ltx-core engine attends: the read-back shows both."""
    r, graph = _official_graph(video_strength=0.6)
    params = graph_parameters(graph, _names("official"), "official")
    assert params["reference_strength"] == 0.6 and params["reference_attention"] == 1.0
    assert params == r.parameters()
    (att,) = _nodes(graph, "LTXOutpaintGuideAttention")
    assert att["inputs"]["attention_strength"] == 1.0
    r1, graph1 = _official_graph()
    assert not _nodes(graph1, "LTXOutpaintGuideAttention")  # strength 1: core's node alone does it
    att["inputs"]["attention_strength"] = 0.6  # as core alone would leave it: a different recipe
    assert graph_parameters(graph, _names("official"), "official") != r.parameters()


def test_a_source_without_audio_gets_generated_audio_in_both_engines():
    pipeline = pytest.importorskip("ltx_outpaint.local.ltxcore.pipeline")
    r = resolve(OFFICIAL, _request(), width=192, height=128, frames=9, seed=5)
    x = NativeInputs(models=_names("official"), placed=torch.zeros(9, 128, 192, 3), mask=torch.ones(128, 192),
                     source_audio=None)
    graph, _ = build_graph(r, x, prefix="8.ltx.", expand_prompt=False)
    native = graph_parameters(graph, _names("official"), "official")
    assert native["audio"] == "generated"
    assert native == pipeline.parameters(r, None, has_source_audio=False) == r.parameters(has_source_audio=False)


def test_sigmas_are_written_as_plain_decimals():
    from ltx_outpaint.local.native.graph import _sigmas

    text = _sigmas((1.0, 0.909375, 0.4219, 0.00001, 0.0))
    assert text == "1, 0.909375, 0.4219, 0.00001, 0" and "e" not in text
