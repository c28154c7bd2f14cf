"""Local GPU node: the LTX-2.3 backend on this machine."""
from __future__ import annotations

import dataclasses
import logging
import os

import folder_paths
from comfy_api.latest import io

from ..errors import InputError
from ..local.backend import ENGINES, OFFLOADS
from ..local.recipe import DEFAULT_RECIPE, RECIPES
from ..local.pins import INSTALL_COMMAND
from .common import BACKEND, CATEGORY

log = logging.getLogger(__name__)


class LocalBackendNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LTXOutpaintLocalBackend",
            display_name="Outpaint Backend: Local GPU (LTX-2.3)",
            category=CATEGORY,
            description="Run LTX-2.3 on this machine. In a ComfyUI whose core has LTX-2 the outpaint node expands "
                        "into core nodes (ComfyUI's own model loading, offloading, progress); elsewhere it runs "
                        f"Lightricks' ltx-core ({INSTALL_COMMAND}). Model files are "
                        "found by name in ComfyUI's model folders, or come from the optional sockets. No safety "
                        "checker runs locally.",
            inputs=[
                io.Combo.Input("recipe", options=list(RECIPES), default=DEFAULT_RECIPE,
                               tooltip="official: Lightricks' LTX-2.3 IC-LoRA outpaint workflow, value for value "
                                       "(dev + distilled LoRA 0.5, two stages). ic_lora_pipeline: ltx-pipelines' "
                                       "ICLoraPipeline (distilled checkpoint, latent upsampler)."),
                io.Combo.Input("precision", options=["auto", "bf16", "fp8"], default="auto",
                               tooltip="Which checkpoint file to prefer: fp8 halves the transformer's memory; "
                                       "auto = fp8 on GPUs under 60 GB."),
                io.Boolean.Input("keep_loaded", default=False,
                                 tooltip="ltx-core engine: keep the weights in RAM and the last prompt encoding "
                                         "between runs (the native engine uses ComfyUI's model cache)."),
                io.String.Input("model_paths", default="", multiline=True, optional=True,
                                tooltip="ltx-core engine: explicit files inside ComfyUI's model folders, one "
                                        "ROLE=PATH per line (roles: dev, distilled, distilled_lora, "
                                        "ic_lora_outpaint, spatial_upsampler, text_encoder)."),
                io.Model.Input("model", optional=True,
                               tooltip="Native engine: an LTX-2.3 MODEL from any loader (GGUF, nvfp4, other "
                                       "packs) instead of the checkpoint file."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Native engine: the LTX-2.3 text encoder (CLIP) from any loader."),
                io.Vae.Input("vae", optional=True, tooltip="Native engine: the LTX-2.3 video VAE."),
                io.Vae.Input("audio_vae", optional=True, tooltip="Native engine: the LTX-2.3 audio VAE."),
                io.Combo.Input("engine", options=list(ENGINES), default="auto", optional=True,
                               tooltip="auto: ComfyUI core's LTX-2 when this ComfyUI has it, else ltx-core. "
                                       "native: core only. ltxcore: Lightricks' ltx-core only."),
                io.Combo.Input("offload", options=list(OFFLOADS), default="auto", optional=True,
                               tooltip="ltx-core engine: stream the transformer's / Gemma's blocks to the GPU one "
                                       "at a time (blocks), never (none), or when the planned peak does not fit "
                                       "this GPU (auto). The native engine uses ComfyUI's own offloading."),
            ],
            outputs=[BACKEND.Output(display_name="backend", tooltip="Connect to the outpaint node.")],
        )

    @classmethod
    def execute(cls, recipe, precision, keep_loaded, model_paths="", model=None, clip=None, vae=None,
                audio_vae=None, engine="auto", offload="auto") -> io.NodeOutput:
        config = _local_config(recipe, precision, keep_loaded, model_paths, engine=engine, offload=offload)
        if any(x is not None for x in (model, clip, vae, audio_vae)):
            if engine == "ltxcore":
                raise InputError("engine", "model / clip / vae / audio_vae sockets need the native engine "
                                           "(engine auto or native)")
            config = dataclasses.replace(config, model=model, clip=clip, vae=vae, audio_vae=audio_vae)
        return io.NodeOutput(config)


