"""The ltx-core engine: the outpaint recipe on Lightricks' ltx-core (CLI, and ComfyUI without core LTX-2)."""
