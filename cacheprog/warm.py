"""``gocacheprog warm``: land a go command's manifest in L1 before go runs the command.

The helper that go starts prefetches too, but only once go first reads its cache. From then on
the landing (decoding, hashing and writing: about 0.5 s of CPU for ``go build std``'s 160 MiB)
competes with go for the cores, while go waits for its entries one at a time. A CI job usually
has work to do before it builds: a clone, ``go mod download``, code generation. Started in the
background at that point, ``gocacheprog warm -- go test ./...`` lands the manifest's entries
while that work runs, and the build then finds them in L1 (docs/prefetch.md).

The key is the one the helper will work out when go runs the same command in the same directory
with the same environment (``manifest.py``). go sets GOOS, GOARCH, CGO_ENABLED and the rest of the
key's variables in its helper's environment, and ``go env`` prints the same values; it also names
the toolchain's GOROOT, after any GOTOOLCHAIN switch. The arguments come from the command line
after ``--``. ``--key`` or ``GOCACHEGATE_MANIFEST_KEY`` names a key instead.

While it lands, it holds a lock in the L1 directory (``warming.py``): a go command with the same
key that starts meanwhile lets it finish the landing instead of streaming the same entries again,
and a warm that finds the lock held (by another warm, or by the landing of a go command's helper
with the same key) leaves the landing to that one.

Like the helper, it never fails a job over the remote side. A missing manifest, a gate that is
down or a corrupt entry is reported in a line on stderr, with exit status 0. Only a usage error
exits 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from .config import Config, ConfigError, build_parser, config_from
from .manifest import KEY_ENV, CommandKey, goroot_version, key_of, override_key
from .prefetch import PrefetchSettings, settings_from_env

__all__ = ["warm"]

_DESCRIPTION = ("Land the entries of a go command's manifest in the local cache before go runs the command, "
                "e.g. in the background while a CI job clones and downloads modules: "
                "gocacheprog warm -- go test ./... . Run it in the directory, and with the environment, "
                "of the go command. Takes the helper's flags and GOCACHEGATE_* variables.")
_USAGE = "gocacheprog warm [flags] -- go <args>... (or --key KEY)"
_GO_ENV_TIMEOUT_S = 120.0  # go env may first download the toolchain that go.mod asks for


def _say(message: str) -> None:
    sys.stderr.write(f"gocacheprog warm: {message}\n")
    sys.stderr.flush()


def warm(args: list[str]) -> int:
    """Run ``gocacheprog warm``; the exit status."""
    try:
        cfg, key, settings = _parse(args, os.environ)
    except ConfigError as exc:
        _say(str(exc))
        return 2
    if not settings.enabled:
        _say("GOCACHEGATE_PREFETCH is off: nothing to do")
        return 0
    _land(cfg, key, settings)
    return 0


def _parse(args: list[str], env: Mapping[str, str]) -> tuple[Config, CommandKey, PrefetchSettings]:
    """Settings, key and prefetch bounds from the command line; raises ConfigError."""
    split = args.index("--") if "--" in args else len(args)
    flags, command = args[:split], args[split + 1:]
    parser = build_parser("gocacheprog warm", _DESCRIPTION)
    parser.add_argument("--key", help="the manifest key to warm (GOCACHEGATE_MANIFEST_KEY); "
                                      "default: the key of the go command after --")
    parsed = parser.parse_args(flags)
    # The job's GOCACHEGATE_STATS_FILE belongs to its go commands: a warm still running in the
    # background would overwrite what one of them wrote. Only --stats-file names one for the warm.
    cfg = config_from(parsed, env)._replace(stats_file=parsed.stats_file)
    if cfg.url is None:
        raise ConfigError("no gate to warm from: set GOCACHEGATE_URL or --url")
    try:
        settings = settings_from_env(env)._replace(ahead=True)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    named = (parsed.key or env.get("GOCACHEGATE_MANIFEST_KEY", "")).strip()
    if named:
        return cfg, override_key(named), settings
    if not command:
        raise ConfigError(f"name the go command to warm for: {_USAGE}")
    return cfg, _key_for_command(command, env), settings


def _key_for_command(command: Sequence[str], env: Mapping[str, str], cwd: str | None = None) -> CommandKey:
    """The key the helper will work out for ``command`` (``go <args>``) run in ``cwd``; raises ConfigError."""
    go, args = command[0], list(command[1:])
    cwd = os.getcwd() if cwd is None else cwd
    if len(args) >= 2 and args[0] in ("-C", "--C"):  # go -C dir: go changes directory before anything
        cwd = os.path.join(cwd, args[1])
    elif args and args[0].startswith(("-C=", "--C=")):
        cwd = os.path.join(cwd, args[0].partition("=")[2])
    cwd = os.path.realpath(cwd)  # what the helper's os.getcwd() will say
    names = ("GOROOT", *KEY_ENV)
    try:
        found = subprocess.run([go, "env", *names], cwd=cwd, env=dict(env), capture_output=True, text=True,
                               timeout=_GO_ENV_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"cannot run {go} env: {exc}") from exc
    values = found.stdout.split("\n")
    if found.returncode != 0 or len(values) < len(names) or not values[0]:
        reason = (found.stderr.strip().splitlines() or [f"exit status {found.returncode}"])[-1]
        raise ConfigError(f"{go} env failed: {reason}")
    # go sets these in its helper's environment before starting it: the key sees go's values.
    go_env = dict(zip(KEY_ENV, values[1:], strict=False))
    return key_of({**env, **go_env}, cwd, goroot_version(values[0]), args)


def _land(cfg: Config, key: CommandKey, settings: PrefetchSettings) -> None:
    """Prefetch everything the manifest lists and L1 lacks, holding the landing lock, then report in one line."""
    from . import warming

    name = key.key if len(key.key) <= 16 else key.key[:16] + "…"
    try:
        lock = warming.hold(cfg.dir, key.key)
    except OSError as exc:
        _say(f"cannot use the local cache {cfg.dir}: {exc.strerror or exc}")
        return
    if lock is None:
        _say(f"manifest {name}: another process is landing it into {cfg.dir} (a gocacheprog warm, or the "
             f"helper of a go command with this key); leaving it to that one")
        return
    try:
        _land_held(cfg, key, settings, name)
    finally:
        lock.close()


def _land_held(cfg: Config, key: CommandKey, settings: PrefetchSettings, name: str) -> None:
    from .cache import Cache
    from .l1 import L1
    from .remote import remote_for
    from .stats import Stats

    said: list[str] = []

    def say(message: str) -> None:
        said.append(message)
        _say(message)

    started = time.monotonic()
    stats = Stats()
    cache = Cache(cfg, L1(cfg.dir, cfg.l1_max_bytes), remote_for(cfg), stats, say=say, prefetch=settings, key=key)
    prefetch = cache.prefetch
    assert prefetch is not None  # a gate URL and an enabled prefetch
    prefetch.start()
    finished = prefetch.finish(settings.max_seconds + cfg.timeout + 5)  # the stream stops itself at its budget
    stored = prefetch.stored
    cache.close()  # cancels what still streams; the session report counts the prefetch for the gate
    counts = stats.snapshot()
    seconds = time.monotonic() - started
    if stored is None:
        if not said:
            _say(f"no manifest {name} at the gate yet: nothing to warm (a writer's run of the command makes it)")
        return
    local = len(stored.ids) - prefetch.wanted
    megabytes = counts["prefetch_bytes"] / 1e6
    _say(f"manifest {name}: {prefetch.landed} of {len(stored.ids)} entries landed ({megabytes:.1f} MB) in "
         f"{seconds:.2f} s; {local} were in the local cache already"
         + ("" if finished else "; stopped at the time budget"))
