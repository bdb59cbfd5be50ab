"""``gocacheprog``: started by go once per command; the handshake goes out before any import."""

from __future__ import annotations

import os
import sys

from . import HANDSHAKE

TYPE_CHECKING = False  # not typing's: importing typing first would delay the handshake go waits for
if TYPE_CHECKING:
    from .l1 import L1
    from .prefetch import PrefetchSettings

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["warm"]:
        from .warm import warm

        return warm(args[1:])
    if {"-h", "--help", "--version"} & set(args) or sys.stdin is None or sys.stdin.isatty():
        return _no_go(args)
    os.write(1, HANDSHAKE)
    return _serve(args)


def _no_go(args: list[str]) -> int:
    """Run by a person, not by go: answer --help and --version, explain anything else."""
    from .config import ConfigError, build_parser

    try:
        build_parser().parse_args(args)
    except ConfigError as exc:
        sys.stderr.write(f"gocacheprog: {exc}\n")
        return 2
    sys.stderr.write("gocacheprog: go starts this helper; set GOCACHEPROG=gocacheprog (see --help)\n")
    return 2


def _serve(args: list[str]) -> int:
    import gc

    from .cache import Cache
    from .config import Config, ConfigError, default_dir, load_config
    from .l1 import L1
    from .loop import serve
    from .remote import remote_for
    from .stats import Stats

    try:
        cfg = load_config(args, os.environ)
    except ConfigError as exc:
        # Failing here would abort the build: run on the local cache alone and say why.
        sys.stderr.write(f"gocacheprog: {exc}; using the local cache only\n")
        cfg = Config(url=None, namespace="default",
                     dir=os.environ.get("GOCACHEGATE_DIR") or default_dir(os.environ))
    l1 = L1(cfg.dir, cfg.l1_max_bytes)
    prefetch = _prefetch_settings() if cfg.url is not None else None
    # What is made by now (modules, classes) lives as long as the process: out of every collection.
    # A full collection would walk all of it, and in the lander's child write to every page it sits
    # on, copying the parent's heap page by page (the use the gc docs give, right before a fork).
    # std remote-warm: 2% less wall time, two series of 50-60 pairs (bench/RESULTS.md).
    gc.freeze()
    lander = None
    if prefetch is not None and prefetch.enabled:
        from .lander import start  # forks: before any thread

        lander = start(cfg, prefetch)
    remote = remote_for(cfg)
    _warm_up_in_background(l1, remote is not None)
    cache = Cache(cfg, l1, remote, Stats(), prefetch=prefetch, lander=lander)
    if cache.prefetch is not None:
        cache.prefetch.start()
    serve(cache, sys.stdin.buffer, sys.stdout.fileno())
    return 0


def _prefetch_settings() -> PrefetchSettings | None:
    from .prefetch import settings_from_env

    try:
        return settings_from_env(os.environ)
    except ValueError as exc:
        sys.stderr.write(f"gocacheprog: {exc}; no prefetch\n")
        return None


def _warm_up_in_background(l1: L1, remote: bool) -> None:
    """Import what a remote call needs and trim the local cache, off the path of go's requests."""
    import threading

    def warm_up() -> None:
        if remote:
            import hashlib  # noqa: F401
            import http.client  # noqa: F401

            import zstandard  # noqa: F401
        l1.trim_if_due()

    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
