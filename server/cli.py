"""The ``gocachegate`` command.

    gocachegate serve [--config FILE] [--host ADDR] [--port N] [--access-log]
    gocachegate check-config FILE
    gocachegate admin COMMAND ...      (``admin_cli.py``: an HTTP client of the gate's admin API)
    gocachegate --version

Imports stay light until a command needs more: the config's models (pydantic, the OIDC stack)
load only for ``serve`` and ``check-config``, the web stack only to serve, so ``admin`` commands
and ``--help`` answer at once. Any failure to start is one line on stderr and exit status 2.
Command groups (``admin ...``) are one more subparser in ``_parser``.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import admin_cli

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["listen_problem", "main"]

EXIT_USAGE = 2


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gocachegate")
    except PackageNotFoundError:
        return "0+unknown"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve anywhere


def listen_problem(host: str, settings: Settings) -> str | None:
    """Why the gate must not listen on ``host`` with these settings, or None."""
    if settings.auth is None and not is_loopback(host):
        return (
            f"refusing to listen on {host or 'all addresses'} without an auth section in the config "
            "(without auth the gate serves loopback only)"
        )
    return None


def _fail(message: str) -> int:
    sys.stderr.write(f"gocachegate: {message}\n")
    return EXIT_USAGE


def _serve(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    host = args.host if args.host is not None else settings.server.host
    port = args.port if args.port is not None else settings.server.port
    problem = listen_problem(host, settings)
    if problem is not None:
        return _fail(problem)

    from .serve import StartupFailed, bind, serve

    try:
        sock = bind(host, port)
        serve(settings, sock, access_log=args.access_log or settings.server.access_log)
    except StartupFailed as exc:
        return _fail(str(exc))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_settings

    try:
        settings = load_settings(args.file)
    except ConfigError as exc:
        return _fail(str(exc))
    problem = listen_problem(settings.server.host, settings)
    if problem is not None:
        return _fail(f"config: server.host: {problem}")
    storage = settings.storage
    where = f"gs://{storage.bucket}/{storage.prefix}" if storage.backend == "gcs" else str(storage.path)
    auth = settings.auth
    who = (
        "none (anonymous admin)"
        if auth is None
        else f"{len(auth.issuers)} issuers, {len(auth.rules)} rules, {len(auth.static_tokens)} static tokens"
    )
    print(
        f"{args.file}: ok: listen {settings.server.host}:{settings.server.port}, storage {storage.backend} "
        f"{where}, auth {who}, max entry {settings.limits.max_entry_bytes} bytes"
    )
    return 0


def _port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("want a port number from 1 to 65535")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gocachegate", description="A remote build cache for the Go toolchain.")
    parser.add_argument("--version", action="version", version=f"gocachegate {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gate")
    serve.add_argument("--config", help="YAML config file (default: $GOCACHEGATE_CONFIG, else built-in defaults)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1; overrides server.host)")
    serve.add_argument("--port", type=_port, help="port to listen on (default 8086; overrides server.port)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check-config", help="validate a config file and summarize it")
    check.add_argument("file")
    check.set_defaults(run=_check_config)

    admin_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
