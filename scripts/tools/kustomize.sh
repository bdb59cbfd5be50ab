#!/usr/bin/env bash
# kustomize renders every overlay under deploy/kustomize in tests/deploy. Built from the Go module
# proxy (v5.8.2 is the newest that builds with Go 1.26: v5.8.3 needs kustomize/api v0.21.3 and Go 1.27).
set -euo pipefail
module=sigs.k8s.io/kustomize/kustomize/v5
version=v5.8.2
bin="$(cd "$(dirname "$0")/../.." && pwd)/.tools/bin"
if go version -m "$bin/kustomize" 2>/dev/null | grep -q "mod[[:space:]]*$module[[:space:]]*$version"; then
  exit 0
fi
mkdir -p "$bin"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! (cd /tmp && GOBIN="$bin" go install "$module@$version") >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
