"""`ltx-outpaint`: the same outpaint job as the ComfyUI nodes, headless.

    ltx-outpaint sample clip.mp4                       # write a small generated test clip
    ltx-outpaint run clip.mp4 -o wide.mp4 --prompt "..." [--resolution 1280x720] [--backend preview]
    ltx-outpaint long trip.mp4 -o wide.mp4 --prompt "..."          # any length: scene cuts + chunks, streamed
    ltx-outpaint batch clips/ more.mp4 -o out/ --concurrency 3 --max-total-cost-usd 20

Every request field of the fal endpoint is an option (see `ltx-outpaint run --help`).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
from typing import Sequence

from .backends import PreviewConfig, Progress, run_outpaint
from .media.canvas import ANCHORS, CanvasSpec
from .cost import estimate_cost
from .errors import InputError
from .request import FIELDS, RESOLUTION_PRESETS, ImageSize, LoraSpec, OutpaintRequest
from .media.decode import DecodeOptions, decode_video
from .media.encode import write_mp4

log = logging.getLogger("ltx_outpaint.cli")

BACKENDS = ("auto", "preview", "fal", "local")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_resolution(text: str) -> str | ImageSize:
    if text in RESOLUTION_PRESETS:
        return text
    try:
        w, h = text.lower().split("x")
        return ImageSize(int(w), int(h))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"resolution: {text!r} is neither a preset ({', '.join(RESOLUTION_PRESETS)}) nor WIDTHxHEIGHT") from None


def parse_lora(parts: Sequence[str], position: int = 1) -> LoraSpec:
    """`PATH_OR_URL [SCALE [TARGET]]` from the `position`-th --lora option."""
    if not 1 <= len(parts) <= 3:
        raise InputError("lora", "give PATH_OR_URL, then optionally SCALE and TARGET (both|video|audio)")
    try:
        scale = float(parts[1]) if len(parts) > 1 else 1.0
    except ValueError:
        raise InputError("lora", f"scale {parts[1]!r} is not a number") from None
    from .loras import check_lora_spec

    # a local file must exist and be a safetensors LoRA before anything runs (or is paid for)
    return check_lora_spec(LoraSpec(parts[0], scale, parts[2] if len(parts) > 2 else "both"), field="path",
                           node=f"--lora #{position}")


def _add_request_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    g = p.add_argument_group("request fields (fal endpoint schema; same meaning on every backend)")
    for spec in FIELDS.values():
        if spec.name in ("video_url", "loras") or spec.name in skip:
            continue
        flag = "--" + spec.name.replace("_", "-")
        bounds = f" [{spec.minimum}..{spec.maximum}]" if spec.minimum is not None else ""
        default = spec.default if spec.name != "negative_prompt" else "(fal's default list)"
        help_text = f"{spec.doc}{bounds} (default: {default})"
        if spec.kind == "bool":
            g.add_argument(flag, type=_bool, default=spec.default, metavar="true|false", help=help_text)
        elif spec.kind == "int":
            g.add_argument(flag, type=int, default=spec.default, help=help_text)
        elif spec.kind == "float":
            g.add_argument(flag, type=float, default=spec.default, help=help_text)
        elif spec.kind == "resolution":
            g.add_argument(flag, type=parse_resolution, default=spec.default,
                           help=f"{spec.doc} Presets: {', '.join(RESOLUTION_PRESETS)}; or WIDTHxHEIGHT.")
        elif spec.kind == "enum":
            g.add_argument(flag, choices=spec.choices, default=spec.default, help=help_text)
        else:
            g.add_argument(flag, default=spec.default, help=help_text)
    g.add_argument("--lora", action="append", nargs="+", default=[], metavar="PATH_OR_URL [SCALE [TARGET]]",
                   help="A LoRA: path or URL, scale (default 1), target both|video|audio (default both). "
                        "Repeat for up to 3 LoRAs.")


def _add_backend_options(r: argparse.ArgumentParser) -> None:
    r.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto = local when every model file for --recipe is found, else fal when a fal key is "
                        "configured (FAL_KEY or the pack's settings), else the free preview (no AI).")
    r.add_argument("--fill", choices=("blur", "mirror"), default="blur", help="Preview backend fill style.")
    f = r.add_argument_group("fal backend (paid; key from FAL_KEY / FAL_KEY_ID+FAL_KEY_SECRET / settings)")
    f.add_argument("--max-cost-usd", type=float, default=0.0, help="Refuse to submit above this estimate.")
    f.add_argument("--deadline-s", type=float, default=3600.0, help="Cancel the fal job after this long.")
    f.add_argument("--no-sse", action="store_true", help="Poll fal's status instead of streaming it.")
    lo = r.add_argument_group("local backend (LTX-2.3 on this machine's GPU via ltx-core; pip install .[local])")
    lo.add_argument("--recipe", choices=("official", "ic_lora_pipeline"), default="official",
                    help="official: Lightricks' LTX-2.3 IC-LoRA outpaint workflow (dev + distilled LoRA, two "
                         "stages); ic_lora_pipeline: ltx-pipelines' ICLoraPipeline (distilled checkpoint, "
                         "latent upsampler). See the README's recipe table.")
    lo.add_argument("--precision", choices=("auto", "bf16", "fp8"), default="auto",
                    help="Transformer weights; auto = fp8 on GPUs under 60 GB or when only fp8 files exist.")
    lo.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:N or cpu.")
    lo.add_argument("--offload", choices=("auto", "none", "blocks"), default="auto",
                    help="Transformer / text-encoder blocks kept in RAM and streamed to the GPU one at a time: "
                         "auto = when the planned peak VRAM does not fit the GPU.")
    lo.add_argument("--models-dir", default=None,
                    help="A ComfyUI-style models folder (checkpoints/, loras/, text_encoders/, "
                         "latent_upscale_models/); default $LTX_OUTPAINT_MODELS_DIR.")
    lo.add_argument("--model", action="append", default=[], metavar="ROLE=PATH",
                    help="An explicit model file, e.g. dev=/x/ltx-2.3-22b-dev.safetensors; roles: dev, distilled, "
                         "distilled_lora, ic_lora_outpaint, spatial_upsampler, text_encoder.")
    lo.add_argument("--loras-dir", default=None, help="Where LoRAs given as URLs are cached.")


def _add_canvas_options(r: argparse.ArgumentParser) -> None:
    c = r.add_argument_group("canvas placement (fal always centres)")
    c.add_argument("--anchor", choices=tuple(ANCHORS), default="center")
    c.add_argument("--offset-x", type=int, default=0, help="Pixels right of the anchored position.")
    c.add_argument("--offset-y", type=int, default=0, help="Pixels below the anchored position.")


def _add_long_options(r: argparse.ArgumentParser) -> None:
    g = r.add_argument_group("long clips (scene cuts, overlapping chunks; see README 'Long clips and batches')")
    g.add_argument("--no-scenes", action="store_true", help="Do not split at scene cuts (one scene).")
    g.add_argument("--scene-threshold", type=float, default=27.0,
                   help="Scene-cut threshold (PySceneDetect's ContentDetector score; default 27).")
    g.add_argument("--min-scene-len", type=int, default=15, help="Shortest scene in frames (default 15).")
    g.add_argument("--chunk-frames", type=int, default=0,
                   help="Frames per request (0 = the backend's default: fal 481 (its maximum), local 121, preview 481).")
    g.add_argument("--overlap-frames", type=int, default=17,
                   help="Frames shared by consecutive chunks of a scene, cross-faded (default 17; local: whole "
                        "latent frames, 8k+1).")
    g.add_argument("--no-condition", action="store_true",
                   help="Local: do not guide a chunk with the previous chunk's last frames (cross-fade only).")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ltx-outpaint", description="Video outpainting with LTX-2.3 and LoRAs.")
    p.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample", help="Write a small generated sample clip (vertical, with audio).")
    s.add_argument("output", help="Where to write the MP4.")
    s.add_argument("--width", type=int, default=320, help="Width in pixels, even, 16 to 4096 (default 320).")
    s.add_argument("--height", type=int, default=576, help="Height in pixels, even, 16 to 4096 (default 576).")
    s.add_argument("--frames", type=int, default=48, help="Frames, 1 to 10000 (default 48).")
    s.add_argument("--fps", type=float, default=24.0, help="Frame rate, 1 to 240 (default 24).")
    _add_overwrite(s)

    r = sub.add_parser("run", help="Outpaint a video.")
    r.add_argument("input", help="Source video: a file path or an https URL (fetched with the safe downloader).")
    r.add_argument("-o", "--output", required=True, help="Output MP4 path (a .json sidecar is written beside it).")
    _add_overwrite(r)
    _add_backend_options(r)
    _add_canvas_options(r)
    d = r.add_argument_group("source selection")
    d.add_argument("--frame-load-cap", type=int, default=0, help="Load at most N frames (0 = all).")
    d.add_argument("--skip-first-frames", type=int, default=0)
    d.add_argument("--select-every-nth", type=int, default=1)
    d.add_argument("--force-fps", type=float, default=0.0, help="Resample to this rate, 1 to 240 (0 = keep).")
    d.add_argument("--max-width", type=int, default=0)
    d.add_argument("--max-height", type=int, default=0)
    _add_request_options(r)

    lg = sub.add_parser("long", help="Outpaint a clip of any length: split at scene cuts and into overlapping "
                                     "chunks, streamed to the output (re-run the same command to resume).")
    lg.add_argument("input", help="Source video file.")
    lg.add_argument("-o", "--output", required=True, help="Output MP4 (+ .json sidecar with scenes and joins).")
    _add_overwrite(lg)
    _add_backend_options(lg)
    _add_canvas_options(lg)
    _add_long_options(lg)
    _add_request_options(lg, skip=("num_frames", "frames_per_second"))

    b = sub.add_parser("batch", help="Outpaint many clips (files and folders); re-run the same command to resume.")
    b.add_argument("inputs", nargs="+", help="Video files and/or folders (their videos, not subfolders).")
    b.add_argument("-o", "--output", required=True, help="Output folder (outputs, manifest, batch-summary.json/.csv).")
    b.add_argument("--concurrency", type=int, default=2, help="fal requests at a time (default 2; local and preview "
                                                             "clips run one after another).")
    b.add_argument("--max-total-cost-usd", type=float, default=0.0,
                   help="Refuse the whole batch, before anything is uploaded, when fal's estimate is above this.")
    _add_backend_options(b)
    _add_canvas_options(b)
    _add_long_options(b)
    _add_request_options(b, skip=("num_frames", "frames_per_second"))

    rec = sub.add_parser("recover", help="Fetch a fal request's result by id (after a crash or restart).")
    rec.add_argument("request_id", help="The fal request id (from the journal, a message or fal's dashboard).")
    rec.add_argument("-o", "--output", required=True, help="Output MP4 path.")
    _add_overwrite(rec)
    rec.add_argument("--deadline-s", type=float, default=3600.0,
                     help="Stop waiting after this many seconds, up to 86400 (default 3600); the job is left running.")
    return p


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="Replace the output file when it exists.")


def check_output_file(output: str, inputs: Sequence[str] = (), overwrite: bool = False) -> str:
    """The output MP4 path, its folder created; refused when it is a folder, one of the inputs, or exists
    (unless `overwrite`)."""
    path = os.path.abspath(output)
    if os.path.isdir(path):
        raise InputError("--output", f"{output} is a folder; give a file name, e.g. {os.path.join(output, 'out.mp4')}")
    for given in inputs:
        if os.path.exists(given) and os.path.exists(path) and os.path.samefile(given, path):
            raise InputError("--output", f"{output} is the input file; write to another name")
    if os.path.exists(path) and not overwrite:
        raise InputError("--output", f"{output} exists; add --overwrite to replace it")
    if not path.lower().endswith(".mp4"):
        log.warning("%s: the file is an MP4 whatever its name says", output)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return output


def _resolve_input(path_or_url: str) -> tuple[str, bool]:
    """Local path, or a URL fetched through the safe downloader (returns (path, is_temporary))."""
    from .download import download, is_url, policy_from_env

    if is_url(path_or_url):
        return download(path_or_url, policy=policy_from_env(), field="input"), True
    return path_or_url, False


def _local_config(args: argparse.Namespace):
    from .local.backend import LocalConfig
    from .local.models import ModelSearch

    search = ModelSearch.from_env()
    if args.models_dir:
        search = ModelSearch.from_models_dir(args.models_dir, "--models-dir").merge(search)
    explicit = []
    for item in args.model:
        role, sep, path = item.partition("=")
        if not sep or not path:
            raise InputError("--model", f"expected ROLE=PATH, got {item!r}")
        explicit.append((role.strip(), os.path.expanduser(path.strip())))
    return LocalConfig(recipe=args.recipe, engine="ltxcore", precision=args.precision, device=args.device,
                       offload=args.offload, search=search, explicit=tuple(explicit), loras_dir=args.loras_dir)


def _local_ready(config) -> bool:
    """True when the pinned ltx-core is installed and every model file for the recipe is found."""
    from .local.backend import ltx_core_problems, prefer_fp8
    from .local.models import MissingModelsError, find_models

    if ltx_core_problems():
        return False
    try:
        find_models(config.recipe, config.search, fp8=prefer_fp8(config.precision, config.device),
                    explicit=dict(config.explicit))
    except (MissingModelsError, InputError):
        return False
    return True


def _backend_config(args: argparse.Namespace, fal_output_dir: str | None = None):
    from .fal.backend import FalConfig
    from .settings import find_fal_key

    kind = args.backend
    if kind == "auto":
        local = _local_config(args)
        if _local_ready(local):
            log.info("LTX-2.3 model files found: using the local backend")
            return local
        kind = "fal" if find_fal_key() is not None else "preview"
        if kind == "preview":
            log.warning("no remote or local backend is configured: using the free PREVIEW backend (no AI)")
        else:
            log.info("a fal key is configured: using the fal backend (paid)")
    if kind == "local":
        return _local_config(args)
    if kind == "fal":
        from .fal.backend import check_limits

        out = os.path.dirname(os.path.abspath(args.output)) if fal_output_dir is None else fal_output_dir
        config = FalConfig(max_cost_usd=args.max_cost_usd, deadline_s=args.deadline_s, use_sse=not args.no_sse,
                           output_dir=out)
        check_limits(config, "--max-cost-usd", "--deadline-s", node=None)
        return config
    return PreviewConfig(fill=args.fill)


def cmd_recover(args: argparse.Namespace) -> int:
    import asyncio

    from .fal.backend import FalConfig, check_limits, recover

    check_output_file(args.output, overwrite=args.overwrite)
    # a stop leaves the job running at fal: it is the job being recovered, and a re-run collects it
    config = FalConfig(deadline_s=args.deadline_s, output_dir=os.path.dirname(os.path.abspath(args.output)),
                       on_stop="detach")
    check_limits(config, "--max-cost-usd", "--deadline-s", node=None)
    result = asyncio.run(recover(args.request_id, config))
    shutil.copyfile(result.video_path, args.output)
    log.info("recovered fal request %s -> %s", args.request_id, args.output)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _backend_config(args)
    values = {name: getattr(args, name) for name in FIELDS if name not in ("video_url", "loras")}
    request = OutpaintRequest(**values, loras=tuple(parse_lora(x, i + 1) for i, x in enumerate(args.lora))).validate()
    canvas = CanvasSpec(request.resolution, request.source_scale, args.anchor, args.offset_x, args.offset_y)
    opts = DecodeOptions(args.frame_load_cap, args.skip_first_frames, args.select_every_nth, args.force_fps,
                         args.max_width, args.max_height)
    check_output_file(args.output, [args.input], args.overwrite)
    path, temporary = _resolve_input(args.input)
    try:
        clip = decode_video(path, opts)
    finally:
        if temporary:
            os.unlink(path)
    result = run_outpaint(request, clip, canvas, config, Progress())
    if result.video_path:
        if os.path.abspath(result.video_path) != os.path.abspath(args.output):
            shutil.copyfile(result.video_path, args.output)
    else:
        write_mp4(args.output, result.frames, result.fps, result.audio, request.video_quality,
                  request.video_write_mode, metadata={"comment": result.prompt})
    n, h, w = result.frames.shape[:3]
    sidecar = {
        "backend": result.backend, "seed": result.seed, "prompt": result.prompt, "notes": result.notes,
        "output": {"width": w, "height": h, "frames": n, "fps": result.fps,
                   "audio": result.audio is not None},
        "fal_cost_estimate_usd": estimate_cost(w, h, n).usd,
        "quality": result.quality,
        "request": request.replace(seed=result.seed).to_fal_input(),
    }
    with open(args.output + ".json", "w", encoding="utf-8") as f:
        json.dump(sidecar, f, indent=2)
    log.info("wrote %s (%dx%d, %d frames, %g fps, audio: %s) with the %s backend; fal would cost %s",
             args.output, w, h, n, result.fps, "yes" if result.audio is not None else "no", result.backend,
             estimate_cost(w, h, n))
    return 0


def _long_request(args: argparse.Namespace) -> tuple[OutpaintRequest, CanvasSpec]:
    values = {name: getattr(args, name) for name in FIELDS
              if name not in ("video_url", "loras", "num_frames", "frames_per_second")}
    request = OutpaintRequest(**values, loras=tuple(parse_lora(x, i + 1) for i, x in enumerate(args.lora))).validate()
    canvas = CanvasSpec(request.resolution, request.source_scale, args.anchor, args.offset_x, args.offset_y)
    return request, canvas


def _long_options(args: argparse.Namespace):
    from .long.runner import LongOptions

    return LongOptions(detect_scenes=not args.no_scenes, scene_threshold=args.scene_threshold,
                       min_scene_len=args.min_scene_len, chunk_frames=args.chunk_frames,
                       overlap_frames=args.overlap_frames, condition_on_previous=not args.no_condition)


def cmd_long(args: argparse.Namespace) -> int:
    from .long.runner import run_long

    request, canvas = _long_request(args)
    if not os.path.isfile(args.input):
        raise InputError("input", f"{args.input}: no such file (long takes a local video file)")
    check_output_file(args.output, [args.input], args.overwrite)
    config = _backend_config(args, fal_output_dir="")
    if getattr(config, "kind", "") == "fal":
        import dataclasses

        config = dataclasses.replace(config, on_stop="detach")
    from .batch.progress import ClipProgress, TextBars

    progress = ClipProgress(TextBars(), 0, 1, os.path.basename(args.input))
    result = run_long(args.input, args.output, request, canvas, config, _long_options(args), progress)
    log.info("%s", result.summary())
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch.inputs import list_inputs
    from .batch.progress import TextBars
    from .batch.runner import run_batch

    request, canvas = _long_request(args)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise InputError("--output", f"{args.output} is a file; batch writes into a folder (give a folder name)")
    config = _backend_config(args, fal_output_dir="")
    inputs = list_inputs(args.inputs, exclude=args.output)
    summary = run_batch(inputs, args.output, request, canvas, config, _long_options(args),
                        concurrency=args.concurrency, max_total_cost_usd=args.max_total_cost_usd, sink=TextBars())
    sys.stderr.write(summary.text() + f"\nsummary: {summary.summary_json}, {summary.summary_csv}\n")
    return 0 if summary.totals["failed"] == 0 and summary.totals["interrupted"] == 0 else 4


def _check_sample(args: argparse.Namespace) -> None:
    for name, value, low, high in (("--width", args.width, 16, 4096), ("--height", args.height, 16, 4096),
                                   ("--frames", args.frames, 1, 10000)):
        if not low <= value <= high or (name != "--frames" and value % 2):
            even = "an even number " if name != "--frames" else ""
            raise InputError(name, f"got {value}; allowed {even}{low} to {high}")
    if not (math.isfinite(args.fps) and 1 <= args.fps <= 240):
        raise InputError("--fps", f"got {args.fps}; allowed 1 to 240")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request is noise here
    try:
        if args.command == "sample":
            from .media.sample import write_sample

            _check_sample(args)
            check_output_file(args.output, overwrite=args.overwrite)
            write_sample(args.output, args.width, args.height, args.frames, args.fps)
            log.info("wrote sample clip %s (%dx%d, %d frames, %g fps, stereo tone)", args.output,
                     args.width, args.height, args.frames, args.fps)
            return 0
        if args.command == "recover":
            return cmd_recover(args)
        if args.command == "long":
            return cmd_long(args)
        if args.command == "batch":
            return cmd_batch(args)
        return cmd_run(args)
    except (InputError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except OSError as exc:  # a file or folder that cannot be used (missing, a folder, no permission)
        log.error("%s: %s", exc.filename or "file", exc.strerror or exc)
        return 2
    except Exception as exc:
        from .fal.errors import FalError

        if isinstance(exc, FalError):  # fal's message and error_type, never the key
            log.error("%s", exc)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
