"""A live twin in the browser: a gateway publishes through a real mosquitto, ``twin serve
--source mqtt://`` mirrors it, and headless Chromium shows the machines; when the gateway dies
its tags go stale and the page shows the machines grey, then live again when it returns."""

from __future__ import annotations

import signal
from pathlib import Path

from conftest import Mosquitto, Twin, launch_chromium, require_chromium

from scenes.graph import STATE_COLORS, MachineState

LINE = """
line: live-view
stations:
  - id: cut
    process_time: {dist: exponential, mean: 3}
    tags: {state: {address: lv/cut/state, period_s: 0.5}, count: {address: lv/cut/count, period_s: 0.5}}
  - id: fold
    process_time: 4
    tags: {state: {address: lv/fold/state, period_s: 0.5}}
buffers:
  - {id: b1, from: cut, to: fold, capacity: 3}
"""


def test_the_viewer_shows_stale_machines_when_the_gateway_dies(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    require_chromium()
    from playwright.sync_api import sync_playwright

    line = tmp_path / "line.yaml"
    line.write_text(LINE)
    serve = Twin(
        "serve",
        str(line),
        "--port",
        "0",
        "--source",
        mosquitto.url,
        "--record",
        str(tmp_path / "rec.sqlite"),
        "--audit",
        str(tmp_path / "a.jsonl"),
        "--assets",
        str(tmp_path / "assets"),
    )
    gateway = None
    try:
        link = serve.wait_for(r"open: (\S+)").group(1)
        gateway = Twin("gateway-sim", str(line), "--mqtt", mosquitto.url)
        stale = STATE_COLORS[MachineState.STALE]
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1200, "height": 700})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(link)
            live = (
                f"twinViewer.status === 'connected' && twinViewer.machines() === 2 && "
                f"['station/cut', 'station/fold'].every(id => twinViewer.colorOf(id) && "
                f"twinViewer.colorOf(id) !== '{stale}')"
            )
            page.wait_for_function(live, timeout=60_000)
            assert page.evaluate("document.getElementById('kpi-stale').textContent") == "0"
            gateway.stop(signal.SIGKILL)  # the gateway dies without a word
            page.wait_for_function(
                f"['station/cut', 'station/fold'].every(id => twinViewer.colorOf(id) === '{stale}')",
                timeout=10_000,
            )
            assert int(page.evaluate("document.getElementById('kpi-stale').textContent")) == 3
            page.screenshot(path=str(tmp_path / "stale.png"))
            gateway = Twin("gateway-sim", str(line), "--mqtt", mosquitto.url)
            page.wait_for_function(live, timeout=60_000)
            assert errors == [], errors
            browser.close()
    finally:
        for proc in (gateway, serve):
            if proc is not None:
                proc.stop()
