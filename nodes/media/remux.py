"""Copy an MP4's streams into a new file unchanged (no re-encode), with the user's container metadata."""
from __future__ import annotations

import logging
import os

import av

from .decode import open_input
from .encode import check_output_path, clean_metadata

log = logging.getLogger(__name__)


def remux_with_metadata(src: str, dst: str, metadata: dict[str, str] | None = None) -> str:
    """Write `dst` with `src`'s audio and video packets as they are, and `metadata` (e.g. prompt, workflow)
    merged over `src`'s own container metadata. Written atomically."""
    check_output_path(dst)
    os.makedirs(os.path.dirname(os.path.abspath(dst)) or ".", exist_ok=True)
    tmp = dst + ".partial"
    try:
        with open_input(src) as inp, av.open(tmp, mode="w", format="mp4",
                                          options={"movflags": "+faststart+use_metadata_tags"}) as out:
            out.metadata.update(clean_metadata({**inp.metadata, **(metadata or {})}))
            streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
            for packet in inp.demux(*[s for s in inp.streams if s.index in streams]):
                if packet.dts is None:  # demuxer flush packets carry no data
                    continue
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    log.info("remuxed %s with %d metadata entries (no re-encode)", os.path.basename(src), len(metadata or {}))
    return dst
