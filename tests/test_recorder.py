"""The record (twin.live.recorder) and replay (twin.live.replay): round trips, queries,
append-only, bad files, a SIGKILL during ingest, and replay order and pacing on a fake clock."""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenes.errors import ConfigError
from streaming.auth import AuditRecord
from twin.live.recorder import (
    SCHEMA_VERSION,
    TELEMETRY_KINDS,
    Kind,
    Recorder,
    RecordReader,
    decode_value,
    encode_value,
)
from twin.live.replay import iter_replay, replay
from twin.live.telemetry import Link, Quality, Reason, Rejected, Sample, Stale, Telemetry

REPO = Path(__file__).resolve().parent.parent

# -- strategies -------------------------------------------------------------------------------

texts = st.text(max_size=12)
timestamps = st.floats(min_value=0.0, max_value=4e9, allow_nan=False)
json_like: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: big integers go through a msgpack extension
    | st.floats(allow_nan=False)
    | texts
    | st.binary(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
samples = st.builds(
    Sample,
    address=texts,
    value=json_like,
    received_ts=timestamps,
    source_ts=st.none() | timestamps,
    quality=st.sampled_from(Quality),
    source=texts,
)
rejections = st.builds(
    Rejected,
    reason=st.sampled_from(Reason),
    detail=texts,
    received_ts=timestamps,
    address=texts,
    source=texts,
)
stales = st.builds(Stale, prefix=texts, received_ts=timestamps, reason=texts, source=texts)
links = st.builds(Link, up=st.booleans(), received_ts=timestamps, detail=texts, source=texts)
telemetry: st.SearchStrategy[Telemetry] = samples | rejections | stales | links
json_args = st.dictionaries(
    texts,
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
        max_leaves=6,
    ),
    max_size=3,
)
audits = st.builds(
    AuditRecord,
    ts=timestamps,
    who=texts,
    role=st.sampled_from(["viewer", "operator", "admin"]),
    session=texts,
    command_id=texts,
    target=texts,
    action=texts,
    args=json_args,
    ok=st.booleans(),
    code=texts,
    reason=texts,
    duplicate=st.booleans(),
)


def _outcome(item: Telemetry) -> tuple[str, str]:
    if isinstance(item, Rejected):
        return "rejected", item.reason.value
    if isinstance(item, Sample) and isinstance(item.value, str):
        return "rejected", Reason.WRONG_TYPE.value
    return "accepted", ""


