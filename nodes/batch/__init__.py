"""Many clips at once: `ltx-outpaint batch` and the Outpaint Folder node (see runner.py)."""
