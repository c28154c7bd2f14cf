"""Find the LTX-2.3 model files the local backend needs, in ComfyUI-style model folders.

Pure Python: no ltx-core, transformers or ComfyUI imports. The caller says where to look with a
:class:`ModelSearch` (the ComfyUI adapter builds it from ``folder_paths.get_folder_paths``, the CLI from
``--models-dir`` and ``$LTX_OUTPAINT_MODELS_DIR``); :func:`find_models` returns one path per role or
raises a single :class:`MissingModelsError` that lists every missing file, every folder searched and
where to download it.

Which roles a run needs comes from its recipe (``recipe.py``: ``Recipe.needs``; the spatial upsampler only for
``ic_lora_pipeline``). Matching is case-insensitive, by the official file names (those in Lightricks' workflow
and on Hugging Face), looks in each folder and all its subfolders at any depth (Lightricks' workflow keeps LoRAs in
``loras/ltxv/ltx2/``), shallower matches first, and ignores hidden, empty and partly downloaded (``.partial``,
``.tmp``, ...) files.
"""
from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from ..errors import InputError

log = logging.getLogger(__name__)

ENV_MODELS_DIR = "LTX_OUTPAINT_MODELS_DIR"
# ComfyUI model-folder kinds this module looks in ("clip" is ComfyUI's legacy name for text_encoders).
KINDS = ("checkpoints", "diffusion_models", "loras", "latent_upscale_models", "upscale_models",
         "text_encoders", "clip")
IGNORED_SUFFIXES = (".partial", ".tmp", ".part", ".incomplete", ".crdownload", ".download", ".lock")
GEMMA_FOLDER_FILES = ("config.json", "tokenizer.model")  # plus at least one *.safetensors shard

_HF = "https://huggingface.co/"
LTX_URL = _HF + "Lightricks/LTX-2.3"
LTX_FP8_URL = _HF + "Lightricks/LTX-2.3-fp8"
IC_LORA_URL = _HF + "Lightricks/LTX-2.3-22b-IC-LoRA-In-Outpainting"
GEMMA_URL = _HF + "google/gemma-3-12b-it-qat-q4_0-unquantized"
GEMMA_COMFY_URL = _HF + "Comfy-Org/ltx-2"

ROLES = ("dev", "distilled", "distilled_lora", "ic_lora_outpaint", "spatial_upsampler", "text_encoder")
#: folders never searched (our own cache of LoRAs fetched from URLs holds no official files)
SKIPPED_DIRS = ("ltx-outpaint-url-cache",)


def recipe_roles(recipe) -> tuple[str, ...]:
    """The model roles `recipe` (a name or a recipe.Recipe) loads."""
    from .recipe import get_recipe

    r = get_recipe(recipe) if isinstance(recipe, str) else recipe
    return tuple(r.needs)


def _norm(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


@dataclass(frozen=True)
class ModelSearch:
    """Folders to search per model kind ("checkpoints", "loras", "text_encoders", ...), in order."""

    folders: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):  # absolute paths, duplicates dropped, a private copy
        clean: dict[str, list[str]] = {}
        for kind, paths in self.folders.items():
            out = clean.setdefault(kind, [])
            for p in paths:
                if p and _norm(p) not in out:
                    out.append(_norm(p))
        object.__setattr__(self, "folders", clean)

    def get(self, kind: str) -> list[str]:
        return list(self.folders.get(kind, ()))

    @classmethod
    def from_models_dir(cls, path: str, field_name: str = "models_dir") -> "ModelSearch":
        """A ComfyUI-style models folder (``<path>/checkpoints``, ``<path>/loras``, ...). A ComfyUI root
        (one holding ``models/checkpoints``) is accepted too."""
        root = _norm(path)
        if not os.path.isdir(root):
            raise InputError(field_name, f"models folder {root} does not exist")
        if not os.path.isdir(os.path.join(root, "checkpoints")) and \
                os.path.isdir(os.path.join(root, "models", "checkpoints")):
            root = os.path.join(root, "models")
        return cls({kind: [os.path.join(root, kind)] for kind in KINDS})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ModelSearch":
        """From $LTX_OUTPAINT_MODELS_DIR (one or more models folders, os.pathsep-separated); empty if unset."""
        value = (os.environ if environ is None else environ).get(ENV_MODELS_DIR, "")
        search = cls()
        for part in filter(None, (p.strip() for p in value.split(os.pathsep))):
            search = search.merge(cls.from_models_dir(part, field_name=ENV_MODELS_DIR))
        return search

    @classmethod
    def from_lookup(cls, lookup: Callable[[str], Iterable[str]], kinds: Iterable[str] = KINDS) -> "ModelSearch":
        """From a folder lookup such as ComfyUI's ``folder_paths.get_folder_paths`` (kinds it does not
        know, raising KeyError, are skipped)."""
        folders = {}
        for kind in kinds:
            try:
                folders[kind] = list(lookup(kind))
            except KeyError:
                log.debug("model folder kind %r unknown to the lookup; skipped", kind)
        return cls(folders)

    def merge(self, other: "ModelSearch") -> "ModelSearch":
        """This search's folders first, then `other`'s (duplicates dropped)."""
        kinds = list(self.folders) + [k for k in other.folders if k not in self.folders]
        return ModelSearch({k: self.get(k) + other.get(k) for k in kinds})


