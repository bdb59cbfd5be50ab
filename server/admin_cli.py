"""``gocachegate admin ...``: the admin API from a terminal or a script.

    gocachegate admin stats
    gocachegate admin ls [--ns NS] [--prefix HEX] [--limit N]
    gocachegate admin show NS ACTION
    gocachegate admin rm NS ACTION
    gocachegate admin purge [--ns NS] [--older-than 7d] [--prefix HEX] [--dry-run]
    gocachegate admin manifests [--ns NS] [--limit N]
    gocachegate admin show-manifest NS KEY
    gocachegate admin rm-manifest NS KEY
    gocachegate admin usage [--since 7d] [--until now] [--group-by namespace,job]
    gocachegate admin cost-report [--since 30d] [--group-by namespace|job] [--format json|csv|markdown|html] [-o FILE]
    gocachegate admin compact-usage [--older-than 7d]

Every command takes ``--url`` (default ``$GOCACHEGATE_URL``, else the local gate on
http://127.0.0.1:8086) and ``--json`` (the API's JSON instead of a table); the bearer token comes from
``$GOCACHEGATE_TOKEN`` or the file ``$GOCACHEGATE_TOKEN_FILE`` names.

Exit status: 0 done; 1 the gate refused (401, 403), found nothing (404), failed (5xx) or could not
be reached; 2 bad usage: bad arguments, or input the gate called bad (400). Errors are one line on
stderr. httpx is imported only when a command runs, so ``gocachegate serve`` starts no slower.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .units import hours, human_bytes, money, percent

if TYPE_CHECKING:
    import httpx

__all__ = ["add_parser"]

DEFAULT_URL = "http://127.0.0.1:8086"


class AdminError(Exception):
    """A one-line reason and the exit status it ends the command with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _token() -> str | None:
    token = os.environ.get("GOCACHEGATE_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("GOCACHEGATE_TOKEN_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise AdminError(f"cannot read GOCACHEGATE_TOKEN_FILE {path}: {reason}", 2) from exc


def _reason(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])
    except ValueError:
        pass
    return resp.reason_phrase.lower() or "no reason given"


class _Gate:
    """The admin API over httpx: every failure becomes an ``AdminError``."""

    def __init__(self, url: str, timeout: float) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._timeout = timeout
        token = _token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import httpx

        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise AdminError(f"the gate at {self.url} did not answer within {self._timeout:g}s", 1) from exc
        except httpx.TransportError as exc:
            raise AdminError(f"cannot reach the gate at {self.url}: {exc or type(exc).__name__}", 1) from exc
        except httpx.InvalidURL as exc:
            raise AdminError(f"bad --url {self.url}: {exc}", 2) from exc
        status = resp.status_code
        if status < 400:
            return resp
        reason = _reason(resp)
        if status == 401:
            hint = "set GOCACHEGATE_TOKEN or GOCACHEGATE_TOKEN_FILE to an admin's token"
            raise AdminError(f"401 unauthorized: {reason} ({hint})", 1)
        if status == 403:
            raise AdminError(f"403 forbidden: {reason} (the admin commands need an admin token)", 1)
        if status == 404:
            raise AdminError(f"404 not found: {reason}", 1)
        raise AdminError(f"{status} from the gate: {reason}", 2 if status == 400 else 1)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()


# -- output ----------------------------------------------------------------------------------------


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2))


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> None:
    """Columns padded to width: the first ``left`` aligned left, the others (numbers) right."""
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
    for row in [head, *rows]:
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip())


def _print_listing(head: Sequence[str], rows: Sequence[Sequence[str]], what: str, token: str | None,
                   limit: int) -> None:
    """A listing's table (its first two columns name each item), and on stderr whether it was all."""
    if rows:
        _table(head, rows, left=2)
    if token is not None:
        print(f"(more {what}: raise --limit, now {limit})", file=sys.stderr)
    elif not rows:
        print(f"no {what}", file=sys.stderr)


