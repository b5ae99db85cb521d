"""Scene streaming over loopback: frame rate, latency, bytes and server cost per viewer count.

A twin server (``streaming.server.TwinServer``, 30 Hz) runs in its own process with a
1,000-entity scene; every tick its ``source`` moves a different random 10% of the entities
(positions and rotations both change: the worst case for the transform block). Viewers connect
from one or more client processes (many connections per asyncio loop), ``join`` the whole scene
and record, for every ``delta`` frame, its receipt time, its size and its ``ts`` (the server's
wall clock when the tick committed). After a warm-up the run measures a fixed window:

- frame rate per viewer: ``delta`` frames received in the window / window length;
- latency: receipt time (``time.time()`` when the bytes are read off the socket) minus ``ts``
  (same machine, same clock), over every frame of every viewer;
- bytes per moved entity: delta message bytes / moved entities (the ``n`` of each ``xf`` block),
  with the WebSocket frame header reported separately;
- server CPU (user + system, as a fraction of one core), peak RSS, ticks, overruns and the hub's
  frame counters, measured inside the server process.

The default client is a minimal RFC 6455 client on ``asyncio.Protocol`` (``--client raw``), so
that the viewers, which share this machine's cores with the server, cost little; ``--client
websockets`` uses the websockets asyncio client instead (heavier: one task per viewer).

    .venv/bin/python benchmarks/bench_streaming.py                      # 100, 500, 1000 viewers
    .venv/bin/python benchmarks/bench_streaming.py --viewers 500 --seconds 5 --json
    .venv/bin/python benchmarks/bench_streaming.py --viewers 1000 --profile   # cProfile the server
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from array import array
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: A tick's wall-clock period at 30 Hz (s).
TICK_HZ = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """What one measurement runs: scene size, share moved per tick, window, client kind."""

    entities: int = 1000
    moved_fraction: float = 0.10
    tick_hz: float = TICK_HZ
    warmup_s: float = 3.0
    seconds: float = 10.0
    client: str = "raw"
    client_procs: int = 1
    profile: bool = False
    seed: int = 0


def _raise_nofile() -> None:
    """Lift the open-file soft limit to the hard limit (1,000 viewers need >2,000 fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _vm_kib(field: str) -> int:
    """A ``VmHWM``/``VmRSS`` line of /proc/self/status, KiB (0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_s() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- server process ------------------------------------------------------------------------------


def server_main(pipe: Connection, sc: Scenario) -> None:
    """Entry point of the server process: serve until told to stop, measure one window."""
    _raise_nofile()
    asyncio.run(_serve(pipe, sc))


async def _serve(pipe: Connection, sc: Scenario) -> None:
    import cProfile
    import io
    import pstats

    import streaming.server as server_mod
    from streaming.auth import TokenBook
    from streaming.hub import Hub
    from streaming.server import ServerConfig, TwinServer
    from streaming.store import SceneStore

    rng = np.random.default_rng(sc.seed)
    store = SceneStore()
    positions = rng.uniform(0.0, 50.0, (sc.entities, 3)).astype(np.float32)
    handles = np.asarray(
        [
            store.add(
                f"line/part/{i:04d}",
                "part",
                props={"label": f"part {i}", "asset": "a" * 64, "color": "#8899aa"},
                pos=positions[i].tolist(),
                state={"state": "running", "temp": 20.0 + i % 7},
            )
            for i in range(sc.entities)
        ],
        np.int64,
    )
    hub = Hub(store, tick_hz=sc.tick_hz)
    k = round(sc.entities * sc.moved_fraction)
    timing = {"source_s": 0.0, "broadcast_s": 0.0, "broadcasts": 0}
    t0 = time.time()

    def source(st: SceneStore, wall: float) -> float:
        """Move a fresh random ``k`` entities: new position and new rotation for each."""
        a = time.perf_counter()
        i = rng.choice(sc.entities, k, replace=False)
        positions[i] += rng.normal(0.0, 0.05, (k, 3)).astype(np.float32)
        q = rng.normal(size=(k, 4))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        st.set_transforms(handles[i], positions[i], q.astype(np.float32))
        timing["source_s"] += time.perf_counter() - a
        return wall - t0

    # Time websockets' broadcast (the transport writes) from outside: the server module looks
    # ``broadcast`` up as a global at each call, so this wraps every send it makes.
    real_broadcast = vars(server_mod)["broadcast"]

    def timed_broadcast(*args: Any, **kwargs: Any) -> None:
        a = time.perf_counter()
        real_broadcast(*args, **kwargs)
        timing["broadcast_s"] += time.perf_counter() - a
        timing["broadcasts"] += 1

    vars(server_mod)["broadcast"] = timed_broadcast

    book, token = TokenBook.generated()
    server = TwinServer(hub, book, ServerConfig(host="127.0.0.1", port=0), source=source)
    tick_durations: list[float] = []
    tick_cpu: list[float] = []
    fanout: list[float] = []
    real_tick = server.tick

    def timed_tick() -> None:
        a, c = time.perf_counter(), time.thread_time()
        real_tick()
        fanout.append(time.time() - hub.ts)  # the commit's ts to the last socket write
        tick_durations.append(time.perf_counter() - a)
        tick_cpu.append(time.thread_time() - c)

    server.tick = timed_tick  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    async with server:
        pipe.send(("listening", server.port, token))
        msg = await loop.run_in_executor(None, pipe.recv)
        if msg[0] == "window":
            _, t_start, t_end = msg
            await asyncio.sleep(max(0.0, t_start - time.time()))

            def mark() -> dict[str, Any]:
                u, s = _cpu_s()
                return {
                    "wall": time.time(),
                    "user": u,
                    "sys": s,
                    "ticks": server.ticks,
                    "overruns": server.overruns,
                    "tick_s": server.tick_seconds,
                    "metrics": dict(hub.metrics),
                    **timing,
                }

            a = mark()
            first_tick = len(tick_durations)
            # CPU time, not wall time: the figures hold on a machine shared with other work.
            prof = cProfile.Profile(time.thread_time) if sc.profile else None
            if prof is not None:
                prof.enable()
            await asyncio.sleep(max(0.0, t_end - time.time()))
            if prof is not None:
                prof.disable()
            b = mark()
            wall = b["wall"] - a["wall"]
            ticks = np.asarray(tick_durations[first_tick:]) * 1e3
            cpu = np.asarray(tick_cpu[first_tick:]) * 1e3
            fan = np.asarray(fanout[first_tick:]) * 1e3
            keys = set(a["metrics"]) | set(b["metrics"])
            result: dict[str, Any] = {
                "window_s": wall,
                "cpu_frac": (b["user"] + b["sys"] - a["user"] - a["sys"]) / wall,
                "user_frac": (b["user"] - a["user"]) / wall,
                "sys_frac": (b["sys"] - a["sys"]) / wall,
                "ticks": b["ticks"] - a["ticks"],
                "ticks_per_s": (b["ticks"] - a["ticks"]) / wall,
                "overruns": b["overruns"] - a["overruns"],
                "tick_ms_mean": float(ticks.mean()) if ticks.size else 0.0,
                "tick_ms_p99": float(np.percentile(ticks, 99)) if ticks.size else 0.0,
                "tick_ms_max": float(ticks.max()) if ticks.size else 0.0,
                "tick_cpu_ms_mean": float(cpu.mean()) if cpu.size else 0.0,
                "fanout_ms_p50": float(np.percentile(fan, 50)) if fan.size else 0.0,
                "fanout_ms_p99": float(np.percentile(fan, 99)) if fan.size else 0.0,
                "tick_frac": (b["tick_s"] - a["tick_s"]) / wall,
                "source_frac": (b["source_s"] - a["source_s"]) / wall,
                "broadcast_frac": (b["broadcast_s"] - a["broadcast_s"]) / wall,
                "broadcasts_per_tick": (b["broadcasts"] - a["broadcasts"])
                / max(1, b["ticks"] - a["ticks"]),
                "metrics": {
                    m: b["metrics"].get(m, 0) - a["metrics"].get(m, 0)
                    for m in sorted(keys)
                    if b["metrics"].get(m, 0) != a["metrics"].get(m, 0)
                },
                "sessions": len(hub.sessions),
                "rss_peak_mib": _vm_kib("VmHWM") / 1024,
                "rss_mib": _vm_kib("VmRSS") / 1024,
            }
            if prof is not None:
                out = io.StringIO()
                st = pstats.Stats(prof, stream=out)
                st.sort_stats("tottime").print_stats(25)
                st.sort_stats("cumulative").print_stats(30)
                result["profile"] = out.getvalue()
            pipe.send(("result", result))
            await loop.run_in_executor(None, pipe.recv)  # "stop"


# -- viewer processes ----------------------------------------------------------------------------


class _Recorder:
    """What one client process saw in the window, for all its viewers."""

    def __init__(self, first: int, count: int) -> None:
        self.first = first
        self.t_start = float("inf")
        self.t_end = float("inf")
        self.frames = [0] * count
        self.latency = array("d")
        self.payload_bytes = 0
        self.header_bytes = 0
        self.moved = 0
        self.snapshots = 0
        self.closed = 0

    def snapshot(self, now: float) -> None:
        if self.t_start <= now < self.t_end:
            self.snapshots += 1

    def delta(self, idx: int, now: float, msg: dict[str, Any], size: int, hdr: int) -> None:
        if self.t_start <= now < self.t_end:
            self.frames[idx] += 1
            self.latency.append(now - msg["ts"])
            self.payload_bytes += size
            self.header_bytes += hdr
            xf = msg.get("xf")
            if xf is not None:
                self.moved += xf["n"]


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client-to-server frame (FIN set, masked, as RFC 6455 requires of clients)."""
    key = os.urandom(4)
    body = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    else:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    return head + key + body


_JOIN = msgpack.packb({"type": "join"})


class _RawViewer(asyncio.Protocol):
    """One viewer on a bare asyncio transport: the HTTP upgrade, then frame parsing by hand.
    Server frames are unmasked and, from this server, never fragmented."""

    def __init__(self, idx: int, rec: _Recorder, request: bytes) -> None:
        self.idx = idx
        self.rec = rec
        self.request = request
        self.buf = bytearray()
        self.upgraded = False
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.rec.closed += 1
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("closed before join"))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.joined.set_exception(ConnectionError(bytes(buf[:end]).decode("latin-1")))
                assert self.transport is not None
                self.transport.close()
                return
            del buf[: end + 4]
            self.upgraded = True
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b1 = buf[pos + 1]
            n = b1 & 0x7F
            hdr = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            if size - pos < hdr + n:
                break
            opcode = buf[pos] & 0x0F
            payload = bytes(buf[pos + hdr : pos + hdr + n])
            pos += hdr + n
            self._frame(opcode, payload, hdr, now)
        if pos:
            del buf[:pos]

    def _frame(self, opcode: int, payload: bytes, hdr: int, now: float) -> None:
        assert self.transport is not None
        if opcode == 0x2:
            msg = msgpack.unpackb(payload)
            kind = msg["type"]
            if kind == "delta":
                self.rec.delta(self.idx, now, msg, len(payload), hdr)
            elif kind == "snapshot":
                self.rec.snapshot(now)
            elif kind == "hello":
                self.transport.write(_masked_frame(0x2, _JOIN))
            elif kind == "joined" and not self.joined.done():
                self.joined.set_result(None)
        elif opcode == 0x9:  # ping: answer with a pong carrying the same payload
            self.transport.write(_masked_frame(0xA, payload))
        elif opcode == 0x8:  # close: echo it and hang up
            self.transport.write(_masked_frame(0x8, payload[:2]))
            self.transport.close()


