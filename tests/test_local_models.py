"""Model discovery for the local backend, in real temporary ComfyUI-like model trees.

The roles a run needs come from its recipe (recipe.py ``Recipe.needs``): ``official`` = dev checkpoint, distilled
LoRA, IC-LoRA, Gemma; ``ic_lora_pipeline`` = distilled checkpoint, IC-LoRA, spatial upsampler, Gemma."""
import logging
import os
import shutil

import pytest

from ltx_outpaint.errors import InputError
from ltx_outpaint.local.models import (ENV_MODELS_DIR, GEMMA_COMFY_URL, IC_LORA_URL, KINDS, LTX_FP8_URL, LTX_URL,
                                       MissingModelsError, ModelSearch, catalogue, find_models, recipe_roles)
from ltx_outpaint.local.recipe import IC_LORA_PIPELINE, OFFICIAL

DEV = "ltx-2.3-22b-dev.safetensors"
DEV_FP8 = "ltx-2.3-22b-dev-fp8.safetensors"
DISTILLED_LORA = "ltx-2.3-22b-distilled-lora-384.safetensors"
DISTILLED_LORA_11 = "ltx-2.3-22b-distilled-lora-384-1.1.safetensors"  # the name in Lightricks' workflow
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
    """Every file of both recipes (the official roles plus the distilled checkpoint's recipe's upsampler)."""
    return {
        "dev": touch(comfy / "checkpoints" / DEV),
        "distilled_lora": touch(comfy / "loras" / "ltx" / DISTILLED_LORA),  # in a subfolder
        "ic_lora_outpaint": touch(extra / "loras" / IC_LORA.upper().replace(".SAFETENSORS", ".safetensors")),
        "spatial_upsampler": touch(extra / "latent_upscale_models" / UPSAMPLER_10),
        "text_encoder": gemma_folder(comfy / "text_encoders" / "gemma-3-12b-it-qat-q4_0-unquantized"),
    }


def test_roles_come_from_the_recipes():
    assert recipe_roles("official") == OFFICIAL.needs == ("dev", "distilled_lora", "ic_lora_outpaint",
                                                          "text_encoder")
    assert recipe_roles(IC_LORA_PIPELINE) == ("distilled", "ic_lora_outpaint", "spatial_upsampler", "text_encoder")


def test_official_recipe_found_across_comfy_and_extra_folders_without_an_upsampler(tree):
    comfy, extra = tree
    expected = full_quality_tree(comfy, extra)
    del expected["spatial_upsampler"]
    os.remove(extra / "latent_upscale_models" / UPSAMPLER_10)  # the official recipe does not use one
    res = find_models("official", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))))
    assert res.paths == expected
    assert res.recipe == "official" and res.distilled is None and res.spatial_upsampler is None
    assert res.text_encoder_form == "folder"
    assert res.notes == ()


def test_ic_lora_pipeline_prefers_distilled_1_1_and_needs_no_dev(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    os.remove(comfy / "checkpoints" / DEV)
    touch(comfy / "checkpoints" / "ltx-2.3-22b-distilled.safetensors")
    newer = touch(extra / "diffusion_models" / "ltx-2.3-22b-distilled-1.1.safetensors")
    res = find_models("ic_lora_pipeline", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))))
    assert res.distilled == newer  # the preferred name wins even though it is in a later folder
    assert set(res.paths) == set(IC_LORA_PIPELINE.needs) and res.dev is None and res.distilled_lora is None


def test_loras_at_any_depth_as_in_lightricks_workflow(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    os.remove(comfy / "loras" / "ltx" / DISTILLED_LORA)
    os.remove(extra / "loras" / IC_LORA.upper().replace(".SAFETENSORS", ".safetensors"))
    # the workflow's lora_name values: ltxv/ltx2/ltx-2.3-22b-distilled-lora-384-1.1.safetensors, ...
    distilled = touch(comfy / "loras" / "ltxv" / "ltx2" / DISTILLED_LORA_11)
    ic = touch(extra / "loras" / "a" / "b" / "c" / "d" / IC_LORA)
    touch(comfy / "loras" / "ltx-outpaint-url-cache" / IC_LORA)  # our URL cache is never searched
    res = find_models("official", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))))
    assert (res.distilled_lora, res.ic_lora_outpaint) == (distilled, ic)
    shallow = touch(comfy / "loras" / "x" / DISTILLED_LORA_11)  # shallower wins among equal names
    assert find_models("official", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra)))).distilled_lora == \
        shallow
    with pytest.raises(MissingModelsError) as ei:  # the cached copy in our URL cache does not count
        find_models("official", ModelSearch.from_lookup(lookup_for(str(comfy))))
    assert ei.value.roles == ("ic_lora_outpaint",)


