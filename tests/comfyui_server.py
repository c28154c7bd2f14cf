"""A real ComfyUI backend with this pack installed, for the integration tests (helper, not a test file).

`ComfyUIServer` lays out a throwaway base directory (custom_nodes/ input/ output/ models/ user/ temp/),
links the repo into custom_nodes/ the way a user's clone sits there, starts
`python main.py --cpu --listen 127.0.0.1 --port P --base-directory DIR --disable-api-nodes` with the
tests' own python, and talks to it over HTTP (httpx).

Which ComfyUI, frontend and Python packages a test server gets comes from the environment (`bash .ci/run`
sets these for each ComfyUI / frontend combination; README "Tests" lists them):
  LTX_OUTPAINT_COMFYUI_DIR            ComfyUI folder of the session server (fixture `comfyui`)
  LTX_OUTPAINT_COMFYUI_PYTHONPATH     folders (os.pathsep-separated) put first on its PYTHONPATH: the
                                      frontend / templates packages pinned by that ComfyUI version
  LTX_OUTPAINT_FRONTEND_ROOT          a frontend's static folder, served instead (`--front-end-root`)
  LTX_OUTPAINT_COMFYUI_CURRENT_DIR    ComfyUI 0.20.1, for tests that need the current line whatever the
  LTX_OUTPAINT_COMFYUI_CURRENT_PYTHONPATH   session server is (fixture `comfyui_current`, start_comfyui())
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import httpx

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_DIR_NAME = "comfyui-ltx-outpaint"
ENV_VAR = "LTX_OUTPAINT_COMFYUI_DIR"
#: version name -> (env of its ComfyUI folder, env of its PYTHONPATH folders, env of a frontend to serve)
SERVER_ENV = {
    "default": (ENV_VAR, "LTX_OUTPAINT_COMFYUI_PYTHONPATH", "LTX_OUTPAINT_FRONTEND_ROOT"),
    "current": ("LTX_OUTPAINT_COMFYUI_CURRENT_DIR", "LTX_OUTPAINT_COMFYUI_CURRENT_PYTHONPATH", None),
}
BASE_SUBDIRS = ("custom_nodes", "input", "output", "models", os.path.join("models", "loras"), "user", "temp")


class ComfyUIError(RuntimeError):
    """The server did not start, died, timed out, or refused a prompt (message includes the log tail)."""


class PromptRejected(ComfyUIError):
    """HTTP 400 from POST /prompt: validation failed. `body` has `error` and `node_errors`."""

    def __init__(self, message: str, body: dict):
        super().__init__(message)
        self.body = body
        self.node_errors = body.get("node_errors", {}) if isinstance(body, dict) else {}


def find_comfyui_dir(env_var: str = ENV_VAR) -> tuple[str | None, str]:
    """(ComfyUI folder, "") when env `env_var` names one with main.py, else (None, reason)."""
    path = os.environ.get(env_var, "").strip()
    script = ".ci/comfyui-current.sh" if "CURRENT" in env_var else ".ci/comfyui.sh"
    if not path:
        return None, (f"{env_var} is not set: no ComfyUI backend to test against "
                      f"(`bash .ci/run` sets it up; or run `{script}` and export {env_var}=<its last output line>)")
    if not os.path.isfile(os.path.join(path, "main.py")):
        return None, f"{env_var}={path} has no main.py (run `{script}` to fetch ComfyUI there)"
    return os.path.abspath(path), ""


def env_paths(env_var: str | None) -> tuple[str, ...]:
    """The os.pathsep-separated folders in env `env_var` (empty when unset)."""
    value = os.environ.get(env_var, "") if env_var else ""
    return tuple(p for p in value.split(os.pathsep) if p.strip())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PackImport:
    """What ComfyUI's log says about importing one custom-node pack."""
    seen: bool                   # the pack appears in "Import times for custom nodes:"
    failed: bool                 # marked "(IMPORT FAILED)" or a load warning names it
    seconds: float | None        # the import time ComfyUI reports (0.1 s resolution)
    details: str                 # traceback / warning lines about the pack, when it failed


_IMPORT_TIME_RE = re.compile(r"^\s*(\d+(?:\.\d+)?) seconds( \(IMPORT FAILED\))?: (.+?)\s*$")


