"""A plant to mirror: the line run by the process core in real time, reporting its tags the way
a gateway would (``twin gateway-sim``).

:class:`Plant` owns a :class:`~twin.simline.SimulatedLine` (random failures on) and, at each
:meth:`Plant.poll`, returns the samples that are due: every bound tag at its ``period_s``
(default 1 s), and state, counter and alarm tags also as soon as they change. Raw values are what
a gateway would send: ``(value - offset) / scale``. ``noise`` adds Gaussian noise (a fraction of
the tag's range) to analog values, ``dropout`` drops that share of reports, both from a seeded
generator. Adapters (MQTT JSON, Sparkplug B, OPC UA) publish the samples; ``twin serve --source
embedded`` takes them in-process.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from scenes.graph import SceneGraph
from scenes.spec import LineSpec
from streaming.store import SceneStore
from twin.simline import SimulatedLine

from .tags import Kind, Tag, TagMap
from .telemetry import Sample

DEFAULT_PERIOD_S = 1.0


class Plant:
    """The simulated real line behind a gateway (see the module docstring)."""

    def __init__(
        self,
        spec: LineSpec,
        graph: SceneGraph,
        *,
        seed: int = 7,
        speed: float = 1.0,
        noise: float = 0.0,
        dropout: float = 0.0,
        source: str = "plant",
    ) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError("dropout must be within [0, 1)")
        if noise < 0:
            raise ValueError("noise must be >= 0")
        self.sim = SimulatedLine(spec, graph, seed=seed, speed=speed)
        self.tags = TagMap(spec)
        self.noise = noise
        self.dropout = dropout
        self.source = source
        self.rng = np.random.default_rng(seed)
        self.store = SceneStore(history=2)  # the plant's own view: what its sensors read
        self.sim.populate(self.store)
        self.store.commit()
        self._last_sent: dict[str, tuple[float, Any]] = {}
        self.sent = 0
        self.dropped = 0

    def truth(self, tag: Tag) -> Any:
        """The tag's true value now (scaled units; a state as its word)."""
        comps = self.store.components(tag.entity)
        if tag.kind is Kind.STATE:
            return comps["state"]
        if tag.kind is Kind.COUNTER:
            return comps["scrapped" if tag.name == "rejects" else "produced"]
        if tag.kind is Kind.ALARM:
            return comps["state"] == "down"
        if tag.kind is Kind.LEVEL:
            return comps["level"]
        return self._analog(tag, comps)

    def _analog(self, tag: Tag, comps: dict[str, Any]) -> float:
        b = tag.binding
        lo = b.min if b.min is not None else 0.0
        hi = b.max if b.max is not None else lo + 100.0
        if tag.name == "speed":  # parts per hour while working
            busy = comps.get("state") == "busy"
            return min(hi, max(lo, (hi - lo) * (0.8 if busy else 0.0) + lo))
        # a slow wave across the middle of the range, like a temperature
        t = self.sim.sim_t
        return lo + (hi - lo) * (0.5 + 0.2 * math.sin(t / 60.0))

    def raw_now(self, tag: Tag) -> Any:
        """The raw value a gateway would report for ``tag`` now."""
        return self._raw(tag, self.truth(tag))

    def poll(self, wall: float | None = None) -> list[Sample]:
        """Advance the plant to ``wall`` (Unix seconds) and return the reports now due."""
        wall = time.time() if wall is None else wall
        self.sim(self.store, wall)
        self.store.commit()
        out = []
        for tag in self.tags:
            value = self.truth(tag)
            last = self._last_sent.get(tag.address)
            period = tag.binding.period_s or DEFAULT_PERIOD_S
            changed = last is None or (tag.kind is not Kind.ANALOG and last[1] != value)
            if not changed and last is not None and wall - last[0] < period:
                continue
            if self.dropout and self.rng.random() < self.dropout:
                self.dropped += 1
                self._last_sent[tag.address] = (wall, value)  # the report was due, and lost
                continue
            self._last_sent[tag.address] = (wall, value)
            out.append(
                Sample(
                    address=tag.address,
                    value=self._raw(tag, value),
                    source_ts=wall,
                    received_ts=wall,
                    source=self.source,
                )
            )
        self.sent += len(out)
        return out

    def _raw(self, tag: Tag, value: Any) -> Any:
        if tag.kind in (Kind.STATE, Kind.ALARM):
            return value
        b = tag.binding
        if tag.kind is Kind.ANALOG and self.noise:
            lo = b.min if b.min is not None else 0.0
            hi = b.max if b.max is not None else lo + 100.0
            value = float(np.clip(value + self.rng.normal(0, self.noise * (hi - lo)), lo, hi))
        raw = (value - b.offset) / b.scale
        if tag.kind in (Kind.COUNTER, Kind.LEVEL):
            return round(raw)
        return round(float(raw), 6)
