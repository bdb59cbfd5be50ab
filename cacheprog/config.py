"""The helper's settings, from flags and the environment (flags win).

go starts the helper with the words of ``GOCACHEPROG``, so flags are how one job sets options
without touching its environment: ``GOCACHEPROG="gocacheprog --read-only"``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

if TYPE_CHECKING:
    import argparse

from . import __version__

__all__ = ["Config", "ConfigError", "build_parser", "config_from", "default_dir", "load_config"]

_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DEFAULT_L1_MAX_BYTES = 5 << 30

#: Prow's job metadata: sent for usage attribution only; rights come from the token alone.
JOB_VARIABLES = ("JOB_NAME", "JOB_TYPE", "BUILD_ID", "REPO_OWNER", "REPO_NAME", "PULL_NUMBER")


class ConfigError(Exception):
    """A setting that cannot be used; the helper says so in one line and runs without a remote."""


class Config(NamedTuple):
    url: str | None
    namespace: str
    dir: str
    token: str | None = None
    token_file: str | None = None
    auth: str | None = None  # "google": an ID token from google-auth
    audience: str | None = None
    read_only: bool = False
    stats_file: str | None = None
    l1_max_bytes: int = _DEFAULT_L1_MAX_BYTES
    flush_timeout: float = 10.0
    timeout: float = 5.0  # seconds a remote call may wait for the gate between two bytes
    verbose: bool = False
    job: Mapping[str, str] = MappingProxyType({})


_DESCRIPTION = ("GOCACHEPROG helper of gocachegate: a local disk cache in front of a remote gate. go starts it; "
                "set GOCACHEPROG=gocacheprog. 'gocacheprog warm --help': fill the local cache before go runs. "
                "Every flag has a GOCACHEGATE_* variable; flags win.")


def build_parser(prog: str = "gocacheprog", description: str = _DESCRIPTION) -> argparse.ArgumentParser:
    """The helper's flags; ``gocacheprog warm`` adds its own to them."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise ConfigError(message)

    p = _Parser(prog=prog, description=description)
    p.add_argument("--version", action="version", version=f"gocacheprog {__version__}")
    p.add_argument("--url", help="gate base URL (GOCACHEGATE_URL); unset: local cache only")
    p.add_argument("--namespace", help="cache namespace (GOCACHEGATE_NAMESPACE)")
    p.add_argument("--dir", help="local cache directory (GOCACHEGATE_DIR)")
    p.add_argument("--token-file", help="file with a bearer token, re-read when it changes")
    p.add_argument("--auth", choices=["google"], help="google: a Google ID token (GOCACHEGATE_AUTH)")
    p.add_argument("--audience", help="audience of the Google ID token (GOCACHEGATE_AUDIENCE)")
    p.add_argument("--read-only", action="store_true", default=None, help="never upload")
    p.add_argument("--stats-file", help="write this invocation's counters as JSON at close")
    p.add_argument("--l1-max-bytes", type=int, help="size bound of the local cache")
    p.add_argument("--flush-timeout", type=float, help="seconds close waits for pending uploads")
    p.add_argument("--timeout", type=float, help="seconds a remote call may stall (GOCACHEGATE_TIMEOUT)")
    p.add_argument("--verbose", action="store_true", default=None, help="one summary line at close")
    return p


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _number(value: str | None, name: str, kind: type[int] | type[float], default: float) -> float:
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not a number") from exc
    if number < 0:
        raise ConfigError(f"{name}={value!r} is negative")
    return number


def default_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gocachegate")


def _default_namespace(env: Mapping[str, str]) -> str:
    owner, name = env.get("REPO_OWNER"), env.get("REPO_NAME")
    if owner and name:
        return f"{owner}.{name}"
    return "default"


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> Config:
    """Settings from flags over environment; raises ConfigError (or SystemExit for --help)."""
    # argparse costs milliseconds of import that every go command would wait for: only when needed.
    return config_from(build_parser().parse_args(list(argv)) if argv else _NO_FLAGS, env)


def config_from(args: Any, env: Mapping[str, str]) -> Config:
    """Settings from parsed flags (``build_parser``) over environment; raises ConfigError."""
    url = (args.url or env.get("GOCACHEGATE_URL") or "").strip().rstrip("/") or None
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"GOCACHEGATE_URL={url!r} is not an http(s) URL")
    namespace = args.namespace or env.get("GOCACHEGATE_NAMESPACE") or _default_namespace(env)
    if not _NAMESPACE.match(namespace):
        raise ConfigError(f"namespace {namespace!r} is not valid (letters, digits, '.', '_', '-')")
    auth = args.auth or env.get("GOCACHEGATE_AUTH") or None
    if auth not in (None, "google"):
        raise ConfigError(f"GOCACHEGATE_AUTH={auth!r}: only 'google' is known")
    read_only = args.read_only if args.read_only is not None else _flag(env, "GOCACHEGATE_READ_ONLY")
    verbose = args.verbose if args.verbose is not None else _flag(env, "GOCACHEGATE_VERBOSE")
    l1_max = args.l1_max_bytes
    if l1_max is None:
        l1_max = int(_number(env.get("GOCACHEGATE_L1_MAX_BYTES"), "GOCACHEGATE_L1_MAX_BYTES", int,
                             _DEFAULT_L1_MAX_BYTES))
    flush = args.flush_timeout
    if flush is None:
        flush = _number(env.get("GOCACHEGATE_FLUSH_TIMEOUT"), "GOCACHEGATE_FLUSH_TIMEOUT", float, 10.0)
    timeout = args.timeout
    if timeout is None:
        timeout = _number(env.get("GOCACHEGATE_TIMEOUT"), "GOCACHEGATE_TIMEOUT", float, 5.0)
    return Config(
        url=url,
        namespace=namespace,
        dir=args.dir or env.get("GOCACHEGATE_DIR") or default_dir(env),
        token=env.get("GOCACHEGATE_TOKEN") or None,
        token_file=args.token_file or env.get("GOCACHEGATE_TOKEN_FILE") or None,
        auth=auth,
        audience=args.audience or env.get("GOCACHEGATE_AUDIENCE") or url,
        read_only=read_only,
        stats_file=args.stats_file or env.get("GOCACHEGATE_STATS_FILE") or None,
        l1_max_bytes=l1_max,
        flush_timeout=flush,
        timeout=max(timeout, 0.1),
        verbose=verbose,
        job={k: env[k] for k in JOB_VARIABLES if env.get(k)},
    )


class _NoFlags:
    """What argparse returns when no flag is given: every option unset."""

    def __getattr__(self, name: str) -> None:
        return None


_NO_FLAGS: Any = _NoFlags()
