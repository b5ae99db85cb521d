"""The asyncio driver: sockets, HTTP, the tick loop. The protocol lives in :mod:`streaming.hub`.

:class:`TwinServer` accepts WebSocket connections at ``/ws`` (subprotocol ``twin.v1``), checks
the token and the Origin at the handshake, feeds inbound messages to the hub, and every tick asks
a ``source`` to update the store, commits the tick and writes each client's frames without ever
awaiting a client: a client whose socket is backed up beyond ``max_buffer_bytes`` skips the tick
and catches up later with one merged delta. Assets are served by content hash at
``/assets/SHA256.glb`` with immutable cache headers; ``/healthz`` answers ``ok``; a static folder
(the browser viewer) can be mounted at ``/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import mimetypes
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .auth import Principal, TokenBook, token_from_headers
from .hub import Hub, Session, SessionState
from .protocol import MAX_INBOUND_BYTES, SUBPROTOCOL, CloseCode, Role
from .store import SceneStore

log = logging.getLogger(__name__)

#: ``source(store, wall_time) -> scene time``: writes the tick's changes into the store.
Source = Callable[[SceneStore, float], float]

_SHA_PATH = re.compile(r"^/assets/([0-9a-f]{64})(?:\.glb)?$")
_SECRET = re.compile(r"(?i)(bearer(?:\.|\s+))[^\s,]+")


def redact(text: str) -> str:
    """Hide bearer tokens (``Bearer T`` headers, ``bearer.T`` subprotocols) in a log line."""
    return _SECRET.sub(r"\1<redacted>", text)


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """What websockets logs (request lines, headers at debug level) with tokens redacted."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            kwargs.pop("extra", None)
            self.logger.log(level, redact(text), **kwargs)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """How to serve. ``origins``: browser origins allowed besides the server's own (an Origin
    header must match one of them or the Host); ``max_buffer_bytes``: a client's unsent bytes
    above which it skips frames; ``join_timeout_s``: time allowed between connect and ``join``."""

    host: str = "127.0.0.1"
    port: int = 8765
    origins: tuple[str, ...] = ()
    ssl_context: ssl.SSLContext | None = None
    max_buffer_bytes: int = 256 * 1024
    join_timeout_s: float = 10.0
    ping_interval_s: float = 20.0
    static_dir: Path | None = None


