#!/usr/bin/env bash
# Debian's chromium, for the browser test of the HTML cost report (tests/admin/test_report_browser.py):
# the page is loaded headless and checked for console errors and rendered charts. Idempotent and
# quiet when chromium is already there. apt-get needs root or sudo; without either this only warns,
# and the test skips (or fails, under CI).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "chromium.sh: not installing chromium (needs root or sudo); the browser test will skip" >&2
    exit 0
  fi
  as_root=(sudo -n)
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { "${as_root[@]}" apt-get update -q && \
       DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium; } \
     >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
