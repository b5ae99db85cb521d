"""The WebSocket driver for real, over loopback: a ``TwinServer`` on 127.0.0.1 (port 0) and real
``websockets`` clients (``TwinClient``, raw connections and a hand-made TCP handshake).

Covers convergence of many clients joining while the scene changes, backpressure from a client
that never reads, the gap (resync) and reconnect (resume or snapshot) paths, every security rule
of the handshake and of the session, and assets by content hash.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import logging
import os
import socket
import ssl
import struct
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from scenes.assets import AssetStore, cache_headers, publish_box
from streaming.auth import AuditLog, Principal, TokenBook
from streaming.client import TwinClient
from streaming.hub import CommandRegistry, Hub, Outcome
from streaming.protocol import (
    MAX_INBOUND_BYTES,
    SUBPROTOCOL,
    Interest,
    Role,
    decode,
    encode,
    pack_transforms,
    unpack_transforms,
)
from streaming.server import ServerConfig, TwinServer
from streaming.store import SceneStore, snapshot_messages

TOKENS = {
    "vera": (Role.VIEWER, "viewer-token-0123456789abcdef"),
    "otto": (Role.OPERATOR, "operator-token-0123456789abcdef"),
    "tara": (Role.TRAINER, "trainer-token-0123456789abcdef"),
    "stuck": (Role.VIEWER, "stuck-token-0123456789abcdef"),
}
VIEWER = TOKENS["vera"][1]
OPERATOR = TOKENS["otto"][1]

#: A logger for the test's own raw clients: they log their headers, which is no leak of ours.
QUIET = logging.getLogger("tests.raw_client")
QUIET.propagate = False
QUIET.addHandler(logging.NullHandler())


def book() -> TokenBook:
    return TokenBook({tok: Principal(name=name, role=role) for name, (role, tok) in TOKENS.items()})


def run(coro: Coroutine[Any, Any, Any], timeout: float = 40.0) -> Any:
    """Run one scenario on a fresh event loop, with an overall time limit."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll a server-side condition (the server has no notification hook for these)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def serving(
    store: SceneStore | None = None,
    *,
    source: Any = None,
    config: ServerConfig | None = None,
    assets: Any = None,
    **hub_kw: Any,
) -> AsyncIterator[TwinServer]:
    hub = Hub(store if store is not None else SceneStore(), **hub_kw)
    server = TwinServer(hub, book(), config or ServerConfig(port=0), source=source, assets=assets)
    async with server:
        yield server


async def open_raw(
    server: TwinServer,
    token: str | None = VIEWER,
    *,
    subprotocols: tuple[str, ...] = (SUBPROTOCOL,),
    headers: dict[str, str] | None = None,
    origin: str | None = None,
    **kw: Any,
) -> ClientConnection:
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    return await connect(
        server.url,
        subprotocols=list(subprotocols),  # type: ignore[arg-type]
        additional_headers=hdrs,
        origin=origin,  # type: ignore[arg-type]
        compression=None,
        max_size=None,
        logger=QUIET,
        open_timeout=5,
        **kw,
    )


