"""The session machine and the command path of the hub, without sockets."""

from __future__ import annotations

from typing import Any

import pytest

from streaming.auth import AuditRecord, Principal
from streaming.hub import TRANSITIONS, CommandRegistry, Hub, Outcome, Session, SessionState
from streaming.protocol import CLIENT_TYPES, CloseCode, Command, MsgType, Role, decode, encode
from streaming.store import SceneStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_hub(**kw: Any) -> tuple[Hub, list[AuditRecord], list[str], Clock]:
    store = SceneStore(history=kw.pop("history", 300))
    store.add("station/a", "station", state={"state": "busy"})
    ran: list[str] = []
    reg = CommandRegistry()

    def ack(p: Principal, c: Command) -> Outcome:
        ran.append(c.id)
        return Outcome(ok=True, result={"by": p.name})

    def boom(p: Principal, c: Command) -> Outcome:
        raise RuntimeError("handler bug")

    reg.register("alarm.ack", {Role.OPERATOR}, ack)
    reg.register("sim.pause", {Role.TRAINER}, ack)
    reg.register("broken", {Role.OPERATOR}, boom)
    audit: list[AuditRecord] = []
    clock = Clock()
    hub = Hub(store, commands=reg, audit=audit.append, clock=clock, **kw)
    hub.tick()
    return hub, audit, ran, clock


def outbox(s: Session) -> list[dict[str, Any]]:
    out = [decode(b) for b in s.outbox]
    s.outbox.clear()
    return out


def joined(hub: Hub, role: Role = Role.OPERATOR, name: str = "ann") -> Session:
    s = hub.open(Principal(name=name, role=role))
    hub.receive(s, encode({"type": "join"}))
    assert [m["type"] for m in outbox(s)] == ["hello", "joined"]
    return s


def command(hub: Hub, s: Session, cid: str, action: str = "alarm.ack") -> dict[str, Any]:
    hub.receive(s, encode({"type": "command", "id": cid, "target": "alarm/1", "action": action}))
    results = [decode(b) for b in hub.frames(s) if decode(b)["type"] == "command_result"]
    assert len(results) == 1
    return results[0]


def test_the_transition_table_covers_every_client_message() -> None:
    used = {t for row in TRANSITIONS.values() for t in row}
    assert used == set(CLIENT_TYPES)
    assert TRANSITIONS[SessionState.CLOSED] == {}


def test_hello_names_role_and_capabilities() -> None:
    hub, *_ = make_hub(tick_hz=20)
    s = hub.open(Principal(name="tom", role=Role.TRAINER))
    (hello,) = outbox(s)
    assert (
        hello["type"] == "hello" and hello["protocol"] == "twin.v1" and hello["version"] == [1, 0]
    )
    assert hello["role"] == "trainer" and hello["tick_hz"] == 20.0 and hello["session"] == s.id
    assert hello["capabilities"] == ["sim.pause"]
    admin = hub.open(Principal(name="root", role=Role.ADMIN))
    assert outbox(admin)[0]["capabilities"] == ["alarm.ack", "broken", "sim.pause"]


def test_messages_before_join_are_unexpected_and_nothing_is_sent() -> None:
    hub, *_ = make_hub()
    s = hub.open(Principal(name="ann", role=Role.OPERATOR))
    outbox(s)
    hub.receive(s, encode({"type": "resync"}))
    hub.receive(s, encode({"type": "ping", "nonce": 7}))
    msgs = outbox(s)
    assert msgs[0]["type"] == "error" and msgs[0]["code"] == "unexpected"
    assert msgs[1]["type"] == "pong" and msgs[1]["nonce"] == 7
    hub.tick()
    assert hub.frames(s) == []  # not joined: no state
    assert s.state is SessionState.AWAIT_JOIN
    hub.receive(s, encode({"type": "join"}))
    hub.receive(s, encode({"type": "join"}))  # twice
    assert outbox(s)[-1]["code"] == "unexpected"
    assert hub.metrics["rejected.unexpected"] == 2