def _print_fields(data: dict[str, Any]) -> None:
    """One item, a field per line; sizes in binary units and in bytes."""
    width = max(len(k) for k in data)
    for key, value in data.items():
        shown = human_bytes(value) + f" ({value:,} bytes)" if key in ("size", "stored_size") else value
        print(f"{key.ljust(width)}  {'-' if shown is None else shown}")


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value / 1000:.1f}s"


# -- commands --------------------------------------------------------------------------------------


def _stats(gate: _Gate, args: argparse.Namespace) -> None:
    data = gate.json("GET", "/v1/admin/stats")
    if args.json:
        _print_json(data)
        return
    rows = [
        [ns, f"{s['entries']:,}", human_bytes(s["bytes"]), human_bytes(s["stored_bytes"])]
        for ns, s in data["namespaces"].items()
    ]
    rows.append(["TOTAL", f"{data['entries']:,}", human_bytes(data["bytes"]), human_bytes(data["stored_bytes"])])
    _table(["NAMESPACE", "ENTRIES", "SIZE", "STORED"], rows)


def _ls(gate: _Gate, args: argparse.Namespace) -> None:
    params = {"prefix": args.prefix, **({"ns": args.ns} if args.ns else {})}
    found, token = _pages(gate, "/v1/admin/entries", "entries", params, args.limit)
    if args.json:
        _print_json({"entries": found, "next_page_token": token})
        return
    rows = [
        [
            e["namespace"],
            e["action_id"],
            human_bytes(e["size"]),
            human_bytes(e["stored_size"]),
            _ms(e["compute_ms"]),
            e["put_time"][:19].replace("T", " "),
            e["last_used"][:19].replace("T", " "),
            e["writer"],
        ]
        for e in found
    ]
    head = ["NAMESPACE", "ACTION", "SIZE", "STORED", "COMPUTE", "PUT", "LAST USED", "WRITER"]
    _print_listing(head, rows, "entries", token, args.limit)


def _show(gate: _Gate, args: argparse.Namespace) -> None:
    data = gate.json("GET", f"/v1/admin/entries/{args.namespace}/{args.action}")
    if args.json:
        _print_json(data)
        return
    _print_fields(data)


def _delete(gate: _Gate, args: argparse.Namespace, path: str, what: str) -> None:
    gate.call("DELETE", path)
    if args.json:
        _print_json({"deleted": 1})
        return
    print(f"deleted {what}")


def _rm(gate: _Gate, args: argparse.Namespace) -> None:
    _delete(gate, args, f"/v1/admin/entries/{args.namespace}/{args.action}", f"{args.namespace}/{args.action}")


def _pages(gate: _Gate, path: str, field: str, params: dict[str, Any], limit: int) -> tuple[list[Any], str | None]:
    """Up to ``limit`` items of a paged listing, and the token to go on from (None: that was all)."""
    found: list[Any] = []
    token: str | None = None
    while len(found) < limit:
        page = gate.json("GET", path, params={**params, "limit": min(1000, limit - len(found)),
                                              **({"page_token": token} if token else {})})
        found += page[field]
        token = page["next_page_token"]
        if token is None:
            break
    return found, token


def _manifests(gate: _Gate, args: argparse.Namespace) -> None:
    found, token = _pages(gate, "/v1/admin/manifests", "manifests", {"ns": args.ns} if args.ns else {}, args.limit)
    if args.json:
        _print_json({"manifests": found, "next_page_token": token})
        return
    rows = [
        [m["namespace"], m["key"], "-" if m["ids"] is None else f"{m['ids']:,}", human_bytes(m["stored_size"]),
         m["put_time"][:19].replace("T", " "), m["writer"]]
        for m in found
    ]
    _print_listing(["NAMESPACE", "KEY", "IDS", "STORED", "PUT", "WRITER"], rows, "manifests", token, args.limit)


