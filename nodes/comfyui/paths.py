"""The folders our nodes may read local files from (see `ltx_outpaint.paths` for the rules and opt-ins)."""
from __future__ import annotations

import os

import folder_paths

from ..errors import InputError
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


def save_target(filename_prefix: str, width: int, height: int, node: str) -> tuple[str, str, int, str]:
    """ComfyUI's (folder, name, counter, subfolder) for a new output file, after refusing a prefix that would
    leave the output folder or that a file system cannot take (NUL and other control characters: FFmpeg
    would cut the name there and overwrite another file)."""
    prefix = str(filename_prefix)
    if any(ord(c) < 32 or ord(c) == 127 for c in prefix):
        raise InputError("filename_prefix", "contains a control character (NUL, newline, ...); use plain text",
                         node=node)
    output = os.path.abspath(folder_paths.get_output_directory())
    target = os.path.abspath(os.path.join(output, prefix))  # lexical, as core's check (a symlinked subfolder
    # that the server's owner made inside output stays usable)
    try:
        inside = os.path.commonpath([output, target]) == output and target != output
    except ValueError:  # another drive (Windows)
        inside = False
    if os.path.isabs(prefix) or not inside:
        raise InputError("filename_prefix", "must stay inside ComfyUI's output folder (a name or a subfolder/name "
                                            "under it)", node=node)
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, output, width, height)
    return folder, name, counter, subfolder


def shown_path(path: str) -> str:
    """`path` as a user of the server sees it: relative to ComfyUI's output folder when inside it, else the
    file name (node texts never show the server's folders)."""
    output = os.path.abspath(folder_paths.get_output_directory())
    full = os.path.abspath(path)
    try:
        inside = os.path.commonpath([output, full]) == output
    except ValueError:  # another drive (Windows)
        inside = False
    return os.path.relpath(full, output).replace(os.sep, "/") + " [output]" if inside else os.path.basename(path)
