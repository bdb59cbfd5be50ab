"""The HTML cost report in a real browser: Debian's chromium, headless, driven over the DevTools
protocol. The page served by a live gate loads with no console error, asks for nothing but itself,
and draws its three charts; a screenshot goes to ``test-artifacts/cost-report.png``.

``scripts/tools/chromium.sh`` installs chromium; without it this test skips, unless ``CI`` is set.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.admin.conftest import ADMIN, AUTH, Cache, action_of, bearer
from tests.conftest import StartGate
from tests.gatefixture import merge_config

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",
]
CHARTS = """JSON.stringify(Array.from(document.querySelectorAll("svg")).map(svg => {
  const box = svg.getBoundingClientRect();
  const drawn = Array.from(svg.querySelectorAll("rect")).filter(r => {
    const b = r.getBoundingClientRect(); return b.width > 0 && b.height > 0; }).length;
  return {label: svg.getAttribute("aria-label"), width: box.width, height: box.height, bars: drawn};
}))"""


def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    reason = "chromium is not installed: run scripts/tools/chromium.sh"
    if os.environ.get("CI"):
        pytest.fail(f"CI needs chromium: {reason}", pytrace=False)
    pytest.skip(reason)


class DevTools:
    """One page target over the DevTools protocol; events are kept for the test to read."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._next = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""

    def call(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if not browser:
            message["sessionId"] = self.session
        self._socket.send(json.dumps(message))
        while True:
            answer = json.loads(self._socket.recv(timeout=30))
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer["result"]
                return result
            self.events.append(answer)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            self.events.append(json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic()))))

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, and log entries of level warning or worse."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        return found

    def requested(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]


@contextmanager
def browser(tmp_path: Path) -> Iterator[DevTools]:
    profile = tmp_path / "chromium-profile"  # fresh: no cache, no history, nothing shared
    with open(tmp_path / "chromium.log", "wb") as log:
        proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            assert proc.poll() is None, (tmp_path / "chromium.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10) as socket:
            tools = DevTools(socket)
            target = tools.call("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
            attached = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)
            tools.session = attached["sessionId"]
            for domain in ("Runtime", "Log", "Page", "Network"):
                tools.call(f"{domain}.enable")
            tools.call("Emulation.setDeviceMetricsOverride",
                       {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False})
            yield tools
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_cost_report_renders_in_chromium(gate_factory: StartGate, tmp_path: Path) -> None:
    storage = {"storage": {"backend": "local", "path": str(tmp_path / "storage"), "fsync": False}}
    cache = Cache(gate_factory(merge_config(storage, AUTH)))
    for ns, jobs in (("team.a", ("post-build", "pull-build")), ("team.b", ("periodic-e2e",))):
        for i, job in enumerate(jobs * 3):
            action = action_of(f"{ns} {i}")
            assert cache.put(ns, action, os.urandom(4000 + 100 * i), compute_ms=900, job=job).status_code == 201
            assert cache.get(ns, action, job=job).status_code == 200
            assert cache.get(ns, action_of(f"{ns} miss {i}"), job=job).status_code == 404

    url = f"{cache.url}/v1/admin/cost-report?format=html&since=2d"
    with browser(tmp_path) as page:
        page.call("Network.setExtraHTTPHeaders", {"headers": bearer(ADMIN)})
        page.call("Page.navigate", {"url": url})
        page.wait_for("Page.loadEventFired")
        title = page.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True})
        charts = json.loads(page.call("Runtime.evaluate", {"expression": CHARTS, "returnByValue": True})["result"]
                            ["value"])
        shot = page.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        problems, requested = page.problems(), page.requested()

    ARTIFACTS.mkdir(exist_ok=True)
    png = base64.b64decode(shot["data"])
    (ARTIFACTS / "cost-report.png").write_bytes(png)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert title["result"]["value"] == "gocachegate cost report"
    assert problems == []
    assert requested == [url], "the page must ask for nothing but itself"
    assert [c["label"] for c in charts] == [
        "Cost per namespace",
        "Hits and misses per hour",
        "Saved (CPU time not spent) against cost",
    ]
    for chart in charts:
        assert chart["width"] > 300 and chart["height"] > 60 and chart["bars"] >= 4, chart