def _show_manifest(gate: _Gate, args: argparse.Namespace) -> None:
    data = gate.json("GET", f"/v1/admin/manifests/{args.namespace}/{args.key}")
    if args.json:
        _print_json(data)
        return
    description = data.pop("description")
    _print_fields(data)
    print("description:")
    for line in description.splitlines():
        print(f"  {line}")


def _rm_manifest(gate: _Gate, args: argparse.Namespace) -> None:
    path, what = f"/v1/admin/manifests/{args.namespace}/{args.key}", f"the manifest {args.namespace}/{args.key}"
    _delete(gate, args, path, what)


def _purge(gate: _Gate, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"prefix": args.prefix, "dry_run": args.dry_run, "limit": args.batch}
    if args.ns:
        body["namespace"] = args.ns
    if args.older_than:
        body["older_than"] = args.older_than
    total = {"deleted": 0, "bytes": 0, "stored_bytes": 0, "scanned": 0}
    verb = "would delete" if args.dry_run else "deleted"
    while True:
        part = gate.json("POST", "/v1/admin/purge", json=body)
        for key in total:
            total[key] += part[key]
        if part["next_page_token"] is None:
            break
        body["page_token"] = part["next_page_token"]
        if not args.json:  # progress, one line per batch: a purge of a large cache takes minutes
            print(
                f"... looked at {total['scanned']:,}, {verb} {total['deleted']:,} ({human_bytes(total['bytes'])})",
                file=sys.stderr,
                flush=True,
            )
    if args.json:
        _print_json({**total, "dry_run": args.dry_run})
        return
    print(
        f"{verb} {total['deleted']:,} entries, {human_bytes(total['bytes'])} "
        f"({human_bytes(total['stored_bytes'])} stored), of {total['scanned']:,} looked at"
    )


def _usage(gate: _Gate, args: argparse.Namespace) -> None:
    params = {"since": args.since, "until": args.until, "group_by": args.group_by}
    data = gate.json("GET", "/v1/admin/usage", params=params)
    if args.json:
        _print_json(data)
        return
    groups: list[str] = data["group_by"]
    print(f"{data['since']} to {data['until']}", file=sys.stderr)
    head = [g.upper() for g in groups]
    head += ["REQUESTS", "HITS", "MISSES", "HIT%", "PUTS", "IN", "OUT", "OPS A", "OPS B", "SESSIONS", "CPU H SAVED"]

    def line(labels: list[str], r: dict[str, Any]) -> list[str]:
        return [
            *labels,
            f"{r['requests']:,}",
            f"{r['hits']:,}",
            f"{r['misses']:,}",
            percent(r["hit_ratio"]),
            f"{r['puts']:,}",
            human_bytes(r["bytes_in"]),
            human_bytes(r["bytes_out"]),
            f"{r['ops_a']:,}",
            f"{r['ops_b']:,}",
            f"{r['sessions']:,}",
            hours(max(r["compute_ms_saved"], r["session_compute_ms_saved"]) / 3_600_000),  # as cost reports count
        ]

    rows = [line([r[g] or "-" for g in groups], r) for r in data["rows"]]
    rows.append(line(["TOTAL", *[""] * (len(groups) - 1)], data["totals"]))
    _table(head, rows, left=len(groups))


