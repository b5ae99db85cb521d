"""The server's protocol core: sessions, their state machine, frames per tick, commands, events.

Sans-I/O, in the python-websockets manner: the driver hands a :class:`Hub` what arrived
(:meth:`Hub.receive`), tells it when a tick ends (:meth:`Hub.tick`), and asks what to send to each
client it can write to (:meth:`Hub.frames`) and what to send right away (``session.outbox``,
``session.close_request``). Nothing here touches a socket, a clock it was not given, or asyncio.

The session state machine (every rule that moves a session is in :data:`TRANSITIONS`)::

    AWAIT_JOIN --join--> LIVE --(subscribe | resync | command | ping)--> LIVE
    any --(close by either side)--> CLOSED

State traffic is latest-value: a session remembers the ``seq`` it last received and gets, when it
can take a frame, one delta from there to now (so a slow client gets fewer, fresher frames and
nothing queues). Deltas for the same base are encoded once per tick and shared. Events (alarms,
command results) are reliable and ordered: one bounded log with a global ``eseq``; a session that
falls off its start is closed with ``EVENTS_OVERFLOW`` and recovers by reconnecting.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .auth import AuditRecord, Principal
from .errors import RemoteProtocolError
from .protocol import (
    MAX_INBOUND_BYTES,
    SUBPROTOCOL,
    VERSION,
    CloseCode,
    Command,
    ErrorCode,
    Interest,
    Join,
    MsgType,
    Ping,
    Resync,
    Role,
    Subscribe,
    TelemetryBatch,
    decode,
    encode,
    parse_client,
)
from .store import SceneStore, delta_message, snapshot_messages

log = logging.getLogger(__name__)


class SessionState(Enum):
    AWAIT_JOIN = "await_join"
    LIVE = "live"
    CLOSED = "closed"


#: Every transition of a session, as data: state -> client message type -> next state.
#: A message type missing from a state's row is answered with ``error: unexpected``.
TRANSITIONS: Mapping[SessionState, Mapping[MsgType, SessionState]] = {
    SessionState.AWAIT_JOIN: {
        MsgType.JOIN: SessionState.LIVE,
        MsgType.PING: SessionState.AWAIT_JOIN,
        MsgType.TELEMETRY: SessionState.AWAIT_JOIN,  # a gateway need not join
    },
    SessionState.LIVE: {
        MsgType.SUBSCRIBE: SessionState.LIVE,
        MsgType.RESYNC: SessionState.LIVE,
        MsgType.COMMAND: SessionState.LIVE,
        MsgType.PING: SessionState.LIVE,
        MsgType.TELEMETRY: SessionState.LIVE,
    },
    SessionState.CLOSED: {},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What a command handler returns: ``ok``, and when refused or failed a ``code`` and a
    ``reason``; ``result`` is any msgpack-able detail for the client."""

    ok: bool
    code: str = ""
    reason: str = ""
    result: Any = None


Handler = Callable[[Principal, Command], Outcome]


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSpec:
    """An action clients may request: who may (``roles``; ``admin`` always may) and what runs."""

    action: str
    roles: frozenset[Role]
    handler: Handler
    description: str = ""


class CommandRegistry:
    """The actions a server offers, by name."""

    def __init__(self) -> None:
        self._specs: dict[str, CommandSpec] = {}

    def register(
        self,
        action: str,
        roles: set[Role] | frozenset[Role],
        handler: Handler,
        description: str = "",
    ) -> None:
        self._specs[action] = CommandSpec(
            action=action, roles=frozenset(roles), handler=handler, description=description
        )

    def get(self, action: str) -> CommandSpec | None:
        return self._specs.get(action)

    def allowed(self, role: Role) -> list[str]:
        """The actions ``role`` may use, sorted (the ``capabilities`` of ``hello``)."""
        return sorted(a for a, s in self._specs.items() if role is Role.ADMIN or role in s.roles)


