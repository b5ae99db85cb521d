"""The wire format of ``twin.v1``: message types, codes, the msgpack codec and the binary
transform block. Everything a client in another language needs is in ``docs/protocol.md``;
this module is its executable form and imports neither asyncio nor websockets.

Every message is one binary WebSocket frame holding one msgpack map with a ``type`` string.
Client messages are validated field by field (:func:`parse_client`); a message that fails
raises :class:`~streaming.errors.RemoteProtocolError` with the ``error`` code to answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import msgpack
import numpy as np
from numpy.typing import NDArray

#: The WebSocket subprotocol; its suffix is the protocol's major version.
SUBPROTOCOL = "twin.v1"
#: ``(major, minor)``: minor versions only add fields and message types.
VERSION = (1, 0)
#: Browsers cannot set headers on a WebSocket: they offer ``bearer.<token>`` as a second
#: subprotocol, which the server never selects (so it is never echoed back).
BEARER_SUBPROTOCOL_PREFIX = "bearer."
#: Largest inbound message, bytes (a command or a subscription is far smaller).
MAX_INBOUND_BYTES = 64 * 1024
#: Quaternions travel as signed normalized 16-bit integers: component = int16 / 32767.
QUAT_SCALE = 32767.0


class MsgType(StrEnum):
    # server -> client
    HELLO = "hello"
    JOINED = "joined"
    SNAPSHOT = "snapshot"
    DELTA = "delta"
    ALARM = "alarm"
    COMMAND_RESULT = "command_result"
    ERROR = "error"
    PONG = "pong"
    # client -> server
    JOIN = "join"
    SUBSCRIBE = "subscribe"
    RESYNC = "resync"
    COMMAND = "command"
    PING = "ping"
    TELEMETRY = "telemetry"  # gateways that push (role gateway)


CLIENT_TYPES = frozenset(
    {
        MsgType.JOIN,
        MsgType.SUBSCRIBE,
        MsgType.RESYNC,
        MsgType.COMMAND,
        MsgType.PING,
        MsgType.TELEMETRY,
    }
)
SERVER_TYPES = frozenset(set(MsgType) - CLIENT_TYPES)


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (RFC 6455 ones, then the 4000-4999 private range)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server shuts down
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003  # a text frame
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    JOIN_TIMEOUT = 4001  # no ``join`` within the join timeout
    TOO_MANY_ERRORS = 4002  # too many invalid messages
    EVENTS_OVERFLOW = 4008  # the client fell so far behind that reliable events were lost


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` message (and of a refused ``command_result``)."""

    MALFORMED = "malformed"  # not msgpack, not a map, or no string ``type``
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"  # a field is missing, of the wrong type or out of range
    UNEXPECTED = "unexpected"  # a valid message at the wrong time (e.g. before ``join``)
    TOO_BIG = "too_big"
    TEXT_FRAME = "text_frame"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"  # the role may not use this action
    RATE_LIMITED = "rate_limited"
    UNKNOWN_ACTION = "unknown_action"
    INVALID_ARGS = "invalid_args"
    FAILED = "failed"  # the action ran and failed


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    TRAINER = "trainer"
    DESIGNER = "designer"
    ADMIN = "admin"
    GATEWAY = "gateway"  # a machine that pushes telemetry; may do nothing else


# -- codec ---------------------------------------------------------------------------------------


def encode(msg: Mapping[str, Any]) -> bytes:
    """One message to its msgpack bytes (binary as ``bin``, strings as ``str``)."""
    data: bytes = msgpack.packb(msg, use_bin_type=True)
    return data


def decode(data: bytes) -> dict[str, Any]:
    """Bytes to a message map with a string ``type``; raises ``RemoteProtocolError(MALFORMED)``."""
    from .errors import RemoteProtocolError

    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"not msgpack: {exc}") from exc
    if not isinstance(msg, dict):
        raise RemoteProtocolError(ErrorCode.MALFORMED, "a message must be a map")
    if not isinstance(msg.get("type"), str):
        raise RemoteProtocolError(ErrorCode.MALFORMED, "a message needs a string 'type'")
    return msg


