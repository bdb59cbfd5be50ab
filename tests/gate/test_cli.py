"""The ``gocachegate`` command line: refusals are one line on stderr and exit status 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.gatefixture import gate_command


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(gate_command(*args), capture_output=True, text=True, timeout=timeout, check=False)


def config_file(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"storage": {"backnd": "local"}}, "gocachegate: config: storage.backnd: unknown key"),
        ({"storage": {"backend": "s3"}}, "config: storage.backend: Input should be 'local' or 'gcs'"),
        ({"storage": {"backend": "gcs"}}, "config: storage: storage.bucket is required with backend: gcs"),
        ({"limits": {"max_entry_bytes": 0}}, "config: limits.max_entry_bytes:"),
        (
            {"auth": {"static_tokens": [{"sha256": "nope", "name": "x", "role": "reader"}]}},
            "config: auth.static_tokens[0].sha256:",
        ),
        (["not", "a", "mapping"], "config: the top level must be a mapping"),
    ],
)
def test_config_errors(tmp_path: Path, data: object, message: str) -> None:
    path = config_file(tmp_path, data)
    assert_one_line_exit_2(run("check-config", str(path)), message)
    assert_one_line_exit_2(run("serve", "--config", str(path)), message)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    assert_one_line_exit_2(run("check-config", str(tmp_path / "absent.yaml")), "No such file or directory")
    broken = tmp_path / "broken.yaml"
    broken.write_text("storage:\n  path: [unclosed\n")
    assert_one_line_exit_2(run("check-config", str(broken)), f"config: {broken}: line")


def test_check_config_summarizes(tmp_path: Path) -> None:
    path = config_file(tmp_path, {"storage": {"path": str(tmp_path / "data")}, "limits": {"max_entry_bytes": 1000}})
    result = run("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"{path}: ok: listen 127.0.0.1:8086, storage local {tmp_path / 'data'}, "
        "auth none (anonymous admin), max entry 1000 bytes\n"
    )


def test_unwritable_storage_path_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = config_file(tmp_path, {"storage": {"path": str(blocker / "store")}})
    with socket.socket() as s:  # the port is bound before storage is opened: give it a free one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("serve", "--config", str(path), "--port", str(port))
    assert_one_line_exit_2(result, f"gocachegate: cannot start: storage.path {blocker / 'store'}: Not a directory")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "gate.example.com"])
def test_no_listening_beyond_loopback_without_auth(tmp_path: Path, host: str) -> None:
    path = config_file(tmp_path, {"storage": {"path": str(tmp_path / "data")}})
    result = run("serve", "--config", str(path), "--host", host)
    assert_one_line_exit_2(result, f"refusing to listen on {host} without an auth section")
    path = config_file(tmp_path, {"server": {"host": host}, "storage": {"path": str(tmp_path / "data")}})
    assert_one_line_exit_2(run("check-config", str(path)), "config: server.host: refusing to listen")


def test_port_in_use(tmp_path: Path) -> None:
    path = config_file(tmp_path, {"storage": {"path": str(tmp_path / "data")}})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--config", str(path), "--port", str(port))
    assert_one_line_exit_2(result, f"cannot listen on 127.0.0.1:{port}: Address already in use")


def test_version_and_usage() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("gocachegate ")
    assert run().returncode == 2


def test_admin_commands_do_not_load_the_config_stack() -> None:
    """An admin command is an HTTP client: pydantic and the OIDC stack would cost it a third of a second."""
    script = (
        "import sys\n"
        "from server.cli import main\n"
        "try:\n"
        "    main(['admin', 'stats', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('server.config', 'pydantic', 'jwt', 'fastapi') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
