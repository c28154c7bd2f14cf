"""The pack's shared image operations, as the ltx-core engine uses them.

``pyramid_blend`` / ``inpaint_fill`` / ``official_stage_inputs`` come from ``nodes/local/blend.py`` and
``resize`` from ``nodes/media/resize.py`` (ComfyUI-exact implementations of the workflow's nodes). Until the
branch that writes them is merged, the private :mod:`._standins` module fills in (STAND-IN; the lead removes
the fallback at merge).
"""
from __future__ import annotations

try:
    from ..blend import inpaint_fill, official_stage_inputs, pyramid_blend
except ImportError:  # STAND-IN until nodes/local/blend.py has the official blend
    from ._standins import inpaint_fill, official_stage_inputs, pyramid_blend

try:
    from ...media.resize import resize
except ImportError:  # STAND-IN until nodes/media/resize.py exists
    from ._standins import resize

__all__ = ["inpaint_fill", "official_stage_inputs", "pyramid_blend", "resize"]
