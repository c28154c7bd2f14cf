"""Model files for the native engine, found by name in ComfyUI's own model folders (any depth).

Core's loaders take a file NAME from a folder list (`folder_paths.get_filename_list`, which walks
subfolders: "ltxv/ltx2/ltx-2.3-22b-distilled-lora-384-1.1.safetensors"), so this module returns those names.
Names and download places come from the local backend's catalogue (`local/models.py`). Roles whose model
comes from a socket (MODEL / CLIP / VAE / audio VAE of another loader) are not looked up.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

from ..models import MissingModelsError, catalogue

#: Single-file Gemma 3 12B names core's LTXAVTextEncoderLoader loads (Comfy-Org/ltx-2 split_files and the
#: name in Lightricks' workflow), most preferred first per precision.
GEMMA_FILES = {"bf16": ("gemma_3_12b_it.safetensors", "comfy_gemma_3_12b_it.safetensors"),
               "fp8": ("gemma_3_12b_it_fp8_scaled.safetensors", "*gemma_3_12b_it*fp8*.safetensors")}
GEMMA_ANY = ("*gemma_3_12b_it*.safetensors", "*gemma*3*12b*.safetensors")


@dataclass(frozen=True)
class NativeModels:
    """ComfyUI file names (relative to their folder kind) per role; None = not needed or from a socket."""

    checkpoint: str | None
    text_encoder: str | None
    distilled_lora: str | None
    ic_lora: str
    spatial_upsampler: str | None = None
    notes: tuple[str, ...] = ()


def _match(names: list[str], patterns: tuple[str, ...]) -> str | None:
    for pattern in patterns:
        hits = sorted(n for n in names if fnmatch.fnmatch(os.path.basename(n).lower(), pattern.lower()))
        if hits:
            return min(hits, key=lambda n: (n.count("/") + n.count("\\"), n))  # shallowest, then by name
    return None


def find_native_models(recipe, *, fp8: bool, listing, folders, need_checkpoint: bool = True,
                       need_text_encoder: bool = True, any_checkpoint: bool = False) -> NativeModels:
    """Resolve the files `recipe` needs. `listing(kind)` lists names (folder_paths.get_filename_list) and
    `folders(kind)` the folders searched (for the error). Raises one MissingModelsError naming them all.
    `any_checkpoint`: the transformer comes from a socket, so any LTX-2.3 checkpoint serves the VAE / audio
    VAE / text projection (the recipe's own one first)."""
    cat = catalogue(fp8=fp8)
    wanted: dict[str, tuple[str, tuple[str, ...]]] = {}  # role -> (folder kind, patterns)
    if need_checkpoint:
        role = recipe.checkpoint
        patterns = cat[role].candidates
        if any_checkpoint:
            patterns += tuple(p for r in ("dev", "distilled") for p in cat[r].candidates if p not in patterns)
        wanted["checkpoint"] = ("checkpoints", patterns)
    if need_text_encoder:
        order = GEMMA_FILES["fp8"] + GEMMA_FILES["bf16"] if fp8 else GEMMA_FILES["bf16"] + GEMMA_FILES["fp8"]
        wanted["text_encoder"] = ("text_encoders", order + GEMMA_ANY)
    if any(st.distilled_lora for st in recipe.stages):
        wanted["distilled_lora"] = ("loras", cat["distilled_lora"].candidates)
    wanted["ic_lora"] = ("loras", cat["ic_lora_outpaint"].candidates)
    if any(st.init == "latent_upsampler" for st in recipe.stages):
        wanted["spatial_upsampler"] = ("latent_upscale_models", cat["spatial_upsampler"].candidates)

    found: dict[str, str] = {}
    missing: list[str] = []
    lines: list[str] = []
    for role, (kind, patterns) in wanted.items():
        name = _match(list(listing(kind)), patterns)
        if name is not None:
            found[role] = name
            continue
        mf = cat[{"checkpoint": recipe.checkpoint, "ic_lora": "ic_lora_outpaint"}.get(role, role)]
        where = ", ".join(folders(kind)) or f"(no {kind} folder configured)"
        hint = ("the ComfyUI single file from https://huggingface.co/Comfy-Org/ltx-2 (split_files/"
                "text_encoders/gemma_3_12B_it.safetensors, or its _fp8_scaled variant)" if role == "text_encoder"
                else mf.source_url)
        missing.append(role)
        socket = {"checkpoint": " (or connect the backend node's model, clip, vae and audio_vae sockets)",
                  "text_encoder": " (or connect the backend node's clip socket)"}.get(role, "")
        lines.append(f"- {role}: {mf.description} ({mf.size_hint}); looked for {' or '.join(patterns)} "
                     f"in {where} and their subfolders; get it from {hint}{socket}")
    if missing:
        raise MissingModelsError(missing, f"the {recipe.name} recipe needs {len(missing)} model file(s) that "
                                 "ComfyUI's model folders do not have:\n" + "\n".join(lines))
    notes = []
    ckpt = found.get("checkpoint")
    if ckpt is not None and fp8 != ("fp8" in os.path.basename(ckpt).lower()):
        notes.append(f"checkpoint: {'fp8' if fp8 else 'bf16'} preferred, using {ckpt}")
    return NativeModels(checkpoint=ckpt, text_encoder=found.get("text_encoder"),
                        distilled_lora=found.get("distilled_lora"), ic_lora=found["ic_lora"],
                        spatial_upsampler=found.get("spatial_upsampler"), notes=tuple(notes))
