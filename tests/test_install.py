"""Install the pack the way users (and the registry tooling) do, in throwaway virtualenvs.

(a) ComfyUI-Manager: `pip install <line>` for each line of requirements.txt into an environment that
    has torch (as every ComfyUI install does) and nothing else, then load the pack folder the way
    ComfyUI's loader does (importlib, from a path; `ltx_outpaint` is not installed there) and import
    every engine module through it.
(b) `comfy node validate` (PyPI `comfy-cli`), the check `comfy node publish` runs before uploading.

Both need PyPI; without it they skip (and fail under CI=true). Only a failure to reach the index counts as
"PyPI unreachable": a pin that does not exist, a conflict or a build error fails the test.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from comfyui_server import PACK_DIR_NAME, REPO_ROOT

pytestmark = pytest.mark.slow

COMFY_CLI_VERSION = os.environ.get("LTX_OUTPAINT_COMFY_CLI_VERSION", "1.23.0")
CACHE_DIR = os.path.abspath(os.environ.get("LTX_OUTPAINT_CACHE") or os.path.join(REPO_ROOT, ".ci", "cache"))
# packages a fresh venv brings itself; never borrowed from the test environment
OWN_PACKAGES = {"pip", "setuptools", "wheel"}

#: pip's words for "could not reach the package index" (never "No matching distribution found": that is
#: also what a wrong pin says)
_NETWORK_ERRORS = re.compile(r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
                             r"resolution|Name or service not known|Network is unreachable|ConnectTimeout|"
                             r"ConnectionRefusedError|Connection refused|Read timed out")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pypi_unreachable(pip_output: str) -> bool:
    """Whether a failed pip install failed because the index could not be reached at all."""
    return bool(_NETWORK_ERRORS.search(pip_output))


def _run(cmd: list[str], timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    env.update(kwargs.pop("env", {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=env, **kwargs)


def _pip_install(python: str, *args: str) -> None:
    """pip install into `python`'s environment; skip (fail under CI) when PyPI cannot be reached."""
    res = _run([python, "-m", "pip", "install", *args])
    if res.returncode != 0:
        out = res.stdout + res.stderr
        if pypi_unreachable(out) and not _in_ci():
            pytest.skip(f"PyPI is not reachable (pip install {' '.join(args)}):\n{out[-1500:]}")
        pytest.fail(f"pip install {' '.join(args)} failed ({res.returncode}):\n{out[-4000:]}", pytrace=False)


def _make_venv(path: str) -> str:
    res = _run([sys.executable, "-m", "venv", path], timeout=300)
    assert res.returncode == 0, res.stderr
    return os.path.join(path, "bin", "python")


# ---- (a) requirements.txt line by line, on top of torch --------------------------------------------------

def _requirement(text: str):
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - pip always vendors it
        from pip._vendor.packaging.requirements import Requirement
    return Requirement(text)


def _dependency_closure(roots: list[str]) -> list[importlib.metadata.Distribution]:
    """Installed distributions needed by `roots` (following markers and extras, e.g. cuda-toolkit[cublas])."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [(name, frozenset()) for name in roots]
    done = set()
    while todo:
        name, extras = todo.pop()
        key = (re.sub(r"[-_.]+", "-", name).lower(), extras)
        if key in done:
            continue
        done.add(key)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # e.g. a Windows-only dependency
        found[key[0]] = dist
        for line in dist.requires or []:
            req = _requirement(line)
            wanted = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras))
            if wanted:
                todo.append((req.name, frozenset(req.extras)))
    return [d for n, d in found.items() if n not in OWN_PACKAGES]


def _borrow(dists: list[importlib.metadata.Distribution], target: str) -> list[str]:
    """Symlink the files of `dists` (top-level entries of site-packages) into `target`."""
    os.makedirs(target, exist_ok=True)
    linked = []
    for dist in dists:
        site = str(dist.locate_file(""))
        for f in dist.files or []:
            top = f.parts[0]
            if top == ".." or top.endswith(".pth") or top == "__pycache__":
                continue  # console scripts, path hooks
            src, dst = os.path.join(site, top), os.path.join(target, top)
            if os.path.exists(src) and not os.path.lexists(dst):
                os.symlink(src, dst)
                linked.append(top)
    return linked


def _requirement_lines() -> list[str]:
    with open(os.path.join(REPO_ROOT, "requirements.txt"), encoding="utf-8") as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return [line for line in lines if line]


IMPORT_LIKE_COMFYUI = textwrap.dedent("""
    import importlib, importlib.util, json, os, pkgutil, sys
    pack = os.path.abspath(sys.argv[1])
    # ComfyUI's nodes.load_custom_node: module named after the folder path, loaded from its __init__.py
    name = pack.replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, os.path.join(pack, "__init__.py"),
                                                  submodule_search_locations=[pack])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    engine = importlib.import_module(name + ".nodes")
    imported = []
    for info in pkgutil.walk_packages(engine.__path__, engine.__name__ + "."):
        if ".nodes.comfyui" in info.name:
            continue  # the ComfyUI adapter: needs ComfyUI itself (covered by the comfyui tests)
        importlib.import_module(info.name)
        imported.append(info.name[len(name) + 1:])
    # the engine works, not just imports: write a clip with PyAV and decode it back
    sample = importlib.import_module(name + ".nodes.media.sample")
    decode = importlib.import_module(name + ".nodes.media.decode")
    sample.write_sample("probe.mp4", width=64, height=96, frames=6, fps=12.0)
    clip = decode.decode_video("probe.mp4")
    print(json.dumps({
        "imported": imported,
        "web_directory": getattr(module, "WEB_DIRECTORY", None),
        "has_entrypoint": hasattr(module, "comfy_entrypoint"),
        "ltx_outpaint_installed": importlib.util.find_spec("ltx_outpaint") is not None,
        "comfy_available": importlib.util.find_spec("comfy_api") is not None,
        "frames": list(clip.frames.shape),
    }))
