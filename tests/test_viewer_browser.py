"""The browser viewer in real headless Chromium (Playwright) against a real ``twin serve``.

Screenshots go to ``test-artifacts/`` (one of them is the README's picture).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import launch_chromium, require_chromium

from scenes.graph import STATE_COLORS, MachineState, build_graph
from streaming.auth import AuditLog
from streaming.client import TwinClient

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
TOKENS = {
    "viewer": "viewer-token-0123456789",
    "operator": "operator-token-0123456789",
    "trainer": "trainer-token-0123456789",
}

# A short line whose first station breaks down often, so alarms come quickly.
LINE = """
line: browser-test
stations:
  - {id: press, process_time: {dist: exponential, mean: 20}, failures: {mtbf: 120, mttr: 60}}
  - {id: weld, process_time: 25}
  - {id: paint, process_time: {dist: uniform, low: 15, high: 30}}
buffers:
  - {id: b1, from: press, to: weld, capacity: 4, conveyor: {length: 6, speed: 0.5}}
  - {id: b2, from: weld, to: paint, capacity: 3}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.line = tmp / "line.yaml"
        self.line.write_text(LINE)
        self.tokens = tmp / "tokens.yaml"
        self.tokens.write_text(
            "".join(f"- {{name: {r}-1, role: {r}, token: {t}}}\n" for r, t in TOKENS.items())
        )
        self.audit = tmp / "audit.jsonl"
        self.port = _free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "twin",
            "serve",
            str(self.line),
            "--port",
            str(self.port),
            "--tokens",
            str(self.tokens),
            "--audit",
            str(self.audit),
            "--assets",
            str(self.tmp / "assets"),
            "--speed",
            "30",
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith("viewer: "):
                return
        raise AssertionError("twin serve printed no viewer URL:\n" + "".join(self.output))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("viewer"))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


class Page:
    """A viewer page signed in with a role's token, collecting console errors."""

    def __init__(self, browser: Any, served: Served, role: str) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 800})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(f"{served.url}#token={TOKENS[role]}")
        self.page.wait_for_function(
            "window.twinViewer && twinViewer.status === 'connected' && twinViewer.machines() > 0",
            timeout=30_000,
        )

    def js(self, expr: str) -> Any:
        return self.page.evaluate(expr)

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def close(self) -> None:
        self.page.close()


def _stations() -> list[str]:
    return [e.id for e in build_graph(load_line_text()).entities if e.kind.value == "station"]


def load_line_text() -> Any:
    from scenes.lineparse import parse_line

    return parse_line(LINE)


def test_page_loads_draws_every_machine_and_follows_state(browser: Any, served: Served) -> None:
    page = Page(browser, served, "operator")
    try:
        assert page.js("twinViewer.machines()") == len(_stations()) == 3
        assert page.js("twinViewer.role") == "operator"
        # a state change on the server changes that machine's colour within a second
        changes: list[tuple[str, str, float]] = []

        async def watch() -> None:
            async with TwinClient(f"ws://127.0.0.1:{served.port}/ws", TOKENS["viewer"]) as c:
                await c.wait_for(lambda r: r.seq is not None, 20)
                before = {s: c.replica.get(s, "state") for s in _stations()}

                def changed(r: Any) -> bool:
                    for s in _stations():
                        if r.get(s, "state") != before[s]:
                            changes.append((s, r.get(s, "state"), time.monotonic()))
                            return True
                    return False

                await c.wait_for(changed, 60)

        with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
            pool.submit(asyncio.run, watch()).result()
        station, state, seen = changes[0]
        want = STATE_COLORS[MachineState(state)]
        page.page.wait_for_function(
            f"twinViewer.colorOf('{station}') === '{want}' || "
            f"twinViewer.stateOf('{station}') !== '{state}'",
            timeout=1000,
        )
        assert time.monotonic() - seen < 1.5
        page.shot("viewer-operator")
        assert page.errors == [], page.errors
    finally:
        page.close()


def test_click_opens_the_machine_panel(browser: Any, served: Served) -> None:
    page = Page(browser, served, "viewer")
    try:
        page.js("document.getElementById('panel-close').click()")
        pos = page.js("twinViewer.screenPosition('station/weld')")
        assert pos is not None
        page.page.mouse.click(pos["x"], pos["y"])
        page.page.wait_for_selector("#panel:not([hidden])", timeout=3000)
        assert page.js("document.getElementById('panel-id').textContent") == "station/weld"
        # One evaluation reads both: the live twin changes the station's state between two
        # (a fresh clone's run saw 'starved' in the panel, then 'busy'); the viewer updates the
        # panel in the same handler that applies the change, so one read is consistent.
        state, live = page.js(
            "[document.getElementById('panel-state').textContent,"
            " twinViewer.stateOf('station/weld')]"
        )
        assert state == live
        assert state in {s.value for s in MachineState}
        page.shot("viewer-panel")
        assert page.errors == [], page.errors
    finally:
        page.close()