def test_partial_tmp_hidden_and_empty_files_are_ignored(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    ups = comfy / "latent_upscale_models"
    touch(ups / (UPSAMPLER_11 + ".partial"))
    touch(ups / (UPSAMPLER_11 + ".tmp"))
    touch(ups / ("." + UPSAMPLER_11))
    touch(ups / ".hidden" / UPSAMPLER_11)  # inside a hidden folder
    touch(ups / UPSAMPLER_11.replace("1.1", "1.1-copy"))
    open(extra / "upscale_models" / UPSAMPLER_11, "wb").close()  # 0 bytes: a failed download
    touch(comfy / "checkpoints" / "ltx-2.3-22b-distilled.safetensors")
    res = find_models("ic_lora_pipeline", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))))
    assert res.spatial_upsampler == str(extra / "latent_upscale_models" / UPSAMPLER_10)


def test_upsampler_1_1_preferred_and_found_in_upscale_models(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    touch(comfy / "checkpoints" / "ltx-2.3-22b-distilled.safetensors")
    newer = touch(comfy / "upscale_models" / "LTX" / "deeper" / UPSAMPLER_11.upper())
    res = find_models("ic_lora_pipeline", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))))
    assert res.spatial_upsampler == newer


@pytest.mark.parametrize("fp8", [True, False])
def test_fp8_preference_when_both_present(tree, fp8):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    fp8_file = touch(extra / "checkpoints" / "fp8" / DEV_FP8)
    res = find_models("official", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))), fp8=fp8)
    assert res.dev == (fp8_file if fp8 else str(comfy / "checkpoints" / DEV))
    assert res.notes == () and res.fp8 is fp8


def test_fp8_requested_falls_back_to_bf16_with_a_logged_note(tree, caplog):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    with caplog.at_level(logging.INFO, logger="ltx_outpaint.local.models"):
        res = find_models("official", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))), fp8=True)
    assert res.dev == str(comfy / "checkpoints" / DEV)
    assert len(res.notes) == 1 and "fp8 requested" in res.notes[0] and DEV in res.notes[0]
    assert res.notes[0] in caplog.text


def test_bf16_requested_falls_back_to_fp8(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    os.remove(comfy / "checkpoints" / DEV)
    fp8_file = touch(comfy / "checkpoints" / DEV_FP8)
    res = find_models("official", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))), fp8=False)
    assert res.dev == fp8_file
    assert any("no bf16" in n and DEV_FP8 in n for n in res.notes)


def test_explicit_path_wins_over_search(tree, tmp_path):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    mine = touch(tmp_path / "elsewhere" / "my-dev.safetensors")
    my_gemma = touch(tmp_path / "elsewhere" / "gemma_3_12B_it_fp8_scaled.safetensors")
    res = find_models("official", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))),
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
        find_models("official", ModelSearch.from_lookup(lookup_for(str(comfy), str(extra))), explicit={"dev": gone})
    assert ei.value.roles == ("dev", "ic_lora_outpaint")
    assert f"{gone} does not exist" in str(ei.value)
    assert IC_LORA in str(ei.value) and IC_LORA_URL in str(ei.value)


def test_explicit_unknown_role_and_bad_recipe(tree):
    search = ModelSearch.from_lookup(lookup_for(str(tree[0])))
    with pytest.raises(InputError) as ei:
        find_models("official", search, explicit={"vae": "/x"})
    assert ei.value.field == "vae"
    with pytest.raises(InputError) as ei:
        find_models("best", search)
    assert ei.value.field == "recipe" and "official" in str(ei.value)


