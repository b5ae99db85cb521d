"""Telemetry ingest from MQTT: tag updates per second into the twin state, and the latency from
publish to twin state (JSON payloads and Sparkplug B).

Everything is real and on this machine: a mosquitto broker on a free loopback port (a temporary
config, persistence off), gateway publishers in their own processes (QoS 1: JSON from a lean
socket publisher, :class:`RawPublisher`, or paho with ``--publisher paho``; Sparkplug from paho),
and the twin in its own process, its heap frozen after start-up as ``twin serve`` does
(``--no-freeze``: not): :class:`~twin.live.mqtt.MqttSource` handing batches to
:meth:`~twin.live.mirror.LiveLine.ingest` (the reducer, and a :class:`~twin.live.recorder.Recorder`
flushed before the messages are acknowledged, as ``twin serve --source mqtt://...`` runs it).
The line is generated: ``--stations`` stations (10) with ``state``, ``count`` and ``--analog``
analog tags each (48, so 500 tags), on JSON topics ``bench/sN/TAG`` or on Sparkplug addresses
``spBv1.0/bench/DDATA/node1/sN/TAG``.

Runs:

* **drain** (throughput): the twin's persistent session is subscribed, then the publishers put a
  backlog into the broker (JSON: one tag per message; Sparkplug: births, then DDATA messages
  carrying all 50 metrics of one device), then the twin connects and drains it. The window runs
  from the first batch that holds a sample to the batch that completes the count. Reported:
  tag updates the reducer accepted per second of wall time and per CPU second of the twin
  process (user + system, all threads: "per core"). With and without the recorder.
* **paced** (latency): the twin is connected; publishers send ``--rate`` tag updates per second
  (10,000) for ``--seconds``, in 1 ms ticks (JSON also without the recorder, for comparison). Each update carries its publish time (``time.time()`` just before
  ``publish``): the JSON ``ts``, and for Sparkplug the value of each analog metric (a Double; the
  metric timestamps are whole milliseconds). The twin notes ``time.time() - publish time`` for
  every sample once ``LiveLine.ingest`` has returned (applied and recorded). The first 0.5 s is
  warm-up and left out. Reported: p50, p99 and max.

The broker keeps mosquitto's default ``max_inflight_messages`` (20) unless ``--broker-inflight``
says otherwise; ``max_queued_messages`` is unlimited so the backlog fits. (Measured, not assumed:
the twin's batches are far larger than 20 messages either way; see ``upd/batch``.)

    .venv/bin/python benchmarks/bench_ingest.py                     # all runs, ~1-2 minutes
    .venv/bin/python benchmarks/bench_ingest.py --json              # one JSON object on stdout
    .venv/bin/python benchmarks/bench_ingest.py --only drain --broker-inflight 1000
    .venv/bin/python benchmarks/bench_ingest.py --only json-drain-rec --profile 30

Besides the figures above: ``wait s``, the seconds the twin was ready to run but waited for a
core during the window (``/proc/self/schedstat``: the machine's other load), and for paced runs
``arr p99``, the p99 from publish to the twin reading the message (publisher, broker and the
twin's socket; the rest of the latency is the twin's batch wait and ``ingest``); ``ingest
p99/max``, the wall time of the twin's ``ingest`` calls; ``pub CPU s``, the publishers' CPU
time (all of them, start-up included), which the machine's two cores share with the twin.

Progress goes to stderr. ``--profile N`` runs cProfile in the twin process over each window and
prints its top N functions by own time to stderr (the figures of a profiled run are inflated).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SPB = "spBv1.0"  # the Sparkplug B namespace
GROUP = "bench"
NODE = "node1"
WARMUP_S = 0.5  # of a paced run, left out of the latency figures
TARGET_PER_CORE = 50_000.0
TARGET_P99_S = 0.020


class Payload(StrEnum):
    JSON = "json"
    SPARKPLUG = "sparkplug"


class Mode(StrEnum):
    DRAIN = "drain"
    PACED = "paced"


def log(msg: str) -> None:
    print(f"[bench_ingest {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The generated line.


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Stations ``s0..`` with the tags ``state``, ``count`` and ``a0..`` (analog)."""

    stations: int = 10
    analog: int = 48

    def tag_names(self) -> list[str]:
        return ["state", "count", *(f"a{j}" for j in range(self.analog))]

    @staticmethod
    def metric(tag: str) -> str:
        """The Sparkplug metric name of a tag (``state`` -> ``State``, ``a3`` -> ``A3``)."""
        return tag[:1].upper() + tag[1:]

    def address(self, payload: Payload, station: int, tag: str) -> str:
        if payload is Payload.JSON:
            return f"bench/s{station}/{tag}"
        return f"{SPB}/{GROUP}/DDATA/{NODE}/s{station}/{self.metric(tag)}"

    def line_yaml(self, payload: Payload) -> str:
        out = ["line: bench-ingest", "stations:"]
        for i in range(self.stations):
            out += [f"  - id: s{i}", "    process_time: 10", "    tags:"]
            out += [f'      {t}: "{self.address(payload, i, t)}"' for t in self.tag_names()]
        out.append("buffers:")
        for i in range(self.stations - 1):
            out.append(f"  - {{id: b{i}, from: s{i}, to: s{i + 1}, capacity: 5}}")
        return "\n".join(out) + "\n"

    @property
    def tags(self) -> int:
        return self.stations * (2 + self.analog)


