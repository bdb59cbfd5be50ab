#!/usr/bin/env bash
# Builds gocacheprog as a self-contained directory (PyInstaller one-dir: the bootloader, libpython,
# the helper and its dependencies), for job images that have no Python.
#   deploy/bundle/build.sh [OUT]      OUT defaults to dist/gocacheprog; run OUT/gocacheprog
# Needs the project installed with the bundle extra: pip install -e '.[bundle]'.
# The bundle needs the glibc it was built against or newer: build it on the oldest base the job
# images use (deploy/bundle/Dockerfile builds on Debian bookworm, glibc 2.36).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
out="$(realpath -m "${1:-$root/dist/gocacheprog}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# One-dir, not one-file: a one-file bundle unpacks itself to /tmp on every start, and go starts
# the helper once per command. No UPX (decompressing costs start-up time too); stripped binaries.
if ! "$python" -m PyInstaller \
  --log-level WARN --noconfirm --clean --onedir --noupx --strip \
  --name gocacheprog \
  --paths "$root" \
  --collect-submodules cacheprog \
  --exclude-module tkinter --exclude-module multiprocessing \
  --distpath "$work/dist" --workpath "$work/build" --specpath "$work" \
  "$root/deploy/bundle/gocacheprog.py" >"$work/log" 2>&1; then
  cat "$work/log" >&2
  exit 1
fi
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$work/dist/gocacheprog" "$out"
