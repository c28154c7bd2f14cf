"""The test-server factory (tests/conftest.py): `start_comfyui(version="current", extra_custom_nodes=..., env=...,
models=...)` gives ComfyUI 0.20.1 with this pack plus a test-only pack, its environment and linked model files;
the `comfyui_current` fixture is ComfyUI 0.20.1 whatever the session's combination is.

Not marked `comfyui`: it tests the fixtures themselves, once (in the full-suite run), not the pack on every
ComfyUI / frontend combination."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from conftest import start_comfyui

ECHO_PACK = '''
import os
import folder_paths


class LTXTestEcho:
    """Shows what the server process sees: an environment variable and the checkpoints folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt": (folder_paths.get_filename_list("checkpoints"),),
                             "env": ("STRING", {"default": os.environ.get("LTX_TEST_ECHO", "")})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, ckpt, env):
        return ()


NODE_CLASS_MAPPINGS = {"LTXTestEcho": LTXTestEcho}
'''


def test_start_comfyui_with_extra_nodes_env_and_models(tmp_path_factory, tmp_path):
    pack = tmp_path / "ltx_test_echo"
    pack.mkdir()
    (pack / "__init__.py").write_text(ECHO_PACK)
    model = tmp_path / "tiny-test.safetensors"
    save_file({"w": torch.zeros(1)}, str(model))
    with start_comfyui(tmp_path_factory, version="current", name="factory",
                       extra_custom_nodes={"ltx_test_echo": str(pack)}, env={"LTX_TEST_ECHO": "hello from env"},
                       models={"checkpoints": [str(model)], "loras": {"renamed.safetensors": str(model)}}) as server:
        assert server.version() == "0.20.1"
        required = server.object_info("LTXTestEcho")["LTXTestEcho"]["input"]["required"]
        assert required["ckpt"][0] == ["tiny-test.safetensors"]
        assert required["env"][1]["default"] == "hello from env"
        lora = server.object_info("LTXOutpaintLoraStack")["LTXOutpaintLoraStack"]["input"]["required"]["lora"]
        assert "renamed.safetensors" in lora[1]["options"]  # a V3 combo: ["COMBO", {"options": [...]}]
        assert "LTXOutpaint" in server.object_info()  # our pack is there too
    assert not server.alive


def test_comfyui_current_is_0_20_1_with_its_pinned_frontend(comfyui_current):
    import os
    import re

    assert comfyui_current.version() == "0.20.1"
    assert comfyui_current.pack_import().seen and not comfyui_current.pack_import().failed
    # it serves the frontend package from its own pinned packages (not the venv's, pinned by ComfyUI 0.3.75)
    web_root = re.search(r"\[Prompt Server\] web root: (\S+)", comfyui_current.log_text()).group(1)
    pinned = os.environ.get("LTX_OUTPAINT_COMFYUI_CURRENT_PYTHONPATH", "").split(os.pathsep)[0]
    assert pinned, "LTX_OUTPAINT_COMFYUI_CURRENT_PYTHONPATH names its pinned packages"
    assert os.path.realpath(web_root).startswith(os.path.realpath(pinned)), (web_root, pinned)
    with pytest.raises(ValueError, match="version"):
        with start_comfyui(None, version="nightly"):
            pass
