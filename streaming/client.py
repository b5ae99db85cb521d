"""An asyncio client that mirrors a twin server into a local :class:`~streaming.replica.Replica`.

For tests, tools and notebooks::

    async with TwinClient("ws://127.0.0.1:8765/ws", token) as c:
        await c.wait_for(lambda r: "station/filler" in r.by_id)
        print(c.replica.get("station/filler", "state"))
        result = await c.command("alarm/3", "alarm.ack")

The client joins, applies snapshots and deltas, answers gaps with a ``resync``, and when the
connection drops it reconnects and resumes from its last ``seq`` (the server sends a snapshot if
it no longer holds that point).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl as ssl_module
from collections.abc import Callable, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .protocol import (
    BEARER_SUBPROTOCOL_PREFIX,
    SUBPROTOCOL,
    Interest,
    Join,
    MsgType,
    decode,
    encode,
    serialize_client,
)
from .replica import Replica
from .server import _RedactingLogger

log = logging.getLogger(__name__)


class TwinClient:
    """One connection to a twin server, with a replica kept in step and automatic resume."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        interest: Interest | None = None,
        reconnect: bool = True,
        token_in_subprotocol: bool = False,
        origin: str | None = None,
        open_timeout_s: float = 10.0,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.url = url
        self._token = token
        self.interest = interest or Interest()
        self.reconnect = reconnect
        self.token_in_subprotocol = token_in_subprotocol
        self.origin = origin
        self.open_timeout_s = open_timeout_s
        self.ssl = ssl  # for wss:// with a private CA
        self.replica = Replica()
        self.connections = 0
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._stopping = False
        #: Why the client stopped for good (e.g. the server now refuses the token), or None.
        self.failure: Exception | None = None

    async def __aenter__(self) -> TwinClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and join; returns once joined (the snapshot follows at the next tick)."""
        await self._open()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _open(self) -> None:
        subprotocols = [SUBPROTOCOL]
        headers: dict[str, str] = {}
        if self.token_in_subprotocol:
            subprotocols.append(BEARER_SUBPROTOCOL_PREFIX + self._token)
        else:
            headers["Authorization"] = f"Bearer {self._token}"
        if self.origin is not None:
            headers["Origin"] = self.origin
        self._ws = await connect(
            self.url,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            additional_headers=headers,
            compression=None,
            open_timeout=self.open_timeout_s,
            max_size=None,
            ssl=self.ssl,
            logger=_RedactingLogger(logging.getLogger("websockets.client"), {}),
        )
        self.connections += 1
        r = self.replica
        join = Join(
            session=r.session if r.seq is not None else None,
            last_seq=r.seq,
            # eseq_next 0: no event yet, and the protocol has no "-1" (last_eseq is >= 0)
            last_eseq=r.eseq_next - 1 if r.eseq_next else None,
            interest=self.interest,
        )
        hello = await self._ws.recv()
        await self._apply(decode(hello if isinstance(hello, bytes) else hello.encode()))
        await self._ws.send(encode(serialize_client(join)))

    async def _run(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None  # set by _open
            try:
                async for data in ws:
                    if isinstance(data, bytes):
                        await self._apply(decode(data))
            except ConnectionClosed:
                pass
            self.close_code = ws.close_code
            self.close_reason = ws.close_reason or ""
            async with self._changed:
                self._changed.notify_all()
            if self._stopping or not self.reconnect:
                return
            delay = 0.05
            while not self._stopping:
                try:
                    await self._open()
                    break
                except InvalidStatus as exc:  # refused (token revoked...): stop, and say why
                    log.warning("reconnect refused: %s", exc)
                    self.failure = exc
                    async with self._changed:
                        self._changed.notify_all()
                    return
                except (OSError, ConnectionClosed, TimeoutError):
                    await asyncio.sleep(delay)
                    delay = min(2.0, delay * 2)

    async def _apply(self, msg: Mapping[str, Any]) -> None:
        replies = self.replica.receive(msg)
        for reply in replies:
            if self._ws is not None:
                await self._ws.send(encode(reply))
        async with self._changed:
            self._changed.notify_all()

    # -- waiting ---------------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[Replica], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate(replica)`` holds; raises ``TimeoutError``, or
        ``ConnectionError`` if the client stopped for good (see :attr:`failure`)."""

        async def waiter() -> None:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: self.failure is not None or predicate(self.replica)
                )
            if self.failure is not None and not predicate(self.replica):
                raise ConnectionError(f"the client stopped: {self.failure}") from self.failure

        await asyncio.wait_for(waiter(), timeout)

    async def wait_seq(self, seq: int, timeout: float = 10.0) -> None:
        await self.wait_for(lambda r: r.seq is not None and r.seq >= seq, timeout)

    # -- requests --------------------------------------------------------------------------------

    async def send(self, msg: Mapping[str, Any]) -> None:
        """Send a raw message map (tests use this to send invalid ones)."""
        if self._ws is None:
            raise ConnectionError("not connected")
        await self._ws.send(encode(msg))

    async def command(
        self,
        target: str,
        action: str,
        args: Mapping[str, Any] | None = None,
        *,
        command_id: str | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Send a command and wait for its ``command_result`` (returned as a map)."""
        cid = command_id or f"c{next(self._ids)}-{id(self):x}"
        before = _events_received(self.replica)
        await self.send(
            {
                "type": "command",
                "id": cid,
                "target": target,
                "action": action,
                "args": dict(args or {}),
            }
        )

        def result(r: Replica) -> dict[str, Any] | None:
            # only events received since the send: a reused id must not match an old result
            n = min(len(r.events), _events_received(r) - before)
            for e in list(r.events)[len(r.events) - n :] if n > 0 else []:
                if e.get("type") == MsgType.COMMAND_RESULT and e.get("id") == cid:
                    return dict(e)
            return None

        await self.wait_for(lambda r: result(r) is not None, timeout)
        found = result(self.replica)
        if found is None:  # pragma: no cover - wait_for guarantees it
            raise LookupError(cid)
        return found

    async def subscribe(self, interest: Interest) -> None:
        from .protocol import Subscribe

        self.interest = interest
        await self.send(serialize_client(Subscribe(interest=interest)))

    async def resync(self, reason: str = "requested") -> None:
        await self.send({"type": "resync", "reason": reason})


def _events_received(r: Replica) -> int:
    """How many events (alarms and command results) ``r`` has appended to ``r.events``."""
    return r.stats[f"recv.{MsgType.ALARM.value}"] + r.stats[f"recv.{MsgType.COMMAND_RESULT.value}"]
