#!/usr/bin/env bash
# Browser-test prerequisites: Debian's Chromium and npm's playwright-core (tests/browser/node_modules).
# Idempotent; prints the Chromium path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q >/dev/null 2>&1 || true
  $SUDO apt-get install -y -q chromium >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
echo /usr/bin/chromium