@dataclass(frozen=True)
class ModelFile:
    """One model file (or, for the text encoder, folder) the local backend needs.

    `candidates`: case-insensitive glob patterns for the file name, most preferred first; a pattern
    ending in "/" matches a Hugging Face model folder instead of a file.
    """

    role: str
    kind: str
    candidates: tuple[str, ...]
    source_url: str
    size_hint: str
    description: str = ""
    extra_kinds: tuple[str, ...] = ()
    fp8_variants: bool = False  # has fp8 and bf16 files (a fallback between them is noted)
    hint: str = ""

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.kind, *self.extra_kinds)


def catalogue(fp8: bool = False) -> dict[str, ModelFile]:
    """Every role's :class:`ModelFile`, candidates ordered by the fp8/bf16 preference."""

    def pref(bf16: list[str], fp8_names: list[str]) -> tuple[str, ...]:
        return tuple(fp8_names + bf16 if fp8 else bf16 + fp8_names)

    ckpt_url = LTX_FP8_URL if fp8 else LTX_URL
    ckpt_size = "~29 GB fp8" if fp8 else "~46 GB bf16"
    files = [
        ModelFile("dev", "checkpoints", pref(["ltx-2.3-22b-dev.safetensors"], ["ltx-2.3-22b-dev-fp8.safetensors"]),
                  ckpt_url, ckpt_size, "LTX-2.3 22B dev checkpoint", ("diffusion_models",), True),
        ModelFile("distilled", "checkpoints",
                  pref(["ltx-2.3-22b-distilled-1.1.safetensors", "ltx-2.3-22b-distilled.safetensors"],
                       ["ltx-2.3-22b-distilled-1.1-fp8.safetensors", "ltx-2.3-22b-distilled-fp8.safetensors"]),
                  ckpt_url, ckpt_size, "LTX-2.3 22B distilled checkpoint", ("diffusion_models",), True),
        ModelFile("distilled_lora", "loras",
                  ("ltx-2.3-22b-distilled-lora-384-1.1.safetensors", "ltx-2.3-22b-distilled-lora-384.safetensors"),
                  LTX_URL, "~7.6 GB", "LTX-2.3 distilled LoRA"),
        ModelFile("ic_lora_outpaint", "loras", ("ltx-2.3-22b-ic-lora-in-outpainting-0.9.safetensors",),
                  IC_LORA_URL, "~1.3 GB", "LTX-2.3 in/outpainting IC-LoRA"),
        ModelFile("spatial_upsampler", "latent_upscale_models",
                  ("ltx-2.3-spatial-upscaler-x2-1.1.safetensors", "ltx-2.3-spatial-upscaler-x2-1.0.safetensors"),
                  LTX_URL, "~1 GB", "LTX-2.3 2x spatial upscaler", ("upscale_models",)),
        # ComfyUI's single file first (what ComfyUI users have; bf16, then the quantized variants, which are
        # dequantized on load), then a Hugging Face folder
        ModelFile("text_encoder", "text_encoders",
                  ("gemma_3_12b_it.safetensors", "comfy_gemma_3_12b_it.safetensors", "*gemma*/",
                   "*gemma_3_12b_it*fp8*.safetensors", "*gemma_3_12b_it*.safetensors"),
                  GEMMA_COMFY_URL, "~24 GB", "Gemma 3 12B text encoder", ("clip",),
                  hint="the file is split_files/text_encoders/gemma_3_12B_it.safetensors there (the _fp8_scaled "
                       f"and _fp4_mixed variants work too); a Hugging Face Gemma 3 folder ({GEMMA_URL}) under "
                       "text_encoders/ whose name contains 'gemma' is accepted as well"),
    ]
    return {f.role: f for f in files}


