"""Model discovery for the local backend, in real temporary ComfyUI-like model trees."""
import logging
import os
import shutil

import pytest

from ltx_outpaint.errors import InputError
from ltx_outpaint.local.models import (ENV_MODELS_DIR, IC_LORA_URL, KINDS, LTX_FP8_URL, LTX_URL, MODE_ROLES,
                                       MissingModelsError, ModelSearch, catalogue, find_models)

DEV = "ltx-2.3-22b-dev.safetensors"
DEV_FP8 = "ltx-2.3-22b-dev-fp8.safetensors"
DISTILLED_LORA = "ltx-2.3-22b-distilled-lora-384.safetensors"
IC_LORA = "ltx-2.3-22b-ic-lora-in-outpainting-0.9.safetensors"
UPSAMPLER_10 = "ltx-2.3-spatial-upscaler-x2-1.0.safetensors"
UPSAMPLER_11 = "ltx-2.3-spatial-upscaler-x2-1.1.safetensors"


def touch(path, data=b"weights"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def gemma_folder(path, *, tokenizer=True):
    touch(os.path.join(path, "config.json"), b"{}")
    touch(os.path.join(path, "model-00001-of-00002.safetensors"))
    touch(os.path.join(path, "model-00002-of-00002.safetensors"))
    if tokenizer:
        touch(os.path.join(path, "tokenizer.model"))
    return str(path)


def lookup_for(*roots):
    """Like ComfyUI's folder_paths.get_folder_paths with extra_model_paths.yaml entries: every root."""
    def lookup(kind):
        if kind not in KINDS:
            raise KeyError(kind)
        return [os.path.join(r, kind) for r in roots]
    return lookup


@pytest.fixture
def tree(tmp_path):
    """A ComfyUI models folder plus an extra_model_paths-style second root."""
    comfy = tmp_path / "ComfyUI" / "models"
    extra = tmp_path / "extra"
    for root in (comfy, extra):
        for kind in KINDS:
            (root / kind).mkdir(parents=True)
    return comfy, extra


def full_quality_tree(comfy, extra):
    return {
        "dev": touch(comfy / "checkpoints" / DEV),
        "distilled_lora": touch(comfy / "loras" / "ltx" / DISTILLED_LORA),  # in a subfolder
        "ic_lora_outpaint": touch(extra / "loras" / IC_LORA.upper().replace(".SAFETENSORS", ".safetensors")),
        "spatial_upsampler": touch(extra / "latent_upscale_models" / UPSAMPLER_10),
        "text_encoder": gemma_folder(comfy / "text_encoders" / "gemma-3-12b-it-qat-q4_0-unquantized"),
    }


def test_quality_mode_found_across_comfy_and_extra_folders(tree):
    comfy, extra = tree
    expected = full_quality_tree(comfy, extra)
    res = find_models("quality", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))))
    assert res.paths == expected
    assert res.mode == "quality" and res.distilled is None
    assert res.text_encoder_form == "folder"
    assert res.notes == ()


def test_fast_mode_prefers_distilled_1_1_and_needs_no_dev(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    os.remove(comfy / "checkpoints" / DEV)
    touch(comfy / "checkpoints" / "ltx-2.3-22b-distilled.safetensors")
    newer = touch(extra / "diffusion_models" / "ltx-2.3-22b-distilled-1.1.safetensors")
    res = find_models("fast", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))))
    assert res.distilled == newer  # the preferred name wins even though it is in a later folder
    assert set(res.paths) == set(MODE_ROLES["fast"]) and res.dev is None and res.distilled_lora is None


def test_partial_tmp_hidden_empty_and_too_deep_files_are_ignored(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    ups = comfy / "latent_upscale_models"
    touch(ups / (UPSAMPLER_11 + ".partial"))
    touch(ups / (UPSAMPLER_11 + ".tmp"))
    touch(ups / ("." + UPSAMPLER_11))
    touch(ups / "a" / "b" / UPSAMPLER_11)  # two levels deep: not searched
    touch(ups / UPSAMPLER_11.replace("1.1", "1.1-copy"))
    open(extra / "upscale_models" / UPSAMPLER_11, "wb").close()  # 0 bytes: a failed download
    res = find_models("quality", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))))
    assert res.spatial_upsampler == str(extra / "latent_upscale_models" / UPSAMPLER_10)


def test_upsampler_1_1_preferred_and_found_in_upscale_models(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    newer = touch(comfy / "upscale_models" / "LTX" / UPSAMPLER_11.upper())
    res = find_models("quality", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))))
    assert res.spatial_upsampler == newer


