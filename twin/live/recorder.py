"""The record: a durable, append-only log of every telemetry item and every command.

One SQLite file in WAL mode holds one table, ``entry``, with a row per item in the order it was
appended: samples, rejections, stale marks and link events (with what the twin did with them:
``outcome`` and ``reason``) and commands (:class:`~streaming.auth.AuditRecord`, accepted or
refused). ``docs/record.md`` describes the schema and shows how to query it with ``sqlite3``.

Durability. :meth:`Recorder.append` only buffers in memory; :meth:`Recorder.flush` writes the
buffer in one transaction. When ``flush`` returns, every row appended before it survives a kill
of the process (SIGKILL, a crash): with ``synchronous=NORMAL`` in WAL mode a commit is in the
operating system's cache before ``flush`` returns, and SQLite recovers it from the ``-wal`` file
on the next open. A power loss or an operating-system crash may lose the last transactions
(never corrupting the file); ``Recorder(path, power_safe=True)`` uses ``synchronous=FULL``,
which fsyncs the WAL at every commit, at a cost per flush (see ``docs/benchmarks.md``).
So adapters acknowledge a message (an MQTT PUBACK) only after the flush that wrote it.

Append-only. The API has no way to change or remove a row, and triggers make the file refuse
``UPDATE`` and ``DELETE`` from any client (``DROP TABLE`` is not guarded: SQLite has no trigger
for it).

Threads. A :class:`Recorder` is the file's one writer: open at most one per file, across all
processes (SQLite would serialise two, but their rows would interleave). Its methods may be
called from any thread: ``append`` takes a short lock, ``flush`` swaps the buffer and writes
under a second lock, so an event loop may append while a worker thread flushes
(``await asyncio.to_thread(recorder.flush)``). Readers (:class:`RecordReader`,
:meth:`Recorder.open_readonly`, the ``sqlite3`` shell) may open the same file at the same time,
in this process or another; each sees the record as of its last committed flush.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

from scenes.errors import ConfigError
from streaming.auth import AuditRecord

from .telemetry import Link, Quality, Reason, Rejected, Sample, Stale, Telemetry

try:
    import msgpack
except ModuleNotFoundError as exc:  # pragma: no cover - msgpack comes with the stream extra
    raise ModuleNotFoundError(
        "twin.live.recorder needs msgpack: pip install 'twin-engine[stream]'"
    ) from exc

#: ``PRAGMA application_id`` of a record ("twRc"): tells a record from any other SQLite file.
APPLICATION_ID = 0x74775263
#: ``PRAGMA user_version``: the schema this module writes (and the newest it reads).
SCHEMA_VERSION = 1
#: msgpack extension code for an integer outside 64 bits (its decimal digits).
_EXT_BIGINT = 1
#: The ``quality`` column's text (a dict lookup: ``.value`` on an enum is a property call).
_QUALITY_TEXT: dict[Quality, str] = {q: q.value for q in Quality}
#: ``PRAGMA wal_autocheckpoint``, in pages: SQLite's default, 1,000 (about 4 MB of WAL). A commit
#: that crosses it folds the WAL into the file (and fsyncs), on the writer's thread: 8-10 ms here,
#: 15-20 ms at 4,000 pages and 30-55 ms at 16,000, which the p99 latency of telemetry feels
#: (ingest benchmark at 10,000 updates/s: p99 10-12 ms at 1,000 pages, 16-19 ms at 4,000). Larger
#: values save some CPU per row on small flushes (about 2.5 us at 20-60 rows) but not latency.
_WAL_CHECKPOINT_PAGES = 1000


class Kind(StrEnum):
    """What a row holds."""

    SAMPLE = "sample"
    REJECTED = "rejected"
    STALE = "stale"
    LINK = "link"
    COMMAND = "command"


#: The kinds that are telemetry (everything but commands).
TELEMETRY_KINDS: frozenset[Kind] = frozenset({Kind.SAMPLE, Kind.REJECTED, Kind.STALE, Kind.LINK})


class Outcome(StrEnum):
    """What the twin did with an item (the ``outcome`` column). Any other string is accepted
    too, for reducers with finer outcomes."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