async def _open_raw(idx: int, rec: _Recorder, port: int, token: str) -> asyncio.Transport:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: twin.v1\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(
        lambda: _RawViewer(idx, rec, request), "127.0.0.1", port
    )
    await asyncio.wait_for(proto.joined, 30.0)
    return transport


async def _run_websockets(idx: int, rec: _Recorder, port: int, token: str, joined: Any) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(
        f"ws://127.0.0.1:{port}/ws",
        subprotocols=["twin.v1"],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        max_size=None,
        ping_interval=None,
    ) as ws:
        await ws.recv()  # hello
        await ws.send(_JOIN)
        try:
            async for data in ws:
                now = time.time()
                msg = msgpack.unpackb(data)
                kind = msg["type"]
                if kind == "delta":
                    n = len(data)
                    rec.delta(idx, now, msg, n, 2 if n < 126 else 4 if n < 65536 else 10)
                elif kind == "snapshot":
                    rec.snapshot(now)
                elif kind == "joined" and not joined.done():
                    joined.set_result(None)
        except ConnectionClosed:
            rec.closed += 1


def client_main(pipe: Connection, port: int, token: str, first: int, count: int, kind: str) -> None:
    """Entry point of a client process: ``count`` viewers in one asyncio loop."""
    _raise_nofile()
    asyncio.run(_clients(pipe, port, token, first, count, kind))