@pytest.mark.parametrize("fp8", [True, False])
def test_fp8_preference_when_both_present(tree, fp8):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    fp8_file = touch(extra / "checkpoints" / "fp8" / DEV_FP8)
    res = find_models("quality", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))), fp8=fp8)
    assert res.dev == (fp8_file if fp8 else str(comfy / "checkpoints" / DEV))
    assert res.notes == () and res.fp8 is fp8


def test_fp8_requested_falls_back_to_bf16_with_a_logged_note(tree, caplog):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    with caplog.at_level(logging.INFO, logger="ltx_outpaint.local.models"):
        res = find_models("quality", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))), fp8=True)
    assert res.dev == str(comfy / "checkpoints" / DEV)
    assert len(res.notes) == 1 and "fp8 requested" in res.notes[0] and DEV in res.notes[0]
    assert res.notes[0] in caplog.text


def test_bf16_requested_falls_back_to_fp8(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    os.remove(comfy / "checkpoints" / DEV)
    fp8_file = touch(comfy / "checkpoints" / DEV_FP8)
    res = find_models("quality", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))), fp8=False)
    assert res.dev == fp8_file
    assert any("no bf16" in n and DEV_FP8 in n for n in res.notes)


def test_explicit_path_wins_over_search(tree, tmp_path):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    mine = touch(tmp_path / "elsewhere" / "my-dev.safetensors")
    my_gemma = touch(tmp_path / "elsewhere" / "gemma_3_12B_it_fp8_scaled.safetensors")
    res = find_models("quality", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))),
                      explicit={"dev": mine, "text_encoder": my_gemma, "distilled": "", "distilled_lora": None})
    assert res.dev == mine and res.text_encoder == my_gemma
    assert res.text_encoder_form == "single_file"
    assert res.distilled_lora == str(comfy / "loras" / "ltx" / DISTILLED_LORA)


def test_explicit_missing_path_is_reported_with_other_missing_roles(tree, tmp_path):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    os.remove(extra / "loras" / IC_LORA.upper().replace(".SAFETENSORS", ".safetensors"))
    gone = str(tmp_path / "nowhere" / "dev.safetensors")
    with pytest.raises(MissingModelsError) as ei:
        find_models("quality", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))), explicit={"dev": gone})
    assert ei.value.roles == ("dev", "ic_lora_outpaint")
    assert f"{gone} does not exist" in str(ei.value)
    assert IC_LORA in str(ei.value) and IC_LORA_URL in str(ei.value)


def test_explicit_unknown_role_and_bad_mode(tree):
    search = ModelSearch.from_lookup(lookup_for(str(tree[0])))
    with pytest.raises(InputError) as ei:
        find_models("quality", search, explicit={"vae": "/x"})
    assert ei.value.field == "vae"
    with pytest.raises(InputError) as ei:
        find_models("best", search)
    assert ei.value.field == "mode"