@dataclass(frozen=True)
class ResolvedModels:
    """One path per role the recipe needs (roles it does not use are None)."""

    recipe: str
    fp8: bool
    ic_lora_outpaint: str
    text_encoder: str
    text_encoder_form: str  # "single_file" (ComfyUI's Gemma file) or "folder" (Hugging Face folder)
    dev: str | None = None
    distilled: str | None = None
    distilled_lora: str | None = None
    spatial_upsampler: str | None = None
    notes: tuple[str, ...] = ()  # e.g. fp8 requested but only bf16 found

    @property
    def roles(self) -> tuple[str, ...]:
        return recipe_roles(self.recipe)

    @property
    def paths(self) -> dict[str, str]:
        return {r: getattr(self, r) for r in self.roles}


class MissingModelsError(InputError):
    """Model files could not be found; `roles` lists them all, the message says where to get each."""

    def __init__(self, roles: list[str], message: str):
        self.roles = tuple(roles)
        super().__init__(", ".join(roles), message)


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES)


def _gemma_folder_lacks(path: str) -> list[str]:
    try:
        names = {n.lower(): n for n in os.listdir(path)}
    except OSError as exc:
        return [f"unreadable: {exc.strerror}"]
    lacks = [n for n in GEMMA_FOLDER_FILES if n not in names]
    if not any(n.endswith(".safetensors") and not _ignored(n) for n in names):
        lacks.append("*.safetensors weights")
    return lacks


class _Scanner:
    """Lists folder entries at every depth once per find_models call."""

    MAX_ENTRIES = 200_000  # a runaway tree (a symlink to /) stops here

    def __init__(self):
        self._cache: dict[str, list[tuple[str, str, bool]]] = {}

    def entries(self, folder: str) -> list[tuple[str, str, bool]]:
        """(lower-case name, path, is_dir) for usable entries, breadth first (shallower matches win)."""
        if folder not in self._cache:
            out, queue, seen = [], [folder], set()
            while queue and len(out) < self.MAX_ENTRIES:
                current = queue.pop(0)
                real = os.path.realpath(current)
                if real in seen:  # symlink loops
                    continue
                seen.add(real)
                level = self._list(current)
                out += level
                queue += [path for name, path, is_dir in level if is_dir and name not in SKIPPED_DIRS]
            self._cache[folder] = out
        return self._cache[folder]

    @staticmethod
    def _list(folder: str) -> list[tuple[str, str, bool]]:
        out = []
        try:
            with os.scandir(folder) as it:
                for e in it:
                    if _ignored(e.name):
                        continue
                    try:
                        is_dir = e.is_dir()
                        if not is_dir and (not e.is_file() or e.stat().st_size == 0):
                            continue
                    except OSError:
                        continue
                    out.append((e.name.lower(), e.path, is_dir))
        except OSError:
            return []
        return sorted(out)


def _folders(mf: ModelFile, search: ModelSearch) -> list[str]:
    return list(dict.fromkeys(f for k in mf.kinds for f in search.get(k)))


def _search(mf: ModelFile, search: ModelSearch, scanner: _Scanner, skipped: dict[str, str]) -> str | None:
    """The best match, or None; unusable Gemma folders go into `skipped` (path -> why)."""
    folders = _folders(mf, search)
    for pattern in mf.candidates:
        want_dir = pattern.endswith("/")
        pat = pattern.rstrip("/").lower()
        for folder in folders:
            for name, path, is_dir in scanner.entries(folder):
                if is_dir != want_dir or not fnmatch.fnmatchcase(name, pat):
                    continue
                lacks = _gemma_folder_lacks(path) if is_dir else []
                if not lacks:
                    return path
                skipped[path] = f"lacks {', '.join(lacks)}"
    return None