async def _clients(
    pipe: Connection, port: int, token: str, first: int, count: int, kind: str
) -> None:
    loop = asyncio.get_running_loop()
    rec = _Recorder(first, count)
    gate = asyncio.Semaphore(50)  # concurrent handshakes (the listen backlog is 100)
    transports: list[asyncio.Transport] = []
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        async with gate:
            if kind == "raw":
                transports.append(await _open_raw(i, rec, port, token))
            else:
                joined = loop.create_future()
                tasks.append(asyncio.create_task(_run_websockets(i, rec, port, token, joined)))
                await asyncio.wait_for(joined, 30.0)

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    pipe.send(("ready", count - len(failed), repr(failed[0]) if failed else ""))
    _, t_start, t_end = await loop.run_in_executor(None, pipe.recv)
    rec.t_start, rec.t_end = t_start, t_end
    await asyncio.sleep(max(0.0, t_start - time.time()))
    a = _cpu_s()
    await asyncio.sleep(max(0.0, t_end - time.time()))
    b = _cpu_s()
    wall = t_end - t_start
    await asyncio.sleep(0.2)  # frames committed just before t_end arriving late still count
    pipe.send(
        (
            "result",
            {
                "frames": rec.frames,
                "latency": rec.latency.tobytes(),
                "payload_bytes": rec.payload_bytes,
                "header_bytes": rec.header_bytes,
                "moved": rec.moved,
                "snapshots": rec.snapshots,
                "closed": rec.closed,
                "cpu_frac": (b[0] + b[1] - a[0] - a[1]) / wall,
            },
        )
    )
    await loop.run_in_executor(None, pipe.recv)  # "stop"
    for t in transports:
        t.abort()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- driver --------------------------------------------------------------------------------------


