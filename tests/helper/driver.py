"""Talks to a gocacheprog process the way go does: JSON requests on stdin, answers on stdout."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.gohelpers import helper_binary


class Helper:
    def __init__(self, l1: Path, *args: str, **env: str) -> None:
        # No prefetch unless a test asks: its background manifest request would change the scripted sequences.
        full_env = {"PATH": os.environ["PATH"], "HOME": str(l1.parent), "GOCACHEGATE_DIR": str(l1),
                    "GOCACHEGATE_PREFETCH": "0", **env}
        self.proc = subprocess.Popen(
            [helper_binary(), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=full_env,
        )
        self.next_id = 0
        self.handshake = self.read()

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, command: str, action: bytes = b"", body: bytes | None = None, **extra: Any) -> int:
        self.next_id += 1
        req: dict[str, Any] = {"ID": self.next_id, "Command": command}
        if action:
            req["ActionID"] = base64.b64encode(action).decode()
        if body is not None:
            req["OutputID"] = base64.b64encode(hashlib.sha256(body).digest()).decode()
            if body:
                req["BodySize"] = len(body)
        req.update(extra)
        data = json.dumps(req).encode() + b"\n\n"
        if body:
            data += b'"' + base64.b64encode(body) + b'"\n'
        self.send_raw(data)
        return self.next_id

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"helper closed stdout; stderr: {self.stderr()}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> dict[str, Any]:
        rid = self.send("close")
        answer = self.read()
        assert answer["ID"] == rid
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        return answer

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read().decode(errors="replace")


def action(n: int) -> bytes:
    return hashlib.sha256(f"action-{n}".encode()).digest()
