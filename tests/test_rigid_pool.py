"""Robot cells spread over worker processes (physics.rigid.pool)."""

from __future__ import annotations

import pytest

pytest.importorskip("pybullet")

from physics.rigid.events import CellEventKind
from physics.rigid.layout import CellConfig
from physics.rigid.motion import RigidError, UnreachableError
from physics.rigid.pool import CellPool


def test_pool_advances_cells_in_parallel_and_answers_calls() -> None:
    cells = {f"c{i}": (CellConfig(name=f"c{i}"), i) for i in range(3)}
    with CellPool(cells, processes=2) as pool:
        assert set(pool.names) == {"c0", "c1", "c2"}
        with pytest.raises(UnreachableError):  # raised in the worker, raised again here
            pool.call("c2", "start_cycle", (5.0, 0.0, 0.3))
        reports = pool.advance(12.0, auto_cycle=True)
        assert set(reports) == set(cells)
        for rep in reports.values():
            assert rep.steps == round(12.0 * 240)
            assert rep.now_s == pytest.approx(12.0)
            assert any(c.ok for c in rep.cycles)
            assert CellEventKind.CYCLE_DONE in {e.kind for e in rep.events}
        assert pool.call("c1", "cycles_started") >= 1
        names, pos, _ = pool.call("c0", "link_poses")
        assert pos.shape == (len(names), 3)
        with pytest.raises(RigidError, match="public"):
            pool.call("c2", "_dyn")
        with pytest.raises(RigidError, match="no cell"):
            pool.call("nope", "now")