def _same(a: Any, b: Any) -> bool:
    """Equality that also tells -0.0 from 0.0, an int from a float and True from 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- round trips ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(entries=st.lists(telemetry.map(lambda t: ("t", t)) | audits.map(lambda a: ("c", a))))
def test_round_trip_every_kind(entries: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.db"
        with Recorder(path) as rec:
            for tag, x in entries:
                if tag == "t":
                    outcome, reason = _outcome(x)
                    rec.append(x, outcome=outcome, reason=reason)
                else:
                    rec.append_command(x)
            rec.flush()
        with RecordReader(path) as reader:
            rows = list(reader.query())
        assert len(rows) == len(entries)
        for row, (tag, x) in zip(rows, entries, strict=True):
            if tag == "t":
                assert row.item == x
                if isinstance(x, Sample):
                    assert _same(row.value, x.value)
                assert (row.outcome, row.reason) == _outcome(x)
            else:
                assert row.kind is Kind.COMMAND
                assert row.command == x
                assert (row.who, row.action, row.target) == (x.who, x.action, x.target)
                with pytest.raises(ValueError, match="command"):
                    _ = row.item


@given(value=json_like)
def test_value_codec_is_exact(value: Any) -> None:
    assert _same(decode_value(encode_value(value)), value)


def test_tuples_come_back_as_lists_and_objects_are_refused() -> None:
    assert decode_value(encode_value((1, (2, 3)))) == [1, [2, 3]]
    with pytest.raises(TypeError, match="object"):
        encode_value(object())


# -- queries ----------------------------------------------------------------------------------


def _fill(rec: Recorder) -> list[Telemetry]:
    rng = random.Random(4)
    items: list[Telemetry] = []
    for i in range(300):
        ts = 1000.0 + i * 0.1 + (rng.random() - 0.5) * 0.3  # not quite monotonic
        k = i % 10
        if k < 7:
            items.append(Sample(address=f"line/m{i % 3}/state", value=i, received_ts=ts))
        elif k == 7:
            items.append(Rejected(reason=Reason.MALFORMED, detail="x", received_ts=ts))
        elif k == 8:
            items.append(Stale(prefix="line/m1/", received_ts=ts))
        else:
            items.append(Link(up=i % 20 == 9, received_ts=ts))
    for item in items:
        rec.append(item, outcome="rejected" if isinstance(item, Rejected) else "accepted")
    rec.append_command(
        AuditRecord(
            ts=1010.0,
            who="alice",
            role="operator",
            session="s",
            command_id="c1",
            target="line/m1",
            action="stop",
            args={},
            ok=True,
        )
    )
    return items


def test_query_by_time_range_address_kind_and_limit(tmp_path: Path) -> None:
    with Recorder(tmp_path / "r.db") as rec:
        items = _fill(rec)
        # Recorder.query flushes first: it sees every append before it
        assert len(list(rec.query())) == len(items) + 1
        got = [r.item for r in rec.query(t0=1005.0, t1=1012.5, kinds=TELEMETRY_KINDS)]
        assert got == [x for x in items if 1005.0 <= x.received_ts < 1012.5]
        got = [r.item for r in rec.query(address="line/m2/state", t0=1010.0)]
        assert got == [
            x
            for x in items
            if isinstance(x, Sample) and x.address == "line/m2/state" and x.received_ts >= 1010.0
        ]
        assert [r.item for r in rec.query(kinds=["link"], limit=4)] == [
            x for x in items if isinstance(x, Link)
        ][:4]
        assert [r.command.action for r in rec.query(kinds=[Kind.COMMAND])] == ["stop"]
        assert list(rec.query(kinds=[])) == []
        ids = [r.id for r in rec.query()]
        assert ids == sorted(ids)  # append order, whatever the timestamps
        counts = rec.counts()
        assert counts[("sample", "accepted", "")] == 210
        assert counts[("rejected", "rejected", "malformed")] == 30
        assert counts[("command", "accepted", "")] == 1
        assert sum(counts.values()) == 301


def test_reader_sees_only_flushed_rows_and_reopening_appends(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    rec = Recorder(path)
    rec.append(Link(up=True, received_ts=1.0), outcome="accepted")
    rec.flush()
    rec.append(Link(up=False, received_ts=2.0), outcome="accepted")
    assert rec.pending == 1
    with Recorder.open_readonly(path) as reader:
        assert [r.received_ts for r in reader.query()] == [1.0]
        rec.flush()
        assert [r.received_ts for r in reader.query()] == [1.0, 2.0]
        assert reader.integrity_check() == "ok"
    rec.close()
    with pytest.raises(ValueError, match="closed"):
        rec.append(Link(up=True, received_ts=3.0), outcome="accepted")
    with Recorder(path) as again:
        again.append(Link(up=True, received_ts=3.0), outcome="accepted")
    with RecordReader(path) as reader:
        assert [r.id for r in reader.query()] == [1, 2, 3]
        mode = reader._read_conn().execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


# -- append-only, bad files -------------------------------------------------------------------


def test_append_only(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with Recorder(path) as rec:
        rec.append(Sample(address="a", value=1, received_ts=1.0), outcome="accepted")
    public = {n for n in dir(Recorder) if not n.startswith("_")}
    assert public == {
        "append",
        "append_many",
        "append_command",
        "flush",
        "pending",
        "query",
        "counts",
        "close",
        "open_readonly",
    }
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE entry SET address = 'b'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM entry")
    conn.close()
    with RecordReader(path) as reader:
        assert [r.address for r in reader.query()] == ["a"]


def test_not_a_record(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database\n" * 10)
    with pytest.raises(ConfigError, match=r"notes\.txt: not a twin record"):
        Recorder(text)
    with pytest.raises(ConfigError, match=r"notes\.txt: not a twin record"):
        RecordReader(text)

    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match=r"other\.db: not a twin record"):
        Recorder(other)
    conn = sqlite3.connect(other)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # left untouched
    conn.close()

    newer = tmp_path / "newer.db"
    Recorder(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match=r"newer\.db: record schema version 2 is newer"):
        Recorder(newer)
    with pytest.raises(ConfigError, match="no such record"):
        RecordReader(tmp_path / "missing.db")


# -- SIGKILL during ingest --------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    from twin.live.recorder import Recorder
    from twin.live.telemetry import Sample

    rec = Recorder(sys.argv[1])
    i = int(sys.argv[2])
    while True:
        rec.append_many(
            (Sample(address=f"t/{j % 7}", value=j, received_ts=1000.0 + j), "accepted", "")
            for j in range(i, i + 100)
        )
        rec.flush()
        i += 100
        rec.append(Sample(address="unflushed", value=-1, received_ts=0.0), outcome="accepted")
        print(i, flush=True)  # the unflushed row is written by the next flush, or lost
    """
)