# -- client messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Interest:
    """What a client wants to receive: entity ``ids`` (an id, or a prefix ending in ``/``),
    an ``area`` ``(xmin, ymin, xmax, ymax)`` in metres on the floor, and at most ``max_hz``
    frames a second. Empty ``ids`` and no ``area`` mean the whole scene."""

    ids: tuple[str, ...] = ()
    area: tuple[float, float, float, float] | None = None
    max_hz: float | None = None

    @property
    def filtered(self) -> bool:
        return bool(self.ids) or self.area is not None

    def wants_id(self, entity_id: str) -> bool:
        if not self.ids:
            return True
        return any(
            entity_id == i or (i.endswith("/") and entity_id.startswith(i)) for i in self.ids
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Join:
    """client -> server, first message: join fresh, or resume ``session`` from ``last_seq``
    (state) and ``last_eseq`` (events)."""

    session: str | None = None
    last_seq: int | None = None
    last_eseq: int | None = None
    interest: Interest = field(default_factory=Interest)


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe:
    """client -> server: replace the interest; a snapshot of the new view follows."""

    interest: Interest


@dataclass(frozen=True, slots=True, kw_only=True)
class Resync:
    """client -> server: the replica is out of step; a snapshot follows."""

    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """client -> server: run ``action`` on ``target``. ``id`` makes it idempotent."""

    id: str
    target: str
    action: str
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    """client -> server: answered by a ``pong`` with the same ``nonce``."""

    nonce: int | str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryBatch:
    """client -> server (role ``gateway``): tag values pushed by a gateway. Each item is a map
    with a string ``address`` and a ``value``, optionally ``ts`` and ``quality``; the twin judges
    the rest (``docs/telemetry.md``)."""

    samples: tuple[Mapping[str, Any], ...]


ClientMessage = Join | Subscribe | Resync | Command | Ping | TelemetryBatch


def _bad(reason: str) -> Exception:
    from .errors import RemoteProtocolError

    return RemoteProtocolError(ErrorCode.BAD_FIELD, reason)


def _opt_int(msg: Mapping[str, Any], name: str) -> int | None:
    v = msg.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _bad(f"'{name}' must be a non-negative integer")
    return v


def _str(msg: Mapping[str, Any], name: str, *, max_len: int = 256, required: bool = True) -> str:
    v = msg.get(name)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise _bad(f"'{name}' must be a non-empty string of at most {max_len} characters")
    return v


def parse_interest(msg: Mapping[str, Any]) -> Interest:
    """The ``ids``, ``area`` and ``max_hz`` fields of a ``join`` or ``subscribe``."""
    ids = msg.get("ids", [])
    if not isinstance(ids, list) or len(ids) > 10_000 or not all(isinstance(i, str) for i in ids):
        raise _bad("'ids' must be a list of strings (at most 10,000)")
    area = msg.get("area")
    if area is not None:
        if (
            not isinstance(area, list)
            or len(area) != 4
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in area)
            or not all(math.isfinite(a) for a in area)
            or area[0] > area[2]
            or area[1] > area[3]
        ):
            raise _bad("'area' must be [xmin, ymin, xmax, ymax], finite, min <= max")
        area = (float(area[0]), float(area[1]), float(area[2]), float(area[3]))
    max_hz = msg.get("max_hz")
    if max_hz is not None:
        if (
            not isinstance(max_hz, (int, float))
            or isinstance(max_hz, bool)
            or not math.isfinite(max_hz)
            or max_hz <= 0
        ):
            raise _bad("'max_hz' must be a positive number")
        max_hz = float(max_hz)
    return Interest(ids=tuple(ids), area=area, max_hz=max_hz)


def parse_client(msg: Mapping[str, Any]) -> ClientMessage:
    """Validate a decoded client message; raises ``RemoteProtocolError`` with the code to send."""
    from .errors import RemoteProtocolError

    kind = msg["type"]
    if kind == MsgType.JOIN:
        session = msg.get("session")
        if session is not None and (not isinstance(session, str) or len(session) > 64):
            raise _bad("'session' must be a string of at most 64 characters")
        return Join(
            session=session,
            last_seq=_opt_int(msg, "last_seq"),
            last_eseq=_opt_int(msg, "last_eseq"),
            interest=parse_interest(msg),
        )
    if kind == MsgType.SUBSCRIBE:
        return Subscribe(interest=parse_interest(msg))
    if kind == MsgType.RESYNC:
        reason = msg.get("reason", "")
        if not isinstance(reason, str):
            raise _bad("'reason' must be a string")
        return Resync(reason=reason[:200])
    if kind == MsgType.COMMAND:
        args = msg.get("args", {})
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            raise _bad("'args' must be a map with string keys")
        return Command(
            id=_str(msg, "id", max_len=128),
            target=_str(msg, "target"),
            action=_str(msg, "action", max_len=64),
            args=args,
        )
    if kind == MsgType.TELEMETRY:
        samples = msg.get("samples")
        if (
            not isinstance(samples, list)
            or not samples
            or not all(isinstance(x, dict) and isinstance(x.get("address"), str) for x in samples)
        ):
            raise _bad("'samples' must be a non-empty list of maps with a string 'address'")
        return TelemetryBatch(samples=tuple(samples))
    if kind == MsgType.PING:
        nonce = msg.get("nonce")
        if nonce is not None and not isinstance(nonce, (int, str)):
            raise _bad("'nonce' must be an integer or a string")
        return Ping(nonce=nonce)
    if kind in SERVER_TYPES:
        raise RemoteProtocolError(ErrorCode.UNEXPECTED, f"'{kind}' is a server message")
    raise RemoteProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type '{kind[:64]}'")