def pack_import_status(log: str, pack_path: str) -> PackImport:
    """Parse ComfyUI's custom-node loading messages for the pack at `pack_path` (as linked in custom_nodes)."""
    lines = log.splitlines()
    seen, failed, seconds = False, False, None
    if "Import times for custom nodes:" in log:
        start = max(i for i, line in enumerate(lines) if "Import times for custom nodes:" in line)
        for line in lines[start + 1:]:
            m = _IMPORT_TIME_RE.match(line)
            if not m:
                if line.strip():
                    break
                continue
            if os.path.normpath(m.group(3)) == os.path.normpath(pack_path):
                seen, seconds, failed = True, float(m.group(1)), bool(m.group(2))
    # nodes.load_custom_node: a traceback then "Cannot import <path> module for custom nodes: <e>", or
    # one-line warnings about comfy_entrypoint / missing NODE_CLASS_MAPPINGS that name the path.
    details = []
    for i, line in enumerate(lines):
        if pack_path not in line:
            continue
        if f"Cannot import {pack_path} module" in line:
            starts = [j for j in range(max(0, i - 300), i) if lines[j].startswith("Traceback (most recent call")]
            details.append("\n".join(lines[starts[-1] if starts else max(0, i - 40):i + 1]))
        elif any(key in line for key in ("comfy_entrypoint in", "Skip " + pack_path, "IMPORT FAILED: " + pack_path)):
            details.append(line)
    if details:
        failed = True
    return PackImport(seen=seen, failed=failed, seconds=seconds, details="\n".join(details))


