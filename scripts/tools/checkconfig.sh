#!/usr/bin/env bash
# Prow's own checkconfig validates prow-jobs/ in tests/deploy. sigs.k8s.io/prow has no release tags:
# this pins the newest commit the Go module proxy serves. That commit requires golang.org/x/tools
# v0.9.3, which no longer compiles with Go 1.23+, so a throw-away module raises it to a version that
# does (minimal version selection keeps the rest as Prow pinned it). The first build takes a minute or two.
set -euo pipefail
prow=v0.0.0-20240619181241-cfb8754e0459
tools=v0.26.0
bin="$(cd "$(dirname "$0")/../.." && pwd)/.tools/bin"
if go version -m "$bin/checkconfig" 2>/dev/null | grep -Eq "^[[:space:]]mod[[:space:]]+sigs.k8s.io/prow[[:space:]]+$prow[[:space:]]"; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$bin"
if ! (
  cd "$work" &&
    go mod init gocachegate.local/tools/checkconfig &&
    go get "sigs.k8s.io/prow/cmd/checkconfig@$prow" "golang.org/x/tools@$tools" &&
    go build -o "$bin/checkconfig" sigs.k8s.io/prow/cmd/checkconfig
) >"$work/log" 2>&1; then
  cat "$work/log" >&2
  exit 1
fi
