"""Which files a batch runs on: the files given, and the videos directly inside the folders given."""
from __future__ import annotations

import os

from ..errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")


def is_video_name(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith(".")


def list_inputs(paths: list[str], field: str = "inputs", exclude: str | None = None) -> list[str]:
    """Absolute paths, in the order given (a folder's videos sorted by name), without duplicates.

    `exclude` (the output folder) is skipped when it is one of the folders, so results are not re-run.
    """
    out: list[str] = []
    seen: set[str] = set()
    skip = os.path.realpath(exclude) if exclude else None
    for given in paths:
        path = os.path.abspath(os.path.expanduser(given))
        if os.path.isdir(path):
            if skip and os.path.realpath(path) == skip:
                continue
            names = sorted(n for n in os.listdir(path) if is_video_name(n) and os.path.isfile(os.path.join(path, n)))
            found = [os.path.join(path, n) for n in names]
        elif os.path.isfile(path):
            found = [path]
        else:
            raise InputError(field, f"{os.path.basename(path) or given!r} is neither a video file nor a folder")
        for f in found:
            real = os.path.realpath(f)
            if real not in seen:
                seen.add(real)
                out.append(f)
    if not out:
        raise InputError(field, f"no video files found (looked for {', '.join(VIDEO_EXTENSIONS)})")
    return out


def output_names(inputs: list[str], digests: list[str]) -> list[str]:
    """`<stem>_outpaint.mp4` per input; inputs sharing a stem get the start of their content hash too."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in inputs]
    out = []
    for stem, digest in zip(stems, digests):
        name = f"{stem}_outpaint.mp4" if stems.count(stem) == 1 else f"{stem}_{digest[:8]}_outpaint.mp4"
        out.append(name)
    return out