def serialize_client(m: ClientMessage) -> dict[str, Any]:
    """The wire map of a client message (the inverse of :func:`parse_client`)."""

    def interest(i: Interest) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if i.ids:
            out["ids"] = list(i.ids)
        if i.area is not None:
            out["area"] = list(i.area)
        if i.max_hz is not None:
            out["max_hz"] = i.max_hz
        return out

    if isinstance(m, Join):
        d: dict[str, Any] = {"type": MsgType.JOIN.value, **interest(m.interest)}
        for k in ("session", "last_seq", "last_eseq"):
            if getattr(m, k) is not None:
                d[k] = getattr(m, k)
        return d
    if isinstance(m, Subscribe):
        return {"type": MsgType.SUBSCRIBE.value, **interest(m.interest)}
    if isinstance(m, Resync):
        return {"type": MsgType.RESYNC.value, "reason": m.reason}
    if isinstance(m, Command):
        return {
            "type": MsgType.COMMAND.value,
            "id": m.id,
            "target": m.target,
            "action": m.action,
            "args": dict(m.args),
        }
    if isinstance(m, TelemetryBatch):
        return {"type": MsgType.TELEMETRY.value, "samples": [dict(x) for x in m.samples]}
    return {"type": MsgType.PING.value, "nonce": m.nonce}


# -- the transform block -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transforms:
    """Poses of ``n`` entities as struct-of-arrays: ``ids`` u32 handles, ``pos`` f32 (n, 3)
    metres, ``quat`` f32 (n, 4) ``(x, y, z, w)``."""

    ids: NDArray[np.uint32]
    pos: NDArray[np.float32]
    quat: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def pack_transforms(ids: NDArray[Any], pos: NDArray[Any], quat: NDArray[Any]) -> dict[str, Any]:
    """The wire map ``{"n", "ids", "pos", "rot"}``: little-endian ``u32[n]``, ``f32[n*3]`` and
    ``i16[n*4]`` (normalized quaternions times 32767, rounded), one ``bin`` each."""
    q = np.clip(np.rint(np.asarray(quat, np.float64) * QUAT_SCALE), -32767, 32767)
    return {
        "n": int(ids.shape[0]),
        "ids": np.ascontiguousarray(ids, dtype="<u4").tobytes(),
        "pos": np.ascontiguousarray(pos, dtype="<f4").tobytes(),
        "rot": np.ascontiguousarray(q, dtype="<i2").tobytes(),
    }


def unpack_transforms(block: Mapping[str, Any]) -> Transforms:
    """The inverse of :func:`pack_transforms`, with no per-element loop; quaternions are
    renormalized. Raises ``RemoteProtocolError(BAD_FIELD)`` on inconsistent lengths."""
    n, ids, pos, rot = block.get("n"), block.get("ids"), block.get("pos"), block.get("rot")
    if (
        not isinstance(n, int)
        or n < 0
        or not isinstance(ids, bytes)
        or not isinstance(pos, bytes)
        or not isinstance(rot, bytes)
        or len(ids) != 4 * n
        or len(pos) != 12 * n
        or len(rot) != 8 * n
    ):
        raise _bad("transform block: 'n', 'ids', 'pos', 'rot' are inconsistent")
    q = np.frombuffer(rot, dtype="<i2").reshape(n, 4).astype(np.float32) / np.float32(QUAT_SCALE)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.maximum(norm, 1e-12), np.array([0, 0, 0, 1], np.float32))
    return Transforms(
        np.frombuffer(ids, dtype="<u4").astype(np.uint32),
        np.frombuffer(pos, dtype="<f4").reshape(n, 3).astype(np.float32),
        q.astype(np.float32),
    )