def _audit(served: Served) -> list[dict[str, Any]]:
    return AuditLog.read(served.audit) if served.audit.exists() else []


def test_operator_acknowledges_an_alarm_and_the_audit_log_shows_it(
    browser: Any, served: Served
) -> None:
    page = Page(browser, served, "operator")
    try:
        page.page.wait_for_selector("#alarm-list li button.ack", timeout=60_000)
        alarm_id = page.js("document.querySelector('#alarm-list li:has(button.ack)').dataset.id")
        page.page.click(f"#alarm-list li[data-id='{alarm_id}'] button.ack")
        page.page.wait_for_function(
            f"!document.querySelector(\"#alarm-list li[data-id='{alarm_id}'] button.ack\")",
            timeout=5000,
        )
        records = [
            r for r in _audit(served) if r["action"] == "alarm.ack" and r["target"] == alarm_id
        ]
        assert records and records[-1]["who"] == "operator-1" and records[-1]["role"] == "operator"
        assert records[-1]["ok"] is True
        assert page.errors == [], page.errors
    finally:
        page.close()


def test_a_viewer_sees_no_acknowledge_button_and_a_forged_command_is_refused(
    browser: Any, served: Served
) -> None:
    page = Page(browser, served, "viewer")
    try:
        page.page.wait_for_selector("#alarm-list li", timeout=60_000)
        assert page.js("document.querySelectorAll('#alarm-list button.ack').length") == 0
        assert page.js("document.getElementById('controls').hidden") is True
        alarm_id = page.js("document.querySelector('#alarm-list li').dataset.id")
        result = page.js(f"twinViewer.command('{alarm_id}', 'alarm.ack')")
        assert result["ok"] is False and result["code"] == "forbidden"
        records = [r for r in _audit(served) if r["who"] == "viewer-1"]
        assert records and records[-1]["ok"] is False and records[-1]["code"] == "forbidden"
        page.shot("viewer-readonly")
        assert [e for e in page.errors if "refused" not in e] == [], page.errors
    finally:
        page.close()


def test_trainer_pauses_and_resumes_simulated_time(browser: Any, served: Served) -> None:
    page = Page(browser, served, "trainer")
    try:
        assert page.js("document.getElementById('controls').hidden") is False
        page.page.click("#btn-pause")
        page.page.wait_for_function(
            "document.getElementById('kpi-time').textContent.includes('paused')", timeout=5000
        )
        t1 = page.js("document.getElementById('kpi-time').textContent")
        time.sleep(1.0)
        assert page.js("document.getElementById('kpi-time').textContent") == t1
        page.page.click("#btn-resume")
        page.page.wait_for_function(
            "!document.getElementById('kpi-time').textContent.includes('paused')", timeout=5000
        )
        assert page.errors == [], page.errors
    finally:
        page.close()


def test_the_page_reconnects_and_resyncs_after_a_server_restart(
    browser: Any, tmp_path: Path
) -> None:
    s = Served(tmp_path)
    s.start()
    page = Page(browser, s, "viewer")
    try:
        snapshots = page.js("twinViewer.stats.snapshots")
        s.stop()
        page.page.wait_for_function("twinViewer.status !== 'connected'", timeout=10_000)
        s.start()
        page.page.wait_for_function("twinViewer.status === 'connected'", timeout=30_000)
        # a fresh server holds none of the old ticks: the page resynced with a snapshot
        page.page.wait_for_function(f"twinViewer.stats.snapshots > {snapshots}", timeout=10_000)
        assert page.js("twinViewer.machines()") == 3
        errors = [e for e in page.errors if not re.search(r"WebSocket|ERR_CONNECTION_REFUSED", e)]
        assert errors == [], errors
    finally:
        page.close()
        s.stop()


def test_an_operator_forecasts_what_if_a_station_stays_down(browser: Any, served: Served) -> None:
    page = Page(browser, served, "operator")
    try:
        assert page.js("document.getElementById('whatif').hidden") is False
        page.page.select_option("#whatif-hours", "1")
        page.page.select_option("#whatif-station", "weld")
        page.page.fill("#whatif-minutes", "30")
        page.page.click("#whatif-run")
        page.page.wait_for_function(
            "document.getElementById('whatif-note').textContent.includes('parts in 1 h')",
            timeout=90_000,
        )
        records = [r for r in _audit(served) if r["action"] == "twin.fork"]
        assert records and records[-1]["ok"] is True
        assert records[-1]["args"]["edits"] == [{"station": "weld", "down_s": 1800}]
        page.shot("viewer-whatif")
        assert page.errors == [], page.errors
    finally:
        page.close()