def _local_config(recipe=DEFAULT_RECIPE, precision="auto", keep_loaded=False, model_paths="", engine="auto",
                  offload="auto"):
    from ..local.backend import LocalConfig
    from ..local.models import ModelSearch

    explicit = []
    for line in (model_paths or "").splitlines():
        if line.strip():
            role, sep, path = line.partition("=")
            if not sep or not path.strip():
                raise InputError("model_paths", f"expected ROLE=PATH, got {line.strip()!r}")
            explicit.append((role.strip(), _model_path(path.strip())))
    search = ModelSearch.from_lookup(folder_paths.get_folder_paths).merge(ModelSearch.from_env())
    return LocalConfig(recipe=recipe, engine=engine, precision=precision, offload=offload, keep_loaded=keep_loaded,
                       search=search,
                       explicit=tuple(explicit), free_memory=_free_comfy_models)


#: ComfyUI model folders an explicit model path may point into (a workflow cannot name other server files)
MODEL_KINDS = ("checkpoints", "diffusion_models", "loras", "text_encoders", "clip", "latent_upscale_models",
               "upscale_models")


def _model_path(given: str) -> str:
    """An explicit model file (or Gemma folder) from a workflow, confined to ComfyUI's model folders (plus the
    server environment's LTX_OUTPAINT_ALLOWED_PATHS / LTX_OUTPAINT_ALLOW_ANY_PATH), symlinks resolved."""
    from ..paths import PathPolicy, refused

    folders = [f for kind in MODEL_KINDS for f in folder_paths.get_folder_paths(kind)]
    policy = PathPolicy(folders, what="model file", described="ComfyUI's model folders")
    candidate = os.path.realpath(os.path.expanduser(given))
    if os.path.isdir(candidate):  # a Hugging Face Gemma folder
        if policy.any or any(candidate == r or candidate.startswith(r.rstrip(os.sep) + os.sep) for r in policy.roots):
            return candidate
        raise refused(given, "model_paths", "Local GPU", "model file", "ComfyUI's model folders")
    return policy.resolve(given, "model_paths", "Local GPU")


def _free_comfy_models() -> None:
    """Unload ComfyUI's own models before the local backend loads LTX-2.3 (not what keep_loaded keeps)."""
    import comfy.model_management

    unload = comfy.model_management.unload_all_models
    getattr(unload, "__wrapped__", unload)()
    comfy.model_management.soft_empty_cache()


def choose_engine(config) -> tuple[str, str | None]:
    """("native" | "ltxcore", why native is not used or None) for a local-backend config, inside ComfyUI."""
    from ..local.native import unavailable_reason
    from ..local.recipe import get_recipe

    if config.engine == "ltxcore":
        return "ltxcore", "engine ltxcore chosen on the backend node"
    reason = unavailable_reason(get_recipe(config.recipe))
    if reason is None:
        return "native", None
    if config.engine == "native":
        raise InputError("engine", f"native was chosen but {reason}; use engine auto or ltxcore")
    if any(x is not None for x in (config.model, config.clip, config.vae, config.audio_vae)):
        raise InputError("model", f"the model sockets need the native engine, but {reason}")
    return "ltxcore", reason


