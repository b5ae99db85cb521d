"""The validated description of a production line: what a line file means, as value types.

Everything here is immutable and free of I/O. ``scenes.lineparse`` builds a :class:`LineSpec`
from YAML; the process core, the scene graph and the twin read it. Units are SI: seconds, metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


class DistKind(StrEnum):
    """Distribution families for processing and inter-arrival times."""

    DETERMINISTIC = "deterministic"
    EXPONENTIAL = "exponential"
    LOGNORMAL = "lognormal"
    UNIFORM = "uniform"
    GAMMA = "gamma"
    EMPIRICAL = "empirical"


@dataclass(frozen=True, slots=True, kw_only=True)
class Distribution:
    """A non-negative random time in seconds.

    ``mean`` is always set. ``cv`` (coefficient of variation) is used by lognormal and gamma;
    ``low``/``high`` by uniform; ``values`` by empirical (drawn uniformly from the list).
    """

    kind: DistKind
    mean: float
    cv: float = 0.0
    low: float = 0.0
    high: float = 0.0
    values: tuple[float, ...] = ()

    @classmethod
    def deterministic(cls, value: float) -> Distribution:
        return cls(kind=DistKind.DETERMINISTIC, mean=float(value))

    @classmethod
    def exponential(cls, mean: float) -> Distribution:
        return cls(kind=DistKind.EXPONENTIAL, mean=float(mean), cv=1.0)

    @property
    def variance(self) -> float:
        """Variance in s²."""
        match self.kind:
            case DistKind.DETERMINISTIC:
                return 0.0
            case DistKind.EXPONENTIAL:
                return self.mean**2
            case DistKind.LOGNORMAL | DistKind.GAMMA:
                return (self.cv * self.mean) ** 2
            case DistKind.UNIFORM:
                return (self.high - self.low) ** 2 / 12.0
            case DistKind.EMPIRICAL:
                m = self.mean
                return sum((v - m) ** 2 for v in self.values) / len(self.values)
        raise AssertionError(self.kind)  # pragma: no cover - exhaustive match


class FailureMode(StrEnum):
    """``operation``: the failure clock runs only while processing. ``time``: it always runs."""

    OPERATION = "operation"
    TIME = "time"


@dataclass(frozen=True, slots=True, kw_only=True)
class Failures:
    """Exponential time between failures (``mtbf``) and time to repair (``mttr``), seconds."""

    mtbf: float
    mttr: float
    mode: FailureMode = FailureMode.OPERATION

    @property
    def availability(self) -> float:
        return self.mtbf / (self.mtbf + self.mttr)


class RoutingPolicy(StrEnum):
    """How a station with several outgoing buffers chooses one for a finished part."""

    ROUND_ROBIN = "round_robin"
    SHORTEST_QUEUE = "shortest_queue"
    PROBABILITY = "probability"


@dataclass(frozen=True, slots=True, kw_only=True)
class Pose:
    """Position in metres (x east, y north, z up) and heading about z in degrees."""

    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw_deg: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Geometry:
    """Either a box (``box``: size x, y, z in metres) or a mesh file scaled by ``scale``."""

    box: tuple[float, float, float] | None = None
    mesh: str | None = None
    scale: float = 1.0
    color: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TagBinding:
    """A telemetry tag bound to one quantity of a station or buffer (used by the live twin).

    ``address`` is the MQTT topic, Sparkplug metric or OPC UA node id; a raw value ``v`` means
    ``v * scale + offset`` in ``unit``. ``period_s`` is how often the gateway should report it.
    """

    address: str
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    period_s: float | None = None
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Robot:
    """A robot cell at a station: a URDF (file or ``pybullet_data`` name) at a base pose."""

    urdf: str
    pose: Pose = field(default_factory=Pose)


@dataclass(frozen=True, slots=True, kw_only=True)
class Station:
    """A work station: ``servers`` identical parallel machines sharing inputs and outputs."""

    id: str
    process_time: Distribution
    type: str = "machine"
    servers: int = 1
    scrap_rate: float = 0.0
    failures: Failures | None = None
    routing: RoutingPolicy = RoutingPolicy.ROUND_ROBIN
    weights: tuple[tuple[str, float], ...] = ()
    pose: Pose = field(default_factory=Pose)
    geometry: Geometry = field(default_factory=lambda: Geometry(box=(1.5, 1.5, 1.5)))
    tags: tuple[tuple[str, TagBinding], ...] = ()
    robot: Robot | None = None
    line: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Conveyor:
    """An accumulating conveyor: parts need ``length/speed`` seconds to reach its end."""

    length: float
    speed: float
    pitch: float = 0.5
    width: float = 0.6
    path: tuple[tuple[float, float, float], ...] = ()

    @property
    def transit_time(self) -> float:
        return self.length / self.speed

    @property
    def slots(self) -> int:
        """How many parts fit on the belt at ``pitch`` spacing."""
        return max(1, math.floor(self.length / self.pitch + 1e-9))


@dataclass(frozen=True, slots=True, kw_only=True)
class Buffer:
    """A FIFO buffer from one station to another; capacity 0 means direct handoff."""

    id: str
    source: str
    target: str
    capacity: int
    conveyor: Conveyor | None = None
    tags: tuple[tuple[str, TagBinding], ...] = ()
    line: int = 0

    @property
    def transit_time(self) -> float:
        return self.conveyor.transit_time if self.conveyor is not None else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """A timed source: parts arrive at station ``feeds`` with random inter-arrival times.

    Arrivals wait in an unbounded queue in front of the station.
    """

    feeds: str
    interarrival: Distribution


@dataclass(frozen=True, slots=True, kw_only=True)
class LineSpec:
    """A whole production line. Stations and buffers keep the order of the file."""

    name: str
    stations: tuple[Station, ...]
    buffers: tuple[Buffer, ...] = ()
    sources: tuple[Source, ...] = ()
    description: str = ""
    path: str | None = None

    def station(self, station_id: str) -> Station:
        for s in self.stations:
            if s.id == station_id:
                return s
        raise KeyError(station_id)

    def station_index(self, station_id: str) -> int:
        for i, s in enumerate(self.stations):
            if s.id == station_id:
                return i
        raise KeyError(station_id)

    def inputs(self, station_id: str) -> tuple[Buffer, ...]:
        return tuple(b for b in self.buffers if b.target == station_id)

    def outputs(self, station_id: str) -> tuple[Buffer, ...]:
        return tuple(b for b in self.buffers if b.source == station_id)

    def source_for(self, station_id: str) -> Source | None:
        for src in self.sources:
            if src.feeds == station_id:
                return src
        return None

    def is_saturated(self, station_id: str) -> bool:
        """A station with no incoming buffer and no timed source never starves."""
        return not self.inputs(station_id) and self.source_for(station_id) is None
