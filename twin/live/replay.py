"""Replay: drive the twin from a record, as if live.

:func:`iter_replay` reads a record's telemetry in received (append) order; :func:`replay` paces
it on an asyncio loop, handing the twin batches at the items' original relative times scaled by
``speed``. Pacing lives here, in the driver, behind a :class:`Clock` (the loop's clock by
default, a virtual one in tests); the twin's reducer never sleeps.

What is replayed is what was recorded, unchanged: samples, rejections (a rejected item is
delivered again as the :class:`~twin.live.telemetry.Rejected` it was, so the twin counts it
again), stale marks and link events, with their original ``received_ts`` and ``source``. The
twin's clock during a replay is the record's: the ``received_ts`` of the batch it was handed.
Samples the reducer rejected are replayed too, and it judges them afresh. Commands are skipped:
a replay re-creates what the plant reported, not what operators did (the record keeps those for
audit; query ``kinds=["command"]``).
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .recorder import TELEMETRY_KINDS, RecordReader
from .telemetry import Telemetry


def iter_replay(
    path: str | Path, *, t0: float | None = None, t1: float | None = None
) -> Iterator[tuple[float, Telemetry]]:
    """``(received_ts, item)`` for every telemetry row with ``t0 <= received_ts < t1``, in
    received order (commands left out). Reads lazily; the file stays open until the iterator is
    exhausted or closed. Raises ConfigError (on the first ``next``) if ``path`` is no record."""
    with RecordReader(path) as reader:
        for row in reader.query(t0=t0, t1=t1, kinds=TELEMETRY_KINDS):
            yield row.received_ts, row.item


class Clock(Protocol):
    """Where :func:`replay` reads the time and waits: ``now`` in seconds (any origin)."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running asyncio loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayStats:
    """What a replay delivered: items and batches; the first and last ``received_ts``; the
    largest lateness of a batch behind its due time (seconds of the clock: the twin's handler,
    or the reading of the file, was slower than the record)."""

    items: int
    batches: int
    first_ts: float | None
    last_ts: float | None
    max_late_s: float


OnBatch = Callable[[list[Telemetry]], Awaitable[None] | None]


async def replay(
    path: str | Path,
    on_telemetry: OnBatch,
    *,
    speed: float = 1.0,
    clock: Clock | None = None,
    t0: float | None = None,
    t1: float | None = None,
    step_s: float = 0.01,
    max_batch: int = 1000,
) -> ReplayStats:
    """Deliver a record's telemetry to ``on_telemetry`` (a function or coroutine function that
    takes a batch of items) as if live.

    An item received ``d`` seconds after the first is due ``d / speed`` seconds after the
    replay starts; ``speed`` 0 or ``inf`` means as fast as possible (no waiting; the loop still
    runs other tasks between batches). Items are grouped per time step: a batch holds the items
    due within ``step_s`` seconds (of the clock; of the record when unpaced) of its first one,
    at most ``max_batch`` of them, and is delivered when its first item is due, so an item is
    at most ``step_s`` early. The schedule is relative to the start, so a slow handler delays
    batches without shifting the ones after it; a record whose ``received_ts`` goes backwards
    delivers those items at once. Commands are not replayed (see the module docstring).
    """
    if not (speed >= 0):  # also refuses NaN
        raise ValueError(f"speed must be >= 0 (0 or inf: as fast as possible), not {speed}")
    if step_s < 0 or max_batch < 1:
        raise ValueError("step_s must be >= 0 and max_batch >= 1")
    clock = clock if clock is not None else LoopClock()
    paced = 0 < speed < math.inf
    span = step_s * speed if paced else step_s  # one batch's extent in record seconds
    start = clock.now()
    first_ts: float | None = None
    last_ts: float | None = None
    n_items = n_batches = 0
    max_late = 0.0
    batch: list[Telemetry] = []
    batch_ts = 0.0

    async def deliver(items: list[Telemetry], offset: float) -> float:
        """Wait until ``offset`` record seconds after the start are due; hand over ``items``;
        return how late they were (0 if on time)."""
        late = 0.0
        wait = start + offset / speed - clock.now() if paced else 0.0
        if wait > 0:
            await clock.sleep(wait)
        else:
            late = -wait
            await clock.sleep(0)  # let the loop run other tasks between batches
        result = on_telemetry(items)
        if inspect.isawaitable(result):
            await result
        return late

    for ts, item in iter_replay(path, t0=t0, t1=t1):
        if first_ts is None:
            first_ts = ts
        if batch and (ts - batch_ts > span or ts < batch_ts or len(batch) >= max_batch):
            max_late = max(max_late, await deliver(batch, batch_ts - first_ts))
            n_batches += 1
            batch = []
        if not batch:
            batch_ts = ts
        batch.append(item)
        n_items += 1
        last_ts = ts
    if batch and first_ts is not None:
        max_late = max(max_late, await deliver(batch, batch_ts - first_ts))
        n_batches += 1
    return ReplayStats(
        items=n_items,
        batches=n_batches,
        first_ts=first_ts,
        last_ts=last_ts,
        max_late_s=max_late,
    )
