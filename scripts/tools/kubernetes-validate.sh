#!/usr/bin/env bash
# kubernetes-validate checks rendered manifests against the Kubernetes OpenAPI schemas, offline: the
# PyPI package ships the JSON schemas of every Kubernetes minor version it knows (kubeconform would
# have to download them, which this network does not allow). Own venv: none of its pins reach the product.
set -euo pipefail
version=1.37.0
tools="$(cd "$(dirname "$0")/../.." && pwd)/.tools"
if [[ "$("$tools/bin/kubernetes-validate" --version 2>/dev/null)" == "$version" ]]; then
  exit 0
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { "${PYTHON:-python3}" -m venv --clear "$tools/venvs/kubernetes-validate" &&
  "$tools/venvs/kubernetes-validate/bin/pip" install --disable-pip-version-check "kubernetes-validate==$version"; } >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
mkdir -p "$tools/bin"
ln -sf "../venvs/kubernetes-validate/bin/kubernetes-validate" "$tools/bin/kubernetes-validate"