_SCHEMA = (
    """CREATE TABLE entry (
    id          INTEGER PRIMARY KEY,     -- append order (received order)
    kind        TEXT NOT NULL CHECK (kind IN ('sample', 'rejected', 'stale', 'link', 'command')),
    received_ts REAL NOT NULL,           -- Unix seconds; a command's ts
    source_ts   REAL,                    -- the gateway's timestamp (samples), else NULL
    address     TEXT NOT NULL,           -- tag address; a stale mark's prefix; '' otherwise
    value       BLOB,                    -- msgpack: a sample's raw value, a link's up flag
    quality     TEXT,                    -- good / uncertain / bad (samples), else NULL
    source      TEXT NOT NULL,           -- the adapter (mqtt-json, ...); a command's session
    outcome     TEXT NOT NULL,           -- accepted / rejected / the reducer's own outcome
    reason      TEXT NOT NULL,           -- why rejected (a Reason); a command's error code
    detail      TEXT NOT NULL,           -- rejection detail, link detail, stale reason
    who         TEXT,                    -- commands: the principal
    action      TEXT,                    -- commands: the action
    target      TEXT,                    -- commands: the target
    audit       TEXT                     -- commands: the AuditRecord as JSON
)""",
    "CREATE INDEX entry_received_ts ON entry (received_ts)",
    "CREATE INDEX entry_address ON entry (address, received_ts)",
    "CREATE TRIGGER entry_no_update BEFORE UPDATE ON entry"
    " BEGIN SELECT RAISE(ABORT, 'the record is append-only: UPDATE refused'); END",
    "CREATE TRIGGER entry_no_delete BEFORE DELETE ON entry"
    " BEGIN SELECT RAISE(ABORT, 'the record is append-only: DELETE refused'); END",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

_INSERT = (
    "INSERT INTO entry (kind, received_ts, source_ts, address, value, quality, source, outcome,"
    " reason, detail, who, action, target, audit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = (
    "id, kind, received_ts, source_ts, address, value, quality, source, outcome, reason, detail,"
    " who, action, target, audit"
)

_Row = tuple[
    str,
    float,
    float | None,
    str,
    bytes | None,
    str | None,
    str,
    str,
    str,
    str,
    str | None,
    str | None,
    str | None,
    str | None,
]


def _pack_default(obj: object) -> Any:
    if isinstance(obj, int):  # outside msgpack's 64 bits
        return msgpack.ExtType(_EXT_BIGINT, str(obj).encode("ascii"))
    raise TypeError(f"cannot record a value of type {type(obj).__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_BIGINT:
        return int(data.decode("ascii"))
    return msgpack.ExtType(code, data)


def encode_value(value: Any) -> bytes:
    """A sample value as stored in the ``value`` column (msgpack; integers of any size)."""
    return bytes(msgpack.packb(value, use_bin_type=True, default=_pack_default))


def decode_value(data: bytes) -> Any:
    """The inverse of :func:`encode_value` (tuples come back as lists)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordRow:
    """One row of the record. ``item`` rebuilds the telemetry object, ``command`` the audit
    record; ``value`` is the decoded ``value`` column (None when the column is NULL)."""

    id: int
    kind: Kind
    received_ts: float
    source_ts: float | None
    address: str
    value: Any
    quality: Quality | None
    source: str
    outcome: str
    reason: str
    detail: str
    who: str | None = None
    action: str | None = None
    target: str | None = None
    audit: str | None = None

    @property
    def item(self) -> Telemetry:
        """The telemetry object as it was appended (ValueError for a command row)."""
        k = self.kind
        if k is Kind.SAMPLE:
            return Sample(
                address=self.address,
                value=self.value,
                received_ts=self.received_ts,
                source_ts=self.source_ts,
                quality=self.quality if self.quality is not None else Quality.GOOD,
                source=self.source,
            )
        if k is Kind.REJECTED:
            return Rejected(
                reason=Reason(self.reason),
                detail=self.detail,
                received_ts=self.received_ts,
                address=self.address,
                source=self.source,
            )
        if k is Kind.STALE:
            return Stale(
                prefix=self.address,
                received_ts=self.received_ts,
                reason=self.detail,
                source=self.source,
            )
        if k is Kind.LINK:
            return Link(
                up=bool(self.value),
                received_ts=self.received_ts,
                detail=self.detail,
                source=self.source,
            )
        raise ValueError(f"row {self.id} is a command, not telemetry: use .command")

    @property
    def command(self) -> AuditRecord:
        """The audit record of a command row (ValueError for telemetry)."""
        if self.kind is not Kind.COMMAND or self.audit is None:
            raise ValueError(f"row {self.id} is {self.kind.value} telemetry, not a command")
        d = json.loads(self.audit)
        return AuditRecord(
            ts=d["ts"],
            who=d["who"],
            role=d["role"],
            session=d["session"],
            command_id=d["id"],
            target=d["target"],
            action=d["action"],
            args=d["args"],
            ok=d["ok"],
            code=d.get("code", ""),
            reason=d.get("reason", ""),
            duplicate=d.get("duplicate", False),
        )


def _row_from_sql(r: tuple[Any, ...]) -> RecordRow:
    return RecordRow(
        id=r[0],
        kind=Kind(r[1]),
        received_ts=r[2],
        source_ts=r[3],
        address=r[4],
        value=None if r[5] is None else decode_value(r[5]),
        quality=None if r[6] is None else Quality(r[6]),
        source=r[7],
        outcome=r[8],
        reason=r[9],
        detail=r[10],
        who=r[11],
        action=r[12],
        target=r[13],
        audit=r[14],
    )


def _check_header(conn: sqlite3.Connection, path: Path) -> bool:
    """True if ``conn`` is a record, False if it is an empty file; ConfigError otherwise."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        n_objects = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: not a twin record (not an SQLite database: {exc})") from exc
    if app_id == 0 and version == 0 and n_objects == 0:
        return False
    if app_id != APPLICATION_ID:
        raise ConfigError(
            f"{path}: not a twin record (an SQLite database with application_id {app_id},"
            f" not {APPLICATION_ID})"
        )
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{path}: record schema version {version} is newer than this twin reads"
            f" (up to {SCHEMA_VERSION}); upgrade the twin"
        )
    if version < 1:
        raise ConfigError(f"{path}: record has no schema version (user_version {version})")
    return True


