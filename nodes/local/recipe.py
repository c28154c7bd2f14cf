"""The local backend's recipes as data: every value with the place it was read from.

Both local engines (ComfyUI core's LTX-2, `native/`; Lightricks' ltx-core, `ltxcore/`) run a recipe from
this module, resolved for one request by :func:`resolve`. Nothing else in the pack holds a recipe value.

Recipes (each a published one, named after it):

- ``official`` (default) — Lightricks' LTX-2.3 IC-LoRA outpaint workflow, two stages
  (`Lightricks/ComfyUI-LTXVideo` ``example_workflows/2.3/LTX-2.3_ICLoRA_Outpaint_Two_Stage_Distilled.json``
  at commit aceeae96, and the nodes it uses), parameter for parameter.
- ``ic_lora_pipeline`` — ltx-pipelines 1.0.0 ``ICLoraPipeline`` (distilled checkpoint, latent upsampler
  between the stages), with the outpaint parts of the official workflow that a video outpaint needs
  (green fill, frozen source audio, pyramid paste-back): named in :data:`IC_LORA_PIPELINE.deviations`.

How the request's fields (fal's schema) apply: ``prompt`` is the positive prompt; ``negative_prompt``
replaces the recipe's negative prompt when the user changed it from fal's default; ``guidance_scale`` is the
CFG scale of both stages (the recipes' value, 1, is fal's default); ``video_strength`` is the IC reference's
strength (recipes: 1 = fal's default); ``seed`` seeds both stages; ``num_inference_steps`` does not apply
(both recipes have fixed sigma schedules: noted in the output when it differs from the default);
``enable_prompt_expansion`` runs Gemma's prompt enhancement first (not part of either recipe).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..request import DEFAULT_NEGATIVE_PROMPT, FIELDS, OutpaintRequest

#: Where each cited file lives.
WORKFLOW = "ComfyUI-LTXVideo/example_workflows/2.3/LTX-2.3_ICLoRA_Outpaint_Two_Stage_Distilled.json"
WORKFLOW_COMMIT = "aceeae9635f6d493f2893ba3c411a1c36031788a"
LTXV_NODES = "ComfyUI-LTXVideo/"  # + vanish_nodes.py, pyramid_blending.py, ... at the same commit
LTX_PIPELINES = "ltx-pipelines 1.0.0 ltx_pipelines/"


@dataclass(frozen=True)
class Source:
    """Where a value was read: a file and line, and for workflow values the node id and widget."""

    file: str
    line: int
    node: int | None = None  # workflow node id
    widget: int | None = None  # index into that node's widgets_values
    what: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        if self.node is not None:
            where += f" (node {self.node} {self.what})"
        elif self.what:
            where += f" ({self.what})"
        return where


def wf(line: int, node: int, widget: int | None, what: str) -> Source:
    return Source(WORKFLOW, line, node, widget, what)


@dataclass(frozen=True)
class Stage:
    """One sampling stage."""

    scale: float  # of the canvas: 0.5 = half size
    sigmas: tuple[float, ...]
    sampler: str  # ComfyUI sampler name (the ltx-core engine implements the same update)
    distilled_lora: float  # strength of the distilled LoRA on the dev checkpoint (0: not loaded)
    ic_lora: float  # strength of the in/outpaint IC-LoRA in this stage (0: not loaded)
    reference: bool  # the IC reference guide (the green composite) is appended in this stage
    #: stage input: "empty" (noise), "pixels_x2" (blended stage-1 frames, x2 lanczos, VAE-encoded),
    #: "latent_upsampler" (x2 with the spatial upsampler model, re-noised to sigmas[0])
    init: str
    #: which sampler output goes on: "denoised_output" or "output" (equal when the last sigma is 0)
    take: str
    #: decode: "tiled" (VAEDecodeTiled 512/64/512/64), "spatial_tiles" (2x2 tiles, overlap 6 latents) or
    #: "none" (the latent goes on to the next stage undecoded)
    decode: str
    #: pyramid-blend mask dilation after this stage, in cells of the 64-cell grid (0: no blend)
    blend_dilation: int


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    checkpoint: str  # model role: "dev" or "distilled"
    fill_rgb: tuple[int, int, int]  # colour painted where the model generates (IC reference)
    blend_long_side: int  # the dilation grid: cells on the long side
    blend_levels: int  # Laplacian pyramid levels
    negative_prompt: str
    cfg: float
    audio: str  # "frozen_source": the source audio latent is kept (noise mask 0) in both stages
    stages: tuple[Stage, Stage]
    #: VAE tiles (pixels): tile, overlap, temporal tile, temporal overlap (encode and stage-1 decode)
    vae_tiles: tuple[int, int, int, int]
    #: final decode: horizontal tiles, vertical tiles, overlap (latent cells)
    spatial_tiles: tuple[int, int, int]
    needs: tuple[str, ...]  # model roles this recipe loads
    sources: dict[str, Source] = field(default_factory=dict, compare=False)
    deviations: tuple[str, ...] = ()


OFFICIAL = Recipe(
    name="official",
    title="Lightricks LTX-2.3 ICLoRA Outpaint, two-stage distilled (ComfyUI-LTXVideo example workflow)",
    checkpoint="dev",
    fill_rgb=(102, 255, 0),
    blend_long_side=64,
    blend_levels=7,
    negative_prompt="pc game, console game, video game, cartoon, childish, ugly",
    cfg=1.0,
    audio="frozen_source",
    stages=(
        Stage(scale=0.5, sigmas=(1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0),
              sampler="euler_ancestral_cfg_pp", distilled_lora=0.5, ic_lora=1.0, reference=True, init="empty",
              take="denoised_output", decode="tiled", blend_dilation=5),
        Stage(scale=1.0, sigmas=(0.725, 0.4219, 0.0), sampler="euler_cfg_pp", distilled_lora=0.5, ic_lora=1.0,
              reference=False, init="pixels_x2", take="output", decode="spatial_tiles", blend_dilation=2),
    ),
    vae_tiles=(512, 64, 512, 64),
    spatial_tiles=(2, 2, 6),
    needs=("dev", "distilled_lora", "ic_lora_outpaint", "text_encoder"),
    sources={
        "checkpoint": wf(79, 3940, 0, "CheckpointLoaderSimple.ckpt_name"),
        "fill_rgb": Source(LTXV_NODES + "vanish_nodes.py", 92, what="_BG_COLOR_RGB, used by LTXVInpaintPreprocess"),
        "blend_long_side": Source(LTXV_NODES + "pyramid_blending.py", 20, what="_MASK_LOW_RES_LONG_SIDE"),
        "blend_levels": Source(LTXV_NODES + "pyramid_blending.py", 262, what="max_level in LTXVLaplacianPyramidBlend"),
        "negative_prompt": wf(532, 2612, 0, "CLIPTextEncode.text (negative)"),
        "cfg": wf(767, 4828, 0, "CFGGuider.cfg (stage 1); node 5209 line 977 (stage 2)"),
        "stages[0].scale": wf(1502, 5364, 1, "ResizeImageMaskNode 'scale by multiplier' 0.5"),
        "stages[0].sigmas": wf(734, 5025, 0, "ManualSigmas.sigmas"),
        "stages[0].sampler": wf(1298, 4831, 0, "KSamplerSelect.sampler_name"),
        "stages[0].distilled_lora": wf(2030, 4922, 1, "LoraLoaderModelOnly.strength_model"),
        "stages[0].ic_lora": wf(2594, 5011, 1, "LTXICLoRALoaderModelOnly.strength_model"),
        "stages[0].reference": wf(1908, 5114, 1, "LTXAddVideoICLoRAGuideAdvanced.strength"),
        "stages[0].take": wf(1641, 5093, None, "SamplerCustomAdvanced.denoised_output -> 5386"),
        "stages[0].decode": wf(609, 4851, 0, "VAEDecodeTiled"),
        "stages[0].blend_dilation": wf(1062, 5266, 1, "LTXVLaplacianPyramidBlend.mask_low_res_dilation"),
        "stages[1].scale": wf(1177, 5379, 1, "ResizeImageMaskNode 'scale by multiplier' 2 (lanczos)"),
        "stages[1].sigmas": wf(1110, 5211, 0, "ManualSigmas.sigmas"),
        "stages[1].sampler": wf(1265, 5215, 0, "KSamplerSelect.sampler_name"),
        "stages[1].distilled_lora": wf(2030, 4922, 1, "the same patched model (5011) feeds CFGGuider 5209"),
        "stages[1].ic_lora": wf(2594, 5011, 1, "the same patched model feeds CFGGuider 5209"),
        "stages[1].init": wf(1218, 5267, 0, "VAEEncodeTiled of the x2 lanczos blend"),
        "stages[1].take": wf(1802, 5214, None, "SamplerCustomAdvanced.output -> 5388"),
        "stages[1].decode": wf(1331, 5380, 0, "LTXVTiledVAEDecode"),
        "stages[1].blend_dilation": wf(1378, 5226, 1, "LTXVLaplacianPyramidBlend.mask_low_res_dilation"),
        "audio": wf(2399, 5390, None, "LTXVSetAudioRefTokens.frozen_audio -> LTXVConcatAVLatent 5383"),
        "vae_tiles": wf(1218, 5267, 0, "VAEEncodeTiled; VAEDecodeTiled node 4851 line 609"),
        "spatial_tiles": wf(1331, 5380, 0, "LTXVTiledVAEDecode horizontal/vertical tiles, overlap"),
        "seed": wf(575, 4832, 0, "RandomNoise.noise_seed (both stages: node 5210 line 1026, same value)"),
    },
    deviations=(
        "canvas geometry comes from the request (fal's resolution, source_scale; the pack's placement), not "
        "from the workflow's fixed 1024-px short side",
    ),
)

IC_LORA_PIPELINE = Recipe(
    name="ic_lora_pipeline",
    title="ltx-pipelines 1.0.0 ICLoraPipeline (distilled checkpoint, latent upsampler)",
    checkpoint="distilled",
    fill_rgb=OFFICIAL.fill_rgb,
    blend_long_side=OFFICIAL.blend_long_side,
    blend_levels=OFFICIAL.blend_levels,
    negative_prompt="",
    cfg=1.0,
    audio="frozen_source",
    stages=(
        Stage(scale=0.5, sigmas=(1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0),
              sampler="euler", distilled_lora=0.0, ic_lora=1.0, reference=True, init="empty", take="output",
              decode="none", blend_dilation=0),
        Stage(scale=1.0, sigmas=(0.909375, 0.725, 0.421875, 0.0), sampler="euler", distilled_lora=0.0,
              ic_lora=0.0, reference=False, init="latent_upsampler", take="output", decode="spatial_tiles",
              blend_dilation=OFFICIAL.stages[1].blend_dilation),
    ),
    vae_tiles=OFFICIAL.vae_tiles,
    spatial_tiles=OFFICIAL.spatial_tiles,
    needs=("distilled", "ic_lora_outpaint", "spatial_upsampler", "text_encoder"),
    sources={
        "checkpoint": Source(LTX_PIPELINES + "ic_lora.py", 63, what="ICLoraPipeline(distilled_checkpoint_path)"),
        "stages[0].scale": Source(LTX_PIPELINES + "ic_lora.py", 184, what="width // 2, height // 2"),
        "stages[0].sigmas": Source(LTX_PIPELINES + "utils/constants.py", 15, what="DISTILLED_SIGMA_VALUES"),
        "stages[0].sampler": Source(LTX_PIPELINES + "ic_lora.py", 168, what="EulerDiffusionStep"),
        "stages[0].ic_lora": Source(LTX_PIPELINES + "ic_lora.py", 79, what="stage-1 ledger loras"),
        "stages[1].init": Source(LTX_PIPELINES + "ic_lora.py", 250, what="upsample_video"),
        "stages[1].sigmas": Source(LTX_PIPELINES + "utils/constants.py", 18, what="STAGE_2_DISTILLED_SIGMA_VALUES"),
        "stages[1].ic_lora": Source(LTX_PIPELINES + "ic_lora.py", 88, what="stage-2 ledger loras=[]"),
        "cfg": Source(LTX_PIPELINES + "ic_lora.py", 213, what="simple_denoising_func: no guidance"),
    },
    deviations=(
        "audio: the source audio is kept frozen in both stages, as in the official workflow (ICLoraPipeline "
        "generates audio from noise)",
        "the area to generate is painted the official workflow's green, and the source pixels are put back at "
        "the end with its pyramid blend (dilation 2; ICLoraPipeline has neither)",
        "canvas geometry comes from the request",
    ),
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (OFFICIAL, IC_LORA_PIPELINE)}
#: the IC reference's attention strength in both recipes: full attention whatever `video_strength` (official
#: workflow node 5114 LTXAddVideoICLoRAGuideAdvanced, widget attention_strength = 1)
REFERENCE_ATTENTION = 1.0
DEFAULT_RECIPE = OFFICIAL.name


@dataclass(frozen=True)
class ResolvedRecipe:
    """A recipe with one request's fields applied: what an engine runs, nothing left to decide."""

    recipe: Recipe
    prompt: str
    negative_prompt: str
    cfg: float
    reference_strength: float
    seed: int
    frames: int
    fps: float
    width: int
    height: int
    generate_audio: bool
    enhance_prompt: bool
    notes: tuple[str, ...] = ()

    @property
    def stages(self) -> tuple[Stage, Stage]:
        return self.recipe.stages

    def stage_size(self, i: int) -> tuple[int, int]:
        s = self.recipe.stages[i].scale
        return int(self.width * s), int(self.height * s)

    def parameters(self, has_source_audio: bool = True) -> dict:
        """Every value an engine uses, flat (what the cross-engine test compares). `has_source_audio`: the
        source has sound to freeze (else audio is generated with the picture)."""
        r = self.recipe
        reference = any(st.reference for st in r.stages)
        audio = "none" if not self.generate_audio else (r.audio if has_source_audio else "generated")
        out = {"recipe": r.name, "checkpoint": r.checkpoint, "fill_rgb": r.fill_rgb, "prompt": self.prompt,
               "negative_prompt": self.negative_prompt, "frames": self.frames, "fps": self.fps,
               "size": (self.width, self.height), "audio": audio, "blend": (r.blend_long_side, r.blend_levels),
               "reference_strength": self.reference_strength if reference else None,
               "reference_frame": 0 if reference else None,
               "reference_attention": REFERENCE_ATTENTION if reference else None,
               "vae_tiles": r.vae_tiles if any(st.init == "pixels_x2" for st in r.stages) else None,
               "spatial_tiles": r.spatial_tiles}
        for i, st in enumerate(r.stages):
            out[f"stage{i + 1}"] = {"size": self.stage_size(i), "sigmas": st.sigmas, "sampler": st.sampler,
                                    "cfg": self.cfg, "seed": self.seed,
                                    "distilled_lora": st.distilled_lora, "ic_lora": st.ic_lora,
                                    "reference": st.reference, "init": st.init, "take": st.take,
                                    "decode": st.decode, "blend_dilation": st.blend_dilation}
        return out