def test_join_then_snapshot_then_deltas() -> None:
    hub, *_ = make_hub()
    s = joined(hub)
    hub.tick(t=5.0)
    (snap,) = [decode(b) for b in hub.frames(s)]
    assert snap["type"] == "snapshot" and snap["seq"] == hub.store.seq and snap["t"] == 5.0
    assert hub.frames(s) == []  # nothing new within the same tick
    hub.store.set_value("station/a", "state", "down")
    hub.tick(t=6.0)
    (delta,) = [decode(b) for b in hub.frames(s)]
    assert delta["type"] == "delta" and delta["base_seq"] == snap["seq"]
    assert delta["set"] == [[0, {"state": "down"}]]


def test_commands_are_authorized_audited_and_idempotent() -> None:
    hub, audit, ran, _ = make_hub()
    op = joined(hub)
    viewer = joined(hub, Role.VIEWER, "val")
    ok = command(hub, op, "c1")
    assert ok["ok"] is True and ok["result"] == {"by": "ann"}
    again = command(hub, op, "c1")
    assert again["ok"] is True and again["duplicate"] is True
    assert ran == ["c1"]  # ran once
    refused = command(hub, viewer, "c2")
    assert refused["ok"] is False and refused["code"] == "forbidden"
    assert "viewer" in refused["reason"]
    unknown = command(hub, op, "c3", action="self.destruct")
    assert unknown["code"] == "unknown_action"
    failed = command(hub, op, "c4", action="broken")
    assert failed["code"] == "failed" and "handler bug" in failed["reason"]
    assert [(r.who, r.role, r.command_id, r.ok, r.code, r.duplicate) for r in audit] == [
        ("ann", "operator", "c1", True, "", False),
        ("ann", "operator", "c1", True, "", True),
        ("val", "viewer", "c2", False, "forbidden", False),
        ("ann", "operator", "c3", False, "unknown_action", False),
        ("ann", "operator", "c4", False, "failed", False),
    ]
    assert all(r.target == "alarm/1" for r in audit)


def test_command_results_go_only_to_their_session() -> None:
    hub, *_ = make_hub()
    a, b = joined(hub), joined(hub, name="bob")
    hub.tick()
    hub.frames(a), hub.frames(b)
    command(hub, a, "x1")
    hub.tick()
    assert all(decode(m)["type"] != "command_result" for m in hub.frames(b))


def test_commands_are_rate_limited_per_session() -> None:
    hub, audit, ran, clock = make_hub(command_rate=2.0, command_burst=3)
    s = joined(hub)
    codes = [command(hub, s, f"r{i}").get("code", "ok") for i in range(5)]
    assert codes == ["ok", "ok", "ok", "rate_limited", "rate_limited"]
    clock.now += 1.0  # two tokens back
    codes = [command(hub, s, f"q{i}").get("code", "ok") for i in range(3)]
    assert codes == ["ok", "ok", "rate_limited"]
    assert len(ran) == 5 and sum(r.code == "rate_limited" for r in audit) == 3


def test_too_many_invalid_messages_close_the_session() -> None:
    hub, *_ = make_hub(max_errors=3)
    s = joined(hub)
    for _ in range(3):
        hub.receive(s, b"\x00garbage")
    assert s.close_request is None
    hub.receive(s, "a text frame")
    assert s.close_request is not None and s.close_request[0] is CloseCode.TOO_MANY_ERRORS
    assert hub.metrics["rejected.malformed"] == 3 and hub.metrics["rejected.text_frame"] == 1


def test_oversize_messages_close_with_1009() -> None:
    hub, *_ = make_hub()
    s = joined(hub)
    hub.receive(s, encode({"type": "ping", "nonce": "x" * 70_000}))
    assert s.close_request is not None and s.close_request[0] is CloseCode.MESSAGE_TOO_BIG


def test_a_session_that_falls_off_the_event_log_is_closed() -> None:
    hub, *_ = make_hub(event_log=4)
    s = joined(hub)
    hub.tick()
    hub.frames(s)
    for i in range(5):
        hub.post_alarm({"id": f"alarm/{i}"})
    hub.tick()
    assert hub.frames(s) == []
    assert s.close_request is not None and s.close_request[0] is CloseCode.EVENTS_OVERFLOW