def _cost_report(gate: _Gate, args: argparse.Namespace) -> None:
    fmt = "json" if args.json else args.format
    params = {"since": args.since, "until": args.until, "group_by": args.group_by, "format": fmt}
    resp = gate.call("GET", "/v1/admin/cost-report", params=params)
    text = json.dumps(resp.json(), indent=2) + "\n" if fmt == "json" else resp.text
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise AdminError(f"cannot write {args.output}: {exc.strerror or exc}", 1) from exc
        summary = ""
        if fmt == "json":
            data = resp.json()
            summary = f": cost {money(data['total_usd'])}, saved {money(data['saved_usd'])}"
        print(f"wrote {args.output} ({fmt}){summary}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _compact(gate: _Gate, args: argparse.Namespace) -> None:
    data = gate.json("POST", "/v1/admin/usage/compact", json={"older_than": args.older_than})
    if args.json:
        _print_json(data)
        return
    print(f"compacted {data['segments']:,} hour segments into {data['days']:,} day objects")


# -- parser ----------------------------------------------------------------------------------------


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("want a positive number")
    return n


def _run(command: Callable[[_Gate, argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            command(_Gate(args.url, args.timeout), args)
        except AdminError as exc:
            sys.stderr.write(f"gocachegate admin: {exc}\n")
            return exc.status
        return 0

    return run


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``admin`` and its commands under the ``gocachegate`` parser's ``commands``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("GOCACHEGATE_URL") or DEFAULT_URL,
        help=f"the gate (default $GOCACHEGATE_URL, else {DEFAULT_URL})",
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    common.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for an answer (default 120)")

    admin = commands.add_parser(
        "admin",
        help="inspect and manage the cache, usage and cost reports (token: $GOCACHEGATE_TOKEN[_FILE])",
        description="Admin commands against a running gate. Exit status: 0 done, 1 refused, not found, "
        "failed or unreachable, 2 bad usage.",
    )
    sub = admin.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[[_Gate, argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(run=_run(run))
        return parser

    command("stats", _stats, "entries and bytes per namespace")

    ls = command("ls", _ls, "list entries")
    ls.add_argument("--ns", help="only this namespace")
    ls.add_argument("--prefix", default="", help="only action ids starting with these hex digits")
    ls.add_argument("--limit", type=_positive, default=100, help="show at most this many (default 100)")

    for name, run, text in (("show", _show, "one entry"), ("rm", _rm, "delete one entry")):
        one = command(name, run, text)
        one.add_argument("namespace")
        one.add_argument("action", help="the action id (64 hex digits)")

    purge = command("purge", _purge, "delete entries by namespace, age and action-id prefix (in batches)")
    purge.add_argument("--ns", help="only this namespace")
    purge.add_argument("--older-than", help="only entries not used for this long: 7d, 12h, 2w")
    purge.add_argument("--prefix", default="", help="only action ids starting with these hex digits")
    purge.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    purge.add_argument(
        "--batch", type=_positive, default=5000, help="entries the gate looks at per call, one progress line each"
    )

    manifests = command("manifests", _manifests, "list build manifests (docs/prefetch.md)")
    manifests.add_argument("--ns", help="only this namespace")
    manifests.add_argument("--limit", type=_positive, default=100, help="show at most this many (default 100)")

    for name, run, text in (("show-manifest", _show_manifest, "one build manifest: the command it is for"),
                            ("rm-manifest", _rm_manifest, "delete one build manifest")):
        one = command(name, run, text)
        one.add_argument("namespace")
        one.add_argument("key", help="the manifest key")

    usage = command("usage", _usage, "requests, hits, bytes and storage operations over a period")
    usage.add_argument("--since", default="30d", help="now, 7d (ago), a date or RFC 3339 (default 30d)")
    usage.add_argument("--until", default="now", help="(default now)")
    usage.add_argument(
        "--group-by", default="namespace", help="namespace, subject, job, job_type, hour, day; comma-joined"
    )

    cost = command("cost-report", _cost_report, "what the cache cost and saved over a period")
    cost.add_argument("--since", default="30d", help="now, 7d (ago), a date or RFC 3339 (default 30d)")
    cost.add_argument("--until", default="now", help="(default now)")
    cost.add_argument("--group-by", choices=["namespace", "job"], default="namespace")
    cost.add_argument("--format", choices=["json", "csv", "markdown", "html"], default="markdown")
    cost.add_argument("-o", "--output", help="write the report to this file")

    compact = command("compact-usage", _compact, "fold old usage segments into one object per day")
    compact.add_argument("--older-than", default="7d", help="whole days older than this (at least 2d; default 7d)")