def get_recipe(name: str) -> Recipe:
    from ..errors import InputError

    if name not in RECIPES:
        raise InputError("recipe", f"got {name!r}; allowed: {', '.join(RECIPES)}")
    return RECIPES[name]


def resolve(recipe: Recipe | str, request: OutpaintRequest, *, width: int, height: int, frames: int,
            seed: int) -> ResolvedRecipe:
    """Apply a request's fields to a recipe (see the module docstring for how each field maps)."""
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    notes = []
    negative = recipe.negative_prompt
    if request.negative_prompt != DEFAULT_NEGATIVE_PROMPT:
        negative = request.negative_prompt
        notes.append("negative_prompt: yours replaces the recipe's")
    steps_default = FIELDS["num_inference_steps"].default
    if request.num_inference_steps != steps_default:
        counts = "+".join(str(len(s.sigmas) - 1) for s in recipe.stages)
        notes.append(f"num_inference_steps {request.num_inference_steps} does not apply locally: the "
                     f"{recipe.name} recipe has fixed sigma schedules ({counts} steps)")
    if request.guidance_scale != recipe.cfg:
        notes.append(f"guidance_scale {request.guidance_scale:g}: CFG {request.guidance_scale:g} in both stages "
                     f"(the recipe uses {recipe.cfg:g})")
    if request.video_strength != 1.0:
        notes.append(f"video_strength {request.video_strength:g}: IC reference strength (the recipe uses 1)")
    return ResolvedRecipe(recipe=recipe, prompt=request.prompt, negative_prompt=negative,
                          cfg=float(request.guidance_scale), reference_strength=float(request.video_strength),
                          seed=int(seed), frames=int(frames), fps=float(request.frames_per_second),
                          width=int(width), height=int(height), generate_audio=bool(request.generate_audio),
                          enhance_prompt=bool(request.enable_prompt_expansion), notes=tuple(notes))


def with_stage(recipe: Recipe, i: int, **changes) -> Recipe:
    """A copy of `recipe` with stage `i` changed (for tests and experiments; never used by a mode)."""
    stages = list(recipe.stages)
    stages[i] = replace(stages[i], **changes)
    return replace(recipe, stages=tuple(stages))