def _machine_busy_s() -> float:
    """CPU seconds all cores spent busy (not idle, not waiting on I/O), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    ticks = [int(f) for f in fields]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # user..steal, less idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _countdown(until: float, phase: str) -> None:
    while (left := until - time.time()) > 0:
        print(f"\r  {phase}: {left:4.1f} s left ", end="", file=sys.stderr, flush=True)
        time.sleep(min(1.0, left))
    print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)


def _recv(pipe: Connection, what: str, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise TimeoutError(f"no {what} within {timeout:.0f} s")
    return pipe.recv()


def measure(viewers: int, sc: Scenario) -> dict[str, Any]:
    """One viewer count: a fresh server process, client processes, warm-up, window."""
    ctx = mp.get_context("spawn")
    s_pipe, s_child = ctx.Pipe()
    srv = ctx.Process(target=server_main, args=(s_child, sc), daemon=True)
    srv.start()
    clients: list[tuple[Any, Connection]] = []
    try:
        _, port, token = _recv(s_pipe, "server port", 60.0)
        procs = max(1, min(sc.client_procs, viewers))
        share = [viewers // procs + (i < viewers % procs) for i in range(procs)]
        t0 = time.perf_counter()
        _progress(f"[{viewers} viewers] connecting ({sc.client} client, {procs} process(es))")
        first = 0
        for n in share:
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=client_main, args=(child, port, token, first, n, sc.client), daemon=True
            )
            p.start()
            clients.append((p, parent))
            first += n
        joined = 0
        for _, pipe in clients:
            _, ok, err = _recv(pipe, "client ready", 180.0)
            joined += ok
            if err:
                _progress(f"[{viewers} viewers] a viewer failed to join: {err}")
        _progress(
            f"[{viewers} viewers] {joined} joined in {time.perf_counter() - t0:.1f} s; "
            f"warm-up {sc.warmup_s:g} s, measuring {sc.seconds:g} s"
        )
        t_start = time.time() + sc.warmup_s
        t_end = t_start + sc.seconds
        s_pipe.send(("window", t_start, t_end))
        for _, pipe in clients:
            pipe.send(("window", t_start, t_end))
        _countdown(t_start, "warm-up")
        busy_a = _machine_busy_s()
        _countdown(t_end, "measuring")
        busy_b = _machine_busy_s()
        _, srv_res = _recv(s_pipe, "server result", 30.0)
        cl_res = [_recv(pipe, "client result", 30.0)[1] for _, pipe in clients]
    finally:
        for p, pipe in clients:
            if p.is_alive():
                pipe.send(("stop",))
        for p, _ in clients:
            p.join(10.0)
            if p.is_alive():
                p.terminate()
        if srv.is_alive():
            s_pipe.send(("stop",))
            srv.join(15.0)
            if srv.is_alive():
                srv.terminate()
    res = _summary(viewers, joined, sc, srv_res, cl_res)
    busy = (busy_b - busy_a) / sc.seconds
    res["machine_busy_cores"] = busy
    res["other_load_cores"] = busy - srv_res["cpu_frac"] - sum(res["client_cpu_frac"])
    return res


def _summary(
    viewers: int,
    joined: int,
    sc: Scenario,
    srv: dict[str, Any],
    clients: list[dict[str, Any]],
) -> dict[str, Any]:
    fps = np.asarray([f for c in clients for f in c["frames"]], float) / sc.seconds
    lat = np.concatenate([np.frombuffer(c["latency"], np.float64) for c in clients]) * 1e3
    moved = sum(c["moved"] for c in clients)
    payload = sum(c["payload_bytes"] for c in clients)
    header = sum(c["header_bytes"] for c in clients)
    frames = int(sum(sum(c["frames"]) for c in clients))
    res: dict[str, Any] = {
        "viewers": viewers,
        "joined": joined,
        "fps_mean": float(fps.mean()),
        "fps_p5": float(np.percentile(fps, 5)),
        "fps_min": float(fps.min()),
        "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
        "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
        "latency_ms_max": float(lat.max()) if lat.size else None,
        "frames": frames,
        "bytes_per_frame": payload / max(1, frames),
        "moved_per_frame": moved / max(1, frames),
        "bytes_per_moved": payload / max(1, moved),
        "ws_header_bytes_per_moved": header / max(1, moved),
        "snapshots_in_window": sum(c["snapshots"] for c in clients),
        "client_cpu_frac": [round(c["cpu_frac"], 3) for c in clients],
        "server": srv,
    }
    res["target_met"] = bool(
        res["fps_p5"] >= 0.97 * sc.tick_hz
        and lat.size
        and res["latency_ms_p99"] <= 50.0
        and res["bytes_per_moved"] <= 32.0
    )
    return res


def _table(results: list[dict[str, Any]]) -> str:
    head = (
        "| viewers | fps/viewer mean (p5, min) | latency p50 / p99 / max ms | B/moved "
        "(+ WS hdr) | server CPU (user+sys) | peak RSS | ticks/s (overruns) | tick mean/p99 (CPU) ms | fan-out p50/p99 ms "
        "| skipped (backpressure) | client CPU | other load | target |"
    )
    rows = [head, "|" + "---:|" * (head.count("|") - 1)]
    for r in results:
        s = r["server"]
        m = s["metrics"]
        rows.append(
            f"| {r['viewers']} | {r['fps_mean']:.1f} ({r['fps_p5']:.1f}, {r['fps_min']:.1f}) "
            f"| {r['latency_ms_p50']:.1f} / {r['latency_ms_p99']:.1f} / {r['latency_ms_max']:.0f} "
            f"| {r['bytes_per_moved']:.2f} (+{r['ws_header_bytes_per_moved']:.2f}) "
            f"| {s['cpu_frac']:.2f} ({s['user_frac']:.2f}+{s['sys_frac']:.2f}) "
            f"| {s['rss_peak_mib']:.0f} MiB "
            f"| {s['ticks_per_s']:.1f} ({s['overruns']}) "
            f"| {s['tick_ms_mean']:.1f} / {s['tick_ms_p99']:.1f} ({s['tick_cpu_ms_mean']:.1f}) "
            f"| {s['fanout_ms_p50']:.1f} / {s['fanout_ms_p99']:.1f} "
            f"| {m.get('frames.skipped_backpressure', 0)} "
            f"| {', '.join(f'{c:.2f}' for c in r['client_cpu_frac'])} "
            f"| {r['other_load_cores']:.2f} "
            f"| {'yes' if r['target_met'] else 'no'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--viewers", default="100,500,1000", help="viewer counts, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per count")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds after all viewers joined")
    ap.add_argument("--entities", type=int, default=1000)
    ap.add_argument("--moved", type=float, default=0.10, help="fraction moved per tick")
    ap.add_argument("--client", choices=("raw", "websockets"), default="raw")
    ap.add_argument("--client-procs", type=int, default=1, help="viewer processes")
    ap.add_argument("--profile", action="store_true", help="cProfile the server in the window")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    _raise_nofile()
    sc = Scenario(
        entities=args.entities,
        moved_fraction=args.moved,
        warmup_s=args.warmup,
        seconds=args.seconds,
        client=args.client,
        client_procs=args.client_procs,
        profile=args.profile,
    )
    counts = [int(v) for v in args.viewers.split(",") if v.strip()]
    results = [measure(v, sc) for v in counts]
    if args.json:
        doc = {
            "benchmark": "streaming",
            "machine": {
                "cpus": os.cpu_count(),
                "cpu": _cpu_model(),
                "python": platform.python_version(),
            },
            "scenario": asdict(sc),
            "results": results,
        }
        print(json.dumps(doc, indent=1))
    else:
        print(
            f"{sc.entities} entities, {sc.moved_fraction:.0%} moved per tick at "
            f"{sc.tick_hz:g} Hz, {sc.seconds:g} s window, {sc.client} client"
        )
        print(_table(results))
        for r in results:
            extra = {k: v for k, v in r["server"]["metrics"].items()}
            print(f"{r['viewers']} viewers: server metrics in window {extra}")
            if "profile" in r["server"]:
                print(r["server"]["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