@dataclass(slots=True, kw_only=True)
class Session:
    """One client connection's protocol state (the driver owns the socket)."""

    id: str
    principal: Principal
    state: SessionState = SessionState.AWAIT_JOIN
    interest: Interest = field(default_factory=Interest)
    last_seq: int | None = None  # seq of the last state frame sent; None: a snapshot is due
    visible: set[int] | None = None  # handles shown, for a filtered interest
    every: int = 1  # send a state frame at most every this many ticks
    next_due: int = 0  # the first tick (store seq) at which a state frame may go
    ev_next: int = 0  # eseq of the next event to send
    ev_first: int = 0  # eseq from which this session is owed events (its join point)
    errors: int = 0
    tokens: float = 0.0  # command rate-limit bucket
    tokens_at: float = 0.0
    outbox: list[bytes] = field(default_factory=list)  # send now, before any frame
    close_request: tuple[CloseCode, str] | None = None
    frames_sent: int = 0
    snapshots_sent: int = 0


@dataclass(slots=True)
class _Parked:
    principal: Principal
    interest: Interest
    visible: set[int] | None
    until: float
    ev_first: int  # the first eseq the session was owed (its join point)


class _ThrottledLog:
    """Log at most one warning per reason a second, with how many were suppressed."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warn(self, reason: str, message: str) -> None:
        now = self._clock()
        if now - self._last.get(reason, -math.inf) >= 1.0:
            extra = self._suppressed.pop(reason, 0)
            more = f" (+{extra} more since the last report)" if extra else ""
            log.warning("%s%s", message, more)
            self._last[reason] = now
        else:
            self._suppressed[reason] += 1


class Hub:
    """The sans-I/O server: one store, many sessions."""

    def __init__(
        self,
        store: SceneStore,
        *,
        tick_hz: float = 30.0,
        commands: CommandRegistry | None = None,
        audit: Callable[[AuditRecord], None] | None = None,
        clock: Callable[[], float] = time.time,
        event_log: int = 4096,
        max_errors: int = 20,
        command_rate: float = 10.0,
        command_burst: int = 20,
        resume_s: float = 60.0,
        chunk_entities: int = 2000,
        ingest: Callable[[Principal, list[Mapping[str, Any]]], None] | None = None,
    ) -> None:
        if not 1 <= tick_hz <= 120:
            raise ValueError("tick_hz must be within 1..120")
        self.store = store
        self.tick_hz = float(tick_hz)
        self.commands = commands or CommandRegistry()
        self.audit = audit
        self.clock = clock
        self.max_errors = max_errors
        self.command_rate = command_rate
        self.command_burst = command_burst
        self.resume_s = resume_s
        self.chunk_entities = chunk_entities
        #: where pushed telemetry goes (the live twin), or None: refused
        self.ingest = ingest
        self.t = 0.0  # the scene's own time (simulated or twin time), set by the driver
        self.ts = 0.0  # wall clock of the last tick
        self.metrics: Counter[str] = Counter()
        self.sessions: dict[str, Session] = {}
        self._parked: OrderedDict[str, _Parked] = OrderedDict()
        self._events: deque[tuple[int, str | None, bytes]] = deque(maxlen=event_log)
        self._eseq = 0  # eseq of the next event
        self._delta_cache: dict[int, bytes] = {}
        self._snapshot_cache: list[bytes] | None = None
        self._results: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._throttle = _ThrottledLog(clock)

    # -- connections -----------------------------------------------------------------------------

    def open(self, principal: Principal) -> Session:
        """A new connection by ``principal``: its ``hello`` is in ``session.outbox``."""
        s = Session(id=secrets.token_hex(8), principal=principal)
        s.tokens, s.tokens_at = float(self.command_burst), self.clock()
        self.sessions[s.id] = s
        s.outbox.append(
            encode(
                {
                    "type": MsgType.HELLO.value,
                    "protocol": SUBPROTOCOL,
                    "version": list(VERSION),
                    "session": s.id,
                    "tick_hz": self.tick_hz,
                    "role": principal.role.value,
                    "name": principal.name,
                    "capabilities": self.commands.allowed(principal.role),
                    "max_message_bytes": MAX_INBOUND_BYTES,
                }
            )
        )
        self.metrics["connections.opened"] += 1
        return s

    def close(self, s: Session) -> None:
        """The connection ended (either side). A joined session is kept ``resume_s`` seconds
        so the client can resume it."""
        if s.state is SessionState.CLOSED:
            return
        if s.state is SessionState.LIVE:
            self._parked[s.id] = _Parked(
                s.principal, s.interest, s.visible, self.clock() + self.resume_s, s.ev_first
            )
            while len(self._parked) > 10_000:
                self._parked.popitem(last=False)
        s.state = SessionState.CLOSED
        self.sessions.pop(s.id, None)
        self.metrics["connections.closed"] += 1

    # -- inbound ---------------------------------------------------------------------------------

    def receive(self, s: Session, data: bytes | str) -> None:
        """One inbound WebSocket message. Never raises for bad input: it becomes an ``error``
        message (or a close request), is counted in ``metrics`` and logged (throttled)."""
        if s.state is SessionState.CLOSED:
            return
        try:
            if isinstance(data, str):
                raise RemoteProtocolError(ErrorCode.TEXT_FRAME, "send binary frames (msgpack)")
            if len(data) > MAX_INBOUND_BYTES:
                raise RemoteProtocolError(
                    ErrorCode.TOO_BIG, f"message over {MAX_INBOUND_BYTES} bytes"
                )
            raw = decode(data)
            msg = parse_client(raw)
            kind = MsgType(raw["type"])
            nxt = TRANSITIONS[s.state].get(kind)
            if nxt is None:
                raise RemoteProtocolError(
                    ErrorCode.UNEXPECTED, f"'{kind.value}' is not allowed in state {s.state.value}"
                )
            self._handle(s, msg)
            s.state = nxt
        except RemoteProtocolError as exc:
            self._reject(s, exc)

    def _reject(self, s: Session, exc: RemoteProtocolError) -> None:
        self.metrics[f"rejected.{exc.code.value}"] += 1
        s.errors += 1
        self._throttle.warn(
            exc.code.value,
            f"session {s.id} ({s.principal.name}): rejected message: {exc.code.value}: "
            f"{exc.reason[:200]}",
        )
        s.outbox.append(
            encode({"type": MsgType.ERROR.value, "code": exc.code.value, "reason": exc.reason})
        )
        if exc.code is ErrorCode.TOO_BIG:
            s.close_request = (CloseCode.MESSAGE_TOO_BIG, "message too big")
        elif s.errors > self.max_errors:
            s.close_request = (CloseCode.TOO_MANY_ERRORS, "too many invalid messages")

    def _handle(self, s: Session, msg: Any) -> None:
        if isinstance(msg, Join):
            self._join(s, msg)
        elif isinstance(msg, Subscribe):
            self._set_interest(s, msg.interest)
            s.last_seq = None
        elif isinstance(msg, Resync):
            self.metrics["resyncs"] += 1
            s.last_seq = None
        elif isinstance(msg, Command):
            self._command(s, msg)
        elif isinstance(msg, TelemetryBatch):
            self._telemetry(s, msg)
        elif isinstance(msg, Ping):
            s.outbox.append(
                encode({"type": MsgType.PONG.value, "nonce": msg.nonce, "ts": self.clock()})
            )

    def _set_interest(self, s: Session, interest: Interest) -> None:
        s.interest = interest
        s.visible = None
        s.every = 1
        if interest.max_hz is not None and interest.max_hz < self.tick_hz:
            s.every = max(1, math.ceil(self.tick_hz / interest.max_hz - 1e-9))

    def _join(self, s: Session, m: Join) -> None:
        self._expire_parked()
        self._set_interest(s, m.interest)
        resumed = False
        parked = self._parked.get(m.session) if m.session else None
        if parked is not None and parked.principal == s.principal and m.session:
            del self._parked[m.session]
            self.sessions.pop(s.id, None)
            s.id = m.session
            self.sessions[s.id] = s
            if (
                m.last_seq is not None
                and self.store.oldest_base <= m.last_seq <= self.store.seq
                and (not m.interest.filtered or parked.visible is not None)
                and m.interest == parked.interest
            ):
                s.last_seq = m.last_seq
                s.visible = parked.visible
                resumed = True
        # Events owed: after the client's last_eseq, or (when it received none) from the point
        # the resumed session joined; otherwise from now on.
        events_lost = False
        first = self._events[0][0] if self._events else self._eseq
        if resumed and parked is not None:
            owed = parked.ev_first if m.last_eseq is None else m.last_eseq + 1
            events_lost = owed < first
            s.ev_next = max(owed, first)
        else:
            s.ev_next = self._eseq
        s.ev_first = s.ev_next
        self.metrics["joins.resumed" if resumed else "joins.fresh"] += 1
        s.outbox.append(
            encode(
                {
                    "type": MsgType.JOINED.value,
                    "session": s.id,
                    "resumed": resumed,
                    "seq": self.store.seq,
                    "eseq": s.ev_next,
                    "events_lost": events_lost,
                }
            )
        )

    # -- telemetry pushed by gateways --------------------------------------------------------------

    def _telemetry(self, s: Session, m: TelemetryBatch) -> None:
        if s.principal.role not in (Role.GATEWAY, Role.ADMIN):
            raise RemoteProtocolError(
                ErrorCode.FORBIDDEN, f"role '{s.principal.role.value}' may not push telemetry"
            )
        if self.ingest is None:
            raise RemoteProtocolError(ErrorCode.UNEXPECTED, "this twin takes no pushed telemetry")
        self.metrics["telemetry.messages"] += 1
        self.metrics["telemetry.samples"] += len(m.samples)
        self.ingest(s.principal, list(m.samples))

    # -- commands --------------------------------------------------------------------------------

    def _command(self, s: Session, c: Command) -> None:
        p = s.principal
        now = self.clock()
        s.tokens = min(
            float(self.command_burst), s.tokens + (now - s.tokens_at) * self.command_rate
        )
        s.tokens_at = now
        if s.tokens < 1.0:
            self.metrics["commands.rate_limited"] += 1
            self._result(
                s,
                c,
                Outcome(
                    ok=False,
                    code=ErrorCode.RATE_LIMITED.value,
                    reason="too many commands: slow down",
                ),
                cache=False,
            )
            return
        s.tokens -= 1.0
        cached = self._results.get((p.name, c.id))
        if cached is not None:
            self.metrics["commands.duplicate"] += 1
            self._post(s.id, {**cached, "duplicate": True})
            self._audit(
                s,
                c,
                Outcome(
                    ok=bool(cached["ok"]),
                    code=cached.get("code", ""),
                    reason=cached.get("reason", ""),
                ),
                duplicate=True,
            )
            return
        spec = self.commands.get(c.action)
        if spec is None:
            out = Outcome(
                ok=False, code=ErrorCode.UNKNOWN_ACTION.value, reason=f"unknown action '{c.action}'"
            )
        elif p.role is not Role.ADMIN and p.role not in spec.roles:
            need = ", ".join(sorted(r.value for r in spec.roles | {Role.ADMIN}))
            out = Outcome(
                ok=False,
                code=ErrorCode.FORBIDDEN.value,
                reason=f"role '{p.role.value}' may not '{c.action}' (needs: {need})",
            )
        else:
            try:
                out = spec.handler(p, c)
            except Exception as exc:  # a failing handler is the command's result, not a crash
                log.exception("command %s on %s failed", c.action, c.target)
                out = Outcome(
                    ok=False, code=ErrorCode.FAILED.value, reason=f"{type(exc).__name__}: {exc}"
                )
        self.metrics["commands.ok" if out.ok else f"commands.refused.{out.code}"] += 1
        self._result(s, c, out, cache=True)

    def _result(self, s: Session, c: Command, out: Outcome, *, cache: bool) -> None:
        body: dict[str, Any] = {"type": MsgType.COMMAND_RESULT.value, "id": c.id, "ok": out.ok}
        if not out.ok:
            body["code"] = out.code
            body["reason"] = out.reason
        if out.result is not None:
            body["result"] = out.result
        if cache:
            self._results[(s.principal.name, c.id)] = body
            while len(self._results) > 4096:
                self._results.popitem(last=False)
        self._post(s.id, body)
        self._audit(s, c, out, duplicate=False)

    def _audit(self, s: Session, c: Command, out: Outcome, *, duplicate: bool) -> None:
        if self.audit is None:
            return
        self.audit(
            AuditRecord(
                ts=self.clock(),
                who=s.principal.name,
                role=s.principal.role.value,
                session=s.id,
                command_id=c.id,
                target=c.target,
                action=c.action,
                args=c.args,
                ok=out.ok,
                code=out.code,
                reason=out.reason,
                duplicate=duplicate,
            )
        )

    # -- events ----------------------------------------------------------------------------------

    def _post(self, audience: str | None, body: Mapping[str, Any]) -> int:
        eseq = self._eseq
        self._eseq += 1
        self._events.append((eseq, audience, encode({**body, "eseq": eseq})))
        return eseq

    def post_alarm(self, alarm: Mapping[str, Any]) -> int:
        """Send an ``alarm`` event (``{id, entity, severity, state, text, t}``) to every
        session, reliably and in order; returns its ``eseq``."""
        self.metrics["events.alarm"] += 1
        return self._post(None, {"type": MsgType.ALARM.value, "alarm": dict(alarm)})

    # -- ticks and frames ------------------------------------------------------------------------

    def tick(self, t: float | None = None) -> int:
        """Close a tick of the store (``t``: the scene's time); returns its ``seq``."""
        if t is not None:
            self.t = float(t)
        self.ts = self.clock()
        seq = self.store.commit()
        self._delta_cache.clear()
        self._snapshot_cache = None
        return seq

    def frames(self, s: Session) -> list[bytes]:
        """What ``s`` should get now that it can take a frame: new events, then at most one
        state frame (a snapshot in chunks, or one delta). Call once per tick for each session
        whose socket is not backed up; a session skipped keeps its base and catches up later."""
        if s.state is not SessionState.LIVE or s.close_request is not None:
            return []
        out: list[bytes] = []
        first = self._events[0][0] if self._events else self._eseq
        if s.ev_next < first:
            self.metrics["events.overflow"] += 1
            s.close_request = (CloseCode.EVENTS_OVERFLOW, "too far behind: events lost")
            return []
        if s.ev_next < self._eseq:
            for eseq, audience, data in self._events:
                if eseq >= s.ev_next and (audience is None or audience == s.id):
                    out.append(data)
            s.ev_next = self._eseq
        seq = self.store.seq
        if seq < s.next_due or s.last_seq == seq:
            return out
        frame = self._state_frames(s)
        out.extend(frame)
        s.last_seq = seq
        s.next_due = seq + s.every
        s.frames_sent += 1
        return out

    def _state_frames(self, s: Session) -> list[bytes]:
        store = self.store
        filtered = s.interest.filtered
        if s.last_seq is not None:
            if not filtered:
                cached = self._delta_cache.get(s.last_seq)
                if cached is not None:
                    self.metrics["frames.shared"] += 1
                    return [cached]
                ch = store.changes(s.last_seq)
                if ch is not None:
                    data = encode(delta_message(ch, t=self.t, ts=self.ts))
                    self._delta_cache[s.last_seq] = data
                    self.metrics["frames.encoded"] += 1
                    return [data]
            elif s.visible is not None:
                vis = store.visible(s.interest)
                ch = store.changes(s.last_seq, visible=vis, was_visible=s.visible)
                if ch is not None:
                    s.visible = vis
                    self.metrics["frames.encoded"] += 1
                    return [encode(delta_message(ch, t=self.t, ts=self.ts))]
        s.snapshots_sent += 1
        self.metrics["snapshots"] += 1
        if filtered:
            vis = store.visible(s.interest)
            s.visible = vis
            snap = store.snapshot(visible=vis)
            return [
                encode(m)
                for m in snapshot_messages(
                    snap, t=self.t, ts=self.ts, chunk_entities=self.chunk_entities
                )
            ]
        if self._snapshot_cache is None:
            snap = store.snapshot()
            self._snapshot_cache = [
                encode(m)
                for m in snapshot_messages(
                    snap, t=self.t, ts=self.ts, chunk_entities=self.chunk_entities
                )
            ]
        return list(self._snapshot_cache)

    def _expire_parked(self) -> None:
        now = self.clock()
        for sid in [k for k, v in self._parked.items() if v.until < now]:
            del self._parked[sid]
