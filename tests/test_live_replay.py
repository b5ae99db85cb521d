"""``twin replay LOG FILE`` drives a twin from a record as if live: the replayed twin ends with
the counters the recorded twin had, judging time by the record's clock (an hour-old record is
neither too old nor stale)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import Twin

from scenes.graph import build_graph
from scenes.lineparse import load_line
from streaming.client import TwinClient
from streaming.store import SceneStore
from twin.live.mirror import LiveLine
from twin.live.plant import Plant
from twin.live.recorder import Recorder

LINE = """
line: replayed
stations:
  - id: a
    process_time: {dist: exponential, mean: 3}
    failures: {mtbf: 60, mttr: 10}
    tags: {state: r/a/state, count: {address: r/a/count, period_s: 1.0}}
  - id: b
    process_time: 4
    tags: {state: r/b/state, count: {address: r/b/count, period_s: 1.0}}
buffers:
  - {id: b1, from: a, to: b, capacity: 3}
"""


def test_replay_reproduces_the_recorded_twin(tmp_path: Path) -> None:
    line = tmp_path / "line.yaml"
    line.write_text(LINE)
    spec = load_line(line)
    graph = build_graph(spec)
    t0 = time.time() - 3600  # recorded an hour ago
    clock = [t0]
    record = tmp_path / "record.sqlite"
    with Recorder(record) as rec:
        plant = Plant(spec, graph, seed=11)
        live = LiveLine(spec, graph, recorder=rec, clock=lambda: clock[0])
        store = SceneStore()
        live.populate(store)
        store.commit()
        for k in range(1, 601):  # five minutes of telemetry, every 0.5 s
            clock[0] = t0 + 0.5 * k
            live.ingest(plant.poll(clock[0]))
        final = {e: live.twin.value(e, "count").value for e in ("station/a", "station/b")}
        assert final["station/b"] > 10 and live.twin.counts["rejected"] == 0

    twin = Twin(
        "replay",
        str(record),
        str(line),
        "--speed",
        "0",
        "--port",
        "0",
        "--audit",
        str(tmp_path / "a.jsonl"),
        "--assets",
        str(tmp_path / "as"),
    )
    try:
        url, token = twin.url_and_token()

        async def check() -> None:
            async with TwinClient(url, token) as c:
                await c.wait_for(
                    lambda r: (
                        r.seq is not None
                        and all(r.get(e, "produced") == n for e, n in final.items())
                    ),
                    timeout=60,
                )
                line_comps = c.replica.comps[c.replica.handle("line")]
                assert line_comps["rejected"] == 0, line_comps["rejected_by_reason"]
                assert line_comps["accepted"] == live.twin.counts["accepted"]
                # by the wall clock every tag would be an hour stale; by the record's, none is
                assert line_comps["stale_tags"] == 0

        asyncio.run(check())
    finally:
        twin.stop()
