"""Gateways that push: ``twin gateway-sim --push`` sends telemetry over the twin's own WebSocket
(``twin serve --source push``) with a gateway token; other roles are refused; bad items are
rejected and counted while good ones still apply."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import Twin

from streaming.client import TwinClient
from streaming.protocol import decode, encode
from twin.live.push import decode_pushed
from twin.live.telemetry import Reason, Rejected, Sample

LINE = """
line: pushed
stations:
  - id: a
    process_time: {dist: exponential, mean: 2}
    tags: {state: p/a/state, count: {address: p/a/count, period_s: 1.0}}
  - id: b
    process_time: 3
    tags: {count: {address: p/b/count, period_s: 1.0}}
buffers:
  - {id: b1, from: a, to: b, capacity: 3}
"""
TOKENS = {"gateway": "gateway-token-0123456789", "viewer": "viewer-token-0123456789"}


def test_decode_pushed_items() -> None:
    items = decode_pushed(
        [
            {"address": "x", "value": 3, "ts": 1_800_000_000_000, "quality": "uncertain"},
            {"address": "y", "value": "busy"},
            {"value": 1},
            {"address": "z"},
            {"address": "z", "value": [1]},
            {"address": "z", "value": 1, "ts": "soon"},
            {"address": "z", "value": 1, "quality": "great"},
        ],
        10.0,
        who="gw",
    )
    assert isinstance(items[0], Sample) and items[0].source_ts == 1_800_000_000.0
    assert items[0].quality.value == "uncertain" and items[0].source == "push:gw"
    assert isinstance(items[1], Sample) and items[1].source_ts is None
    reasons = [i.reason for i in items[2:] if isinstance(i, Rejected)]
    assert reasons == [
        Reason.MALFORMED,
        Reason.MALFORMED,
        Reason.WRONG_TYPE,
        Reason.MALFORMED,
        Reason.MALFORMED,
    ]


def test_a_gateway_pushes_over_the_websocket(tmp_path: Path) -> None:
    line = tmp_path / "line.yaml"
    line.write_text(LINE)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "".join(f"- {{name: {r}-1, role: {r}, token: {t}}}\n" for r, t in TOKENS.items())
    )
    serve = Twin(
        "serve",
        str(line),
        "--port",
        "0",
        "--source",
        "push",
        "--tokens",
        str(tokens),
        "--record",
        str(tmp_path / "rec.sqlite"),
        "--audit",
        str(tmp_path / "a.jsonl"),
        "--assets",
        str(tmp_path / "assets"),
    )
    gateway = None
    try:
        url = serve.wait_for(r"at (ws://\S+/ws)").group(1)
        serve.wait_for("mirroring from push")
        gateway = Twin(
            "gateway-sim", str(line), "--push", url, env={"TWIN_TOKEN": TOKENS["gateway"]}
        )

        async def check() -> None:
            async with TwinClient(url, TOKENS["viewer"]) as c:
                await c.wait_for(
                    lambda r: (
                        r.seq is not None
                        and (r.get("line", "accepted") or 0) > 5
                        and (r.get("station/a", "produced") or 0) > 0
                    ),
                    timeout=60,
                )
                assert c.replica.get("station/a", "tags")["count"]["stale"] is False
                # a viewer may not push
                await c.send(
                    {"type": "telemetry", "samples": [{"address": "p/a/count", "value": 1}]}
                )
                await c.wait_for(lambda r: any(e.get("code") == "forbidden" for e in r.errors))
            # a gateway's bad items are counted, good ones in the same message still apply
            from websockets.asyncio.client import connect

            async with connect(
                url,
                subprotocols=["twin.v1"],  # type: ignore[list-item]
                additional_headers={"Authorization": f"Bearer {TOKENS['gateway']}"},
            ) as ws:
                decode(await ws.recv())  # hello
                await ws.send(
                    encode(
                        {
                            "type": "telemetry",
                            "samples": [
                                {"address": "p/a/state", "value": "exploded", "ts": time.time()},
                                {"address": "p/nowhere", "value": 1},
                                {"address": "p/a/state", "value": "down", "ts": time.time() + 0.5},
                            ],
                        }
                    )
                )
                await ws.send(encode({"type": "telemetry", "samples": "nope"}))
                err = decode(await ws.recv())
                assert err["type"] == "error" and err["code"] == "bad_field"
            async with TwinClient(url, TOKENS["viewer"]) as c:

                def seen(r: object) -> bool:
                    by = c.replica.get("line", "rejected_by_reason") or {}
                    return by.get("unknown_state", 0) >= 1 and by.get("unknown_tag", 0) >= 1

                await c.wait_for(lambda r: r.seq is not None and seen(r), timeout=20)

        asyncio.run(check())
    finally:
        for proc in (gateway, serve):
            if proc is not None:
                proc.stop()