async def recv_until(
    ws: ClientConnection, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> dict[str, Any]:
    """Read messages until one satisfies ``pred``; return it."""

    async def loop() -> dict[str, Any]:
        while True:
            data = await ws.recv()
            assert isinstance(data, bytes), "the server sends binary frames only"
            msg = decode(data)
            if pred(msg):
                return msg

    return await asyncio.wait_for(loop(), timeout)


async def join_raw(ws: ClientConnection) -> dict[str, Any]:
    hello = decode(await ws.recv())  # type: ignore[arg-type]
    assert hello["type"] == "hello"
    await ws.send(encode({"type": "join"}))
    await recv_until(ws, lambda m: m["type"] == "joined")
    return hello


# -- a scene that keeps changing ----------------------------------------------------------------


def unit_quats(rng: np.random.Generator, n: int) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


class Churn:
    """A store source that moves entities, changes components, adds and removes entities every
    tick until ``paused``."""

    def __init__(self, n: int = 60, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.n = n
        self.next = n
        self.ticks = 0
        self.paused = False

    def populate(self, store: SceneStore) -> None:
        for i in range(self.n):
            self._add(store, i)
        store.add("static/floor", "floor", props={"size": [30.0, 10.0]})

    def _add(self, store: SceneStore, i: int) -> None:
        store.add(
            f"mover/{i}",
            "box",
            props={"label": f"m{i}", "size": [1.0, 0.5, 0.25], "tags": {"i": i}},
            pos=self.rng.uniform(-20, 20, 3).tolist(),
            quat=unit_quats(self.rng, 1)[0].tolist(),
            state={"state": "idle", "count": 0},
        )

    def __call__(self, store: SceneStore, wall: float) -> float:
        if self.paused:
            return float(self.ticks)
        self.ticks += 1
        rng = self.rng
        movers = [e for e in store.entities() if e.id.startswith("mover/")]
        k = min(len(movers), 15)
        picked = rng.choice(len(movers), size=k, replace=False)
        handles = np.array([movers[j].handle for j in picked])
        store.set_transforms(
            handles, rng.uniform(-20, 20, (k, 3)).astype(np.float32), unit_quats(rng, k)
        )
        for j in rng.choice(len(movers), size=min(len(movers), 4), replace=False):
            store.update(
                movers[j].id,
                {
                    "state": str(rng.choice(["idle", "busy", "down"])),
                    "count": self.ticks,
                    "temp": float(rng.normal(60, 5)),
                },
            )
        if self.ticks % 3 == 0:
            self._add(store, self.next)
            self.next += 1
        if self.ticks % 4 == 0 and len(movers) > 10:
            store.remove(movers[int(rng.integers(len(movers)))].id)
        return float(self.ticks)


def store_view(store: SceneStore, interest: Interest | None = None) -> dict[str, Any]:
    """What ``Replica.state()`` holds once in step with ``store``: poses as they travel (f32
    positions, quaternions through the int16 wire form), rounded the same way."""
    ents = store.entities()
    if interest is not None:
        vis = store.visible(interest)
        ents = [e for e in ents if e.handle in vis]
    if not ents:
        return {}
    handles = np.array([e.handle for e in ents], np.uint32)
    poses = [store.transform(e.id) for e in ents]
    xf = unpack_transforms(
        msgpack.unpackb(
            msgpack.packb(
                pack_transforms(
                    handles, np.stack([p for p, _ in poses]), np.stack([q for _, q in poses])
                )
            )
        )
    )
    return {
        e.id: (
            e.kind,
            dict(e.props),
            store.components(e.id),
            tuple(np.round(xf.pos[i].astype(np.float64), 4)),
            tuple(np.round(xf.quat[i].astype(np.float64), 3)),
        )
        for i, e in enumerate(ents)
    }


def assert_same(replica_state: dict[str, Any], expected: dict[str, Any], who: str) -> None:
    assert set(replica_state) == set(expected), (
        f"{who}: missing {sorted(set(expected) - set(replica_state))[:5]}, "
        f"extra {sorted(set(replica_state) - set(expected))[:5]}"
    )
    for eid, want in expected.items():
        assert replica_state[eid] == want, f"{who}: {eid}: {replica_state[eid]} != {want}"


# -- convergence ---------------------------------------------------------------------------------


def test_many_clients_joining_at_different_times_converge() -> None:
    async def scenario() -> None:
        store = SceneStore(history=30)  # short: removed handles get reused during the run
        churn = Churn()
        churn.populate(store)
        async with (
            serving(store, source=churn, tick_hz=60) as server,
            contextlib.AsyncExitStack() as stack,
        ):
            interests = [Interest()] * 16 + [
                Interest(ids=("mover/",)),
                Interest(ids=("static/floor", "mover/1")),
                Interest(area=(-10.0, -10.0, 10.0, 10.0)),
                Interest(max_hz=20.0),
            ]
            clients = []
            for i, interest in enumerate(interests):
                c = TwinClient(
                    server.url,
                    VIEWER if i % 2 else OPERATOR,
                    interest=interest,
                    token_in_subprotocol=i % 3 == 0,
                )
                await stack.enter_async_context(c)
                clients.append(c)
                start = server.ticks
                await until(lambda s=start: server.ticks >= s + 3, "3 ticks between joins")
            start = server.ticks
            await until(lambda: server.ticks >= start + 40, "40 more ticks of churn")
            churn.paused = True
            final = store.seq  # the source writes nothing more: the store is final as of now
            assert churn.ticks > 100, "the scene did not change enough to test anything"
            reused = [
                e.id
                for e in store.entities()
                if e.id.startswith("mover/") and int(e.id[6:]) > churn.n and e.handle <= churn.n
            ]
            assert reused, "no entity added late got a reused handle: handle reuse untested"
            await asyncio.gather(*(c.wait_seq(final, timeout=10) for c in clients))
            for i, (c, interest) in enumerate(zip(clients, interests, strict=True)):
                want = store_view(store, interest if interest.filtered else None)
                assert want, "the view under test is empty"
                assert_same(c.replica.state(), want, f"client {i} ({interest})")
                assert c.replica.stats["deltas.out_of_step"] == 0, f"client {i} saw a gap"
                assert c.connections == 1
            m = server.hub.metrics
            assert m["joins.fresh"] == len(clients)
            assert m["frames.shared"] > 0, "deltas for the same base should be encoded once"

    run(scenario())


# -- backpressure --------------------------------------------------------------------------------


def ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One final, masked client frame (RFC 6455 section 5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", n)
    body = (
        np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n)
    ).tobytes()
    return head + mask + body


async def handshake_by_hand(port: int, token: str, *, join: bool = True) -> socket.socket:
    """A TCP socket that does the WebSocket handshake and sends ``join`` (unless told not to);
    the caller then never reads from it."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up sooner
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /ws HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), 5)
        assert chunk, f"server closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    assert f"sec-websocket-protocol: {SUBPROTOCOL}".encode() in head.lower()
    if join:
        await loop.sock_sendall(sock, ws_frame(encode({"type": "join"})))
    return sock


def test_client_that_never_reads_keeps_server_memory_bounded() -> None:
    n = 3000

    def source(store: SceneStore, wall: float) -> float:
        handles = np.arange(n)
        store.set_transforms(
            handles, np.asarray(np.random.default_rng().uniform(-50, 50, (n, 3)), np.float32)
        )
        return wall

    async def scenario() -> None:
        store = SceneStore(capacity=n)
        for i in range(n):
            store.add(f"part/{i}", "part", props={"i": i})
        config = ServerConfig(port=0)
        async with serving(store, source=source, config=config, tick_hz=30) as server:
            hub = server.hub
            async with TwinClient(server.url, VIEWER) as normal:
                await normal.wait_for(lambda r: r.seq is not None)
                sock = await handshake_by_hand(server.port, TOKENS["stuck"][1])
                try:
                    await until(
                        lambda: any(
                            s.principal.name == "stuck" and s.last_seq is not None
                            for s in hub.sessions.values()
                        ),
                        "the stuck client to join and be sent a frame",
                    )
                    conn = next(
                        c for s, c, _ in server._conns.values() if s.principal.name == "stuck"
                    )
                    transport = conn.transport
                    snapshot_bytes = sum(
                        len(encode(m)) + 14
                        for m in snapshot_messages(store.snapshot(), t=0.0, ts=0.0)
                    )
                    bound = config.max_buffer_bytes + snapshot_bytes + 4096
                    peak = 0

                    def filled() -> bool:
                        nonlocal peak
                        peak = max(peak, transport.get_write_buffer_size())
                        return hub.metrics["frames.skipped_backpressure"] >= 10

                    await until(filled, "the stuck client's socket to back up", timeout=20)
                    skipped0 = hub.metrics["frames.skipped_backpressure"]
                    deltas0, ticks0 = normal.replica.stats["deltas"], server.ticks

                    def window_done() -> bool:
                        nonlocal peak
                        peak = max(peak, transport.get_write_buffer_size())
                        return server.ticks >= ticks0 + 45

                    await until(window_done, "45 ticks with a stuck client")
                    ticks = server.ticks - ticks0
                    got = normal.replica.stats["deltas"] - deltas0
                    assert peak <= bound, f"write buffer reached {peak} bytes (bound {bound})"
                    assert hub.metrics["frames.skipped_backpressure"] - skipped0 >= 0.8 * ticks
                    assert got >= 0.8 * ticks, f"normal client got {got} frames in {ticks} ticks"
                finally:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
                await until(
                    lambda: all(s.principal.name != "stuck" for s in hub.sessions.values()),
                    "the server to drop the reset connection",
                )
                assert normal.connections == 1

    run(scenario())


# -- gaps and reconnects -------------------------------------------------------------------------


def test_gap_makes_client_resync_and_get_a_snapshot() -> None:
    async def scenario() -> None:
        store = SceneStore()
        churn = Churn(seed=1)
        churn.populate(store)
        async with (
            serving(store, source=churn, tick_hz=60) as server,
            TwinClient(server.url, VIEWER) as c,
        ):
            await c.wait_for(lambda r: r.stats["snapshots"] == 1 and r.stats["deltas"] >= 3)
            assert server.hub.metrics["resyncs"] == 0
            c.replica.seq = (c.replica.seq or 0) - 1  # the replica falls out of step
            await c.wait_for(lambda r: r.stats["snapshots"] == 2)
            assert c.replica.stats["deltas.out_of_step"] >= 1
            assert server.hub.metrics["resyncs"] == 1
            churn.paused = True
            await c.wait_seq(store.seq)
            assert_same(c.replica.state(), store_view(store), "resynced client")
            assert c.connections == 1

    run(scenario())


def _server_conn(server: TwinServer, session: str) -> Any:
    return next(conn for s, conn, _ in server._conns.values() if s.id == session)


def test_reconnect_resumes_from_last_seq() -> None:
    async def scenario() -> None:
        store = SceneStore()
        churn = Churn(seed=2)
        churn.populate(store)
        async with serving(store, source=churn, tick_hz=60) as server:
            hub = server.hub
            async with TwinClient(server.url, OPERATOR) as c:
                await c.wait_for(lambda r: r.stats["deltas"] >= 3)
                session = c.replica.session
                assert session is not None
                _server_conn(server, session).transport.abort()  # the server drops it
                await c.wait_for(lambda r: c.connections == 2 and r.session == session)
                await until(lambda: hub.metrics["joins.resumed"] == 1, "a resumed join")
                deltas = c.replica.stats["deltas"]
                await c.wait_for(lambda r: r.stats["deltas"] >= deltas + 3)
                assert c.replica.stats["snapshots"] == 1, "a resume needs no snapshot"
                assert hub.metrics["joins.fresh"] == 1
                churn.paused = True
                await c.wait_seq(store.seq)
                assert_same(c.replica.state(), store_view(store), "resumed client")

    run(scenario())


def test_reconnect_after_history_passed_gets_a_snapshot() -> None:
    async def scenario() -> None:
        store = SceneStore(history=5)
        churn = Churn(seed=3)
        churn.populate(store)
        async with serving(store, source=churn, tick_hz=60) as server:
            hub = server.hub
            async with TwinClient(server.url, OPERATOR) as c:
                await c.wait_for(lambda r: r.stats["deltas"] >= 3)
                session = c.replica.session
                assert session is not None
                _server_conn(server, session).transport.abort()
                last = c.replica.seq
                for _ in range(store.history + 3):  # the store moves on before it can rejoin
                    server.tick()
                assert last is not None and last < store.oldest_base
                await c.wait_for(lambda r: c.connections == 2 and r.stats["snapshots"] == 2)
                assert hub.metrics["joins.resumed"] == 0
                assert hub.metrics["joins.fresh"] == 2
                churn.paused = True
                await c.wait_seq(store.seq)
                assert_same(c.replica.state(), store_view(store), "re-snapshotted client")

    run(scenario())


def _alarm(n: int) -> dict[str, Any]:
    return {"id": f"alarm/{n}", "entity": "station/a", "severity": "major", "state": "active"}


def _has_alarm(n: int) -> Callable[[Any], bool]:
    return lambda r: any(
        e["type"] == "alarm" and e["alarm"]["id"] == f"alarm/{n}" for e in r.events
    )


def test_resume_delivers_events_posted_while_disconnected() -> None:
    async def scenario() -> None:
        async with serving(tick_hz=60) as server, TwinClient(server.url, OPERATOR) as c:
            hub = server.hub
            await c.wait_for(lambda r: r.seq is not None)
            hub.post_alarm(_alarm(1))
            await c.wait_for(_has_alarm(1))
            _server_conn(server, c.replica.session or "").transport.abort()
            hub.post_alarm(_alarm(2))  # posted before the client is back
            await c.wait_for(lambda r: c.connections == 2 and _has_alarm(2)(r))
            assert hub.metrics["joins.resumed"] == 1
            assert c.replica.stats["events.gap"] == 0
            assert [e["alarm"]["id"] for e in c.replica.events] == ["alarm/1", "alarm/2"]

    run(scenario())


def test_resume_before_any_event_still_delivers_events_posted_while_disconnected() -> None:
    """Fails until hub.py/protocol.py can resume the event stream from eseq 0: a client that has
    seen no event cannot say so (``last_eseq`` must be >= 0), so the hub starts it at the newest
    event and what was posted while it was away is lost, with ``events_lost`` false."""

    async def scenario() -> None:
        async with serving(tick_hz=60) as server, TwinClient(server.url, OPERATOR) as c:
            hub = server.hub
            await c.wait_for(lambda r: r.seq is not None)
            assert c.replica.eseq_next == 0
            _server_conn(server, c.replica.session or "").transport.abort()
            hub.post_alarm(_alarm(1))  # the first event ever, posted while the client is away
            await c.wait_for(lambda r: c.connections == 2 and r.stats["deltas"] >= 2)
            await until(lambda: hub.metrics["joins.resumed"] == 1, "a resumed join")
            start = server.ticks
            await until(lambda: server.ticks >= start + 5, "5 ticks")
            assert _has_alarm(1)(c.replica), (
                "an alarm posted while the client was disconnected was lost on resume "
                "(the client had no event yet, so it could not send last_eseq; the hub "
                "then skips to the newest event)"
            )

    run(scenario())


# -- handshake security --------------------------------------------------------------------------


def _status(exc: pytest.ExceptionInfo[InvalidStatus]) -> int:
    return exc.value.response.status_code


def test_handshake_needs_a_valid_token() -> None:
    async def scenario() -> None:
        async with serving() as server:
            with pytest.raises(InvalidStatus) as no_token:
                await open_raw(server, None)
            assert _status(no_token) == 401
            assert no_token.value.response.headers.get("WWW-Authenticate", "").startswith("Bearer")
            with pytest.raises(InvalidStatus) as wrong:
                await open_raw(server, "not-a-valid-token-0123456789")
            assert _status(wrong) == 401
            with pytest.raises(InvalidStatus) as wrong_sub:
                await open_raw(
                    server, None, subprotocols=(SUBPROTOCOL, "bearer.not-a-valid-token-012345")
                )
            assert _status(wrong_sub) == 401
            with pytest.raises(InvalidStatus) as basic:
                await open_raw(server, None, headers={"Authorization": f"Basic {VIEWER}"})
            assert _status(basic) == 401
            assert server.hub.metrics["handshake.refused.token"] == 4
            assert not server.hub.sessions

    run(scenario())


def test_token_in_header_or_bearer_subprotocol() -> None:
    async def scenario() -> None:
        async with serving() as server:
            ws = await open_raw(server, OPERATOR)
            async with ws:
                assert ws.subprotocol == SUBPROTOCOL
                hello = await join_raw(ws)
                assert (hello["name"], hello["role"]) == ("otto", "operator")
            ws = await open_raw(server, None, subprotocols=(SUBPROTOCOL, f"bearer.{VIEWER}"))
            async with ws:
                # the server selects twin.v1 only: the token is never echoed back
                assert ws.subprotocol == SUBPROTOCOL
                assert ws.response is not None
                assert ws.response.headers.get_all("Sec-WebSocket-Protocol") == [SUBPROTOCOL]
                hello = await join_raw(ws)
                assert (hello["name"], hello["role"]) == ("vera", "viewer")
            async with TwinClient(server.url, VIEWER, token_in_subprotocol=True) as c:
                await c.wait_for(lambda r: r.seq is not None)
                assert c.replica.role == "viewer"

    run(scenario())


def test_origin_rules() -> None:
    async def scenario() -> None:
        config = ServerConfig(port=0, origins=("https://viewer.example",))
        async with serving(config=config) as server:
            for bad in ("https://evil.example", "http://127.0.0.1:1", "null"):
                with pytest.raises(InvalidStatus) as refused:
                    await open_raw(server, VIEWER, origin=bad)
                assert _status(refused) == 403, bad
            assert server.hub.metrics["handshake.refused.origin"] == 3
            # an origin is checked before the token: a bad origin with no token is still 403
            with pytest.raises(InvalidStatus) as refused:
                await open_raw(server, None, origin="https://evil.example")
            assert _status(refused) == 403
            for good in ("https://viewer.example", f"http://127.0.0.1:{server.port}"):
                async with TwinClient(server.url, VIEWER, origin=good) as c:
                    await c.wait_for(lambda r: r.seq is not None)
            # no Origin at all (not a browser) is fine
            async with TwinClient(server.url, VIEWER) as c:
                await c.wait_for(lambda r: r.seq is not None)

    run(scenario())


def test_subprotocol_twin_v1_is_required() -> None:
    async def scenario() -> None:
        async with serving() as server:
            with pytest.raises(InvalidStatus) as none:
                await open_raw(server, VIEWER, subprotocols=())
            assert _status(none) == 400
            with pytest.raises(InvalidStatus) as other:
                await open_raw(server, VIEWER, subprotocols=("twin.v2", "chat"))
            assert _status(other) == 400
            with pytest.raises(InvalidStatus) as bearer_only:
                await open_raw(server, None, subprotocols=(f"bearer.{VIEWER}",))
            assert _status(bearer_only) == 400
            assert server.hub.metrics["handshake.refused.subprotocol"] == 3

    run(scenario())


def test_server_binds_loopback_by_default() -> None:
    assert ServerConfig().host == "127.0.0.1"

    async def scenario() -> None:
        async with serving(config=ServerConfig(port=0)) as server:
            addrs = [s.getsockname()[0] for s in server._server.sockets]
            assert addrs == ["127.0.0.1"]
            assert server.url == f"ws://127.0.0.1:{server.port}/ws"
            assert server.port != 0

    run(scenario())


def test_join_timeout_closes_with_4001() -> None:
    async def scenario() -> None:
        async with (
            serving(config=ServerConfig(port=0, join_timeout_s=0.3)) as server,
            TwinClient(server.url, OPERATOR) as joined,
        ):
            ws = await open_raw(server, VIEWER)
            assert decode(await ws.recv())["type"] == "hello"  # type: ignore[arg-type]
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == 4001
            assert ws.close_reason == "no join"
            # the client that joined in time is untouched
            start = server.ticks
            await until(lambda: server.ticks >= start + 5, "5 more ticks")
            assert joined.connections == 1
            assert joined.close_code is None

            # a client that neither joins nor reads (so the close handshake hangs): one close
            sock = await handshake_by_hand(server.port, VIEWER, join=False)
            try:
                start = server.ticks
                await until(lambda: server.ticks >= start + 30, "30 ticks (1 s)")
                stuck = [s for s, _, _ in server._conns.values() if s.principal.name == "vera"]
                assert stuck and stuck[0].close_request is not None, "join timeout not applied"
                assert len(server._closing) <= 1, (
                    f"{len(server._closing)} close tasks for one timed-out connection"
                )
            finally:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

    run(scenario())


def test_refused_upgrade_leaves_no_state_behind() -> None:
    """A request with a valid token that websockets then refuses (no Upgrade header: 426) never
    reaches the handler; the principal admitted for it must not stay behind."""

    async def scenario() -> None:
        async with serving() as server:
            for _ in range(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(
                    (
                        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                        f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
                        f"Authorization: Bearer {VIEWER}\r\n\r\n"
                    ).encode()
                )
                status = await asyncio.wait_for(reader.readline(), 5)
                assert status.startswith(b"HTTP/1.1 426"), status
                writer.close()
            await until(lambda: not server._pending, "no principal left pending", timeout=2)
            assert not server.hub.sessions

    run(scenario())


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = Path("/usr/bin/openssl")
    assert openssl.exists(), "the TLS test needs /usr/bin/openssl"
    subprocess.run(
        [
            str(openssl),
            *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        store = SceneStore()
        store.add("station/a", "station", props={"label": "A"})
        config = ServerConfig(port=0, ssl_context=server_ctx)
        async with serving(store, config=config) as server:
            assert server.url.startswith("wss://127.0.0.1:")
            ws = await open_raw(server, VIEWER, ssl=client_ctx)
            async with ws:
                await join_raw(ws)
                snap = await recv_until(ws, lambda m: m["type"] == "snapshot")
                assert [row[1] for row in snap["entities"]] == ["station/a"]
            with pytest.raises(ssl.SSLCertVerificationError):
                await open_raw(server, VIEWER, ssl=ssl.create_default_context())

            def healthz() -> tuple[int, bytes]:
                c = http.client.HTTPSConnection("127.0.0.1", server.port, context=client_ctx)
                c.request("GET", "/healthz")
                r = c.getresponse()
                return r.status, r.read()

            assert await asyncio.to_thread(healthz) == (200, b"ok\n")

    run(scenario())


def test_token_never_logged_at_debug() -> None:
    records: list[str] = []
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(fmt.format(record))

    async def scenario() -> None:
        async with serving() as server:
            async with TwinClient(server.url, VIEWER) as a:
                await a.wait_for(lambda r: r.seq is not None)
            async with TwinClient(server.url, OPERATOR, token_in_subprotocol=True) as b:
                await b.wait_for(lambda r: r.seq is not None)
            # extra spaces after the scheme still authenticate (token_from_headers strips them)
            ws = await open_raw(server, None, headers={"Authorization": f"Bearer   {VIEWER}"})
            await ws.close()
            for bad in ("wrong-token-0123456789abcdef", f"{OPERATOR}x"):
                with pytest.raises(InvalidStatus):
                    await open_raw(server, bad)

    root = logging.getLogger()
    handler = Capture(logging.DEBUG)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        run(scenario())
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert any("Authorization" in r for r in records), "DEBUG handshake logs were not captured"
    assert any("bearer." in r.lower() for r in records), "the subprotocol offer was not logged"
    secrets = [VIEWER, OPERATOR, "wrong-token-0123456789abcdef"]
    leaks = [r for r in records if any(s in r for s in secrets)]
    assert not leaks, f"tokens in log records: {leaks[:3]}"


# -- session security: bad input -----------------------------------------------------------------

BAD_MESSAGES: list[tuple[str, bytes | str, str]] = [
    ("garbage", b"\xc1\xc1\xc1", "malformed"),
    ("truncated", b"\x93\x01\x02", "malformed"),
    ("deeply nested", b"\x91" * 50_000 + b"\x00", "malformed"),
    ("non-map", encode([1, 2, 3]), "malformed"),  # type: ignore[arg-type]
    ("int keys", msgpack.packb({1: "x"}), "malformed"),
    ("no type", encode({"kind": "join"}), "malformed"),
    ("type not a string", encode({"type": 5}), "malformed"),
    ("ext type", msgpack.packb({"type": msgpack.ExtType(1, b"x")}), "malformed"),
    ("text frame", "hello", "text_frame"),
    ("unknown type", encode({"type": "bogus"}), "unknown_type"),
    ("a server message", encode({"type": "delta", "seq": 1}), "unexpected"),
    ("join twice", encode({"type": "join"}), "unexpected"),
    ("ids not a list", encode({"type": "subscribe", "ids": "mover/"}), "bad_field"),
    ("NaN area", encode({"type": "subscribe", "area": [0, 0, float("nan"), 1]}), "bad_field"),
    ("inverted area", encode({"type": "subscribe", "area": [5, 0, 1, 1]}), "bad_field"),
    ("zero max_hz", encode({"type": "subscribe", "max_hz": 0}), "bad_field"),
    (
        "empty command id",
        encode({"type": "command", "id": "", "target": "t", "action": "a"}),
        "bad_field",
    ),
    (
        "args not a map",
        encode({"type": "command", "id": "x", "target": "t", "action": "a", "args": [1]}),
        "bad_field",
    ),
    ("bad nonce", encode({"type": "ping", "nonce": [1]}), "bad_field"),
]


def test_malformed_messages_get_errors_and_disturb_no_one() -> None:
    async def scenario() -> None:
        store = SceneStore()
        churn = Churn(seed=4)
        churn.populate(store)
        async with serving(store, source=churn, tick_hz=60) as server:
            hub = server.hub
            async with TwinClient(server.url, VIEWER) as watcher:
                await watcher.wait_for(lambda r: r.stats["deltas"] >= 1)
                # before join, only join and ping are allowed
                early = await open_raw(server, OPERATOR)
                await early.recv()
                await early.send(encode({"type": "resync"}))
                err = await recv_until(early, lambda m: m["type"] == "error")
                assert err["code"] == "unexpected"
                await early.close()

                ws = await open_raw(server, OPERATOR)
                await join_raw(ws)
                deltas0 = watcher.replica.stats["deltas"]
                expected: Counter[str] = Counter({"unexpected": 1})
                for name, payload, code in BAD_MESSAGES:
                    await ws.send(payload)
                    err = await recv_until(ws, lambda m: m["type"] == "error")
                    assert err["code"] == code, f"{name}: got {err}"
                    assert isinstance(err.get("reason"), str) and err["reason"], name
                    expected[code] += 1
                for code, n in expected.items():
                    assert hub.metrics[f"rejected.{code}"] == n, code
                assert len(BAD_MESSAGES) < hub.max_errors, "the abuser must stay connected"
                await ws.send(encode({"type": "ping", "nonce": 7}))
                pong = await recv_until(ws, lambda m: m["type"] == "pong")
                assert pong["nonce"] == 7
                await watcher.wait_for(lambda r: r.stats["deltas"] >= deltas0 + 5)
                assert watcher.replica.stats["deltas.out_of_step"] == 0
                assert watcher.connections == 1 and not watcher.replica.errors
                await ws.close()
                churn.paused = True
                await watcher.wait_seq(store.seq)
                assert_same(watcher.replica.state(), store_view(store), "watcher")

    run(scenario())


def test_too_many_errors_closes_with_4002() -> None:
    async def scenario() -> None:
        async with serving(max_errors=3) as server:
            ws = await open_raw(server, VIEWER)
            await join_raw(ws)
            for _ in range(3):
                await ws.send(b"\xc1")
                await recv_until(ws, lambda m: m["type"] == "error")
            await ws.send(encode({"type": "ping", "nonce": 1}))
            await recv_until(ws, lambda m: m["type"] == "pong")  # three errors: still served
            await ws.send(b"\xc1")
            with pytest.raises(ConnectionClosed):
                await recv_until(ws, lambda m: False)
            assert ws.close_code == 4002
            assert server.hub.metrics["rejected.malformed"] == 4

    run(scenario())


def test_message_size_limit() -> None:
    async def scenario() -> None:
        async with serving() as server, TwinClient(server.url, VIEWER) as other:
            await other.wait_for(lambda r: r.seq is not None)
            ws = await open_raw(server, VIEWER)
            await join_raw(ws)
            # exactly 64 KiB is allowed
            head = len(encode({"type": "ping", "nonce": ""}))
            nonce = "x" * (MAX_INBOUND_BYTES - head - 2)  # str8 -> str16 header: 2 more
            ping = encode({"type": "ping", "nonce": nonce})
            assert len(ping) == MAX_INBOUND_BYTES
            await ws.send(ping)
            pong = await recv_until(ws, lambda m: m["type"] == "pong")
            assert pong["nonce"] == nonce
            await ws.send(encode({"type": "ping", "nonce": nonce + "x"}))
            with pytest.raises(ConnectionClosed):
                await recv_until(ws, lambda m: False)
            assert ws.close_code == 1009
            seq = other.replica.seq or 0
            await other.wait_seq(seq + 3)
            assert other.connections == 1

    run(scenario())


# -- commands ------------------------------------------------------------------------------------


def test_commands_rate_limit_roles_idempotency_and_audit(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()

    def valve(p: Principal, c: Any) -> Outcome:
        calls[c.id] += 1
        return Outcome(ok=True, result={"opened": c.target, "by": p.name})

    def boom(p: Principal, c: Any) -> Outcome:
        raise RuntimeError("the valve is stuck")

    registry = CommandRegistry()
    registry.register("valve.open", {Role.OPERATOR}, valve)
    registry.register("valve.boom", {Role.OPERATOR}, boom)
    audit = AuditLog(tmp_path / "audit" / "audit.jsonl")

    async def scenario() -> None:
        hub_kw: dict[str, Any] = {
            "commands": registry,
            "audit": audit.write,
            "command_rate": 0.01,  # no refill to speak of during the test
            "command_burst": 5,
        }
        async with (
            serving(**hub_kw) as server,
            TwinClient(server.url, OPERATOR) as op,
            TwinClient(server.url, VIEWER) as viewer,
        ):
            assert "valve.open" in (await _hello_caps(op))
            r1 = await op.command("valve/7", "valve.open", {"to": 0.5}, command_id="op-1")
            assert r1["ok"] is True and r1["result"] == {"opened": "valve/7", "by": "otto"}
            r2 = await op.command("valve/7", "valve.open", {"to": 0.5}, command_id="op-1")
            assert r2["ok"] is True and r2["duplicate"] is True
            assert r2["result"] == r1["result"]
            assert calls["op-1"] == 1, "a duplicate must not run the handler again"
            rv = await viewer.command("valve/7", "valve.open", command_id="v-1")
            assert (rv["ok"], rv["code"]) == (False, "forbidden")
            assert "v-1" not in calls
            ru = await op.command("valve/7", "valve.fly", command_id="op-u")
            assert (ru["ok"], ru["code"]) == (False, "unknown_action")
            rb = await op.command("valve/7", "valve.boom", command_id="op-b")
            assert (rb["ok"], rb["code"]) == (False, "failed")
            assert "stuck" in rb["reason"]
            r3 = await op.command("valve/8", "valve.open", command_id="op-2")  # 5th: burst used up
            assert r3["ok"] is True
            r4 = await op.command("valve/9", "valve.open", command_id="op-3")
            assert (r4["ok"], r4["code"]) == (False, "rate_limited")
            assert "op-3" not in calls
            m = server.hub.metrics
            assert m["commands.rate_limited"] == 1 and m["commands.duplicate"] == 1
            assert m["commands.refused.forbidden"] == 1

    try:
        run(scenario())
    finally:
        audit.close()
    rows = AuditLog.read(tmp_path / "audit" / "audit.jsonl")
    got = [
        (r["who"], r["role"], r["id"], r["action"], r["ok"], r["code"], r["duplicate"])
        for r in rows
    ]
    assert got == [
        ("otto", "operator", "op-1", "valve.open", True, "", False),
        ("otto", "operator", "op-1", "valve.open", True, "", True),
        ("vera", "viewer", "v-1", "valve.open", False, "forbidden", False),
        ("otto", "operator", "op-u", "valve.fly", False, "unknown_action", False),
        ("otto", "operator", "op-b", "valve.boom", False, "failed", False),
        ("otto", "operator", "op-2", "valve.open", True, "", False),
        ("otto", "operator", "op-3", "valve.open", False, "rate_limited", False),
    ]
    assert rows[0]["args"] == {"to": 0.5} and rows[0]["target"] == "valve/7"
    assert all(r["session"] and r["ts"] > 0 for r in rows)


async def _hello_caps(c: TwinClient) -> list[str]:
    await c.wait_for(lambda r: r.seq is not None)
    return c.replica.capabilities


# -- assets --------------------------------------------------------------------------------------


def _get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        c.close()


def _no_duplicates(headers: list[tuple[str, str]]) -> dict[str, str]:
    names = Counter(k.lower() for k, _ in headers)
    dup = [k for k, n in names.items() if n > 1]
    assert not dup, (
        f"duplicate response headers: {[(k, v) for k, v in headers if k.lower() in dup]}"
    )
    return {k.lower(): v for k, v in headers}


def test_assets_by_hash_with_cache_headers(tmp_path: Path) -> None:
    assets = AssetStore(tmp_path / "assets")
    sha = publish_box(assets, (1.0, 2.0, 0.5))
    glb = assets.get(sha)

    async def scenario() -> None:
        async with serving(assets=assets) as server:
            port = server.port
            status, headers, body = await asyncio.to_thread(_get, port, f"/assets/{sha}.glb")
            assert status == 200 and body == glb
            h = _no_duplicates(headers)
            for k, v in cache_headers(sha, size=len(glb)).items():
                assert h.get(k.lower()) == v, k
            status, headers, body = await asyncio.to_thread(
                _get, port, f"/assets/{sha}.glb", {"If-None-Match": f'"{sha}"'}
            )
            assert status == 304 and body == b""
            h = _no_duplicates(headers)
            assert h["etag"] == f'"{sha}"'
            assert h["cache-control"] == cache_headers(sha)["Cache-Control"]
            status, _, _ = await asyncio.to_thread(
                _get, port, f"/assets/{sha}.glb", {"If-None-Match": '"0000"'}
            )
            assert status == 200
            unknown = "0" * 64
            status, _, _ = await asyncio.to_thread(_get, port, f"/assets/{unknown}.glb")
            assert status == 404
            for bad in ("/assets/../../etc/passwd", f"/assets/{sha.upper()}.glb", "/nothing"):
                status, _, _ = await asyncio.to_thread(_get, port, bad)
                assert status == 404, bad
            assert (await asyncio.to_thread(_get, port, "/healthz"))[0] == 200

    run(scenario())
