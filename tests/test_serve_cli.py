"""``twin serve`` end to end: the console script as a real subprocess, real clients over loopback.

Starting the server compiles the process core with XLA (most of its start-up time); the
subprocesses share one persistent JAX compilation cache per test run (``JAX_COMPILATION_CACHE_DIR``
under pytest's base temporary folder), which changes nothing but the time to start.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from scenes.graph import LINE_ID, EntityKind, build_graph
from scenes.lineparse import load_line
from streaming.auth import AuditLog
from streaming.client import TwinClient
from streaming.protocol import SUBPROTOCOL
from streaming.replica import Replica

REPO = Path(__file__).resolve().parent.parent
BOTTLING = REPO / "scenes" / "examples" / "bottling.yaml"
TWIN = Path(sys.executable).parent / "twin"

VIEWER = "viewer-token-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcdef"
TRAINER = "trainer-token-0123456789abcdef"
TOKENS_YAML = f"""\
- {{name: vera, role: viewer, token: {VIEWER}}}
- {{name: olga, role: operator, token: {OPERATOR}}}
- {{name: tara, role: trainer, token: {TRAINER}}}
"""

#: Two stations that break down every few simulated seconds (so alarms come quickly).
FLAKY_LINE = """\
line: flaky
stations:
  - id: press
    process_time: 1.0
    failures: {mtbf: 15, mttr: 20, mode: time}
    position: [0, 0, 0]
    box: [1.0, 1.0, 1.0]
  - id: oven
    process_time: 1.0
    failures: {mtbf: 15, mttr: 20, mode: time}
    position: [5, 0, 0]
    box: [1.0, 1.0, 1.0]
buffers:
  - id: belt
    from: press
    to: oven
    conveyor: {length: 3.0, speed: 0.5, pitch: 0.2, width: 0.2, path: [[0.5, 0, 0.5], [3.5, 0, 0.5]]}
