"""Build manifests: which entries one go command used, under a key its next run will find again.

A manifest is what lets the next run of the same command fetch everything at once instead of
one entry per get (docs/prefetch.md). The key must be the same for the same command in the
same repository in any job (a presubmit's checkout and a postsubmit's, on other machines, under
other paths) and differ when the entries would differ (another go version, GOOS, GOFLAGS…).

It is the SHA-256 (hex) of these lines, built from what the helper can see of the go command
that started it::

    gocachegate manifest v1
    go <the version of the running toolchain: GOROOT/VERSION of /proc/<ppid>/exe>
    env GOOS=… GOARCH=… GOFLAGS=… CGO_ENABLED=… GOEXPERIMENT=… GOAMD64=… GOARM64=…
    module <the module path of the nearest go.mod at or above the working directory>
    dir <the working directory relative to the repository root>
    args <go's arguments (/proc/<ppid>/cmdline), normalised>

The variables are those of the helper's environment, where go sets each to the value ``go env``
prints. The repository root is the nearest directory at or above the working directory that holds
``.git``, else ``go.work``, else ``go.mod``, else the working directory itself. Arguments are
normalised so that what differs per job does not split the key: absolute paths under the root
become relative, and the values of flags that name per-job files or machine sizes are dropped
(``-o``, ``-C``, ``-p``, the ``*profile`` flags, ``-outputdir``, ``-trace``, and ``-ldflags``,
whose ``-X`` stamps usually carry a commit). ``GOCACHEGATE_MANIFEST_KEY`` overrides the whole
key: used as is when it is a valid name (``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``), else hashed.

The manifest itself (what the gate stores, replacing the previous one)::

    b"GCM1" | u32 big-endian n | n bytes of JSON {"description": …, "created": unix s} | 32-byte ids

in the order go first asked for them, so that a prefetch streams first what go needs first. A
writer sends it at close unless the gate's copy has the same ids and is less than a day old
(so a stable manifest is rewritten daily and never ages out of the bucket's retention).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

__all__ = ["KEY_ENV", "MAX_IDS", "CommandKey", "ManifestError", "Recorder", "Stored", "command_key", "decode", "encode",
           "goroot_version", "key_of", "normalise_args", "override_key"]

MAGIC = b"GCM1"
#: Ids in one manifest at most: a large repository's go test ./... asks for a few tens of thousands.
MAX_IDS = 100_000
_LENGTH = struct.Struct(">I")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: The variables of the key, as go sets them in its helper's environment: the values ``go env`` prints.
KEY_ENV = ("GOOS", "GOARCH", "GOFLAGS", "CGO_ENABLED", "GOEXPERIMENT", "GOAMD64", "GOARM64")
#: Flags whose value is dropped from the key (they name per-job paths or the machine's size).
_DROPPED = frozenset({"o", "C", "p", "ldflags", "outputdir", "trace", "coverprofile", "cpuprofile",
                      "memprofile", "blockprofile", "mutexprofile"})
_REFRESH_S = 86400.0  # an unchanged manifest is sent again once it is this old
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}


class ManifestError(Exception):
    """Bytes that are not a manifest; the prefetch is skipped."""


class CommandKey(NamedTuple):
    key: str  # a name the gate accepts in /manifests/{key}
    description: str  # the lines it was hashed from, stored in the manifest for people


class Stored(NamedTuple):
    """A manifest as the gate had it."""

    ids: list[bytes]
    created: float  # unix seconds; 0 when unknown

    def same(self, ids: Sequence[bytes], now: float | None = None) -> bool:
        """True when sending ``ids`` would change nothing worth a storage write."""
        fresh = (time.time() if now is None else now) - self.created < _REFRESH_S
        return fresh and set(self.ids) == set(ids)


def encode(ids: Sequence[bytes], description: str, created: float | None = None) -> bytes:
    header = json.dumps({"description": description, "created": int(time.time() if created is None else created)},
                        separators=(",", ":")).encode()
    return MAGIC + _LENGTH.pack(len(header)) + header + b"".join(ids[:MAX_IDS])


def decode(data: bytes) -> Stored:
    """The action ids of a manifest, and when it was made; raises ManifestError."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise ManifestError("not a manifest")
    start = 8 + _LENGTH.unpack_from(data, 4)[0]
    ids = memoryview(data)[start:]
    if start > len(data) or len(ids) % 32 or len(ids) // 32 > MAX_IDS:
        raise ManifestError("truncated manifest or too many ids")
    try:
        created = json.loads(bytes(data[8:start])).get("created", 0)
    except (ValueError, AttributeError) as exc:
        raise ManifestError("manifest header is not a JSON object") from exc
    return Stored([bytes(ids[i:i + 32]) for i in range(0, len(ids), 32)],
                  float(created) if isinstance(created, int | float) else 0.0)


