"""The folders our nodes may read local files from (see `ltx_outpaint.paths` for the rules and opt-ins)."""
from __future__ import annotations

import folder_paths

from ..paths import PathPolicy

LORA_NODE = "LoRA Stack"


def media_policy() -> PathPolicy:
    """Load Video may read ComfyUI's input, output and temp folders (+ what the server's environment allows)."""
    return PathPolicy([folder_paths.get_input_directory(), folder_paths.get_output_directory(),
                       folder_paths.get_temp_directory()], what="video file",
                      described="ComfyUI's input, output or temp folder")


def lora_policy() -> PathPolicy:
    """LoRA Stack may read ComfyUI's loras folders (extra_model_paths included, + the environment's)."""
    return PathPolicy(list(folder_paths.get_folder_paths("loras")), what="LoRA file",
                      described="ComfyUI's loras folders")


def annotated(name: str) -> str:
    """`x.mp4`, `x.mp4 [output]`, `sub/x.mp4 [temp]` -> the path in that folder (not yet checked)."""
    return folder_paths.get_annotated_filepath(name.strip())


def lora_source(lora: str, path_or_url: str) -> str | None:
    """A URL as given, the real path of an allowed local LoRA, or None for no LoRA ("none", no path)."""
    from ..download import is_url

    given = (path_or_url or "").strip()
    if given:
        return given if is_url(given) else lora_policy().resolve(given, "path_or_url", LORA_NODE)
    if not lora or lora == "none":
        return None
    full = folder_paths.get_full_path("loras", lora)
    if full is None:  # same refusal as for a file outside the folders
        raise lora_policy().resolve_missing(lora, "lora", LORA_NODE)
    return lora_policy().resolve(full, "lora", LORA_NODE)


def lora_fingerprint(lora: str, path_or_url: str) -> str:
    from ..download import is_url

    given = (path_or_url or "").strip()
    if given and is_url(given):
        return given
    if given:
        return lora_policy().fingerprint(given)
    full = folder_paths.get_full_path("loras", lora) if lora and lora != "none" else None
    return lora_policy().fingerprint(full, label=lora) if full else f"none:{lora}"


__all__ = ["annotated", "lora_fingerprint", "lora_policy", "lora_source", "media_policy"]
