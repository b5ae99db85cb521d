"""The live twin of a real line: telemetry drives the twin state, the process core predicts
between samples, and the scene store shows the result.

:class:`LiveLine` is the store source of ``twin serve --source ...``. Telemetry goes through
:meth:`LiveLine.ingest` into the :class:`~twin.live.state.TwinState` (the reducer) and, when a
recorder is given, into the durable record before ``ingest`` returns (so an adapter acknowledges
only what is recorded). Every tick the process core advances to the wall clock and predicts what
the telemetry does not say (parts moving on conveyors, machines without a state tag, buffer
levels between samples); measurements replace the prediction wherever they exist:

* machine states: the measured state; a state tag gone stale shows ``stale``. A measured
  breakdown is put into the core (the station stops until it is measured up again), so the
  predicted flow around it follows the real line.
* part counters (``count``, ``rejects``): always the measured values, exactly.
* buffer levels: the measured level while it is fresh, otherwise the prediction.

The divergence between prediction and measurement is reported on the ``line`` entity
(``divergence``: the share of state samples that disagreed with the prediction, and the mean
absolute difference of buffer levels at each sample).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import jax.numpy as jnp
import numpy as np

from physics.process.model import BUSY, DOWN
from scenes.graph import MachineState, SceneGraph, buffer_id, station_id
from scenes.spec import LineSpec
from streaming.hub import CommandRegistry, Outcome
from streaming.protocol import Role
from streaming.store import SceneStore
from twin.simline import SimulatedLine, _station_state

from .state import DEFAULT_RULES, Rules, TwinState
from .state import Outcome as TelemetryOutcome
from .tags import Kind, TagMap
from .telemetry import Sample, Telemetry


class Record(Protocol):
    """What the mirror needs of a recorder (``twin.live.recorder.Recorder``)."""

    def append(self, item: Telemetry, *, outcome: str, reason: str = "") -> None: ...

    def flush(self) -> None: ...


class LiveLine(SimulatedLine):
    """A line mirrored from telemetry (see the module docstring)."""

    def __init__(
        self,
        spec: LineSpec,
        graph: SceneGraph,
        *,
        recorder: Record | None = None,
        rules: Rules = DEFAULT_RULES,
        clock: Callable[[], float] = time.time,
        on_alarm: Callable[[Mapping[str, Any]], object] | None = None,
    ) -> None:
        # breakdowns come from telemetry, not from the core's random failures
        super().__init__(spec, graph, seed=1, speed=1.0, on_alarm=on_alarm, random_failures=False)
        self.tags = TagMap(spec)
        self.recorder = recorder
        self.twin = TwinState(self.tags, rules=rules, clock=clock, on_outcome=self._record)
        self._clock = clock
        self._forced_down: set[int] = set()
        self.divergence = {
            "state_samples": 0,
            "state_mismatch": 0,
            "level_samples": 0,
            "level_abs_error": 0.0,
        }
        self._station_index = {station_id(s): i for i, s in enumerate(self.model.station_ids)}

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Judge time (timestamps, staleness) by ``clock`` from now on (a replay's clock)."""
        self._clock = clock
        self.twin.clock = clock

    # -- telemetry in ----------------------------------------------------------------------------

    def ingest(self, items: Iterable[Telemetry]) -> None:
        """Apply telemetry to the twin state and record it; returns once it is recorded."""
        items = list(items)
        self.twin.apply_all(items)
        self._score(items)
        if self.recorder is not None:
            self.recorder.flush()

    def _record(self, item: Telemetry, out: TelemetryOutcome) -> None:
        if self.recorder is not None:
            reason = out.reason.value if out.reason is not None else out.note
            self.recorder.append(
                item, outcome="accepted" if out.accepted else "rejected", reason=reason
            )

    def _score(self, items: list[Telemetry]) -> None:
        """Divergence between what the core predicted and what was measured, per sample."""
        s = self.state
        st = np.asarray(s.st)[0]
        count = np.asarray(s.count)[0]
        for item in items:
            if not isinstance(item, Sample):
                continue
            tag = self.tags.get(item.address)
            held = self.twin.values.get(item.address)
            if tag is None or held is None or held.received_ts != item.received_ts:
                continue
            if tag.kind is Kind.STATE and tag.entity in self._station_index:
                i = self._station_index[tag.entity]
                predicted = _station_state(st[list(self.model.slots(i))])
                self.divergence["state_samples"] += 1
                self.divergence["state_mismatch"] += int(predicted is not held.value)
            elif tag.kind is Kind.LEVEL:
                b = self.model.buffer_ids.index(tag.entity.split("/", 1)[1])
                self.divergence["level_samples"] += 1
                self.divergence["level_abs_error"] += abs(int(count[b]) - int(held.value))

    # -- each tick -------------------------------------------------------------------------------

    def __call__(self, store: SceneStore, wall: float) -> float:
        self.twin.check_stale()  # by the twin's clock (a replay's clock follows the record)
        self._correct()
        return super().__call__(store, wall)

    def _correct(self) -> None:
        """Put measured breakdowns and repairs into the core's state."""
        for entity, i in self._station_index.items():
            v = self.twin.value(entity, "state")
            down = v is not None and not v.stale and v.value is MachineState.DOWN
            if down and i not in self._forced_down:
                self._set_down(i, True)
                self._forced_down.add(i)
            elif not down and i in self._forced_down:
                self._set_down(i, False)
                self._forced_down.discard(i)

    def _set_down(self, i: int, down: bool) -> None:
        s = self.state
        now = float(np.asarray(s.now)[0])
        slots = list(self.model.slots(i))
        if down:
            st = np.asarray(s.st)[0, slots]
            t_end = np.asarray(s.t_end)[0, slots]
            rem = np.where(st == BUSY, np.maximum(t_end - now, 0.0), np.asarray(s.rem)[0, slots])
            self.state = dataclasses.replace(
                s,
                prev=s.prev.at[0, slots].set(
                    jnp.where(st == DOWN, np.asarray(s.prev)[0, slots], st)
                ),
                rem=s.rem.at[0, slots].set(rem),
                t_end=s.t_end.at[0, slots].set(jnp.inf),
                st=s.st.at[0, slots].set(DOWN),
                t_rep=s.t_rep.at[0, slots].set(jnp.inf),  # until measured up again
            )
        else:
            self.state = dataclasses.replace(
                s,
                t_rep=s.t_rep.at[0, slots].set(
                    jnp.where(s.st[0, slots] == DOWN, max(now, self.sim_t), jnp.inf)
                ),
            )

    # -- measured values replace predicted ones ---------------------------------------------------

    def station_overrides(self, i: int, predicted: dict[str, Any]) -> dict[str, Any]:
        entity = station_id(self.model.station_ids[i])
        tags = self.tags.by_entity.get(entity, {})
        out: dict[str, Any] = {}
        if "state" in tags:
            v = self.twin.value(entity, "state")
            out["state"] = MachineState.STALE.value if v is None or v.stale else v.value.value
        else:
            out["predicted"] = True  # no state tag: the core's prediction is all there is
        for name, key in (("count", "produced"), ("rejects", "scrapped")):
            if name in tags:
                v = self.twin.value(entity, name)
                out[key] = None if v is None else v.value
        if tags:
            out["tags"] = self._tag_view(entity)
        return out

    def buffer_overrides(self, b: int, predicted: dict[str, Any]) -> dict[str, Any]:
        entity = buffer_id(self.model.buffer_ids[b])
        tags = self.tags.by_entity.get(entity, {})
        out: dict[str, Any] = {}
        if "level" in tags:
            v = self.twin.value(entity, "level")
            if v is not None and not v.stale:
                out["level"] = v.value
            else:
                out["predicted"] = True
        if tags:
            out["tags"] = self._tag_view(entity)
        return out

    def line_overrides(self) -> dict[str, Any]:
        d = self.divergence
        return {
            "stale_tags": self.twin.stale_count(),
            "rejected": self.twin.counts["rejected"],
            "accepted": self.twin.counts["accepted"],
            "rejected_by_reason": self.twin.rejected_by_reason(),
            "links": dict(self.twin.links),
            "divergence": {
                "state_mismatch": d["state_mismatch"] / d["state_samples"]
                if d["state_samples"]
                else None,
                "level_mae": d["level_abs_error"] / d["level_samples"]
                if d["level_samples"]
                else None,
                "samples": d["state_samples"] + d["level_samples"],
            },
            "live": True,
        }

    def _tag_view(self, entity: str) -> dict[str, Any]:
        view = {}
        for name, tag in self.tags.by_entity.get(entity, {}).items():
            v = self.twin.values.get(tag.address)
            value: Any = None
            if v is not None:
                value = v.value.value if isinstance(v.value, MachineState) else v.value
            view[name] = {
                "value": value,
                "unit": tag.binding.unit,
                "stale": v is None or v.stale,
                "quality": None if v is None else v.quality.value,
                "ts": None if v is None else v.ts,
            }
        return view

    # -- commands --------------------------------------------------------------------------------

    def register_commands(self, registry: CommandRegistry, store: SceneStore) -> None:
        """A live twin follows the real line: no time control; alarm acknowledgement and what-if
        forks (``twin.fork``: a forecast that never touches the twin's state or record)."""
        from twin.fork import register_fork_command

        register_fork_command(registry, self)
        registry.register(
            "alarm.ack",
            {Role.OPERATOR, Role.TRAINER},
            lambda p, c: self.ack(p, c, store),
            "acknowledge an alarm (target: alarm id)",
        )


__all__ = ["LiveLine", "Outcome", "Record"]
