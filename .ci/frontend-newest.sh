#!/usr/bin/env bash
# The NEWEST `comfyui-frontend-package` on PyPI, looked up at CI time, unpacked into a folder of its own
# (<cache>/frontends/<version>, no dependencies, not in the venv) so a test server can serve it with
# `--front-end-root <folder>/comfyui_frontend_package/static` next to its pinned frontend.
#
# Usage: .ci/frontend-newest.sh [CACHE_DIR] [PYTHON]
#   env LTX_OUTPAINT_FRONTEND_VERSION=1.58.1 pins a version instead of asking PyPI for the newest.
# Prints "<version> <static folder>" on its last line. Fails (exit 1) when PyPI cannot answer.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${1:-${CACHE:-.ci/cache}}
PY=${2:-${PYTHON:-python3}}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
log() { echo "[frontend-newest.sh] $*" >&2; }

VERSION=${LTX_OUTPAINT_FRONTEND_VERSION:-}
if [ -z "$VERSION" ]; then
  INDEX=$("$PY" -m pip index versions --json --disable-pip-version-check comfyui-frontend-package 2>/dev/null) || {
    log "pip index versions comfyui-frontend-package failed: PyPI unreachable?"; exit 1; }
  VERSION=$(printf '%s' "$INDEX" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["latest"])')
fi
[[ "$VERSION" =~ ^[0-9]+(\.[0-9]+)+$ ]] || { log "unexpected version '$VERSION'"; exit 1; }

TARGET="$CACHE/frontends/$VERSION"
STATIC="$TARGET/comfyui_frontend_package/static"
if [ ! -f "$TARGET/.installed" ]; then
  log "installing comfyui-frontend-package==$VERSION into $TARGET"
  rm -rf "$TARGET"
  "$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$TARGET" \
    "comfyui-frontend-package==$VERSION"
  [ -f "$STATIC/index.html" ] || { log "$STATIC/index.html missing after install"; exit 1; }
  touch "$TARGET/.installed"
fi
log "newest comfyui-frontend-package on PyPI: $VERSION"
echo "$VERSION $STATIC"