def test_gemma_single_file_variants_in_preference_order(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    shutil.rmtree(comfy / "text_encoders" / "gemma-3-12b-it-qat-q4_0-unquantized")
    search = ModelSearch.from_lookup(lookup_for(str(comfy), str(extra)))
    fp4 = touch(extra / "clip" / "gemma_3_12B_it_fp4_mixed.safetensors")
    assert find_models("official", search).text_encoder == fp4
    fp8_file = touch(extra / "clip" / "gemma_3_12B_it_fp8_scaled.safetensors")
    assert find_models("official", search).text_encoder == fp8_file
    workflow = touch(extra / "text_encoders" / "comfy_gemma_3_12B_it.safetensors")  # the workflow's name
    assert find_models("official", search).text_encoder == workflow
    bf16 = touch(comfy / "text_encoders" / "gemma_3_12B_it.safetensors")
    res = find_models("official", search, fp8=True)  # dequantized on load either way: bf16 file first
    assert (res.text_encoder, res.text_encoder_form) == (bf16, "single_file")


def test_gemma_single_file_preferred_over_folder_and_incomplete_folder_skipped(tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    search = ModelSearch.from_lookup(lookup_for(str(comfy), str(extra)))
    folder = str(comfy / "text_encoders" / "gemma-3-12b-it-qat-q4_0-unquantized")
    assert find_models("official", search).text_encoder == folder
    single = touch(comfy / "text_encoders" / "gemma_3_12B_it.safetensors")
    assert find_models("official", search).text_encoder == single
    os.remove(single)
    os.remove(os.path.join(folder, "tokenizer.model"))  # incomplete now
    nested = gemma_folder(extra / "text_encoders" / "google" / "Gemma-3-12B-IT")  # one level deep
    assert find_models("official", search).text_encoder == nested
    shutil.rmtree(nested)
    with pytest.raises(MissingModelsError) as ei:
        find_models("official", search)
    assert ei.value.roles == ("text_encoder",) and ei.value.field == "text_encoder"
    assert f"skipped {folder} (lacks tokenizer.model)" in str(ei.value)


def test_explicit_gemma_folder_is_checked(tmp_path, tree):
    comfy, extra = tree
    full_quality_tree(comfy, extra)
    bad = gemma_folder(tmp_path / "my-gemma", tokenizer=False)
    with pytest.raises(MissingModelsError, match="lacks tokenizer.model"):
        find_models("official", ModelSearch.from_lookup(lookup_for(str(comfy))), explicit={"text_encoder": bad})


def test_one_error_names_every_missing_role_folder_and_url(tmp_path):
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "loras").mkdir()
    search = ModelSearch.from_models_dir(str(models)).merge(
        ModelSearch({"loras": [str(tmp_path / "extra_loras")]}))
    with pytest.raises(MissingModelsError) as ei:
        find_models("official", search)
    err = ei.value
    msg = str(err)
    assert isinstance(err, InputError)
    assert err.roles == OFFICIAL.needs and err.field == ", ".join(OFFICIAL.needs)
    for kind in set(KINDS) - {"latent_upscale_models", "upscale_models"}:  # every folder searched, existing or not
        assert str(models / kind) in msg
    assert f"{tmp_path / 'extra_loras'} (does not exist)" in msg
    assert f"{models / 'checkpoints'}\n" in msg  # exists: no remark
    for name in (DEV, DEV_FP8, DISTILLED_LORA_11, DISTILLED_LORA, IC_LORA, "gemma_3_12b_it.safetensors",
                 "comfy_gemma_3_12b_it.safetensors"):
        assert name in msg
    assert UPSAMPLER_10 not in msg and "spatial" not in msg
    for url in (LTX_URL, IC_LORA_URL, GEMMA_COMFY_URL, "https://huggingface.co/google/gemma-3-12b-it"):
        assert url in msg
    assert msg.startswith(err.field + ": 4 model files needed for the official recipe are missing")
    with pytest.raises(MissingModelsError) as ei:
        find_models("ic_lora_pipeline", search, fp8=True)
    assert ei.value.roles == IC_LORA_PIPELINE.needs and LTX_FP8_URL in str(ei.value)
    assert UPSAMPLER_11 in str(ei.value) and UPSAMPLER_10 in str(ei.value)


def test_error_without_any_configured_folder():
    with pytest.raises(MissingModelsError) as ei:
        find_models("ic_lora_pipeline", ModelSearch())
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
    assert catalogue(False)["distilled_lora"].candidates == (DISTILLED_LORA_11, DISTILLED_LORA)
    assert catalogue(False)["dev"].candidates == (DEV, DEV_FP8)
    assert catalogue(True)["dev"].candidates == (DEV_FP8, DEV)
    assert catalogue(True)["distilled"].candidates[0] == "ltx-2.3-22b-distilled-1.1-fp8.safetensors"
    assert catalogue(False)["distilled"].candidates[0] == "ltx-2.3-22b-distilled-1.1.safetensors"
    ic = catalogue()["ic_lora_outpaint"]
    assert (ic.kind, ic.candidates, ic.source_url) == ("loras", (IC_LORA,), IC_LORA_URL)