def _describe_missing(mf: ModelFile, search: ModelSearch, skipped: dict[str, str]) -> str:
    names = [f"a folder named *{p.strip('*/')}* with {', '.join(GEMMA_FOLDER_FILES)} and *.safetensors"
             if p.endswith("/") else p for p in mf.candidates]
    lines = [f"- {mf.role}: {mf.description} ({mf.size_hint}); looked for {' or '.join(names)}"]
    folders = _folders(mf, search)
    if folders:
        lines.append("  in these folders and their subfolders:")
        lines += [f"    {f}" + ("" if os.path.isdir(f) else " (does not exist)") for f in folders]
    else:
        lines.append(f"  but no {' or '.join(mf.kinds)} folders are configured (pass --models-dir, set "
                     f"{ENV_MODELS_DIR}, or add them to ComfyUI's extra_model_paths.yaml)")
    lines += [f"  skipped {path} ({why})" for path, why in skipped.items()]
    primary = search.get(mf.kind)
    lines.append(f"  get it from {mf.source_url} and put it in {primary[0] if primary else mf.kind + '/'}"
                 + (f"; {mf.hint}" if mf.hint else ""))
    return "\n".join(lines)


def _check_explicit(mf: ModelFile, path: str) -> tuple[str | None, str | None]:
    """(path, None) if usable, else (None, problem)."""
    path = _norm(path)
    if os.path.isdir(path):
        if mf.role != "text_encoder":
            return None, f"- {mf.role}: the given path {path} is a folder, not a model file"
        lacks = _gemma_folder_lacks(path)
        return (path, None) if not lacks else \
            (None, f"- {mf.role}: the given Gemma folder {path} lacks {', '.join(lacks)}")
    if os.path.isfile(path):
        return path, None
    return None, f"- {mf.role}: the given path {path} does not exist"


def find_models(recipe, search: ModelSearch, *, fp8: bool = False,
                explicit: Mapping[str, str] | None = None) -> ResolvedModels:
    """Resolve every model `recipe` (a name from recipe.RECIPES, or a Recipe) needs. `explicit` paths (role ->
    path; empty values ignored) win over the search and must exist. Raises :class:`MissingModelsError` naming
    all missing roles at once."""
    from .recipe import get_recipe

    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    roles = recipe_roles(recipe)
    explicit = {r: p for r, p in (explicit or {}).items() if p}
    unknown = sorted(set(explicit) - set(ROLES))
    if unknown:
        raise InputError(unknown[0], f"unknown model role; known roles: {', '.join(ROLES)}")
    cat = catalogue(fp8)
    scanner = _Scanner()
    found: dict[str, str] = {}
    problems: dict[str, str] = {}
    notes: list[str] = []
    for role in roles:
        mf = cat[role]
        if role in explicit:
            path, problem = _check_explicit(mf, explicit[role])
        else:
            skipped: dict[str, str] = {}
            path = _search(mf, search, scanner, skipped)
            problem = None if path else _describe_missing(mf, search, skipped)
        if path is None:
            problems[role] = problem
            continue
        found[role] = path
        name = os.path.basename(path).lower()
        if mf.fp8_variants and not os.path.isdir(path) and fp8 != ("fp8" in name):
            note = (f"{role}: fp8 requested but no fp8 file found; using {os.path.basename(path)}" if fp8 else
                    f"{role}: no bf16 file found; using fp8 {os.path.basename(path)}")
            log.info(note)
            notes.append(note)
    if problems:
        missing = list(problems)
        head = (f"{len(missing)} model file{'s' if len(missing) > 1 else ''} needed for the {recipe.name} recipe "
                f"{'are' if len(missing) > 1 else 'is'} missing (fix all, then run again):")
        raise MissingModelsError(missing, "\n".join([head, *problems.values()]))
    form = "folder" if os.path.isdir(found["text_encoder"]) else "single_file"
    if form == "single_file":
        log.info("text_encoder: using the single-file Gemma %s", found["text_encoder"])
    return ResolvedModels(recipe=recipe.name, fp8=fp8, text_encoder_form=form, notes=tuple(notes), **found)
