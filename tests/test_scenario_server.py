"""A scenario served for real over loopback: joined clients see the timeline happen, trainee
actions go through the authorized and audited command path, the trainer controls time."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streaming.auth import AuditRecord, Principal, TokenBook
from streaming.client import TwinClient
from streaming.protocol import Role
from streaming.server import ServerConfig, TwinServer
from twin.commands.scenario import build_scenario_app
from twin.scenario.headless import run_headless
from twin.scenario.spec import load_scenario

LINE = """\
line: press
stations:
  - id: press
    process_time: 10
"""

SCENARIO = """\
scenario: served
line: press.yaml
duration: 600
sample: 10
events:
  - {at: 40, type: breakdown, station: press, for: 100}
"""

TOKENS = {
    "vera": (Role.VIEWER, "viewer-token-0123456789"),
    "olga": (Role.OPERATOR, "operator-token-0123456789"),
    "tara": (Role.TRAINER, "trainer-token-0123456789"),
}


def get(r: Any, entity: str, comp: str) -> Any:
    """A component of the replica, None until the snapshot has the entity."""
    return r.get(entity, comp) if entity in r.by_id else None


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_a_served_scenario(tmp_path: Path) -> None:
    (tmp_path / "press.yaml").write_text(LINE)
    (tmp_path / "s.yaml").write_text(SCENARIO)
    scenario = load_scenario(tmp_path / "s.yaml")
    audit: list[AuditRecord] = []
    _, hub, line = build_scenario_app(
        scenario, speed=40.0, assets_dir=tmp_path / "assets", audit=audit.append
    )
    book = TokenBook({tok: Principal(name=n, role=r) for n, (r, tok) in TOKENS.items()})

    async def main() -> None:
        server = TwinServer(hub, book, ServerConfig(port=0), source=line)
        async with (
            server,
            TwinClient(server.url, TOKENS["olga"][1]) as trainee,
            TwinClient(server.url, TOKENS["tara"][1]) as trainer,
            TwinClient(server.url, TOKENS["vera"][1]) as viewer,
        ):
            # the scripted breakdown happens at its time and the joined client sees it
            await trainee.wait_for(lambda r: get(r, "station/press", "state") == "down", timeout=20)
            assert trainee.replica.get("alarm/1", "raised_t") == 40.0
            assert trainee.replica.get("alarm/1", "state") == "active"
            assert trainee.replica.get("line", "scenario")["t"] >= 40.0

            # a trainee acts through the command path; a viewer may not
            res = await viewer.command("station/press", "station.maintenance")
            assert not res["ok"] and res["code"] == "forbidden"
            res = await trainee.command("alarm/1", "alarm.ack")
            assert res["ok"], res
            res = await trainee.command("station/press", "sim.pause")
            assert not res["ok"]  # time is the trainer's

            # pause really stops simulated time
            res = await trainer.command("line", "sim.pause")
            assert res["ok"]
            t_paused = line.sim_t
            state = line.state
            await asyncio.sleep(0.5)
            assert line.sim_t == t_paused
            assert all(
                np.array_equal(np.asarray(a), np.asarray(b))
                for a, b in zip(
                    (state.st, state.t_end, state.count, state.delivered),
                    (line.state.st, line.state.t_end, line.state.count, line.state.delivered),
                    strict=True,
                )
            )
            await trainer.wait_for(lambda r: get(r, "line", "paused") is True)
            # resume continues from the same state
            res = await trainer.command("line", "sim.resume")
            assert res["ok"]
            await trainee.wait_for(lambda r: (get(r, "line", "sim_time") or 0) > t_paused + 5)
            res = await trainer.command("line", "sim.checkpoint")
            assert res["ok"] and res["result"]["checkpoint"] == "cp1"
            res = await trainee.command("line", "scenario.report")
            assert res["ok"] and res["result"]["scenario"] == "served"

    run(main())
    acts = [(r.who, r.action, r.ok) for r in audit]
    assert ("vera", "station.maintenance", False) in acts
    assert ("olga", "alarm.ack", True) in acts
    assert ("tara", "sim.pause", True) in acts
    # served in pieces, paused and resumed, the run is the headless run: the same engine events
    # at the same times (time integrals differ in the last bits: they are summed over other
    # pieces); only the acknowledgement differs, as the trainee's
    line.run_to_end()
    served = line.report()
    alone = run_headless(scenario)
    assert served["timeline"] == alone["timeline"]
    assert served["kpis"]["delivered"] == alone["kpis"]["delivered"] == 50  # 4 + 46
    assert served["kpis"]["wip_mean"] == pytest.approx(alone["kpis"]["wip_mean"], rel=1e-12)
