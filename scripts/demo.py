"""README command 1: two "CI machines" build the same Go program through one gate.

Starts ``gocachegate serve`` on 127.0.0.1 with local storage under .demo/, builds a small module
on machine 1 (empty local cache: it computes and uploads) and on machine 2 (another empty local
cache: it downloads from the gate), prints both runs' times and counters, and stops the gate.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
BIN = Path(sys.executable).parent

PROGRAM = {
    "go.mod": "module example.com/demo\n\ngo 1.24\n",
    "main.go": 'package main\n\nimport (\n\t"fmt"\n\t"net/http"\n\t"encoding/json"\n\t"example.com/demo/greet"\n)\n\n'
    'func main() {\n\tb, _ := json.Marshal(map[string]string{"greeting": greet.Hello("CI")})\n'
    '\tfmt.Println(string(b), http.StatusOK)\n}\n',
    "greet/greet.go": 'package greet\n\n// Hello greets.\nfunc Hello(who string) string { return "hello, " + who }\n',
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, gate: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if gate.poll() is not None:
            sys.exit(f"demo: the gate exited with {gate.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.1)
    sys.exit("demo: the gate did not become healthy in 30 s")


def build(machine: str, url: str, src: Path) -> dict[str, float]:
    home = DEMO / machine
    env = {
        **os.environ,
        "GOCACHEPROG": str(BIN / "gocacheprog"),
        "GOCACHEGATE_URL": url,
        "GOCACHEGATE_NAMESPACE": "demo",
        "GOCACHEGATE_DIR": str(home / "l1"),
        "GOCACHEGATE_STATS_FILE": str(home / "stats.json"),
        "GOCACHE": str(home / "gocache"),
        "GOFLAGS": "-buildvcs=false",
        "GOTOOLCHAIN": "local",
    }
    start = time.monotonic()
    out = home / "demo-binary"
    proc = subprocess.run(["go", "build", "-o", str(out), "."], cwd=src, env=env, capture_output=True,
                          text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"demo: go build failed on {machine}:\n{proc.stderr}")
    stats = json.loads((home / "stats.json").read_text())
    stats["seconds"] = seconds
    stats["binary"] = hashlib.sha256(out.read_bytes()).hexdigest()  # type: ignore[assignment]
    return stats


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    src = DEMO / "src"
    for name, text in PROGRAM.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    config = DEMO / "gate.yaml"
    config.write_text(f"storage:\n  backend: local\n  path: {DEMO / 'storage'}\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"gate:      gocachegate serve --config {config.relative_to(ROOT)} --port {port}  ({url})")
    gate = subprocess.Popen([str(BIN / "gocachegate"), "serve", "--config", str(config), "--port", str(port)])
    try:
        wait_healthy(url, gate)
        runs = {m: build(m, url, src) for m in ("machine-1", "machine-2")}
    finally:
        gate.terminate()
        gate.wait(timeout=30)
    print()
    print("| run | empty local cache | go build | gets | local hits | remote hits | misses | puts | uploaded |")
    print("|---|---|---|---|---|---|---|---|---|")
    for machine, s in runs.items():
        print(f"| {machine} | yes | {s['seconds']:.2f} s | {s['gets']} | {s['local_hits']} | {s['remote_hits']} "
              f"| {s['misses']} | {s['puts']} | {s['uploads']} |")
    one, two = runs["machine-1"], runs["machine-2"]
    same = "the same binary" if one["binary"] == two["binary"] else "DIFFERENT binaries"
    print(f"\nmachine-2 built {same} {one['seconds'] / two['seconds']:.1f}x faster, "
          f"{two['remote_hits']} of its {two['gets']} cache lookups served by the gate.")
    print(f"The gate's storage is in {(DEMO / 'storage').relative_to(ROOT)}/; "
          f"start it again with: gocachegate serve --config {config.relative_to(ROOT)}")
    return 0 if two["remote_hits"] > 0 and one["binary"] == two["binary"] else 1


if __name__ == "__main__":
    sys.exit(main())