"""

START_TIMEOUT_S = 120.0


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def twin_cmd() -> list[str]:
    if not TWIN.exists():
        pytest.fail(f"no console script {TWIN}: install the package (pip install -e '.[dev]')")
    return [str(TWIN)]


@pytest.fixture
def jax_cache_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    env = dict(os.environ)
    env["JAX_COMPILATION_CACHE_DIR"] = str(root / "jax-compilation-cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Served:
    """A running ``twin serve``: its URL, stdout lines so far, and its stderr file."""

    def __init__(self, proc: subprocess.Popen[str], stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = ""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_line(self, pattern: str, timeout: float = START_TIMEOUT_S) -> re.Match[str]:
        """Read stdout until a line matches ``pattern`` (a regex)."""
        rx = re.compile(pattern)
        for line in self.lines:
            if m := rx.search(line):
                return m
        try:
            while True:
                line = self._q.get(timeout=timeout)
                if line is None:
                    break
                self.lines.append(line)
                if m := rx.search(line):
                    return m
        except queue.Empty:
            pass
        pytest.fail(
            f"twin serve printed no line matching {pattern!r} (exit code {self.proc.poll()})\n"
            f"stdout: {self.lines}\nstderr: {self.stderr.read_text()[-3000:]}"
        )


@contextmanager
def twin_serve(
    tmp_path: Path, env: dict[str, str], *args: str, line: Path = BOTTLING
) -> Iterator[Served]:
    stderr = tmp_path / "serve.stderr"
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [*twin_cmd(), "serve", str(line), "--port", "0", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    served = Served(proc, stderr)
    try:
        m = served.wait_line(
            r"^serving line '[^']+' \(\d+ entities\) at (ws://127\.0\.0\.1:\d+/ws)$"
        )
        served.url = m.group(1)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, f"twin serve exited with {proc.returncode}: {stderr.read_text()}"
    served.wait_line(r"^stopped after \d+ ticks", timeout=5)


def kinds(r: Replica, kind: str) -> set[str]:
    return {e.id for e in r.entities.values() if e.kind == kind}


# -- arguments and tokens files (no server starts) -----------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tick-hz", "5"], "--tick-hz must be within 10..60"),
        (["--tick-hz", "61"], "--tick-hz must be within 10..60"),
        (["--speed", "0"], "--speed must be within 0.1..1000"),
        (["--speed", "5000"], "--speed must be within 0.1..1000"),
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["--port", "http"], "argument --port: invalid int value: 'http'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    p = subprocess.run(
        [*twin_cmd(), "serve", str(BOTTLING), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert message in p.stderr
    assert "serving" not in p.stdout
    assert not (tmp_path / "out").exists(), "a refused start must not create files"


def test_tokens_file_errors_name_file_line_and_field(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        f"- {{name: vera, role: viewer, token: {VIEWER}}}\n"
        f"- {{name: olga, role: boss, token: {OPERATOR}}}\n"
        "- {name: tara, role: trainer, token: short}\n"
        f"- {{name: otto, role: operator, token: {VIEWER}}}\n"
        f"- {{name: ida, role: viewer, token: {TRAINER}, colour: red}}\n"
    )
    cases = {
        tokens: [
            f"{tokens}:2 [1].role: required, one of: viewer, operator",
            f"{tokens}:3 [2].token: required, a string of at least 16 characters",
            f"{tokens}:4 [3].token: the same token is given twice",
            f"{tokens}:5 [4].colour: unknown field",
        ],
        tmp_path / "missing.yaml": [f"{tmp_path / 'missing.yaml'}: cannot read tokens file"],
    }
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text(f"- {{name: vera, role: viewer, token: {VIEWER}}}\n- [unclosed\n")
    cases[bad_yaml] = [f"{bad_yaml}:"]
    for path, messages in cases.items():
        p = subprocess.run(
            [*twin_cmd(), "serve", str(BOTTLING), "--tokens", str(path)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 1, (path, p.returncode, p.stderr)
        for message in messages:
            assert message in p.stderr, (message, p.stderr)
        assert "Traceback" not in p.stderr
        assert "serving" not in p.stdout


# -- a served line -------------------------------------------------------------------------------


def test_serve_bottling_viewer_and_trainer(tmp_path: Path, jax_cache_env: dict[str, str]) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(TOKENS_YAML)
    audit = tmp_path / "tmp" / "audit.jsonl"
    args = ["--tokens", str(tokens), "--audit", "tmp/audit.jsonl", "--assets", "tmp/assets"]
    graph = build_graph(load_line(BOTTLING))
    stations = {e.id for e in graph.entities if e.kind is EntityKind.STATION}
    assert len(stations) == 8

    async def scenario(url: str) -> None:
        async with (
            TwinClient(url, VIEWER) as viewer,
            TwinClient(url, TRAINER, token_in_subprotocol=True) as trainer,
        ):
            await viewer.wait_for(lambda r: r.seq is not None, timeout=10)
            r = viewer.replica
            assert (r.role, r.name, r.tick_hz) == ("viewer", "vera", 30.0)
            assert kinds(r, "station") == stations
            assert {e.id for e in graph.entities} <= r.ids()
            assert r.get(LINE_ID, "speed") == 50.0

            first = {s: r.get(s, "state") for s in stations}
            await viewer.wait_for(
                lambda r: any(r.get(s, "state") != first[s] for s in stations), timeout=15
            )

            seen: dict[str, np.ndarray] = {}

            def a_part_moved(r: Replica) -> bool:
                for pid in kinds(r, "part"):
                    pos = r.pose(pid)[0]
                    if pid not in seen:
                        seen[pid] = pos
                    elif np.linalg.norm(pos - seen[pid]) > 0.01:
                        return True
                return False

            await viewer.wait_for(a_part_moved, timeout=15)

            def sim_time() -> float:
                return float(viewer.replica.get(LINE_ID, "sim_time"))

            refused = await viewer.command(LINE_ID, "sim.pause")
            assert (refused["ok"], refused["code"]) == (False, "forbidden")
            t0 = sim_time()
            await viewer.wait_for(lambda r: float(r.get(LINE_ID, "sim_time")) > t0 + 1.0)

            paused = await trainer.command(LINE_ID, "sim.pause")
            assert paused["ok"] is True and paused["result"]["paused"] is True
            seq = viewer.replica.seq or 0
            await viewer.wait_for(lambda r: r.get(LINE_ID, "paused") is True, timeout=5)
            await viewer.wait_seq(seq + 2)
            frozen = sim_time()
            await viewer.wait_seq((viewer.replica.seq or 0) + 15)  # half a second of ticks
            assert sim_time() == frozen, "sim_time advanced while paused"

            resumed = await trainer.command(LINE_ID, "sim.resume")
            assert resumed["ok"] is True
            await viewer.wait_for(lambda r: float(r.get(LINE_ID, "sim_time")) > frozen + 1.0)
            assert viewer.replica.get(LINE_ID, "paused") is False
            assert viewer.replica.stats["deltas.out_of_step"] == 0

    with twin_serve(tmp_path, jax_cache_env, *args, "--speed", "50") as served:
        served.wait_line(r"^audit log: tmp/audit.jsonl$")
        assert not any("admin token" in line for line in served.lines)
        run(scenario(served.url))
        asset_files = list((tmp_path / "tmp" / "assets").glob("*.glb"))
        assert asset_files, "the line's meshes were not published to --assets"
    rows = AuditLog.read(audit)
    got = [(r["who"], r["role"], r["action"], r["ok"], r["code"]) for r in rows]
    assert got == [
        ("vera", "viewer", "sim.pause", False, "forbidden"),
        ("tara", "trainer", "sim.pause", True, ""),
        ("tara", "trainer", "sim.resume", True, ""),
    ]
    assert all(r["target"] == LINE_ID and r["session"] for r in rows)


def test_operator_acknowledges_an_alarm(tmp_path: Path, jax_cache_env: dict[str, str]) -> None:
    line = tmp_path / "flaky.yaml"
    line.write_text(FLAKY_LINE)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(TOKENS_YAML)
    audit = tmp_path / "tmp" / "audit.jsonl"
    args = ["--tokens", str(tokens), "--audit", "tmp/audit.jsonl", "--assets", "tmp/assets"]
    acked: list[str] = []

    async def scenario(url: str) -> None:
        async with TwinClient(url, OPERATOR) as op, TwinClient(url, VIEWER) as viewer:
            # A fresh session is owed events from its join on: an alarm raised before then is in
            # the scene's state but not among the events. Take the first alarm raised after.
            def raised_since_join(r: Replica) -> list[str]:
                alarms = kinds(r, "alarm")
                return [
                    e["alarm"]["id"]
                    for e in r.events
                    if e["type"] == "alarm" and e["alarm"]["id"] in alarms
                ]

            await op.wait_for(lambda r: bool(raised_since_join(r)), timeout=20)
            alarm = raised_since_join(op.replica)[0]
            assert op.replica.entities[op.replica.handle(alarm)].props["severity"] == "major"
            assert op.replica.get(alarm, "acked_by") is None

            refused = await viewer.command(alarm, "alarm.ack")
            assert (refused["ok"], refused["code"]) == (False, "forbidden")
            result = await op.command(alarm, "alarm.ack")
            assert result["ok"] is True, result
            assert result["result"]["state"] in ("acknowledged", "cleared")
            await viewer.wait_for(lambda r: r.get(alarm, "acked_by") == "olga", timeout=5)
            assert viewer.replica.get(alarm, "state") in ("acknowledged", "cleared")

            def ack_event(r: Replica) -> bool:
                return any(
                    e["type"] == "alarm"
                    and e["alarm"]["id"] == alarm
                    and e["alarm"]["acked_by"] == "olga"
                    for e in r.events
                )

            await viewer.wait_for(ack_event, timeout=5)
            again = await op.command(alarm, "alarm.ack")
            assert again["ok"] is True and again["result"]["already"] is True
            missing = await op.command("alarm/99999", "alarm.ack")
            assert (missing["ok"], missing["code"]) == (False, "invalid_args")
            acked.append(alarm)

    with twin_serve(tmp_path, jax_cache_env, *args, "--speed", "50", line=line) as served:
        run(scenario(served.url))
    alarm = acked[0]
    rows = AuditLog.read(audit)
    got = [(r["who"], r["role"], r["target"], r["action"], r["ok"], r["code"]) for r in rows]
    assert got == [
        ("vera", "viewer", alarm, "alarm.ack", False, "forbidden"),
        ("olga", "operator", alarm, "alarm.ack", True, ""),
        ("olga", "operator", alarm, "alarm.ack", True, ""),
        ("olga", "operator", "alarm/99999", "alarm.ack", False, "invalid_args"),
    ]


def test_without_tokens_an_admin_token_is_generated(
    tmp_path: Path, jax_cache_env: dict[str, str]
) -> None:
    line = tmp_path / "flaky.yaml"
    line.write_text(FLAKY_LINE)
    args = ["--audit", "tmp/audit.jsonl", "--assets", "tmp/assets", "--tick-hz", "20"]

    async def scenario(url: str, token: str) -> None:
        async with TwinClient(url, token) as admin:
            await admin.wait_for(lambda r: r.seq is not None, timeout=10)
            r = admin.replica
            assert (r.role, r.name, r.tick_hz) == ("admin", "admin", 20.0)
            assert {"alarm.ack", "sim.pause", "sim.resume", "sim.speed", "sim.step"} <= set(
                r.capabilities
            )
            t0 = float(r.get(LINE_ID, "sim_time"))
            stepped = await admin.command(LINE_ID, "sim.step", {"seconds": 100})
            assert stepped["ok"] is True and stepped["result"]["t"] >= t0 + 100
            bad = await admin.command(LINE_ID, "sim.speed", {"speed": 1e6})
            assert (bad["ok"], bad["code"]) == (False, "invalid_args")
        for wrong in (VIEWER, token + "x"):
            with pytest.raises(InvalidStatus) as refused:
                await connect(
                    url,
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    additional_headers={"Authorization": f"Bearer {wrong}"},
                )
            assert refused.value.response.status_code == 401

    with twin_serve(tmp_path, jax_cache_env, *args, line=line) as served:
        m = served.wait_line(r"^admin token \(shown once; [^)]*\): (\S+)$", timeout=5)
        token = m.group(1)
        assert len(token) >= 16
        run(scenario(served.url, token))
    rows = AuditLog.read(tmp_path / "tmp" / "audit.jsonl")
    assert [(r["who"], r["role"], r["action"], r["ok"]) for r in rows] == [
        ("admin", "admin", "sim.step", True),
        ("admin", "admin", "sim.speed", False),
    ]


def test_settle_heap_freezes_what_start_up_left() -> None:
    """`twin serve` freezes its heap once set up (so full collections stop walking JAX's and the
    scene's objects): in a fresh interpreter, everything alive then is frozen, later objects
    are not."""
    code = (
        "import gc, jax\n"
        "from twin.commands.serve import settle_heap\n"
        "before = len(gc.get_objects())\n"
        "settle_heap()\n"
        "later = [[i] for i in range(1000)]\n"
        "walked = gc.get_objects()  # what a full collection walks\n"
        "assert len(walked) < before / 10, (len(walked), before)\n"
        "assert any(o is later for o in walked)\n"
        "print(gc.get_freeze_count())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert int(out.stdout) > 10_000  # jax alone leaves far more
