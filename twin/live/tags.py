"""The tag map: which telemetry address drives which quantity of which station or buffer.

Built from a line file's ``tags:`` (docs/line-format.md). Tag names with a meaning to the twin:

| name | on | meaning | value |
|---|---|---|---|
| ``state`` | station | machine state | a string (``busy``/``running``, ``blocked``, ``starved``/``idle``, ``down``/``fault``) or the process core's code (0 idle, 1 busy, 2 blocked, 3 down) |
| ``count`` | station | good parts produced, a counter | integer >= 0 |
| ``rejects`` | station | parts scrapped, a counter | integer >= 0 |
| ``alarm`` | station | an alarm is active | bool, or a number (non-zero = active) |
| ``level`` | buffer | parts held | integer within [0, capacity] |

Any other name (``speed``, ``temperature``, ``cycle_time``...) is an analog value: a finite
number, scaled, checked against the tag's ``min``/``max``, and shown with its unit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from scenes.graph import MachineState, buffer_id, station_id
from scenes.spec import LineSpec, TagBinding


class Kind(StrEnum):
    STATE = "state"
    COUNTER = "counter"
    ALARM = "alarm"
    LEVEL = "level"
    ANALOG = "analog"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tag:
    """One bound tag: ``entity`` (``station/ID`` or ``buffer/ID``), its ``name`` there, what
    kind of quantity it is, its binding (address, scale, offset, unit, period, range) and, for a
    buffer level, the buffer's capacity (the default range)."""

    entity: str
    name: str
    kind: Kind
    binding: TagBinding
    capacity: int | None = None

    @property
    def address(self) -> str:
        return self.binding.address


_KINDS = {
    "state": Kind.STATE,
    "count": Kind.COUNTER,
    "rejects": Kind.COUNTER,
    "alarm": Kind.ALARM,
    "level": Kind.LEVEL,
}

#: Machine-state words gateways use, mapped to the twin's states.
STATE_WORDS: Mapping[str, MachineState] = {
    "busy": MachineState.BUSY,
    "running": MachineState.BUSY,
    "run": MachineState.BUSY,
    "working": MachineState.BUSY,
    "producing": MachineState.BUSY,
    "execute": MachineState.BUSY,
    "blocked": MachineState.BLOCKED,
    "full": MachineState.BLOCKED,
    "starved": MachineState.STARVED,
    "idle": MachineState.STARVED,
    "waiting": MachineState.STARVED,
    "empty": MachineState.STARVED,
    "down": MachineState.DOWN,
    "fault": MachineState.DOWN,
    "faulted": MachineState.DOWN,
    "error": MachineState.DOWN,
    "stopped": MachineState.DOWN,
    "aborted": MachineState.DOWN,
    "held": MachineState.DOWN,
}
#: The process core's state codes (``physics.process.model``).
STATE_CODES: Mapping[int, MachineState] = {
    0: MachineState.STARVED,
    1: MachineState.BUSY,
    2: MachineState.BLOCKED,
    3: MachineState.DOWN,
}


class TagMap:
    """All tags of a line, by address. An address bound twice is an error in the line file
    (it would drive two quantities)."""

    def __init__(self, spec: LineSpec) -> None:
        self.by_address: dict[str, Tag] = {}
        self.by_entity: dict[str, dict[str, Tag]] = {}
        caps = {b.id: b.capacity for b in spec.buffers}
        for st in spec.stations:
            for name, b in st.tags:
                kind = _KINDS.get(name, Kind.ANALOG)
                if kind is Kind.LEVEL:
                    kind = Kind.ANALOG  # "level" means a buffer's level only
                self._add(Tag(entity=station_id(st.id), name=name, kind=kind, binding=b))
        for buf in spec.buffers:
            for name, b in buf.tags:
                kind = Kind.LEVEL if name == "level" else Kind.ANALOG
                self._add(
                    Tag(
                        entity=buffer_id(buf.id),
                        name=name,
                        kind=kind,
                        binding=b,
                        capacity=caps[buf.id],
                    )
                )

    def _add(self, tag: Tag) -> None:
        if tag.address in self.by_address:
            other = self.by_address[tag.address]
            raise ValueError(
                f"address {tag.address!r} is bound twice: {other.entity}.{other.name} and "
                f"{tag.entity}.{tag.name}"
            )
        self.by_address[tag.address] = tag
        self.by_entity.setdefault(tag.entity, {})[tag.name] = tag

    def __len__(self) -> int:
        return len(self.by_address)

    def __iter__(self) -> Iterator[Tag]:
        return iter(self.by_address.values())

    def get(self, address: str) -> Tag | None:
        return self.by_address.get(address)

    def with_prefix(self, prefix: str) -> list[Tag]:
        return [t for a, t in self.by_address.items() if a.startswith(prefix)]
