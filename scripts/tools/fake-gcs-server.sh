#!/usr/bin/env bash
# fake-gcs-server is the GCS emulator the storage tests run the gcs backend against (tests/emulator.py).
# Built from the Go module proxy; v1.56.1 builds with Go 1.26 and enforces ifGenerationMatch on
# multipart and resumable uploads, which the create-only tests rely on. The first build takes a minute.
set -euo pipefail
module=github.com/fsouza/fake-gcs-server
version=v1.56.1
bin="$(cd "$(dirname "$0")/../.." && pwd)/.tools/bin"
if go version -m "$bin/fake-gcs-server" 2>/dev/null | grep -q "mod[[:space:]]*$module[[:space:]]*$version"; then
  exit 0
fi
mkdir -p "$bin"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! (cd /tmp && GOBIN="$bin" GOFLAGS=-buildvcs=false go install "$module@$version") >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
