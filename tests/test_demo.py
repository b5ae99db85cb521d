"""``twin demo`` (what ``make demo`` runs): it ends by serving a live twin a client can join."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import Twin

from scenes.graph import build_graph, station_id
from scenes.lineparse import load_line
from streaming.client import TwinClient
from twin.cli import EXAMPLES_DIR


def test_demo_serves_the_bottling_line_with_a_printed_token(tmp_path: Path) -> None:
    twin = Twin(
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
    )
    try:
        url, token = twin.url_and_token()
        out = "".join(twin.lines)
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
        rest = twin.stop()
    assert twin.proc.returncode == 0, rest
    assert "stopped after" in rest