class TwinServer:
    """Serve one hub over WebSockets and HTTP. Use ``async with TwinServer(...) as server``."""

    def __init__(
        self,
        hub: Hub,
        tokens: TokenBook,
        config: ServerConfig = ServerConfig(),
        *,
        source: Source | None = None,
        assets: Any = None,
    ) -> None:
        self.hub = hub
        self.tokens = tokens
        self.config = config
        self.source = source
        self.assets = assets  # a scenes.assets.AssetStore, or None
        self.port = config.port
        self.ticks = 0
        self.overruns = 0
        self.tick_seconds = 0.0  # total time spent inside ticks (update, commit, send)
        self._pending: dict[int, Principal] = {}
        self._conns: dict[int, tuple[Session, ServerConnection, float]] = {}
        self._server: Any = None
        self._ticker: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    # -- life cycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> TwinServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await serve(
            self._handler,
            self.config.host,
            self.config.port,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            process_response=self._process_response,
            max_size=MAX_INBOUND_BYTES,
            compression=None,
            ping_interval=self.config.ping_interval_s,
            ssl=self.config.ssl_context,
            logger=_RedactingLogger(logging.getLogger("websockets.server"), {}),
            server_header="twin",
        )
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick_loop())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        scheme = "wss" if self.config.ssl_context else "ws"
        return f"{scheme}://{self.config.host}:{self.port}/ws"

    # -- handshake -------------------------------------------------------------------------------

    def _select_subprotocol(self, conn: ServerConnection, offered: Any) -> Any:
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            return self._check_ws(conn, request)
        if path == "/healthz":
            return conn.respond(http.HTTPStatus.OK, "ok\n")
        m = _SHA_PATH.match(path)
        if m is not None:
            return self._asset(conn, request, m.group(1))
        if self.config.static_dir is not None:
            return self._static(conn, path)
        return conn.respond(http.HTTPStatus.NOT_FOUND, "not found\n")

    def _process_response(
        self, conn: ServerConnection, request: Request, response: Response
    ) -> None:
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            # admitted by _check_ws, then refused by websockets (e.g. no Upgrade header): the
            # handler never runs, so its principal would stay in _pending forever
            self._pending.pop(id(conn), None)

    def _check_ws(self, conn: ServerConnection, request: Request) -> Response | None:
        h = request.headers
        offered = [p.strip() for v in h.get_all("Sec-WebSocket-Protocol") for p in v.split(",")]
        origin = h.get("Origin")
        if origin is not None and not self._origin_ok(origin, h.get("Host")):
            self.hub.metrics["handshake.refused.origin"] += 1
            log.warning("refused a connection from origin %r", origin)
            return conn.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
        principal = self.tokens.authenticate(token_from_headers(h.get("Authorization"), offered))
        if principal is None:
            self.hub.metrics["handshake.refused.token"] += 1
            log.warning("refused a connection without a valid token from %s", _peer(conn))
            resp = conn.respond(http.HTTPStatus.UNAUTHORIZED, "a valid token is required\n")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="twin"'
            return resp
        if SUBPROTOCOL not in offered:
            self.hub.metrics["handshake.refused.subprotocol"] += 1
            return conn.respond(
                http.HTTPStatus.BAD_REQUEST, f"offer the subprotocol {SUBPROTOCOL}\n"
            )
        self._pending[id(conn)] = principal
        return None

    def _origin_ok(self, origin: str, host: str | None) -> bool:
        """An allowlisted origin, or the server's own: same scheme, same ``Host``."""
        if origin.rstrip("/") in self.config.origins:
            return True
        scheme = "https" if self.config.ssl_context is not None else "http"
        return host is not None and origin.rstrip("/") == f"{scheme}://{host}"

    def _asset(self, conn: ServerConnection, request: Request, sha: str) -> Response:
        from scenes.assets import cache_headers, not_modified

        if self.assets is None or sha not in self.assets:
            return conn.respond(http.HTTPStatus.NOT_FOUND, "no such asset\n")
        if not_modified(request.headers.get("If-None-Match"), sha):
            resp = conn.respond(http.HTTPStatus.NOT_MODIFIED, "")
            del resp.headers["Content-Length"], resp.headers["Content-Type"]  # no body
            resp.headers.update(cache_headers(sha))  # Headers.update appends: no duplicates
            return resp
        body = self.assets.get(sha)
        return _response(http.HTTPStatus.OK, body, cache_headers(sha, size=len(body)))

    def _static(self, conn: ServerConnection, path: str) -> Response:
        root = self.config.static_dir
        assert root is not None  # checked by the caller
        rel = "index.html" if path in ("", "/") else path.lstrip("/")
        target = (root / rel).resolve()
        if not target.is_file() or root.resolve() not in target.parents:
            return conn.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".js":
            ctype = "text/javascript"
        return _response(
            http.HTTPStatus.OK,
            target.read_bytes(),
            {"Content-Type": ctype, "Cache-Control": "no-cache"},
        )

    # -- connections -----------------------------------------------------------------------------

    async def _handler(self, conn: ServerConnection) -> None:
        principal = self._pending.pop(id(conn), None)
        if principal is None:  # cannot happen: process_request admitted it
            await conn.close(CloseCode.POLICY_VIOLATION, "not authenticated")
            return
        s = self.hub.open(principal)
        self._conns[id(s)] = (s, conn, time.monotonic())
        log.info("session %s opened by %s (%s)", s.id, principal.name, principal.role.value)
        try:
            self._flush(s, conn)
            async for data in conn:
                self.hub.receive(s, data)
                self._flush(s, conn)
                if s.close_request is not None:
                    code, reason = s.close_request
                    await conn.close(code, reason)
                    break
        except ConnectionClosed:
            pass
        finally:
            self._conns.pop(id(s), None)
            self.hub.close(s)
            log.info("session %s closed", s.id)

    def _flush(self, s: Session, conn: ServerConnection) -> None:
        if s.outbox:
            for data in s.outbox:
                broadcast([conn], data)
            s.outbox.clear()

    # -- ticks -----------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.hub.tick_hz
        due = loop.time()
        while True:
            due += period
            t0 = time.perf_counter()
            try:
                self.tick()
            except Exception:  # a bad tick must not stop the server; it is logged
                log.exception("tick failed")
            self.tick_seconds += time.perf_counter() - t0
            delay = due - loop.time()
            if delay < 0:
                self.overruns += 1
                due = loop.time()
                delay = 0.0
            await asyncio.sleep(delay)

    def tick(self) -> None:
        """One tick: update from the source, commit, send every client its frames."""
        t = None
        if self.source is not None:
            t = self.source(self.hub.store, time.time())
        self.hub.tick(t)
        self.ticks += 1
        now = time.monotonic()
        groups: dict[int, tuple[bytes, list[ServerConnection]]] = {}
        for s, conn, opened in list(self._conns.values()):
            if s.close_request is not None:
                continue  # its close is under way (one close task, not one a tick)
            if s.state is SessionState.AWAIT_JOIN:
                gateway = s.principal.role is Role.GATEWAY  # pushes, never joins
                if not gateway and now - opened > self.config.join_timeout_s:
                    s.close_request = (CloseCode.JOIN_TIMEOUT, "no join")
                    self._close_soon(conn, s.close_request)
                continue
            transport = conn.transport
            if transport is None or transport.is_closing():
                continue
            if transport.get_write_buffer_size() > self.config.max_buffer_bytes:
                self.hub.metrics["frames.skipped_backpressure"] += 1
                continue
            frames = self.hub.frames(s)
            if s.close_request is not None:
                self._close_soon(conn, s.close_request)
                continue
            if len(frames) == 1:
                g = groups.setdefault(id(frames[0]), (frames[0], []))
                g[1].append(conn)
            else:
                for data in frames:
                    broadcast([conn], data)
        for data, conns in groups.values():
            broadcast(conns, data)

    def _close_soon(self, conn: ServerConnection, req: tuple[CloseCode, str]) -> None:
        task = asyncio.ensure_future(conn.close(req[0], req[1]))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def _response(status: http.HTTPStatus, body: bytes, headers: dict[str, str]) -> Response:
    hdrs = Headers()
    for k, v in {"Content-Length": str(len(body)), **headers}.items():  # one of each
        hdrs[k] = v
    return Response(status.value, status.phrase, hdrs, body)


def _peer(conn: ServerConnection) -> str:
    try:
        return str(conn.remote_address[0])
    except Exception:
        return "?"