def test_gemma_single_file_when_no_folder(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    shutil.rmtree(comfy / "text_encoders" / "gemma-3-12b-it-qat-q4_0-unquantized")
    bf16 = touch(comfy / "text_encoders" / "gemma_3_12B_it.safetensors")
    fp8_file = touch(extra / "clip" / "gemma_3_12B_it_fp8_scaled.safetensors")
    search = ModelSearch.from_lookup(lookup_for(str(comfy), str(extra)))
    res = find_models("quality", search)
    assert (res.text_encoder, res.text_encoder_form) == (bf16, "single_file")
    assert find_models("quality", search, fp8=True).text_encoder == fp8_file


def test_gemma_folder_preferred_over_single_file_and_incomplete_folder_skipped(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    single = touch(comfy / "text_encoders" / "gemma_3_12B_it.safetensors")
    search = ModelSearch.from_lookup(lookup_for(str(comfy), str(extra)))
    folder = str(comfy / "text_encoders" / "gemma-3-12b-it-qat-q4_0-unquantized")
    assert find_models("quality", search).text_encoder == folder
    os.remove(os.path.join(folder, "tokenizer.model"))  # incomplete now
    nested = gemma_folder(extra / "text_encoders" / "google" / "Gemma-3-12B-IT")  # one level deep
    assert find_models("quality", search).text_encoder == nested
    shutil.rmtree(nested)
    res = find_models("quality", search)
    assert (res.text_encoder, res.text_encoder_form) == (single, "single_file")
    os.remove(single)
    with pytest.raises(MissingModelsError) as ei:
        find_models("quality", search)
    assert ei.value.roles == ("text_encoder",) and ei.value.field == "text_encoder"
    assert f"skipped {folder} (lacks tokenizer.model)" in str(ei.value)


def test_explicit_gemma_folder_is_checked(tmp_path, tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    bad = gemma_folder(tmp_path / "my-gemma", tokenizer=False)
    with pytest.raises(MissingModelsError, match="lacks tokenizer.model"):
        find_models("quality", ModelSearch.from_lookup(lookup_for(str(comfy))), explicit={"text_encoder": bad})


def test_one_error_names_every_missing_role_folder_and_url(tmp_path):
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "loras").mkdir()
    search = ModelSearch.from_models_dir(str(models)).merge(
        ModelSearch({"loras": [str(tmp_path / "extra_loras")]}))
    with pytest.raises(MissingModelsError) as ei:
        find_models("quality", search)
    err = ei.value
    msg = str(err)
    assert isinstance(err, InputError)
    assert err.roles == MODE_ROLES["quality"] and err.field == ", ".join(MODE_ROLES["quality"])
    for kind in KINDS:  # every folder searched, existing or not
        assert str(models / kind) in msg
    assert f"{tmp_path / 'extra_loras'} (does not exist)" in msg
    assert f"{models / 'checkpoints'}\n" in msg  # exists: no remark
    for name in (DEV, DEV_FP8, DISTILLED_LORA, IC_LORA, UPSAMPLER_11, UPSAMPLER_10, "gemma_3_12b_it.safetensors"):
        assert name in msg
    for url in (LTX_URL, IC_LORA_URL, "https://huggingface.co/google/gemma-3-12b-it"):
        assert url in msg
    assert msg.startswith(err.field + ": 5 model files needed for quality mode are missing")
    with pytest.raises(MissingModelsError) as ei:
        find_models("fast", search, fp8=True)
    assert ei.value.roles == MODE_ROLES["fast"] and LTX_FP8_URL in str(ei.value)


def test_error_without_any_configured_folder():
    with pytest.raises(MissingModelsError) as ei:
        find_models("fast", ModelSearch())
    assert "no checkpoints or diffusion_models folders are configured" in str(ei.value)
    assert ENV_MODELS_DIR in str(ei.value)


def test_model_search_constructors(tmp_path, monkeypatch):
    root = tmp_path / "ComfyUI"
    (root / "models" / "checkpoints").mkdir(parents=True)
    from_root = ModelSearch.from_models_dir(str(root))  # a ComfyUI root: uses root/models
    assert from_root.get("loras") == [str(root / "models" / "loras")]
    with pytest.raises(InputError) as ei:
        ModelSearch.from_models_dir(str(tmp_path / "typo"))
    assert ei.value.field == "models_dir"

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    merged = ModelSearch({"loras": [str(a), str(a) + os.sep]}).merge(
        ModelSearch({"loras": [str(b), str(a)], "checkpoints": [str(b)]}))
    assert merged.get("loras") == [str(a), str(b)] and merged.get("checkpoints") == [str(b)]
    assert merged.get("clip") == []

    monkeypatch.setenv(ENV_MODELS_DIR, os.pathsep.join([str(a), str(b)]))
    env = ModelSearch.from_env()
    assert env.get("checkpoints") == [str(a / "checkpoints"), str(b / "checkpoints")]
    assert ModelSearch.from_env({}).folders == {}

    def comfy_lookup(kind):  # an older ComfyUI that does not know latent_upscale_models
        if kind == "latent_upscale_models":
            raise KeyError(kind)
        return [str(a / kind)]
    looked = ModelSearch.from_lookup(comfy_lookup)
    assert "latent_upscale_models" not in looked.folders and looked.get("loras") == [str(a / "loras")]


def test_catalogue_candidates_follow_fp8_preference():
    assert catalogue(False)["dev"].candidates == (DEV, DEV_FP8)
    assert catalogue(True)["dev"].candidates == (DEV_FP8, DEV)
    assert catalogue(True)["distilled"].candidates[0] == "ltx-2.3-22b-distilled-1.1-fp8.safetensors"
    assert catalogue(False)["distilled"].candidates[0] == "ltx-2.3-22b-distilled-1.1.safetensors"
    ic = catalogue()["ic_lora_outpaint"]
    assert (ic.kind, ic.candidates, ic.source_url) == ("loras", (IC_LORA,), IC_LORA_URL)