def test_sigkill_during_ingest_keeps_every_flushed_row(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    for _ in range(3):
        with RecordReader(path) if path.exists() else _nothing() as reader:
            start = 0 if reader is None else sum(1 for r in reader.query() if r.value != -1)
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        assert child.stdout is not None
        reported = start
        for _ in range(rng.randrange(1, 40)):
            line = child.stdout.readline()
            assert line, f"child ended early (seed {seed})"
            reported = int(line)
        time.sleep(rng.random() * 0.005)
        child.send_signal(signal.SIGKILL)  # at a random moment: often inside a flush
        rest = child.stdout.read().split()
        child.wait()
        reported = int(rest[-1]) if rest else reported
        assert child.returncode == -signal.SIGKILL
        with RecordReader(path) as reader:
            assert reader.integrity_check() == "ok", f"seed {seed}"
            values = [r.value for r in reader.query(kinds=["sample"]) if r.value != -1]
        assert len(values) >= reported, f"seed {seed}"
        assert values == list(range(len(values))), f"seed {seed}"  # whole flushes only
        assert len(values) % 100 == 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- replay -----------------------------------------------------------------------------------


class FakeClock:
    """A virtual clock: ``sleep`` advances it at once."""

    def __init__(self) -> None:
        self.t = 500.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def _replay_record(path: Path) -> list[Telemetry]:
    items: list[Telemetry] = [
        Sample(address="a", value=1, received_ts=100.0),
        Sample(address="b", value=2, received_ts=100.004),
        Rejected(reason=Reason.NOT_FINITE, detail="nan", received_ts=100.5, address="a"),
        Sample(address="a", value=3, received_ts=100.5),
        Link(up=False, received_ts=102.0),
        Sample(address="a", value=4, received_ts=101.9),  # the clock stepped back
    ]
    with Recorder(path) as rec:
        for i, item in enumerate(items):
            rec.append(item, outcome="rejected" if isinstance(item, Rejected) else "accepted")
            if i == 2:
                rec.append_command(
                    AuditRecord(
                        ts=100.6,
                        who="bob",
                        role="operator",
                        session="s",
                        command_id="c",
                        target="m",
                        action="reset",
                        args={},
                        ok=True,
                    )
                )
    return items


def test_iter_replay_order_and_range(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    items = _replay_record(path)
    assert list(iter_replay(path)) == [(x.received_ts, x) for x in items]  # no command
    assert [x for _, x in iter_replay(path, t0=100.5, t1=102.0)] == [items[2], items[3], items[5]]


def test_replay_paces_batches_on_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    items = _replay_record(path)
    clock = FakeClock()
    got: list[tuple[float, list[Telemetry]]] = []

    def on_batch(batch: list[Telemetry]) -> None:
        got.append((clock.now() - 500.0, batch))

    stats = asyncio.run(replay(path, on_batch, speed=2.0, clock=clock, step_s=0.01))
    assert [b for _, b in got] == [items[0:2], items[2:4], items[4:5], items[5:6]]
    times = [t for t, _ in got]
    assert times == pytest.approx([0.0, 0.25, 1.0, 1.0])  # (ts - 100) / 2; 101.9 is late
    assert stats.items == 6 and stats.batches == 4
    assert (stats.first_ts, stats.last_ts) == (100.0, 101.9)
    assert stats.max_late_s == pytest.approx(0.05)


def test_replay_unpaced_and_async_handler(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    items = _replay_record(path)
    for speed in (0.0, math.inf):
        clock = FakeClock()
        got: list[Telemetry] = []

        async def on_batch(batch: list[Telemetry], got: list[Telemetry] = got) -> None:
            got.extend(batch)

        stats = asyncio.run(replay(path, on_batch, speed=speed, clock=clock, max_batch=1))
        assert got == items
        assert stats.batches == 6
        assert clock.sleeps == [0.0] * 6  # never waits, only yields to the loop


def test_replay_slow_handler_does_not_shift_the_schedule(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    _replay_record(path)
    clock = FakeClock()
    times: list[float] = []

    def slow(batch: list[Telemetry]) -> None:
        times.append(clock.now() - 500.0)
        clock.t += 0.3  # the twin takes 0.3 s per batch

    asyncio.run(replay(path, slow, speed=1.0, clock=clock))
    # due at 0, 0.5, 2.0, 1.9: the second batch is on time, the last two run late
    assert times == pytest.approx([0.0, 0.5, 2.0, 2.3])


def test_replay_refuses_a_negative_speed(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    _replay_record(path)
    with pytest.raises(ValueError, match="speed"):
        asyncio.run(replay(path, lambda b: None, speed=-1.0))


def test_append_from_one_thread_while_another_flushes(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.db")
    done = threading.Event()

    def flusher() -> None:
        while not done.is_set():
            rec.flush()

    t = threading.Thread(target=flusher)
    t.start()
    try:
        for i in range(3000):
            rec.append(Sample(address="a", value=i, received_ts=float(i)), outcome="accepted")
    finally:
        done.set()
        t.join()
    assert [r.value for r in rec.query()] == list(range(3000))
    rec.close()