""")


def test_requirements_txt_installs_line_by_line_and_the_pack_loads_like_comfyui_loads_it(tmp_path):
    venv = str(tmp_path / "venv")
    python = _make_venv(venv)
    # torch comes with every ComfyUI install: borrow the test environment's (and only its dependency
    # closure) through a .pth file instead of downloading ~3 GB again.
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    borrowed = str(tmp_path / "borrowed-torch")
    assert _borrow(_dependency_closure(["torch"]), borrowed)
    with open(os.path.join(site, "borrowed_torch.pth"), "w") as f:
        f.write(borrowed + "\n")

    for line in _requirement_lines():  # what ComfyUI-Manager does with requirements.txt
        _pip_install(python, line)

    check = _run([python, "-m", "pip", "check"])
    assert check.returncode == 0, check.stdout + check.stderr
    workdir = tmp_path / "comfyui-like"
    workdir.mkdir()
    os.symlink(REPO_ROOT, workdir / PACK_DIR_NAME, target_is_directory=True)
    res = _run([python, "-c", IMPORT_LIKE_COMFYUI, PACK_DIR_NAME], cwd=str(workdir), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert not report["ltx_outpaint_installed"] and not report["comfy_available"]  # an honest environment
    assert report["web_directory"] == "./js" and not report["has_entrypoint"]
    assert {"nodes.request", "nodes.media.canvas", "nodes.media.decode", "nodes.media.encode",
            "nodes.backends.preview", "nodes.fal.client", "nodes.local.backend"} <= set(report["imported"]), report["imported"]
    assert report["frames"] == [6, 96, 64, 3]


def test_requirements_txt_matches_pyproject_dependencies():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            from conftest import skip_or_fail

            skip_or_fail("Python 3.10 without tomli: cannot read pyproject.toml")
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    def normalized(reqs):
        return {str(_requirement(r)) for r in reqs}
    assert normalized(_requirement_lines()) == normalized(deps)


def _outcome(*pip_args: str) -> str:
    """"failed", "skipped" or "passed": what _pip_install makes of this pip run."""
    try:
        _pip_install(sys.executable, *pip_args)
    except pytest.fail.Exception:
        return "failed"
    except pytest.skip.Exception:
        return "skipped"
    return "passed"


def test_a_broken_pin_fails_and_only_an_unreachable_index_skips(tmp_path, monkeypatch):
    """A pin that does not exist is a failure, never "PyPI unreachable" (here against a local, empty index);
    a refused connection to the index is the skip case, and a failure under CI=true."""
    monkeypatch.delenv("CI", raising=False)
    empty = tmp_path / "empty-index"
    empty.mkdir()
    assert _outcome("--isolated", "--no-index", "--find-links", str(empty), "--dry-run", "av==0.0.0.404") == "failed"
    refused = ("--isolated", "--index-url", "http://127.0.0.1:9/simple", "--retries", "1", "--timeout", "3",
               "--dry-run", "av==0.0.0.404")
    assert _outcome(*refused) == "skipped"
    monkeypatch.setenv("CI", "true")
    assert _outcome(*refused) == "failed"


# ---- (b) comfy node validate ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def comfy_cli() -> list[str]:
    """`python -m comfy_cli` from a venv cached in .ci/cache (built once, reused across runs)."""
    venv = os.path.join(CACHE_DIR, f"comfy-cli-{COMFY_CLI_VERSION}")
    python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".complete")
    if not os.path.exists(stamp):
        shutil.rmtree(venv, ignore_errors=True)
        _make_venv(venv)
        _pip_install(python, f"comfy-cli=={COMFY_CLI_VERSION}")
        open(stamp, "w").close()
    return [python, "-m", "comfy_cli"]


def test_comfy_node_validate_passes(comfy_cli, tmp_path):
    # --skip-prompt + DO_NOT_TRACK: no telemetry question or upload; HOME in tmp: no config left behind.
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / ".config"), "DO_NOT_TRACK": "1",
           "COMFY_NO_TELEMETRY": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    res = _run([*comfy_cli, "--skip-prompt", "--no-json", "node", "validate"], cwd=REPO_ROOT, env=env, timeout=300)
    out = res.stdout + res.stderr
    print(out)
    assert res.returncode == 0, out
    assert "All validation checks passed" in out, out
    # validate exits 0 on these too; the registry says they will become errors
    for bad in ("Error", "Warning", "Security warnings", "Traceback"):
        assert bad.lower() not in out.lower(), out