class _Queries:
    """Reading, shared by the writer and the read-only reader."""

    path: Path

    def _read_conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def query(
        self,
        *,
        t0: float | None = None,
        t1: float | None = None,
        address: str | None = None,
        kinds: Iterable[Kind | str] | None = None,
        limit: int | None = None,
    ) -> Iterator[RecordRow]:
        """Rows in append order with ``t0 <= received_ts < t1`` (either bound may be left out),
        of one ``address`` and of the given ``kinds``, at most ``limit`` of them.

        The rows are read lazily: the iterator holds a read snapshot of the file until it is
        exhausted or closed (the writer goes on meanwhile; rows it commits later are not seen).
        """
        where: list[str] = []
        params: list[Any] = []
        if t0 is not None:
            where.append("received_ts >= ?")
            params.append(float(t0))
        if t1 is not None:
            where.append("received_ts < ?")
            params.append(float(t1))
        if address is not None:
            where.append("address = ?")
            params.append(address)
        if kinds is not None:
            ks = [Kind(k).value for k in kinds]
            if not ks:
                return iter(())
            where.append(f"kind IN ({', '.join('?' * len(ks))})")
            params.extend(ks)
        sql = f"SELECT {_COLUMNS} FROM entry"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        cursor = self._read_conn().execute(sql, params)
        return self._rows(cursor)

    @staticmethod
    def _rows(cursor: sqlite3.Cursor) -> Iterator[RecordRow]:
        try:
            while batch := cursor.fetchmany(512):
                for r in batch:
                    yield _row_from_sql(r)
        finally:
            cursor.close()

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Row counts by ``(kind, outcome, reason)``, e.g. ``("sample", "rejected",
        "out_of_range"): 3``."""
        rows = self._read_conn().execute(
            "SELECT kind, outcome, reason, count(*) FROM entry GROUP BY kind, outcome, reason"
        )
        return {(k, o, r): n for k, o, r, n in rows}


class RecordReader(_Queries):
    """A read-only view of a record (another process may be writing it meanwhile)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: no such record")
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                uri, uri=True, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path}: cannot open record: {exc}") from exc
        opened = False
        try:
            if not _check_header(self._conn, self.path):
                raise ConfigError(f"{self.path}: not a twin record (an empty database)")
            opened = True
        finally:
            if not opened:
                self._conn.close()

    def _read_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"{self.path}: record reader is closed")
        return self._conn

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` for a sound file."""
        return str(self._read_conn().execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Recorder(_Queries):
    """The writer of a record: ``append`` buffers, ``flush`` makes durable (see the module
    docstring). Opening an existing record appends to it."""

    def __init__(self, path: str | Path, *, power_safe: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path}: cannot open record: {exc}") from exc
        opened = False
        try:
            # Identify the file before changing anything in it (WAL mode is written to it).
            is_record = _check_header(conn, self.path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if power_safe else 'NORMAL'}")
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
            if not is_record:
                conn.execute("BEGIN IMMEDIATE")  # rolled back by close() if this fails
                if not _check_header(conn, self.path):  # nobody created it meanwhile
                    for statement in _SCHEMA:
                        conn.execute(statement)
                conn.execute("COMMIT")
            opened = True
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path}: cannot open record: {exc}") from exc
        finally:
            if not opened:
                conn.close()
        self._conn: sqlite3.Connection | None = conn
        self._reader: RecordReader | None = None
        self._buffer: list[_Row] = []
        self._lock = threading.Lock()  # the buffer
        self._write_lock = threading.Lock()  # the connection (flush order = append order)
        self._packer = msgpack.Packer(use_bin_type=True, default=_pack_default)
        self._packer_false = self._packer.pack(False)
        self._packer_true = self._packer.pack(True)

    @staticmethod
    def open_readonly(path: str | Path) -> RecordReader:
        """A read-only reader of ``path`` (which a Recorder may be writing meanwhile)."""
        return RecordReader(path)

    # -- writing ------------------------------------------------------------------------------

    def _row(self, item: Telemetry, outcome: str, reason: str) -> _Row:
        if isinstance(item, Sample):
            s = item
            return (
                "sample",
                s.received_ts,
                s.source_ts,
                s.address,
                self._packer.pack(s.value),
                _QUALITY_TEXT[s.quality],
                s.source,
                outcome,
                reason,
                "",
                None,
                None,
                None,
                None,
            )
        if isinstance(item, Rejected):
            r = item  # its own reason goes in the reason column (the reducer's is the same)
            return (
                "rejected",
                r.received_ts,
                None,
                r.address,
                None,
                None,
                r.source,
                outcome,
                r.reason.value,
                r.detail,
                None,
                None,
                None,
                None,
            )
        if isinstance(item, Stale):
            st = item
            return (
                "stale",
                st.received_ts,
                None,
                st.prefix,
                None,
                None,
                st.source,
                outcome,
                reason,
                st.reason,
                None,
                None,
                None,
                None,
            )
        if isinstance(item, Link):
            lk = item
            return (
                "link",
                lk.received_ts,
                None,
                "",
                self._packer_true if lk.up else self._packer_false,
                None,
                lk.source,
                outcome,
                reason,
                lk.detail,
                None,
                None,
                None,
                None,
            )
        raise TypeError(f"not telemetry: {type(item).__name__}")

    def append(self, item: Telemetry, *, outcome: str, reason: str = "") -> None:
        """Buffer one telemetry item with what the twin did with it: ``outcome`` is
        ``"accepted"``, ``"rejected"`` (see :class:`Outcome`) or a reducer's own word;
        ``reason`` says why it was rejected (a :class:`~twin.live.telemetry.Reason`) or the
        reducer's note. A :class:`Rejected` item records its own reason (``reason`` is
        ignored). Durable only after :meth:`flush`."""
        with self._lock:
            self._check_open()
            self._buffer.append(self._row(item, str(outcome), str(reason)))

    def append_many(self, rows: Iterable[tuple[Telemetry, str, str]]) -> None:
        """Buffer ``(item, outcome, reason)`` triples, as :meth:`append` does one by one."""
        with self._lock:
            self._check_open()
            row = self._row
            new = [row(item, str(outcome), str(reason)) for item, outcome, reason in rows]
            self._buffer.extend(new)

    def append_command(self, rec: AuditRecord) -> None:
        """Buffer one command, accepted or refused (``outcome`` accepted / rejected, ``reason``
        its error code, ``detail`` its error message). Durable only after :meth:`flush`."""
        row: _Row = (
            "command",
            float(rec.ts),
            None,
            "",
            None,
            None,
            rec.session,
            Outcome.ACCEPTED.value if rec.ok else Outcome.REJECTED.value,
            rec.code,
            rec.reason,
            rec.who,
            rec.action,
            rec.target,
            rec.to_json(),
        )
        with self._lock:
            self._check_open()
            self._buffer.append(row)

    @property
    def pending(self) -> int:
        """Rows appended but not yet flushed."""
        return len(self._buffer)

    def flush(self) -> None:
        """Write every buffered row in one transaction. When it returns, they survive a kill
        of the process (and a power loss too with ``power_safe=True``). If it raises, nothing
        of the buffer was written and the rows stay buffered for the next flush."""
        with self._write_lock:
            with self._lock:
                conn = self._check_open()
                rows, self._buffer = self._buffer, []
            if not rows:
                return
            written = False
            try:
                conn.execute("BEGIN")
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
                written = True
            finally:
                if not written:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    with self._lock:
                        self._buffer[:0] = rows

    def _check_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"{self.path}: recorder is closed")
        return self._conn

    # -- reading ------------------------------------------------------------------------------

    def _read_conn(self) -> sqlite3.Connection:
        # Reads see what is flushed: flush first, so that a query sees every append before it.
        self.flush()
        if self._reader is None:
            self._reader = RecordReader(self.path)
        return self._reader._read_conn()

    def close(self) -> None:
        """Flush what is buffered, then close the file (the WAL is checkpointed into it)."""
        if self._conn is None:
            return
        try:
            self.flush()
        finally:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            with self._write_lock, self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
