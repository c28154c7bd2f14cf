"""The local GPU backend: model discovery, LoRA targets, blending, and its engines (ltx-core; ComfyUI core)."""