# ---------------------------------------------------------------------------------------------
# The broker.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A mosquitto on a free loopback port: persistence off, unlimited queues for an absent
    client (the backlog), ``max_inflight_messages`` as given (mosquitto's default is 20)."""

    def __init__(self, directory: Path, *, inflight: int | None) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).is_file():
            raise SystemExit("mosquitto is missing (apt-get install mosquitto)")
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        conf = directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 0",
        ]
        if inflight is not None:
            lines.append(f"max_inflight_messages {inflight}")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise SystemExit("mosquitto did not start")

    def cpu_s(self) -> float:
        """The broker's user + system CPU seconds so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _paho(client_id: str, *, clean: bool) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)


def _connect(client: Any, url: str) -> None:
    """Connect ``client`` (paho) with its network thread started; waits for the CONNACK."""
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    port = int(url.rsplit(":", 1)[1])
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"no CONNACK from {url}")


def session(url: str, client_id: str, *, subscribe: list[str]) -> None:
    """Leave a persistent session for ``client_id`` subscribed (QoS 1) to ``subscribe``; with
    an empty list, remove the session (a clean-session connection)."""
    client = _paho(client_id, clean=not subscribe)
    _connect(client, url)
    if subscribe:
        acked = threading.Event()
        client.on_subscribe = lambda *a: acked.set()
        client.subscribe([(t, 1) for t in subscribe])
        if not acked.wait(10):
            raise RuntimeError("no SUBACK")
    client.disconnect()
    client.loop_stop()


# ---------------------------------------------------------------------------------------------
# The gateway side: publishers in their own processes.


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishJob:
    url: str
    client_id: str
    payload: Payload
    layout: Layout
    stations: tuple[int, ...]
    messages: int
    rate: float  # messages per second; 0: as fast as the broker acknowledges
    start_at: float  # Unix time of the first message (paced)
    raw: bool = False  # JSON through RawPublisher instead of paho


class RawPublisher:
    """A lean QoS 1 publisher for the JSON runs: MQTT 3.1.1 on a plain blocking socket, in the
    publishing thread (no network thread), the packets of one tick written with one ``send``
    (``encode_publish`` of ``twin.live.mqtt``), PUBACKs counted as they come back.

    It stands in for gateways that run on other machines: at 10,000 messages per second, paho's
    network thread and per-message objects cost the publisher processes a large share of this
    2-core machine, which the broker and the twin then wait for (``--publisher paho`` keeps
    them, to compare). The twin's side is the same either way.
    """

    def __init__(self, url: str, client_id: str) -> None:
        from twin.live.mqtt import encode_connect

        port = int(url.rsplit(":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(encode_connect(client_id, clean_session=True, keepalive_s=600))
        connack = b""
        while len(connack) < 4:
            chunk = self.sock.recv(4 - len(connack))
            if not chunk:
                raise RuntimeError(f"{url} closed the connection before CONNACK")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"{url} refused the connection: CONNACK {connack.hex()}")
        self.sock.setblocking(False)
        self.out = bytearray()
        self.packet_id = 0
        self.acked = 0
        self._in = b""

    def publish(self, topic: str, payload: bytes) -> None:
        from twin.live.mqtt import encode_publish

        self.packet_id = self.packet_id % 0xFFFF + 1
        self.out += encode_publish(topic, payload, self.packet_id)

    def flush(self) -> None:
        """Write what was published since the last flush, then count the PUBACKs that came."""
        view = memoryview(self.out)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                self._read_acks()
                time.sleep(0.0001)
        view.release()
        self.out.clear()
        self._read_acks()

    def _read_acks(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self._in += chunk
        except BlockingIOError:
            pass
        n = len(self._in) // 4  # the broker sends this publisher PUBACKs only: 4 bytes each
        if n and any(self._in[k] != 0x40 for k in range(0, 4 * n, 4)):
            raise RuntimeError(f"unexpected packet from the broker: {self._in[:8].hex()}")
        self.acked += n
        self._in = self._in[4 * n :]

    def wait_acked(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.acked < count and time.monotonic() < deadline:
            self.flush()
            time.sleep(0.001)
        return self.acked >= count

    def close(self) -> None:
        from twin.live.mqtt import DISCONNECT

        self.sock.setblocking(True)
        self.sock.sendall(DISCONNECT)
        self.sock.close()


def _json_message(job: PublishJob) -> Callable[[int], tuple[str, bytes, int]]:
    """Message ``i`` of a JSON job: one tag update whose ``ts`` is its publish time."""
    from twin.live.mqtt import encode_json

    layout = job.layout
    names = layout.tag_names()
    per_round = len(job.stations) * len(names)

    def message(i: int) -> tuple[str, bytes, int]:
        now = time.time()
        s = job.stations[(i % per_round) // len(names)]
        tag = names[i % len(names)]
        k = i // per_round
        value: Any = ("IDLE" if k % 2 == 0 else "RUNNING") if tag == "state" else k + 1
        return layout.address(Payload.JSON, s, tag), encode_json(value, ts=now), 1

    return message


def _publish_loop(
    job: PublishJob,
    message: Callable[[int], tuple[str, bytes, int]],
    publish: Callable[[str, bytes], None],
    flush: Callable[[], None],
) -> dict[str, Any]:
    """Publish ``job.messages`` messages: at ``job.rate`` in 1 ms ticks (paced), or all at once
    (drain); ``flush`` after each tick (and every 1,000 messages)."""
    updates = 0
    t_first = t_last = 0.0
    i = 0
    while i < job.messages:
        if job.rate > 0:
            now = time.time()
            due = min(job.messages, int((now - job.start_at) * job.rate) + 1)
            if due <= i:  # sleep to the next 1 ms tick (or the first message)
                tick = max(job.start_at, now) - job.start_at
                time.sleep(max(0.0, job.start_at + (int(tick * 1000) + 1) / 1000 - now))
                continue
        else:
            due = job.messages
        while i < due:
            topic, data, n = message(i)
            if i == 0:
                t_first = time.time()
            publish(topic, data)
            updates += n
            i += 1
            if i % 1000 == 0:
                flush()
        flush()
        t_last = time.time()
    return {"updates": updates, "messages": job.messages, "t_first": t_first, "t_last": t_last}


def publisher(job: PublishJob, conn: Connection) -> None:
    """Publish ``job.messages`` (and, for Sparkplug, the births first) at QoS 1, wait for every
    PUBACK, and send back a summary (with the process's CPU time)."""
    from twin.live.sparkplug import DataType, SparkplugNode

    cpu0 = time.process_time()
    if job.raw:
        if job.payload is not Payload.JSON:
            raise ValueError("the raw publisher publishes JSON only")
        raw = RawPublisher(job.url, job.client_id)
        summary = _publish_loop(job, _json_message(job), raw.publish, raw.flush)
        summary["acked"] = raw.wait_acked(job.messages, 120)
        summary["publish_s"] = time.time() - summary["t_first"]
        raw.close()
        summary["cpu_s"] = time.process_time() - cpu0
        conn.send(summary)
        conn.close()
        return
    layout = job.layout
    names = layout.tag_names()
    client = _paho(job.client_id, clean=True)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    acked = 0
    expected = job.messages
    all_acked = threading.Event()

    def on_publish(*_: Any) -> None:
        nonlocal acked
        acked += 1
        if acked >= expected:
            all_acked.set()

    client.on_publish = on_publish
    message = _json_message(job)
    births_updates = 0
    if job.payload is Payload.SPARKPLUG:
        devices = [f"s{i}" for i in job.stations]
        metrics = {
            Layout.metric(t): DataType.String
            if t == "state"
            else DataType.Int64
            if t == "count"
            else DataType.Double
            for t in names
        }
        node = SparkplugNode(GROUP, NODE, devices={d: metrics for d in devices})
        will_topic, will_payload = node.connect()
        client.will_set(will_topic, will_payload, qos=1)
        now_ms = int(time.time() * 1000)
        for d in devices:  # births carry values (accepted), and none equals the first DDATA's
            node.data(d, {m: "RUNNING" if m == "State" else 0 for m in metrics}, now_ms)

        def message(i: int) -> tuple[str, bytes, int]:
            now = time.time()
            d = devices[i % len(devices)]
            k = i // len(devices)
            values: dict[str, Any] = {"State": "IDLE" if k % 2 == 0 else "RUNNING", "Count": k + 1}
            for j in range(layout.analog):
                values[f"A{j}"] = now  # the publish time (metric timestamps are whole ms)
            topic, data = node.data(d, values, int(now * 1000))
            return topic, data, len(values)

    _connect(client, job.url)
    if job.payload is Payload.SPARKPLUG:
        births = node.births(int(time.time() * 1000))
        expected += len(births)
        for topic, data in births:
            client.publish(topic, data, qos=1)
        births_updates = len(devices) * len(names)  # device metrics are samples; not bdSeq

    summary = _publish_loop(
        job, message, lambda topic, data: client.publish(topic, data, qos=1), lambda: None
    )
    summary["updates"] += births_updates
    summary["acked"] = all_acked.wait(120)
    summary["publish_s"] = time.time() - summary["t_first"]
    client.disconnect()
    client.loop_stop()
    summary["cpu_s"] = time.process_time() - cpu0
    conn.send(summary)
    conn.close()


# ---------------------------------------------------------------------------------------------
# The twin side: its own process, one LiveLine per run.


@dataclass(frozen=True, slots=True, kw_only=True)
class TwinJob:
    name: str
    url: str
    client_id: str
    payload: Payload
    mode: Mode
    record: bool
    expected: int  # accepted samples that end the window
    timeout_s: float
    profile: int = 0


def twin_worker(layout: Layout, directory: str, conn: Connection, no_freeze: bool) -> None:
    """Build the lines (the first LiveLine compiles the process core), freeze the heap as
    ``twin serve`` does (unless ``no_freeze``), then run the jobs that come over ``conn`` until
    None."""
    t0 = time.perf_counter()
    from scenes.graph import build_graph
    from scenes.lineparse import parse_line
    from twin.live.mirror import LiveLine

    lines = {}
    for p in Payload:
        spec = parse_line(layout.line_yaml(p), check_meshes=False)
        lines[p] = (spec, build_graph(spec))
    for p in Payload:
        LiveLine(*lines[p])  # JAX compiles here, not in a run
    if not no_freeze:
        from twin.commands.serve import settle_heap

        settle_heap()  # as `twin serve` does once it is set up
    conn.send({"warm_s": time.perf_counter() - t0})
    while True:
        job = conn.recv()
        if job is None:
            break
        conn.send(asyncio.run(_twin_run(job, lines[job.payload], directory, conn)))
    conn.close()


def run_queue_s() -> float:
    """Seconds this process's main thread has waited for a core so far (runnable, not running:
    ``/proc/self/schedstat``); 0.0 where the kernel does not say."""
    try:
        return int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


async def _twin_run(job: TwinJob, line: Any, directory: str, conn: Connection) -> dict[str, Any]:
    import cProfile
    import pstats

    from twin.live.mirror import LiveLine
    from twin.live.mqtt import MqttSource
    from twin.live.recorder import Recorder
    from twin.live.telemetry import Sample, Telemetry

    t_job = time.perf_counter()
    path = Path(directory) / f"{job.name}.sqlite"
    recorder = Recorder(path) if job.record else None
    live = LiveLine(*line, recorder=recorder)
    counts = live.twin.counts
    done = asyncio.Event()
    win: dict[str, float] = {}
    batches = items_n = 0
    latencies: list[tuple[float, float, float]] = []  # (published, to state, to arrival)
    ingest_s: list[float] = []  # wall time of each `ingest` call in the window
    measure = job.mode is Mode.PACED
    spb = job.payload is Payload.SPARKPLUG
    profiler = cProfile.Profile() if job.profile else None

    def on_telemetry(items: list[Telemetry]) -> None:
        nonlocal batches, items_n
        if not win and any(type(it) is Sample for it in items):
            win["t0"], win["c0"] = time.perf_counter(), time.process_time()
            win["q0"] = run_queue_s()
            win["setup_s"] = win["t0"] - t_job
            win["accepted0"] = counts["accepted"]
            if profiler is not None:
                profiler.enable()
        t_in = time.perf_counter()
        live.ingest(items)
        if not win:
            return
        ingest_s.append(time.perf_counter() - t_in)
        batches += 1
        items_n += len(items)
        if measure:
            now = time.time()
            for it in items:
                if type(it) is Sample:
                    published: float | None
                    if not spb:
                        published = it.source_ts
                    elif it.address.rsplit("/", 1)[1][0] == "A":
                        published = float(it.value)
                    else:
                        continue
                    if published is not None:
                        latencies.append((published, now - published, it.received_ts - published))
        if "t1" not in win and counts["accepted"] >= job.expected:
            win["t1"], win["c1"] = time.perf_counter(), time.process_time()
            win["q1"] = run_queue_s()
            if profiler is not None:
                profiler.disable()
            done.set()

    source = MqttSource(
        job.url,
        on_telemetry,
        addresses=list(live.tags.by_address),
        sparkplug=spb,
        client_id=job.client_id,
    )
    task = asyncio.create_task(source.run())
    if job.mode is Mode.PACED:
        while not live.twin.links.get("mqtt"):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # subscribed
        conn.send({"ready": True})
    timed_out = False
    try:
        await asyncio.wait_for(done.wait(), job.timeout_s)
    except TimeoutError:
        timed_out = True
        win.setdefault("t0", time.perf_counter())
        win.setdefault("c0", time.process_time())
        win.setdefault("accepted0", 0)
        win["t1"], win["c1"] = time.perf_counter(), time.process_time()
    win.setdefault("q1", run_queue_s())
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if recorder is not None:
        recorder.close()
    top: list[dict[str, Any]] = []
    if profiler is not None:
        profiler.disable()
        stats = pstats.Stats(profiler)
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
        for (file, lineno, fn), (_cc, nc, tt, ct, _callers) in rows[: job.profile]:
            where = f"{Path(file).parent.name}/{Path(file).name}:{lineno}" if lineno else file
            top.append({"function": f"{where}({fn})", "calls": nc, "tottime_s": tt, "cum_s": ct})
        areas: dict[str, float] = {}
        for (file, _lineno, fn), (_cc, _nc, tt, _ct, _callers) in rows:
            area = _area(file, fn)
            areas[area] = areas.get(area, 0.0) + tt
        top.insert(0, {"total_s": sum(areas.values()), "areas": areas})
    return {
        "wall_s": win["t1"] - win["t0"],
        "cpu_s": win["c1"] - win["c0"],
        "run_queue_s": win["q1"] - win.get("q0", win["q1"]),
        "accepted": counts["accepted"] - int(win["accepted0"]),
        "accepted_total": counts["accepted"],
        "rejected": counts["rejected"],
        "rejected_by_reason": live.twin.rejected_by_reason(),
        "messages": source.received,
        "batches": batches,
        "items": items_n,
        "timed_out": timed_out,
        "setup_s": win.get("setup_s", 0.0),
        "latencies": latencies,
        "ingest_s": sorted(ingest_s),
        "profile": top,
    }


#: Where a profiled function's own time goes: the first pattern its file or name contains.
AREAS = (
    ("paho-mqtt (read, parse, PUBACK)", ("paho/", "mqtt/client.py", "mqtt/_packet", "matcher")),
    ("logging (paho's per-packet log)", ("logging/",)),
    ("sqlite (recorder commit)", ("sqlite3.Connection",)),
    ("recorder (rows, msgpack)", ("live/recorder.py", "msgpack", "Packer")),
    ("reducer (TwinState, reduce)", ("live/state.py", "live/tags.py")),
    ("mirror (ingest, divergence)", ("live/mirror.py", "numpy", "jax")),
    ("sparkplug decode (host)", ("live/sparkplug.py", "google", "_upb")),
    ("json decode", ("live/mqtt.py:decode", "json/")),
    ("MqttSource batching", ("live/mqtt.py",)),
    ("asyncio event loop, sockets", ("asyncio/", "selectors", "socket", "select")),
)


def _area(file: str, fn: str) -> str:
    where = f"{file}:{fn}"
    if "live/mqtt.py" in file and fn in ("decode_json", "_timestamp", "_reject"):
        where = "live/mqtt.py:decode"
    for name, patterns in AREAS:
        if any(p in where for p in patterns):
            return name
    return "other (builtins, enum, dataclasses)"


# ---------------------------------------------------------------------------------------------
# The runs.


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    name: str
    payload: Payload
    mode: Mode
    record: bool


RUNS = (
    Run(name="json-drain-rec", payload=Payload.JSON, mode=Mode.DRAIN, record=True),
    Run(name="json-drain-norec", payload=Payload.JSON, mode=Mode.DRAIN, record=False),
    Run(name="spb-drain-rec", payload=Payload.SPARKPLUG, mode=Mode.DRAIN, record=True),
    Run(name="spb-drain-norec", payload=Payload.SPARKPLUG, mode=Mode.DRAIN, record=False),
    Run(name="json-paced-rec", payload=Payload.JSON, mode=Mode.PACED, record=True),
    Run(name="json-paced-norec", payload=Payload.JSON, mode=Mode.PACED, record=False),
    Run(name="spb-paced-rec", payload=Payload.SPARKPLUG, mode=Mode.PACED, record=True),
)


def _jobs(run: Run, args: argparse.Namespace, url: str, layout: Layout) -> list[PublishJob]:
    per_message = 2 + layout.analog if run.payload is Payload.SPARKPLUG else 1
    if run.mode is Mode.DRAIN:
        total = args.spb_messages if run.payload is Payload.SPARKPLUG else args.json_messages
        rate = 0.0
    else:
        total = round(args.rate * args.seconds / per_message)
        rate = args.rate / per_message
    n_pub = 1 if run.payload is Payload.SPARKPLUG else max(1, min(args.publishers, layout.stations))
    start_at = time.time() + 0.5
    jobs = []
    for k in range(n_pub):
        stations = tuple(range(k, layout.stations, n_pub))
        share = total // n_pub + (1 if k < total % n_pub else 0)
        jobs.append(
            PublishJob(
                url=url,
                client_id=f"bench-pub-{run.name}-{k}",
                payload=run.payload,
                layout=layout,
                stations=stations,
                messages=share,
                rate=rate / n_pub,
                start_at=start_at,
                raw=run.payload is Payload.JSON and args.publisher == "raw",
            )
        )
    return jobs


def _expected(run: Run, jobs: list[PublishJob], layout: Layout) -> int:
    if run.payload is Payload.JSON:
        return sum(j.messages for j in jobs)
    per_message = 2 + layout.analog
    return sum(j.messages * per_message + len(j.stations) * per_message for j in jobs)


def _publish(ctx: Any, jobs: list[PublishJob]) -> list[tuple[Any, Connection]]:
    started = []
    for job in jobs:
        here, there = ctx.Pipe()
        proc = ctx.Process(target=publisher, args=(job, there), daemon=True)
        proc.start()
        there.close()
        started.append((proc, here))
    return started


def _collect(started: list[tuple[Any, Connection]], timeout_s: float) -> list[dict[str, Any]]:
    out = []
    for proc, conn in started:
        if not conn.poll(timeout_s):
            raise RuntimeError("a publisher did not finish")
        out.append(conn.recv())
        proc.join(10)
    if not all(r["acked"] for r in out):
        raise RuntimeError("a publisher's messages were not all acknowledged")
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def run_one(
    run: Run,
    args: argparse.Namespace,
    ctx: Any,
    broker: Broker,
    twin: Connection,
    layout: Layout,
) -> dict[str, Any]:
    from twin.live.mqtt import subscriptions_for

    cid = f"bench-twin-{run.name}"
    jobs = _jobs(run, args, broker.url, layout)
    expected = _expected(run, jobs, layout)
    twin_job = TwinJob(
        name=run.name,
        url=broker.url,
        client_id=cid,
        payload=run.payload,
        mode=run.mode,
        record=run.record,
        expected=expected,
        timeout_s=args.timeout,
        profile=args.profile,
    )
    published: list[dict[str, Any]]
    if run.mode is Mode.DRAIN:
        if run.payload is Payload.SPARKPLUG:
            topics = [f"{SPB}/#"]
        else:
            topics = subscriptions_for(
                layout.address(Payload.JSON, i, t)
                for i in range(layout.stations)
                for t in layout.tag_names()
            )
        session(broker.url, cid, subscribe=topics)
        log(f"{run.name}: publishing a backlog of {expected:,} tag updates")
        published = _collect(_publish(ctx, jobs), args.timeout)
        log(f"{run.name}: backlog in the broker; the twin drains it")
        b0 = broker.cpu_s()
        twin.send(twin_job)
        result = twin.recv()
        broker_cpu = broker.cpu_s() - b0
    else:
        twin.send(twin_job)
        twin.recv()  # ready: connected and subscribed
        jobs = _jobs(run, args, broker.url, layout)  # start_at from now
        log(f"{run.name}: {args.rate:,.0f} tag updates/s for {args.seconds:g} s")
        b0 = broker.cpu_s()
        started = _publish(ctx, jobs)
        published = _collect(started, args.timeout)
        result = twin.recv()
        broker_cpu = broker.cpu_s() - b0
    session(broker.url, cid, subscribe=[])  # drop the twin's session
    wall, cpu, accepted = result["wall_s"], result["cpu_s"], result["accepted"]
    out: dict[str, Any] = {
        "run": run.name,
        "payload": run.payload.value,
        "mode": run.mode.value,
        "recorder": run.record,
        "updates": accepted,
        "expected": expected,
        "messages": result["messages"],
        "wall_s": round(wall, 3),
        "twin_cpu_s": round(cpu, 3),
        "updates_per_s": round(accepted / wall) if wall > 0 else None,
        "updates_per_cpu_s": round(accepted / cpu) if cpu > 0 else None,
        "twin_cpu_share": round(cpu / wall, 2) if wall > 0 else None,
        # time the twin was ready to run but waited for a core (a loaded machine)
        "twin_run_queue_s": round(result["run_queue_s"], 3),
        "broker_cpu_s": round(broker_cpu, 3),
        "batches": result["batches"],
        "items_per_batch": round(result["items"] / result["batches"], 1)
        if result["batches"]
        else None,
        "rejected": result["rejected"],
        "rejected_by_reason": result["rejected_by_reason"],
        "timed_out": result["timed_out"],
        "setup_s": round(result["setup_s"], 2),
    }
    calls = result["ingest_s"]
    out["ingest_call_p99_ms"] = round(_percentile(calls, 0.99) * 1e3, 2)
    out["ingest_call_max_ms"] = round(calls[-1] * 1e3, 2) if calls else None
    out["publisher"] = "paho" if run.payload is Payload.SPARKPLUG else args.publisher
    out["publisher_cpu_s"] = round(sum(p["cpu_s"] for p in published), 3)
    if run.mode is Mode.DRAIN:
        out["publish_s"] = round(max(p["publish_s"] for p in published), 2)
    else:
        t_first = min(p["t_first"] for p in published)
        t_last = max(p["t_last"] for p in published)
        sent = sum(p["updates"] for p in published)
        cut = t_first + WARMUP_S
        kept = [(d, a) for pub, d, a in result["latencies"] if pub >= cut]
        lat = sorted(d for d, _ in kept)
        arrival = sorted(a for _, a in kept)
        out.update(
            {
                "rate_target": args.rate,
                "rate_published": round(sent / (t_last - t_first)) if t_last > t_first else None,
                "latency_samples": len(lat),
                "p50_ms": round(_percentile(lat, 0.50) * 1e3, 2),
                "p99_ms": round(_percentile(lat, 0.99) * 1e3, 2),
                "max_ms": round(lat[-1] * 1e3, 2) if lat else None,
                # publish -> read by the twin (publisher, broker, the twin's socket)
                "arrival_p50_ms": round(_percentile(arrival, 0.50) * 1e3, 2),
                "arrival_p99_ms": round(_percentile(arrival, 0.99) * 1e3, 2),
            }
        )
    if result["profile"]:
        out["profile"] = result["profile"]
        total = result["profile"][0]["total_s"]
        log(f"{run.name}: profile by area (own time, total {total:.2f} s)")
        for area, tt in sorted(result["profile"][0]["areas"].items(), key=lambda kv: -kv[1]):
            print(f"    {tt:7.3f} {tt / total:6.1%} {area}", file=sys.stderr)
        log(f"{run.name}: profile, top {args.profile} by own time")
        for row in result["profile"][1:]:
            print(
                f"    {row['tottime_s']:7.3f} {row['tottime_s'] / total:6.1%} "
                f"{row['cum_s']:7.3f} {row['calls']:>9} {row['function']}",
                file=sys.stderr,
            )
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _table(results: list[dict[str, Any]]) -> str:
    rows = [
        f"{'run':<18} {'updates':>9} {'wall s':>7} {'twin CPU s':>10} {'upd/s':>9} "
        f"{'upd/CPU-s':>10} {'upd/batch':>9} {'wait s':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'arr p99':>7} {'ingest p99/max ms':>17} {'pub CPU s':>9}"
    ]
    for r in results:
        paced = r["mode"] == Mode.PACED.value

        def ms(key: str, paced: bool = paced, r: dict[str, Any] = r) -> str:
            return f"{r[key]:7.2f}" if paced and r.get(key) is not None else f"{'':>7}"

        rows.append(
            f"{r['run']:<18} {r['updates']:>9,} {r['wall_s']:>7.2f} {r['twin_cpu_s']:>10.2f} "
            f"{r['updates_per_s'] or 0:>9,} {r['updates_per_cpu_s'] or 0:>10,} "
            f"{r['items_per_batch'] or 0:>9} {r['twin_run_queue_s']:>6.2f} "
            f"{ms('p50_ms')} {ms('p99_ms')} {ms('max_ms')} {ms('arrival_p99_ms')} "
            f"{r['ingest_call_p99_ms']:>8.2f}/{r['ingest_call_max_ms'] or 0:>8.2f} "
            f"{r['publisher_cpu_s']:>9.2f} {r['publisher']}"
            + ("  TIMED OUT" if r["timed_out"] else "")
            + (f"  rejected {r['rejected_by_reason']}" if r["rejected"] else "")
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=10)
    parser.add_argument("--analog", type=int, default=48, help="analog tags per station")
    parser.add_argument("--json-messages", type=int, default=100_000, help="JSON drain backlog")
    parser.add_argument(
        "--spb-messages", type=int, default=3_000, help="Sparkplug drain backlog (DDATA)"
    )
    parser.add_argument("--publishers", type=int, default=2, help="JSON publisher processes")
    parser.add_argument(
        "--publisher",
        choices=("raw", "paho"),
        default="raw",
        help="JSON publisher client: a lean socket publisher (default) or paho",
    )
    parser.add_argument("--rate", type=float, default=10_000.0, help="paced: tag updates/s")
    parser.add_argument("--seconds", type=float, default=8.0, help="paced: duration")
    parser.add_argument(
        "--broker-inflight", type=int, default=None, help="mosquitto max_inflight_messages"
    )
    parser.add_argument(
        "--only", action="append", help="run names, or drain/paced/json/spb (repeatable)"
    )
    parser.add_argument("--profile", type=int, default=0, help="cProfile: print top N")
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="leave the twin's heap unfrozen (twin serve freezes it after start-up)",
    )
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per step, at most")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    layout = Layout(stations=args.stations, analog=args.analog)
    runs = [
        r
        for r in RUNS
        if not args.only
        or any(
            o in (r.name, r.mode.value, r.payload.value, r.name.split("-")[0]) for o in args.only
        )
    ]
    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    ctx = mp.get_context("spawn")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as d:
        broker = Broker(Path(d), inflight=args.broker_inflight)
        here, there = ctx.Pipe()
        twin = ctx.Process(target=twin_worker, args=(layout, d, there, args.no_freeze), daemon=True)
        try:
            twin.start()
            there.close()
            log(f"mosquitto on {broker.url}; twin process starting (JAX compiles the line)")
            if not here.poll(180):
                raise RuntimeError("the twin process did not start")
            log(f"twin ready in {here.recv()['warm_s']:.1f} s")
            for run in runs:
                results.append(run_one(run, args, ctx, broker, here, layout))
                r = results[-1]
                log(
                    f"{run.name}: {r['updates']:,} updates, {r['updates_per_s']:,}/s wall, "
                    f"{r['updates_per_cpu_s']:,} per twin CPU-second"
                    + (f", p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms" if "p99_ms" in r else "")
                )
            here.send(None)
            twin.join(20)
        finally:
            if twin.is_alive():
                twin.terminate()
            broker.stop()
    per_core = [r["updates_per_cpu_s"] for r in results if r["mode"] == Mode.DRAIN.value]
    p99 = [r["p99_ms"] for r in results if r["mode"] == Mode.PACED.value]
    report: dict[str, Any] = {
        "benchmark": "ingest",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1min_start": round(load0, 2),
            "loadavg_1min_end": round(os.getloadavg()[0], 2),
        },
        "line": {"stations": layout.stations, "tags": layout.tags},
        "broker": {
            "mosquitto": "persistence false, max_queued_messages 0",
            "max_inflight_messages": args.broker_inflight or "default (20)",
        },
        "targets": {
            "updates_per_cpu_s": TARGET_PER_CORE,
            "p99_ms_at_10k_per_s": TARGET_P99_S * 1e3,
            "per_core_met": min(per_core) >= TARGET_PER_CORE if per_core else None,
            "p99_met": max(p99) <= TARGET_P99_S * 1e3 if p99 else None,
        },
        "runs": results,
        "elapsed_s": round(time.perf_counter() - t_start, 1),
    }
    if args.json:
        print(json.dumps(report))
    else:
        m = report["machine"]
        print(
            f"ingest from MQTT into the twin state: {layout.tags} tags, {m['cpus']} CPUs "
            f"({m['cpu']}), load {m['loadavg_1min_start']} -> {m['loadavg_1min_end']}, "
            f"broker max_inflight_messages {report['broker']['max_inflight_messages']}"
        )
        print(_table(results))
        verdict = {True: "met", False: "NOT met", None: "not run"}
        print(
            f"targets: >= {TARGET_PER_CORE:,.0f} updates per CPU-second (every drain run): "
            f"{verdict[report['targets']['per_core_met']]}; "
            f"p99 <= {TARGET_P99_S * 1e3:g} ms at 10,000/s (every paced run): "
            f"{verdict[report['targets']['p99_met']]} ({report['elapsed_s']} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
