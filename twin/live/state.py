"""The authoritative twin state and the pure reducer that updates it from telemetry.

:func:`reduce` takes the value a tag holds (or None), the tag, one sample and the twin's clock,
and returns the tag's new value and an :class:`Outcome`, with no side effect. :class:`TwinState`
holds one :class:`TagValue` per address and applies telemetry through :func:`reduce`, counting
every outcome by reason. The rules, in order (``docs/telemetry.md`` states them for users):

1. The tag must exist (``unknown_tag``) and the source must not flag the value bad
   (``bad_quality``: the held value stays, the tag is flagged).
2. Type and value: a state must map to a machine state (``unknown_state``); counters, levels and
   analog values must be numbers (``wrong_type``), finite (``not_finite``); after scaling,
   within the tag's ``[min, max]`` (a level within ``[0, capacity]``) (``out_of_range``).
3. Time: a sample's time is its source timestamp, else its arrival. More than ``max_future_s``
   ahead of the twin's clock: ``future``; more than ``max_age_s`` behind: ``too_old``.
4. Late data: a sample older than the value held is ``out_of_order`` and is recorded but not
   applied (latest wins); the same time and value again is a ``duplicate``. A sample with the same
   time and another value replaces the held one.
5. Counters only go up; a drop to 0 is a reset (accepted, counted as ``counter_reset``); any other
   drop is ``counter_backwards``.

Staleness: a tag with an expected period that has not reported for ``stale_periods`` periods is
stale, and so is every tag under a :class:`~twin.live.telemetry.Stale` prefix, until a fresh
sample arrives.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from scenes.graph import MachineState

from .tags import STATE_CODES, STATE_WORDS, Kind, Tag, TagMap
from .telemetry import Link, Quality, Reason, Rejected, Sample, Stale, Telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class TagValue:
    """What the twin holds for one tag: the scaled ``value`` (a MachineState for a state tag),
    the ``raw`` value, the sample's time ``ts`` (source time, else arrival), when it arrived,
    its quality, and whether it is stale."""

    value: Any
    raw: Any
    ts: float
    received_ts: float
    quality: Quality = Quality.GOOD
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """``accepted`` or the :class:`Reason` a sample was rejected; ``note`` for accepted
    samples with something worth counting (``counter_reset``)."""

    accepted: bool
    reason: Reason | None = None
    detail: str = ""
    note: str = ""


ACCEPTED = Outcome(True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """Tolerances of the reducer (seconds)."""

    max_future_s: float = 5.0
    max_age_s: float = 24 * 3600.0
    stale_periods: float = 3.0


DEFAULT_RULES = Rules()


def _reject(reason: Reason, detail: str) -> tuple[None, Outcome]:
    return None, Outcome(False, reason, detail)


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return float(raw)


def parse_state(raw: Any) -> MachineState | None:
    """A gateway's machine-state value as the twin's state, or None."""
    if isinstance(raw, str):
        return STATE_WORDS.get(raw.strip().lower())
    if isinstance(raw, int) and not isinstance(raw, bool):
        return STATE_CODES.get(raw)
    if isinstance(raw, float) and raw.is_integer():
        return STATE_CODES.get(int(raw))
    return None


def reduce(
    held: TagValue | None, tag: Tag, sample: Sample, now: float, rules: Rules = DEFAULT_RULES
) -> tuple[TagValue | None, Outcome]:
    """The new value of ``tag`` after ``sample`` at twin time ``now`` (Unix seconds), or None
    and the reason it was rejected. Pure."""
    if sample.quality is Quality.BAD:
        return _reject(Reason.BAD_QUALITY, "the source flags the value bad")
    raw = sample.value
    b = tag.binding
    value: Any
    if tag.kind is Kind.STATE:
        value = parse_state(raw)
        if value is None:
            return _reject(Reason.UNKNOWN_STATE, f"not a machine state: {raw!r:.60}")
    elif tag.kind is Kind.ALARM:
        if isinstance(raw, bool):
            value = raw
        else:
            n = _number(raw)
            if n is None:
                return _reject(
                    Reason.WRONG_TYPE, f"an alarm is a bool or a number, got {type(raw).__name__}"
                )
            if not math.isfinite(n):
                return _reject(Reason.NOT_FINITE, f"{n}")
            value = n != 0
    else:
        n = _number(raw)
        if n is None:
            return _reject(Reason.WRONG_TYPE, f"expected a number, got {type(raw).__name__}")
        if not math.isfinite(n):
            return _reject(Reason.NOT_FINITE, f"{n}")
        value = n * b.scale + b.offset
        if not math.isfinite(value):
            return _reject(Reason.NOT_FINITE, f"{value} after scaling")
        lo, hi = b.min, b.max
        if tag.kind is Kind.LEVEL:
            lo = 0.0 if lo is None else lo
            hi = float(tag.capacity) if hi is None and tag.capacity is not None else hi
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return _reject(Reason.OUT_OF_RANGE, f"{value:g} outside [{lo}, {hi}]")
        if tag.kind in (Kind.COUNTER, Kind.LEVEL):
            if not float(value).is_integer() or value < 0:
                return _reject(Reason.OUT_OF_RANGE, f"{value:g} is not a count")
            value = int(value)
    ts = sample.source_ts if sample.source_ts is not None else sample.received_ts
    if not math.isfinite(ts):
        return _reject(Reason.MALFORMED, "timestamp is not finite")
    if ts > now + rules.max_future_s:
        return _reject(Reason.FUTURE, f"{ts - now:.1f} s ahead of the twin's clock")
    if ts < now - rules.max_age_s:
        return _reject(Reason.TOO_OLD, f"{now - ts:.0f} s behind the twin's clock")
    note = ""
    if held is not None:
        if ts < held.ts:
            return _reject(Reason.OUT_OF_ORDER, f"{held.ts - ts:.3f} s older than the value held")
        if ts == held.ts and value == held.value and not held.stale:
            return _reject(Reason.DUPLICATE, "same time and value again")
        if tag.kind is Kind.COUNTER and value < held.value:
            if value != 0:
                return _reject(Reason.COUNTER_BACKWARDS, f"{held.value} -> {value}")
            note = "counter_reset"
    return (
        TagValue(
            value=value, raw=raw, ts=ts, received_ts=sample.received_ts, quality=sample.quality
        ),
        Outcome(True, note=note) if note else ACCEPTED,
    )


class TwinState:
    """One value per tag, the counts of every outcome, and the adapters' link states.

    Not thread-safe: apply telemetry from one thread (the server's event loop).
    """

    def __init__(
        self,
        tags: TagMap,
        *,
        rules: Rules = DEFAULT_RULES,
        clock: Callable[[], float] = time.time,
        on_outcome: Callable[[Telemetry, Outcome], None] | None = None,
    ) -> None:
        self.tags = tags
        self.rules = rules
        self.clock = clock
        self.on_outcome = on_outcome  # e.g. the recorder
        self.values: dict[str, TagValue] = {}
        self.counts: Counter[str] = Counter()
        self.links: dict[str, bool] = {}
        self.changed: set[str] = set()  # addresses changed since the caller last cleared it
        self._last_log: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    # -- applying --------------------------------------------------------------------------------

    def apply_all(self, items: Iterable[Telemetry]) -> None:
        now = self.clock()
        for item in items:
            self.apply(item, now)

    def apply(self, item: Telemetry, now: float | None = None) -> Outcome:
        now = self.clock() if now is None else now
        if isinstance(item, Sample):
            tag = self.tags.get(item.address)
            if tag is None:
                out = Outcome(
                    False, Reason.UNKNOWN_TAG, f"no tag is bound to {item.address!r:.120}"
                )
            else:
                new, out = reduce(self.values.get(item.address), tag, item, now, self.rules)
                if new is not None:
                    self.values[item.address] = new
                    self.changed.add(item.address)
        elif isinstance(item, Rejected):
            out = Outcome(False, item.reason, item.detail)
        elif isinstance(item, Stale):
            n = self._mark_stale(item.prefix)
            out = Outcome(True, note=f"stale:{n}")
        else:  # Link
            assert isinstance(item, Link)
            self.links[item.source or "source"] = item.up
            out = ACCEPTED
        self._count(item, out, now)
        if self.on_outcome is not None:
            self.on_outcome(item, out)
        return out

    def _mark_stale(self, prefix: str) -> int:
        n = 0
        for tag in self.tags.with_prefix(prefix):
            v = self.values.get(tag.address)
            if v is not None and not v.stale:
                self.values[tag.address] = replace(v, stale=True)
                self.changed.add(tag.address)
                n += 1
        return n

    def check_stale(self, now: float | None = None) -> int:
        """Mark tags that missed ``stale_periods`` of their expected period; returns how many
        became stale now."""
        now = self.clock() if now is None else now
        n = 0
        for address, v in self.values.items():
            period = self.tags.by_address[address].binding.period_s
            if period and not v.stale and now - v.received_ts > self.rules.stale_periods * period:
                self.values[address] = replace(v, stale=True)
                self.changed.add(address)
                n += 1
        return n

    def _count(self, item: Telemetry, out: Outcome, now: float) -> None:
        if out.accepted:
            if isinstance(item, Sample):
                self.counts["accepted"] += 1
            if out.note:
                self.counts[out.note.split(":", 1)[0]] += 1
            return
        reason = out.reason.value if out.reason is not None else "rejected"
        self.counts["rejected"] += 1
        self.counts[f"rejected.{reason}"] += 1
        # log, at most once a second per reason, with how many were not logged
        if now - self._last_log.get(reason, -math.inf) >= 1.0:
            more = self._suppressed.pop(reason, 0)
            address = getattr(item, "address", "")
            log.warning(
                "telemetry rejected (%s) %s: %s%s",
                reason,
                address,
                out.detail,
                f" (+{more} more since the last report)" if more else "",
            )
            self._last_log[reason] = now
        else:
            self._suppressed[reason] += 1

    # -- reading ---------------------------------------------------------------------------------

    def value(self, entity: str, name: str) -> TagValue | None:
        tag = self.tags.by_entity.get(entity, {}).get(name)
        return None if tag is None else self.values.get(tag.address)

    def stale_count(self, now: float | None = None) -> int:
        """Bound tags with no fresh value: never reported, or stale."""
        return sum(1 for t in self.tags if (v := self.values.get(t.address)) is None or v.stale)

    def rejected_by_reason(self) -> dict[str, int]:
        return {k.split(".", 1)[1]: n for k, n in self.counts.items() if k.startswith("rejected.")}
