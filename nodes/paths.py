"""Which local files a workflow may name (Load Video, LoRA Stack), so a graph cannot read the server's disk.

A path from a workflow is resolved (relative to the node's own folder, symlinks followed) and must end inside
one of the node's folders: ComfyUI's input, output and temp folders for videos, the loras folders for LoRAs.
The person who starts the server can allow more through the environment only:

- `LTX_OUTPAINT_ALLOWED_PATHS`: extra folders (os.pathsep-separated), for media or LoRAs kept elsewhere;
- `LTX_OUTPAINT_ALLOW_ANY_PATH=1`: any file the server process can read (a single-user machine).

A refused path and a missing file get the same message, after the same work (one realpath, one stat), so a
caller cannot learn whether a file exists; messages show the file name only, never a server folder. The
command line (run by the local user) does not use this: it may read any path.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

from .errors import InputError

ENV_ALLOWED_PATHS = "LTX_OUTPAINT_ALLOWED_PATHS"
ENV_ALLOW_ANY_PATH = "LTX_OUTPAINT_ALLOW_ANY_PATH"
_TRUE = ("1", "true", "yes", "on")


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def any_path_allowed(environ: Mapping[str, str] | None = None) -> bool:
    return _env(environ).get(ENV_ALLOW_ANY_PATH, "").strip().lower() in _TRUE


def extra_folders(environ: Mapping[str, str] | None = None) -> list[str]:
    """The folders `LTX_OUTPAINT_ALLOWED_PATHS` adds (absolute paths only)."""
    value = _env(environ).get(ENV_ALLOWED_PATHS, "")
    return [p for p in (x.strip() for x in value.split(os.pathsep)) if p and os.path.isabs(p)]


def _within(path: str, folder: str) -> bool:
    folder = folder.rstrip(os.sep) or os.sep
    return path == folder or path.startswith(folder if folder.endswith(os.sep) else folder + os.sep)


def refused(given: str, field: str, node: str | None, what: str, folders: str, noun: str = "file") -> InputError:
    """The one message for "does not exist" and "not allowed" (the file name only)."""
    name = os.path.basename(str(given).replace("\\", "/").rstrip("/")) or str(given)
    return InputError(field, f"{name!r} is not an allowed {what}: no such {noun} in {folders} (the server's owner "
                             f"can allow other folders with {ENV_ALLOWED_PATHS})", node=node)


class PathPolicy:
    """The folders a node may read from, plus what the server's environment adds."""

    def __init__(self, folders: Sequence[str], *, what: str, described: str,
                 environ: Mapping[str, str] | None = None):
        self.base = folders[0] if folders else os.getcwd()
        self.any = any_path_allowed(environ)
        roots = [*folders, *extra_folders(environ)]
        self.roots = sorted({os.path.realpath(r) for r in roots} | {os.path.abspath(r) for r in roots})
        self.what, self.described = what, described

    def _candidate(self, given: str) -> str:
        given = os.path.expanduser(str(given).strip())
        return given if os.path.isabs(given) else os.path.join(self.base, given)

    def _real(self, given: str) -> str:
        """The real path of `given`; "" for a name no file can have (a NUL byte), which is then refused."""
        try:
            return os.path.realpath(self._candidate(given))
        except (ValueError, OSError):
            return ""

    def resolve(self, given: str, field: str, node: str | None = None) -> str:
        """The real path of `given` if it is an allowed file; else the one refusal message."""
        real = self._real(given)
        is_file = bool(real) and os.path.isfile(real)  # stat in every case: a refusal costs what a missing file costs
        if is_file and (self.any or any(_within(real, r) for r in self.roots)):
            return real
        raise refused(given, field, node, self.what, self.described)

    def resolve_folder(self, given: str, field: str, node: str | None = None) -> str:
        """The real path of `given` if it is an allowed folder (same rules and refusal as `resolve`)."""
        real = self._real(given)
        is_dir = bool(real) and os.path.isdir(real)
        if is_dir and (self.any or any(_within(real, r) for r in self.roots)):
            return real
        raise refused(given, field, node, self.what.replace("file", "folder"), self.described, noun="folder")

    def resolve_missing(self, given: str, field: str, node: str | None = None) -> InputError:
        """The refusal for a name that is in none of the folders (same text as `resolve`'s, same work)."""
        real = self._real(given)
        if real:
            os.path.isfile(real)
        return refused(given, field, node, self.what, self.described)

    def fingerprint(self, given: str, label: str | None = None) -> str:
        """A cache key for `given`: its size and mtime when it is an allowed file; nothing outside is touched.

        ComfyUI stores it in the prompt (history, output metadata): it never holds a server path; `label`
        (default `given`) is what it shows of the input.
        """
        label = given if label is None else label
        if "\0" in str(given):  # no file has this name
            return f"refused:{label}"
        path = os.path.normpath(os.path.abspath(self._candidate(given)))
        if not self.any and not any(_within(path, r) for r in self.roots):
            return f"refused:{label}"
        real = self._real(path)
        if not real or (not self.any and not any(_within(real, r) for r in self.roots)):
            return f"refused:{label}"
        try:
            st = os.stat(real)
        except OSError:
            return f"missing:{label}"
        return f"{label}:{st.st_size}:{st.st_mtime_ns}"