def test_alarms_reach_every_session_in_order() -> None:
    hub, *_ = make_hub()
    a, b = joined(hub), joined(hub, Role.VIEWER, "v")
    for i in range(3):
        hub.post_alarm({"id": f"alarm/{i}", "state": "active"})
    hub.tick()
    for s in (a, b):
        alarms = [decode(m) for m in hub.frames(s) if decode(m)["type"] == MsgType.ALARM]
        assert [m["eseq"] for m in alarms] == [0, 1, 2]
        assert [m["alarm"]["id"] for m in alarms] == ["alarm/0", "alarm/1", "alarm/2"]


def test_resume_from_a_held_seq_and_fall_back_to_a_snapshot() -> None:
    hub, _, _, clock = make_hub(history=5)
    s = joined(hub)
    hub.tick()
    hub.frames(s)
    seq, sid = s.last_seq, s.id
    hub.close(s)
    hub.store.set_value("station/a", "state", "down")
    hub.tick()
    # same principal, held seq: resumed with a delta
    r = hub.open(Principal(name="ann", role=Role.OPERATOR))
    outbox(r)
    hub.receive(r, encode({"type": "join", "session": sid, "last_seq": seq}))
    (j,) = outbox(r)
    assert j["resumed"] is True and j["session"] == sid
    hub.tick()
    (d,) = [decode(m) for m in hub.frames(r)]
    assert d["type"] == "delta" and d["base_seq"] == seq
    # another principal cannot take over the session
    hub.close(r)
    x = hub.open(Principal(name="eve", role=Role.OPERATOR))
    outbox(x)
    hub.receive(x, encode({"type": "join", "session": sid, "last_seq": d["seq"]}))
    assert outbox(x)[0]["resumed"] is False
    # a seq older than the history: snapshot
    y = hub.open(Principal(name="ann", role=Role.OPERATOR))
    outbox(y)
    for _ in range(10):
        hub.tick()
    hub.receive(y, encode({"type": "join", "session": sid, "last_seq": seq}))
    assert outbox(y)[0]["resumed"] is False
    hub.tick()
    assert decode(hub.frames(y)[0])["type"] == "snapshot"
    # a parked session expires
    hub.close(y)
    clock.now += 120
    z = hub.open(Principal(name="ann", role=Role.OPERATOR))
    outbox(z)
    hub.receive(z, encode({"type": "join", "session": sid, "last_seq": hub.store.seq}))
    assert outbox(z)[0]["resumed"] is False


def test_max_hz_thins_frames() -> None:
    hub, *_ = make_hub(tick_hz=30)
    s = hub.open(Principal(name="ann", role=Role.VIEWER))
    hub.receive(s, encode({"type": "join", "max_hz": 10}))
    got = 0
    for _ in range(30):
        hub.tick()
        got += len(hub.frames(s))
    assert got == 10


@pytest.mark.parametrize("hz", [0.5, 121])
def test_tick_rate_is_bounded(hz: float) -> None:
    with pytest.raises(ValueError, match="tick_hz"):
        Hub(SceneStore(), tick_hz=hz)


def test_pushed_telemetry_is_for_gateways_only() -> None:
    got: list[tuple[str, list[Any]]] = []
    hub, *_ = make_hub()
    hub.ingest = lambda p, items: got.append((p.name, items))
    gw = hub.open(Principal(name="gw1", role=Role.GATEWAY))
    outbox(gw)
    msg = encode({"type": "telemetry", "samples": [{"address": "a/b", "value": 1}]})
    hub.receive(gw, msg)  # no join needed
    assert got == [("gw1", [{"address": "a/b", "value": 1}])] and outbox(gw) == []
    assert gw.state is SessionState.AWAIT_JOIN and hub.metrics["telemetry.samples"] == 1
    op = joined(hub)
    hub.receive(op, msg)
    assert outbox(op)[0]["code"] == "forbidden" and len(got) == 1
    hub.ingest = None
    hub.receive(gw, msg)
    assert outbox(gw)[0]["code"] == "unexpected"
