"""What telemetry adapters hand the twin: samples, rejections and link events.

Adapters (MQTT with JSON or Sparkplug B payloads, OPC UA, replay, HTTP ingest) only translate:
whatever arrives becomes one of the values below, and the twin's reducer (:mod:`twin.live.state`)
decides what it means. An adapter never drops a message silently: a payload it cannot decode
becomes a :class:`Rejected` with a :class:`Reason`, so it is counted and recorded like every
other rejection.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Quality(StrEnum):
    """OPC UA's three quality classes (Sparkplug and JSON map onto them)."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class Reason(StrEnum):
    """Why a telemetry message (or one value in it) was rejected. Counted per reason."""

    MALFORMED = "malformed"  # not JSON / not protobuf / not the documented shape
    WRONG_TYPE = "wrong_type"  # e.g. a string where a number is expected
    NOT_FINITE = "not_finite"  # NaN or an infinity
    OUT_OF_RANGE = "out_of_range"  # outside the tag's [min, max] (after scaling)
    UNKNOWN_TAG = "unknown_tag"  # an address no tag of the line is bound to
    UNKNOWN_STATE = "unknown_state"  # a machine-state value the twin cannot map
    FUTURE = "future"  # timestamped too far ahead of the twin's clock
    TOO_OLD = "too_old"  # timestamped too far behind the twin's clock
    OUT_OF_ORDER = "out_of_order"  # older than the value the twin already holds
    DUPLICATE = "duplicate"  # the same timestamp and value again
    COUNTER_BACKWARDS = "counter_backwards"  # a part counter went down (without a reset)
    BAD_QUALITY = "bad_quality"  # the source itself flags the value bad
    UNKNOWN_ALIAS = "unknown_alias"  # Sparkplug: a metric alias with no birth (rebirth asked)
    SEQUENCE_GAP = "sequence_gap"  # Sparkplug: seq skipped (rebirth asked)
    NO_BIRTH = "no_birth"  # Sparkplug: data from a node or device that has not been born


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One value of one tag as the gateway reported it.

    ``address`` is the tag's address in the line file (MQTT topic, Sparkplug
    ``spBv1.0/GROUP/DDATA/NODE/DEVICE/METRIC`` path or OPC UA node id); ``value`` is raw (before
    the tag's scale and offset); ``source_ts`` is the gateway's timestamp (Unix seconds, None if
    it sent none); ``received_ts`` when the twin received it.
    """

    address: str
    value: Any
    received_ts: float
    source_ts: float | None = None
    quality: Quality = Quality.GOOD
    source: str = ""  # "mqtt-json", "sparkplug", "opcua", "replay", "http"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """A message (or part of one) an adapter could not turn into samples."""

    reason: Reason
    detail: str
    received_ts: float
    address: str = ""  # the topic or node, when known
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stale:
    """Every tag whose address starts with ``prefix`` has lost its source (a Sparkplug
    NDEATH/DDEATH, a dropped OPC UA session): mark them stale until fresh samples arrive."""

    prefix: str
    received_ts: float
    reason: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """The adapter's connection went up or down (shown in the viewer's data health)."""

    up: bool
    received_ts: float
    detail: str = ""
    source: str = ""


Telemetry = Sample | Rejected | Stale | Link
