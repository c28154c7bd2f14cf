"""The ltx-core / ltx-pipelines versions the ltx-core engine is tested with, and the command that installs them."""
from __future__ import annotations

LTX_PINS = {"ltx-core": "1.0.0", "ltx-pipelines": "1.0.0"}
INSTALL_COMMAND = "pip install " + " ".join(f"{k}=={v}" for k, v in LTX_PINS.items())
