"""Local GPU node: the LTX-2.3 backend on this machine."""
from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import io

from ..errors import InputError
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
            description=f"Run LTX-2.3 on this machine with Lightricks' ltx-core ({INSTALL_COMMAND}). Model files "
                        "are found in ComfyUI's model folders (checkpoints, loras, latent_upscale_models, "
                        "text_encoders). No safety checker runs locally.",
            inputs=[
                io.Combo.Input("recipe", options=["official", "ic_lora_pipeline"], default="official",
                               tooltip="official: Lightricks' LTX-2.3 IC-LoRA outpaint workflow, value for value "
                                       "(dev + distilled LoRA 0.5, two stages). ic_lora_pipeline: ltx-pipelines' "
                                       "ICLoraPipeline (distilled checkpoint, latent upsampler)."),
                io.Combo.Input("precision", options=["auto", "bf16", "fp8"], default="auto",
                               tooltip="Transformer weights. fp8 halves their memory (fp8 checkpoint, or a "
                                       "bf16 one cast while loading); auto = fp8 on GPUs under 60 GB."),
                io.Boolean.Input("keep_loaded", default=False,
                                 tooltip="Keep the weights in RAM and the last prompt encoding between runs "
                                         "(faster reruns, uses CPU RAM)."),
                io.String.Input("model_paths", default="", multiline=True, optional=True,
                                tooltip="Optional explicit files, one ROLE=PATH per line (roles: dev, "
                                        "distilled, distilled_lora, ic_lora_outpaint, spatial_upsampler, "
                                        "text_encoder)."),
            ],
            outputs=[BACKEND.Output(display_name="backend", tooltip="Connect to the outpaint node.")],
        )

    @classmethod
    def execute(cls, recipe, precision, keep_loaded, model_paths="") -> io.NodeOutput:
        return io.NodeOutput(_local_config(recipe, precision, keep_loaded, model_paths))


def _local_config(recipe="official", precision="auto", keep_loaded=False, model_paths=""):
    from ..local.backend import LocalConfig
    from ..local.models import ModelSearch

    explicit = []
    for line in (model_paths or "").splitlines():
        if line.strip():
            role, sep, path = line.partition("=")
            if not sep or not path.strip():
                raise InputError("model_paths", f"expected ROLE=PATH, got {line.strip()!r}")
            explicit.append((role.strip(), os.path.expanduser(path.strip())))
    search = ModelSearch.from_lookup(folder_paths.get_folder_paths).merge(ModelSearch.from_env())
    return LocalConfig(recipe=recipe, precision=precision, keep_loaded=keep_loaded, search=search,
                       explicit=tuple(explicit), free_memory=_free_comfy_models)

def _free_comfy_models() -> None:
    """Unload ComfyUI's own models before the local backend loads LTX-2.3 (not what keep_loaded keeps)."""
    import comfy.model_management

    unload = comfy.model_management.unload_all_models
    getattr(unload, "__wrapped__", unload)()
    comfy.model_management.soft_empty_cache()


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
