"""Many robot cells spread over worker processes, with a request/response API.

pybullet holds the GIL and is not thread-safe, so cells scale with processes. A
:class:`CellPool` starts ``processes`` workers (``multiprocessing`` with the ``spawn`` start
method: no state inherited from the parent) and deals the cells out round-robin; each worker
builds its cells and then answers requests over a pipe, one at a time:

- :meth:`CellPool.advance` steps every cell by the same simulated time, all workers at once,
  and returns per cell what happened (:class:`AdvanceReport`: events, finished cycles, CPU time).
- :meth:`CellPool.call` calls one public method of one cell and returns its result
  (``start_cycle`` returns the cycle's id, not a handle).

An exception raised in a worker comes back and is raised again in the caller. Close the pool
with :meth:`CellPool.close` (or use it as a context manager).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .events import CellEvent, CycleResult
from .layout import CellConfig
from .motion import RigidError

#: A function run in the worker on each cell every ``hook_every_s`` of an advance (it must be
#: importable by name: a module-level function).
CellHook = Callable[[Any], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvanceReport:
    """What one cell did during an advance: ``steps`` taken, its ``events`` (oldest first), the
    ``cycles`` that ended, its simulated time ``now_s`` and the worker CPU time it used."""

    steps: int
    now_s: float
    events: tuple[CellEvent, ...]
    cycles: tuple[CycleResult, ...]
    cpu_s: float
    #: with ``poses=True``: ``link_poses()`` and ``part_poses()`` after the advance
    links: tuple[tuple[str, ...], Any, Any] | None = None
    parts: tuple[Any, Any, Any] | None = None


def _advance_cell(
    cell: Any,
    seconds: float,
    auto_cycle: bool,
    hook: CellHook | None,
    hook_every_s: float,
    poses: bool = False,
) -> AdvanceReport:
    t0 = time.process_time()
    end_steps = round((cell.now + seconds) / cell.dt)
    hook_steps = max(1, round(hook_every_s / cell.dt))
    last = cell.cycles_started
    steps = 0
    while cell.step_count < end_steps:
        if auto_cycle and cell.cycle_done and cell.faulted is None:
            cell.start_cycle()
        if hook is not None and cell.step_count % hook_steps == 0:
            hook(cell)
        cell.step()
        steps += 1
    results = tuple(
        r for i in range(last + 1, cell.cycles_started + 1) if (r := cell.result(i)) is not None
    )
    return AdvanceReport(
        steps=steps,
        now_s=cell.now,
        events=tuple(cell.events()),
        cycles=results,
        cpu_s=time.process_time() - t0,
        links=cell.link_poses() if poses else None,
        parts=cell.part_poses() if poses else None,
    )


def _worker(conn: Connection, specs: list[tuple[str, CellConfig, int]]) -> None:
    from .cell import Cell, CycleHandle

    cells: dict[str, Cell] = {}
    try:
        for name, config, seed in specs:
            cells[name] = Cell(config, seed=seed)
        conn.send(("ok", None))
    except Exception as exc:
        conn.send(("err", exc))
        return
    while True:
        try:
            req = conn.recv()
        except EOFError:
            break
        op = req[0]
        try:
            if op == "close":
                conn.send(("ok", None))
                break
            if op == "advance":
                _, seconds, auto_cycle, hook, hook_every_s, poses = req
                out = {
                    name: _advance_cell(
                        c,
                        seconds,
                        auto_cycle if isinstance(auto_cycle, bool) else name in auto_cycle,
                        hook,
                        hook_every_s,
                        poses,
                    )
                    for name, c in cells.items()
                }
                conn.send(("ok", out))
            elif op == "call":
                _, name, method, args, kwargs = req
                if method.startswith("_"):
                    raise RigidError(f"{method!r} is not a public cell method")
                attr = getattr(cells[name], method)
                res = attr(*args, **kwargs) if callable(attr) else attr
                if isinstance(res, CycleHandle):
                    res = res.id
                conn.send(("ok", res))
            else:
                raise RigidError(f"unknown request {op!r}")
        except Exception as exc:
            conn.send(("err", exc))
    for c in cells.values():
        c.close()


class CellPool:
    """Cells named by ``cells`` (name -> (config, seed)) in ``processes`` worker processes
    (default: one per CPU, at most one per cell)."""

    def __init__(
        self, cells: Mapping[str, tuple[CellConfig, int]], *, processes: int | None = None
    ) -> None:
        if not cells:
            raise RigidError("a cell pool needs at least one cell")
        n = min(len(cells), processes or mp.cpu_count())
        ctx = mp.get_context("spawn")
        groups: list[list[tuple[str, CellConfig, int]]] = [[] for _ in range(n)]
        for i, (name, (config, seed)) in enumerate(cells.items()):
            groups[i % n].append((name, config, seed))
        self._where: dict[str, int] = {}
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for w, group in enumerate(groups):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, group), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
            for name, _, _ in group:
                self._where[name] = w
        try:
            for conn in self._conns:
                self._reply(conn)
        except BaseException:
            self.close()
            raise

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._where)

    @staticmethod
    def _reply(conn: Connection) -> Any:
        status, value = conn.recv()
        if status == "err":
            raise value
        return value

    def advance(
        self,
        seconds: float,
        *,
        auto_cycle: bool | frozenset[str] = False,
        hook: CellHook | None = None,
        hook_every_s: float = 0.5,
        poses: bool = False,
    ) -> dict[str, AdvanceReport]:
        """Step every cell by ``seconds`` of simulated time, the workers in parallel.

        ``auto_cycle``: start a pick-and-place cycle whenever a cell is idle (and not faulted);
        all cells, or the cells named in a set (the stations the process core has busy).
        ``hook``: a module-level function called with each cell every ``hook_every_s``.
        ``poses``: also return each cell's link and part poses (one round trip for all)."""
        for conn in self._conns:
            conn.send(("advance", seconds, auto_cycle, hook, hook_every_s, poses))
        out: dict[str, AdvanceReport] = {}
        for conn in self._conns:
            out.update(self._reply(conn))
        return out

    def call(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``cell.method(*args, **kwargs)`` on the cell ``name`` (or read the attribute
        ``method`` when it is not callable) and return the result."""
        if name not in self._where:
            raise RigidError(f"no cell {name!r} in the pool")
        conn = self._conns[self._where[name]]
        conn.send(("call", name, method, args, kwargs))
        return self._reply(conn)

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        for conn in self._conns:
            try:
                conn.send(("close",))
                conn.recv()
            except (OSError, EOFError):
                pass
            conn.close()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> CellPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
