#!/usr/bin/env bash
# The CURRENT ComfyUI line for the tests: 0.20.1 (with core LTX-2), from the vendored tarball
# ../shared/vendor/comfyui-0.20.1.tar.gz (see its README; GPL, extracted at test time, never committed).
# env LTX_OUTPAINT_COMFYUI_TARBALL names it elsewhere; without it the script looks in ../shared/vendor/
# (relative to the repo root) and then /work/shared/vendor/ (so a clone in /tmp finds it too).
#
# Extracts it to <cache>/ComfyUI-0.20.1, installs its requirements into the given Python (without torch*,
# which the caller pins, and without the frontend / templates / docs packages, which go into a folder of
# their own, <cache>/comfy-pkgs/0.20.1, put on the server's PYTHONPATH by the tests so that two ComfyUI
# versions share one venv). Idempotent.
#
# Usage: .ci/comfyui-current.sh [CACHE_DIR] [PYTHON]    Prints the ComfyUI folder on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.20.1
CACHE=${1:-${CACHE:-.ci/cache}}
PY=${2:-${PYTHON:-python3}}
TARBALL=${LTX_OUTPAINT_COMFYUI_TARBALL:-}
if [ -z "$TARBALL" ]; then
  for candidate in "../shared/vendor/comfyui-$VERSION.tar.gz" "/work/shared/vendor/comfyui-$VERSION.tar.gz"; do
    if [ -f "$candidate" ]; then TARBALL=$candidate; break; fi
  done
  TARBALL=${TARBALL:-../shared/vendor/comfyui-$VERSION.tar.gz}
fi
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
COMFY="$CACHE/ComfyUI-$VERSION"
STAMP="$COMFY/.extracted"
log() { echo "[comfyui-current.sh] $*" >&2; }

if [ ! -f "$TARBALL" ]; then
  echo "[comfyui-current.sh] $TARBALL is missing: the current-ComfyUI tests need it (set LTX_OUTPAINT_COMFYUI_TARBALL)" >&2
  exit 1
fi
if [ ! -f "$STAMP" ]; then
  log "extracting $TARBALL to $COMFY"
  rm -rf "$COMFY" "$COMFY.tmp"
  mkdir -p "$COMFY.tmp"
  tar -xzf "$TARBALL" -C "$COMFY.tmp"
  mv "$COMFY.tmp/comfyui" "$COMFY"
  rm -rf "$COMFY.tmp"
  find "$COMFY" -name 'extra_model_paths.yaml' -delete
  touch "$STAMP"
fi
grep -q "^__version__ = \"$VERSION\"" "$COMFY/comfyui_version.py" || { log "unexpected comfyui_version.py"; exit 1; }

DATA_PKGS='comfyui-frontend-package|comfyui-workflow-templates|comfyui-embedded-docs'
REQS="$CACHE/comfyui-$VERSION-requirements.txt"
grep -v -E "^[[:space:]]*(torch|torchvision|torchaudio|$DATA_PKGS)[[:space:]]*([<>=!~;[:space:]].*)?$" \
  "$COMFY/requirements.txt" > "$REQS"
log "installing ComfyUI $VERSION requirements into $("$PY" -c 'import sys; print(sys.prefix)')"
"$PY" -m pip install -q --disable-pip-version-check -r "$REQS"

PKGS="$CACHE/comfy-pkgs/$VERSION"
if [ ! -f "$PKGS/.installed" ]; then
  log "installing its pinned frontend / templates / docs into $PKGS"
  rm -rf "$PKGS"
  grep -E "^[[:space:]]*($DATA_PKGS)[[:space:]]*==" "$COMFY/requirements.txt" > "$CACHE/comfyui-$VERSION-data.txt"
  # (with their dependencies: the templates meta-package's media parts, plain data wheels)
  "$PY" -m pip install -q --disable-pip-version-check --target "$PKGS" -r "$CACHE/comfyui-$VERSION-data.txt"
  touch "$PKGS/.installed"
fi
echo "$COMFY"
