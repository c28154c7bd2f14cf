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

    _install_unload_hook()  # here, not at start-up: it imports comfy.model_management (heavy in ComfyUI 0.2x)
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
    candidate = "" if "\0" in given else os.path.realpath(os.path.expanduser(given))  # NUL: refused below
    if candidate and os.path.isdir(candidate):  # a Hugging Face Gemma folder
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
    from ..local.backend import LocalBackend

    backend = LocalBackend(config)
    engine = backend.engine()
    if engine == "ltxcore" and any(x is not None for x in (config.model, config.clip, config.vae, config.audio_vae)):
        raise InputError("model", f"the model sockets need the native engine, but {backend.why_not_native or 'engine is ltxcore'}")
    why = backend.why_not_native or ("engine ltxcore chosen on the backend node" if engine == "ltxcore" else None)
    return engine, why


def native_expansion(request, clip_data, canvas, config, unique_id: str, progress) -> tuple[dict, list]:
    """The outpaint job as a graph of core nodes + the pack's helpers (blocking: runs in a worker thread)."""
    from ..backends import prepare_job
    from ..local.backend import LocalBackend
    from ..local.native.prepare import native_graph

    job = prepare_job(request, clip_data, canvas, LocalBackend(config))
    return native_graph(job, config, progress, prefix=f"{unique_id}.ltx.")


def _install_unload_hook() -> bool:
    """ComfyUI's unload / free-memory action (POST /free, the Manager's "Unload Models") also drops what the local
    backend's keep_loaded holds. Feature-detected: without comfy.model_management.unload_all_models, no hook."""
    import comfy.model_management as mm

    original = getattr(mm, "unload_all_models", None)
    if original is None or getattr(original, "_ltx_outpaint_release", False):
        return False

    def unload_all_models(*args, **kwargs):
        from ..local.keep import release
        from ..local.native.run import release as release_native_loaders

        release("ComfyUI unloaded its models")
        release_native_loaders()  # the loaders a long clip / batch kept between its in-process jobs
        return original(*args, **kwargs)

    unload_all_models._ltx_outpaint_release = True
    unload_all_models.__wrapped__ = original
    mm.unload_all_models = unload_all_models
    return True



NODES = [LocalBackendNode]
