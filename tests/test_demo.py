"""``twin demo`` (what ``make demo`` runs): it ends by serving a live twin a client can join."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from scenes.graph import build_graph, station_id
from scenes.lineparse import load_line
from streaming.client import TwinClient
from twin.cli import EXAMPLES_DIR


def test_demo_serves_the_bottling_line_with_a_printed_token(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "twin",
        "demo",
        "--out",
        str(tmp_path),
        "--hours",
        "0.5",
        "--replications",
        "2",
        "--port",
        "0",
        "--serve-seconds",
        "120",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    url = token = None
    deadline = time.monotonic() + 240
    try:
        while token is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if m := re.search(r"at (ws://\S+/ws)", line):
                url = m.group(1)
            if m := re.search(r"admin token .*: (\S+)$", line):
                token = m.group(1)
        out = "".join(lines)
        assert url and token, f"the demo printed no URL and token:\n{out}"
        assert "4. a plant and its live twin of 'bottling', in-process" in out
        assert "mirroring from embedded" in out
        assert len(list(tmp_path.glob("*.png"))) == 3  # the rendered examples

        async def join() -> set[str]:
            async with TwinClient(url, token) as c:
                # the twin is live: telemetry from the plant is accepted, none rejected
                await c.wait_for(
                    lambda r: r.seq is not None and (r.get("line", "accepted") or 0) > 0, timeout=60
                )
                assert c.replica.get("line", "live") is True
                assert c.replica.get("line", "rejected") == 0
                return c.replica.ids()

        ids = asyncio.run(join())
        spec = load_line(EXAMPLES_DIR / "bottling.yaml")
        assert {station_id(s.id) for s in spec.stations} <= ids
        assert {e.id for e in build_graph(spec).entities} <= ids
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "stopped after" in rest