class ComfyUIServer:
    """One ComfyUI process on 127.0.0.1 with this repo linked into its custom_nodes/."""

    def __init__(self, comfyui_dir: str, base_dir: str, *, python: str = sys.executable,
                 pack_source: str = REPO_ROOT, pack_name: str = PACK_DIR_NAME, extra_args: tuple[str, ...] = (),
                 pythonpath: tuple[str, ...] = (), extra_custom_nodes: dict[str, str] | None = None,
                 env: dict[str, str] | None = None, front_end_root: str | None = None,
                 models: dict[str, list[str] | dict[str, str]] | None = None):
        self.comfyui_dir = comfyui_dir
        self.base_dir = os.path.abspath(base_dir)
        self.python = python
        self.pack_source = pack_source
        self.pack_name = pack_name
        self.extra_args = tuple(extra_args)
        #: folders put first on the server's PYTHONPATH (its own frontend / templates packages)
        self.pythonpath = tuple(p for p in pythonpath if p)
        #: name -> folder of other custom-node packs to link next to ours (test-only helpers)
        self.extra_custom_nodes = dict(extra_custom_nodes or {})
        self.extra_env = dict(env or {})
        #: a frontend's static folder served instead of the installed package (`--front-end-root`)
        self.front_end_root = front_end_root
        #: model folder name ("checkpoints", "loras", ...) -> files (or {name: file}) linked into models/
        self.models = dict(models or {})
        self.input_dir = os.path.join(self.base_dir, "input")
        self.output_dir = os.path.join(self.base_dir, "output")
        self.temp_dir = os.path.join(self.base_dir, "temp")
        self.models_dir = os.path.join(self.base_dir, "models")
        self.custom_nodes_dir = os.path.join(self.base_dir, "custom_nodes")
        self.pack_path = os.path.join(self.custom_nodes_dir, pack_name)
        self.log_path = os.path.join(self.base_dir, "comfyui.log")
        self.client_id = uuid.uuid4().hex
        self.port: int | None = None
        self.base_url = ""
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._http: httpx.Client | None = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def prepare(self) -> None:
        for sub in BASE_SUBDIRS:
            os.makedirs(os.path.join(self.base_dir, sub), exist_ok=True)
        if not os.path.lexists(self.pack_path):
            os.symlink(self.pack_source, self.pack_path, target_is_directory=True)
        for name, source in self.extra_custom_nodes.items():
            link = os.path.join(self.custom_nodes_dir, name)
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(source), link, target_is_directory=True)
        for folder, files in self.models.items():
            self.add_models(folder, files)

    def add_models(self, folder: str, files: list[str] | dict[str, str]) -> list[str]:
        """Link model files into models/<folder>/ (a list keeps their names; a dict maps name -> file)."""
        named = files if isinstance(files, dict) else {os.path.basename(f): f for f in files}
        target = os.path.join(self.models_dir, folder)
        os.makedirs(target, exist_ok=True)
        linked = []
        for name, source in named.items():
            link = os.path.join(target, name)
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(source), link, target_is_directory=os.path.isdir(source))
            linked.append(link)
        return linked

    def start(self, timeout: float = 120.0, attempts: int = 3) -> ComfyUIServer:
        self.prepare()
        for attempt in range(attempts):
            try:
                self._start_once(timeout)
                return self
            except ComfyUIError:
                # A port picked by free_port() can be taken before ComfyUI binds it: try another one.
                in_use = "address already in use" in self.log_text().lower()
                self.stop()
                if not in_use or attempt == attempts - 1:
                    raise
        return self

    def _start_once(self, timeout: float) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        cmd = [self.python, os.path.join(self.comfyui_dir, "main.py"), "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--base-directory", self.base_dir, "--disable-api-nodes",
               # its default database lives in <ComfyUI>/user/, outside the base dir (and absent here)
               "--database-url", "sqlite:///" + os.path.join(self.base_dir, "user", "comfyui.db"),
               *(["--front-end-root", self.front_end_root] if self.front_end_root else []),
               *self.extra_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", **self.extra_env)
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([*self.pythonpath, *filter(None, [env.get("PYTHONPATH")])])
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"$ {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        t0 = time.monotonic()
        # cwd = the base dir, so nothing is written into the shared ComfyUI folder.
        self._proc = subprocess.Popen(cmd, cwd=self.base_dir, env=env, stdin=subprocess.DEVNULL,
                                      stdout=self._log_file, stderr=subprocess.STDOUT)
        self._http = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(30.0, connect=5.0))
        deadline = t0 + timeout
        while True:
            if self._proc.poll() is not None:
                raise ComfyUIError(f"ComfyUI exited with code {self._proc.returncode} while starting\n"
                                   + self.log_tail())
            try:
                r = self._http.get("/object_info", timeout=30.0)
                if r.status_code == 200:
                    self.startup_seconds = time.monotonic() - t0
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ComfyUIError(f"ComfyUI did not answer GET /object_info within {timeout:.0f} s\n"
                                   + self.log_tail())
            time.sleep(0.25)

    def stop(self, timeout: float = 15.0) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # ComfyUI exits cleanly on Ctrl+C
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> ComfyUIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---- log -------------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def pack_import(self) -> PackImport:
        return pack_import_status(self.log_text(), self.pack_path)

    # ---- HTTP API --------------------------------------------------------------------------------
    def _request(self, method: str, url: str, **kwargs) -> httpx.Response:
        if self._http is None:
            raise ComfyUIError("the ComfyUI server is not running")
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.TransportError as e:
            state = "running" if self.alive else f"exited with code {self._proc.returncode if self._proc else '?'}"
            raise ComfyUIError(f"{method} {url} failed ({e!r}); ComfyUI {state}\n{self.log_tail()}") from e

    def object_info(self, node_class: str | None = None) -> dict:
        r = self._request("GET", f"/object_info/{node_class}" if node_class else "/object_info")
        r.raise_for_status()
        return r.json()

    def queue(self, prompt: dict, extra_data: dict | None = None) -> tuple[int, dict]:
        """POST /prompt; returns (HTTP status, JSON body). 200 → {"prompt_id", ...}; 400 → {"error", "node_errors"}."""
        payload = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        r = self._request("POST", "/prompt", json=payload)
        try:
            body = r.json()
        except ValueError:
            body = {"error": r.text}
        return r.status_code, body

    def history(self, prompt_id: str) -> dict | None:
        r = self._request("GET", f"/history/{prompt_id}")
        r.raise_for_status()
        return r.json().get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 120.0, poll: float = 0.2) -> dict:
        """The history entry (`prompt`, `outputs`, `status` with `status_str` and `messages`) once it is done."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                return entry
            if not self.alive:
                raise ComfyUIError(f"ComfyUI died while running prompt {prompt_id}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.interrupt()  # don't leave it running into the next test
                raise ComfyUIError(f"prompt {prompt_id} did not finish within {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(poll)

    def run(self, prompt: dict, timeout: float = 120.0, extra_data: dict | None = None) -> dict:
        """Queue `prompt` and wait for its history entry; PromptRejected (with node_errors) on HTTP 400."""
        status, body = self.queue(prompt, extra_data)
        if status == 400:
            raise PromptRejected(f"ComfyUI rejected the prompt: {body.get('error')}\n"
                                 f"node_errors: {body.get('node_errors')}", body)
        if status != 200 or "prompt_id" not in body:
            raise ComfyUIError(f"POST /prompt answered {status}: {body}\n{self.log_tail()}")
        return self.wait(body["prompt_id"], timeout)

    def interrupt(self) -> None:
        self._request("POST", "/interrupt")

    def version(self) -> str:
        """ComfyUI's version as /system_stats reports it ("" when it does not say)."""
        r = self._request("GET", "/system_stats")
        r.raise_for_status()
        return str(r.json().get("system", {}).get("comfyui_version", ""))


def error_messages(entry: dict) -> list[dict]:
    """The `execution_error` payloads of a history entry (exception_message, node_type, traceback, ...)."""
    return [data for kind, data in entry.get("status", {}).get("messages", []) if kind == "execution_error"]