def native_expansion(request, clip_data, canvas, config, unique_id: str, progress) -> tuple[dict, list]:
    """The outpaint job as a graph of core nodes + the pack's helpers (blocking: runs in a worker thread)."""
    import random

    import torch

    from ..backends import prepare_job
    from ..backends.preview import fit_audio, source_indices
    from ..local.backend import SAFETY_NOTE, LocalBackend, prefer_fp8
    from ..local.native import prompt_generation_available
    from ..local.native.graph import NativeInputs, build_graph
    from ..local.native.models import find_native_models
    from ..local.recipe import get_recipe, resolve
    from ..media.canvas import composite
    from .common import to_comfy_audio

    recipe = get_recipe(config.recipe)
    backend = LocalBackend(config)
    job = prepare_job(request, clip_data, canvas, backend)
    lay, n, fps = job.layout, job.num_frames, float(request.frames_per_second)
    need_ckpt = config.model is None or config.vae is None or config.clip is None or (
        request.generate_audio and config.audio_vae is None)
    models = find_native_models(recipe, fp8=prefer_fp8(config.precision, config.device),
                                listing=folder_paths.get_filename_list, folders=folder_paths.get_folder_paths,
                                need_checkpoint=need_ckpt, need_text_encoder=config.clip is None)
    loras = tuple((path, float(scale), target) for path, scale, target in backend.user_lora_files(job))
    progress.check()
    frames = clip_data.frames[source_indices(clip_data.num_frames, clip_data.fps, n, fps)]
    placed = composite(frames, lay, fill=(0.5, 0.5, 0.5))
    first = frames[:1].clone()
    del frames
    mask = lay.mask()
    audio = None
    if clip_data.audio is not None and not clip_data.audio.silent and request.generate_audio:
        audio = to_comfy_audio(fit_audio(clip_data.audio, n / fps))
    seed = request.seed if request.seed is not None else random.randint(0, 2**32 - 1)
    resolved = resolve(recipe, request, width=lay.width, height=lay.height, frames=n, seed=seed)
    notes = [f"engine: native (ComfyUI core LTX-2), recipe {recipe.name}", *resolved.notes, *models.notes]
    expand = bool(request.enable_prompt_expansion)
    if expand and not prompt_generation_available():
        notes.append("enable_prompt_expansion: this ComfyUI has no TextGenerateLTX2Prompt node; prompt used as is")
        expand = False
    if request.enable_safety_checker:
        log.warning(SAFETY_NOTE)
        notes.append(SAFETY_NOTE)
    planned = _native_memory_plan(resolved, models, has_source_audio=audio is not None)
    if planned:
        notes.append(planned)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    inputs = NativeInputs(models=models, placed=placed, mask=mask, source_audio=audio, loras=loras,
                          first_frame=first, model=config.model, clip=config.clip, vae=config.vae,
                          audio_vae=config.audio_vae, finish={"notes": notes, "backend": "local (native)"})
    graph, outputs = build_graph(resolved, inputs, prefix=f"{unique_id}.ltx.", expand_prompt=expand)
    w1, h1 = resolved.stage_size(0)
    progress.report(0, 1, f"native LTX-2.3 ({recipe.name}): stage 1 {w1}x{h1}, stage 2 {lay.width}x{lay.height}, "
                          f"{n} frames at {fps:g} fps; {len(graph)} nodes" + (f"; {planned}" if planned else ""))
    log.info("native engine: %s recipe, %dx%d, %d frames, models %s", recipe.name, lay.width, lay.height, n, models)
    return graph, outputs


def _native_memory_plan(resolved, models, *, has_source_audio: bool) -> str | None:
    """The planned peak VRAM per stage of a native run (from the model files' headers), before ComfyUI's own
    partial loading / offloading; None when the models come from sockets (no files to read)."""
    from types import SimpleNamespace

    from ..local.ltxcore.pipeline import model_sizes, plan_run, stage_work
    from ..local.memory_plan import plan

    if models.checkpoint is None or models.text_encoder is None:
        return None
    full = lambda kind, name: folder_paths.get_full_path(kind, name) if name else None  # noqa: E731
    ckpt = full("checkpoints", models.checkpoint)
    files = SimpleNamespace(dev=ckpt, distilled=ckpt, text_encoder=full("text_encoders", models.text_encoder),
                            spatial_upsampler=full("latent_upscale_models", models.spatial_upsampler),
                            distilled_lora=full("loras", models.distilled_lora),
                            ic_lora_outpaint=full("loras", models.ic_lora))
    try:
        run = plan_run(resolved, files, has_source_audio=has_source_audio)
        fp8 = "fp8" in os.path.basename(ckpt).lower()
        mp = plan(model_sizes(files, run, fp8), stage_work(run), offload_transformer=False, offload_text=False)
    except Exception as exc:  # a plan is advice: never fail a run for it
        log.warning("native engine: no memory plan (%s)", exc)
        return None
    return mp.describe().replace("(offload: none", "(before ComfyUI's own offloading")


def _install_unload_hook() -> bool:
    """ComfyUI's unload / free-memory action (POST /free, the Manager's "Unload Models") also drops what the local
    backend's keep_loaded holds. Feature-detected: without comfy.model_management.unload_all_models, no hook."""
    import comfy.model_management as mm

    original = getattr(mm, "unload_all_models", None)
    if original is None or getattr(original, "_ltx_outpaint_release", False):
        return False

    def unload_all_models(*args, **kwargs):
        from ..local.keep import release

        release("ComfyUI unloaded its models")
        return original(*args, **kwargs)

    unload_all_models._ltx_outpaint_release = True
    unload_all_models.__wrapped__ = original
    mm.unload_all_models = unload_all_models
    return True


_install_unload_hook()


NODES = [LocalBackendNode]
