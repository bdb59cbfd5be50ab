#!/usr/bin/env bash
# PyInstaller (the "bundle" extra of pyproject.toml) in the project's venv, where it can see the
# helper and its dependencies: tests/deploy builds the self-contained gocacheprog with it.
set -euo pipefail
version=6.22.3
python="$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin/python"
if [[ "$("$python" -c 'import importlib.metadata as m; print(m.version("pyinstaller"))' 2>/dev/null)" == "$version" ]]; then
  exit 0
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "$python" -m pip install --disable-pip-version-check "pyinstaller==$version" >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