class Recorder:
    """The action ids of one invocation in the order go first asked for them, and which were used.

    "Used" is a hit or a put: what the next run of the command will ask for again and find.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[bytes, bool] = {}  # insertion order is the order of first asking

    def asked(self, action_id: bytes) -> None:
        with self._lock:
            self._ids.setdefault(action_id, False)

    def used(self, action_id: bytes) -> None:
        with self._lock:
            self._ids[action_id] = True

    def ids(self) -> list[bytes]:
        with self._lock:
            return [action_id for action_id, used in self._ids.items() if used]


def command_key(env: Mapping[str, str], ppid: int | None = None, cwd: str | None = None) -> CommandKey:
    """The manifest key of the go command that started this helper (module docstring)."""
    override = env.get("GOCACHEGATE_MANIFEST_KEY", "").strip()
    if override:
        return override_key(override)
    ppid = os.getppid() if ppid is None else ppid
    return key_of(env, os.getcwd() if cwd is None else cwd, _go_version(ppid), _parent_args(ppid))


def override_key(text: str) -> CommandKey:
    """The key named by ``GOCACHEGATE_MANIFEST_KEY`` (or ``gocacheprog warm --key``)."""
    if _NAME.fullmatch(text):
        return CommandKey(text, f"override: {text}")
    return CommandKey(hashlib.sha256(text.encode()).hexdigest(), f"override: {text}")


def key_of(env: Mapping[str, str], cwd: str, go_version: str, args: Sequence[str]) -> CommandKey:
    """The key of ``go <args>`` run by the toolchain of ``go_version`` in ``cwd`` (module docstring)."""
    import platform  # only here: the helper's imports are on the way to go's first answer

    root = _root(cwd)
    variables = {name: env.get(name, "") for name in KEY_ENV}
    variables["GOOS"] = variables["GOOS"] or platform.system().lower()
    variables["GOARCH"] = variables["GOARCH"] or _ARCH.get(platform.machine(), platform.machine())
    variables["GOFLAGS"] = " ".join(normalise_args(variables["GOFLAGS"].split(), root))
    lines = [
        "gocachegate manifest v1",
        f"go {go_version}",
        "env " + " ".join(f"{name}={value}" for name, value in variables.items()),
        f"module {_module(cwd, root)}",
        f"dir {os.path.relpath(cwd, root)}",
        "args " + " ".join(normalise_args(args, root)),
    ]
    description = "\n".join(lines)
    return CommandKey(hashlib.sha256(description.encode()).hexdigest(), description)


def normalise_args(args: Sequence[str], root: str) -> list[str]:
    """go's arguments without what differs per job (see the module docstring)."""
    out: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            continue
        if arg.startswith("-") and arg != "-":
            name, has_value, _ = arg.lstrip("-").partition("=")
            if name in _DROPPED:
                skip_value = not has_value
                continue
        if os.path.isabs(arg) and (arg == root or arg.startswith(root.rstrip("/") + "/")):
            arg = "./" + os.path.relpath(arg, root) if arg != root else "."
        out.append(arg)
    return out


def _parent_args(ppid: int) -> list[str]:
    try:
        with open(f"/proc/{ppid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
    except OSError:
        return []
    return [w.decode(errors="replace") for w in words[1:] if w]


def _go_version(ppid: int) -> str:
    """The running toolchain's version, without running go (a process start costs milliseconds)."""
    try:
        exe = os.readlink(f"/proc/{ppid}/exe")
    except OSError:
        return ""
    return goroot_version(os.path.dirname(os.path.dirname(exe)))


def goroot_version(goroot: str) -> str:
    """The first line of ``GOROOT/VERSION``: the toolchain's version as the key names it."""
    try:
        with open(os.path.join(goroot, "VERSION"), "rb") as f:
            return f.readline().decode(errors="replace").strip()
    except OSError:
        return ""


def _root(cwd: str) -> str:
    found: dict[str, str] = {}
    path = cwd
    while True:
        for marker in (".git", "go.work", "go.mod"):
            if marker not in found and os.path.exists(os.path.join(path, marker)):
                found[marker] = path
        if ".git" in found:
            break
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return found.get(".git") or found.get("go.work") or found.get("go.mod") or cwd


def _module(cwd: str, root: str) -> str:
    path = cwd
    while True:
        try:
            with open(os.path.join(path, "go.mod"), "rb") as f:
                for line in f:
                    words = line.split()
                    if len(words) >= 2 and words[0] == b"module":
                        return words[1].decode(errors="replace").strip('"')
            return ""
        except OSError:
            pass
        if path == root or os.path.dirname(path) == path:
            return ""
        path = os.path.dirname(path)
