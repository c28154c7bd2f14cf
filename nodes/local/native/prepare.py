"""One outpaint job as a native-engine graph: models found, tensors placed, recipe resolved, graph built.

Shared by the outpaint node's expansion (ComfyUI runs the graph) and :class:`NativeBackend` (the pack runs it in
process, for long clips and batches). Imports ComfyUI's `folder_paths`: only used inside ComfyUI.
"""
from __future__ import annotations

import logging
import os
import random

import torch

from ...backends import OutpaintJob, Progress
from ...backends.preview import fit_audio, source_indices
from ...media.canvas import composite
from ..recipe import get_recipe, resolve
from .graph import NativeInputs, build_graph

log = logging.getLogger(__name__)

#: the official workflow pads the canvas grey (0.5) before painting the area to generate green
PAD_GREY = (0.5, 0.5, 0.5)


def native_graph(job: OutpaintJob, config, progress: Progress, *, prefix: str) -> tuple[dict, list]:
    """(graph, outputs) for `job` with the local-backend `config` (its recipe, precision and model sockets)."""
    import folder_paths

    from ..backend import SAFETY_NOTE, LocalBackend, prefer_fp8
    from . import prompt_generation_available
    from .models import find_native_models

    request, clip = job.request, job.clip
    recipe = get_recipe(config.recipe)
    lay, n, fps = job.layout, job.num_frames, float(request.frames_per_second)
    need_ckpt = config.model is None or config.vae is None or config.clip is None or (
        request.generate_audio and config.audio_vae is None)
    models = find_native_models(recipe, fp8=prefer_fp8(config.precision, config.device),
                                listing=folder_paths.get_filename_list, folders=_shown_folders,
                                need_checkpoint=need_ckpt, need_text_encoder=config.clip is None,
                                any_checkpoint=config.model is not None)
    loras = tuple((p, float(s), t) for p, s, t in LocalBackend(config).user_lora_files(job))
    progress.check()
    frames = clip.frames[source_indices(clip.num_frames, clip.fps, n, fps)]
    placed = composite(frames, lay, fill=PAD_GREY)
    first = frames[:1].clone()
    del frames
    audio = None
    if clip.audio is not None and not clip.audio.silent and request.generate_audio:
        fitted = fit_audio(clip.audio, n / fps)
        # LTX-2's audio VAE takes stereo (core expands mono, refuses more): the front left / right of a
        # multichannel layout, as the ltx-core engine feeds it
        audio = {"waveform": fitted.waveform[:2].unsqueeze(0), "sample_rate": int(fitted.sample_rate)}
    seed = request.seed if request.seed is not None else random.randint(0, 2**32 - 1)
    resolved = resolve(recipe, request, width=lay.width, height=lay.height, frames=n, seed=seed)
    notes = [f"engine: native (ComfyUI core LTX-2), recipe {recipe.name}", *resolved.notes, *models.notes]
    expand = bool(request.enable_prompt_expansion)
    if expand and not prompt_generation_available():
        notes.append("enable_prompt_expansion: this ComfyUI has no TextGenerateLTX2Prompt node; prompt used as is")
        expand = False
    if request.enable_safety_checker:
        log.warning(SAFETY_NOTE)
        notes.append(SAFETY_NOTE)
    start = getattr(job, "start_frames", None)  # OutpaintJob.start_frames: long-clip chunks
    if start is not None:
        if tuple(start.shape[1:3]) != (lay.height, lay.width) or not 0 < start.shape[0] < n:
            raise ValueError(f"start_frames: {tuple(start.shape)} do not fit the canvas {lay.width}x{lay.height}x{n}")
        notes.append(f"conditioned on the previous chunk's last {start.shape[0]} frames (whole canvas)")
    planned = memory_plan_text(resolved, models, has_source_audio=audio is not None)
    if planned:
        notes.append(planned)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    inputs = NativeInputs(models=models, placed=placed, mask=lay.mask(), source_audio=audio, loras=loras,
                          first_frame=first, model=config.model, clip=config.clip, vae=config.vae,
                          audio_vae=config.audio_vae, start_frames=start,
                          finish={"notes": notes, "backend": "local (native)", "expanded": expand})
    graph, outputs = build_graph(resolved, inputs, prefix=prefix, expand_prompt=expand)
    w1, h1 = resolved.stage_size(0)
    progress.report(0, 1, f"native LTX-2.3 ({recipe.name}): stage 1 {w1}x{h1}, stage 2 {lay.width}x{lay.height}, "
                          f"{n} frames at {fps:g} fps; {len(graph)} nodes" + (f"; {planned}" if planned else ""))
    log.info("native engine: %s recipe, %dx%d, %d frames, models %s", recipe.name, lay.width, lay.height, n, models)
    return graph, outputs


def _shown_folders(kind: str) -> list[str]:
    """ComfyUI's folders of `kind` as an error may show them: relative to ComfyUI's base folder, never a path
    elsewhere on the server (those are "an extra model folder")."""
    import folder_paths

    base = os.path.abspath(getattr(folder_paths, "base_path", "") or os.getcwd())
    shown = []
    for folder in folder_paths.get_folder_paths(kind):
        rel = os.path.relpath(os.path.abspath(folder), base)
        shown.append(rel.replace(os.sep, "/") if not rel.startswith("..") else f"an extra {kind} folder")
    return shown


def memory_plan_text(resolved, models, *, has_source_audio: bool) -> str | None:
    """The planned peak VRAM per stage of a native run (from the model files' headers), before ComfyUI's own
    partial loading / offloading; None when the models come from sockets (no files to read)."""
    from types import SimpleNamespace

    import folder_paths

    from ..ltxcore.pipeline import model_sizes, plan_run, stage_work
    from ..memory_plan import plan

    if models.checkpoint is None or models.text_encoder is None:
        return None
    full = lambda kind, name: folder_paths.get_full_path(kind, name) if name else None  # noqa: E731
    ckpt = full("checkpoints", models.checkpoint)
    files = SimpleNamespace(dev=ckpt, distilled=ckpt, text_encoder=full("text_encoders", models.text_encoder),
                            spatial_upsampler=full("latent_upscale_models", models.spatial_upsampler),
                            distilled_lora=full("loras", models.distilled_lora),
                            ic_lora_outpaint=full("loras", models.ic_lora))
    try:
        run = plan_run(resolved, files, has_source_audio=has_source_audio)
        fp8 = "fp8" in os.path.basename(ckpt).lower()
        mp = plan(model_sizes(files, run, fp8), stage_work(run), offload_transformer=False, offload_text=False)
    except Exception as exc:  # a plan is advice: never fail a run for it
        log.warning("native engine: no memory plan (%s)", exc)
        return None
    return mp.describe().replace("(offload: none", "(before ComfyUI's own offloading")
