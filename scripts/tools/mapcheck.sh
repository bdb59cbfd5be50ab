#!/usr/bin/env bash
# mapcheck (tests/deploy/mapcheck/) applies prow-jobs/test-pods' MutatingAdmissionPolicy to job pods
# with kube-apiserver's own admission code (k8s.io/apiserver v0.36), offline. Rebuilt only when its
# sources change; the first build takes a few minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
src="$root/tests/deploy/mapcheck"
bin="$root/.tools/bin"
want="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -d' ' -f1)"
if [[ -x "$bin/mapcheck" && "$(cat "$bin/mapcheck.sha256" 2>/dev/null)" == "$want" ]]; then
  exit 0
fi
mkdir -p "$bin"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! (cd "$src" && go build -o "$bin/mapcheck" .) >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
echo "$want" >"$bin/mapcheck.sha256"
