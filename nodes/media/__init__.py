"""Media: video decoding (PyAV), MP4 writing, canvas geometry, sample clips. No ComfyUI, no model code."""
