"""MQTT telemetry: the JSON payload convention, the twin's subscriber and the simulator's publisher.

- :func:`decode_json` turns one MQTT message with a JSON payload into telemetry (pure; the
  convention is in ``docs/telemetry.md``): a bare scalar, or ``{"value", "ts", "quality"}``.
- :class:`MqttReader` and the ``encode_*`` functions are the MQTT 3.1.1 wire format a
  subscriber needs, without I/O: bytes in, packets out (:class:`Publish`, :class:`ConnAck`,
  :class:`SubAck`, :class:`PingResp`); CONNECT, SUBSCRIBE, PUBACK, QoS 0 PUBLISH, PINGREQ and
  DISCONNECT out. A broker that breaks the protocol raises :class:`MqttProtocolError`.
- :class:`MqttSource` is the twin's side, a thin asyncio driver of that core (plain TCP or TLS):
  a persistent session (fixed client id, ``clean_session`` off) subscribed with QoS 1. It
  decodes JSON topics with :func:`decode_json` and ``spBv1.0/`` topics with a
  :class:`~twin.live.sparkplug.SparkplugHost`, hands telemetry to a callback in batches, and
  acknowledges each QoS 1 message (PUBACK) only after the callback that received it has
  returned: what the callback recorded is what the broker may forget. It reconnects by itself
  with exponential backoff and reports :class:`~twin.live.telemetry.Link` events.
- :class:`MqttPublisher` is the gateway simulator's side, on aiomqtt: JSON samples, or
  Sparkplug B through a :class:`~twin.live.sparkplug.SparkplugNode` (NDEATH as the will, births
  on every connection and on rebirth requests). It also keeps a persistent session and
  reconnects by itself.

The subscriber has its own client because it is the twin's hot path: it reads the socket in
large chunks and writes the PUBACKs of a whole batch with one ``send`` (paho reads a packet with
three ``recv`` calls and sends each PUBACK on its own; see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import ssl
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from scenes.errors import ConfigError, TwinError

from .sources import redact_url
from .sparkplug import NAMESPACE, SparkplugHost, SparkplugNode
from .telemetry import Link, Quality, Reason, Rejected, Sample, Telemetry

logger = logging.getLogger(__name__)

SOURCE_JSON = "mqtt-json"
SOURCE_LINK = "mqtt"
_SPB = NAMESPACE + "/"
_MS_THRESHOLD = 1e11  # a number timestamp above this is milliseconds (1e11 s is year 5138)
_QUALITY = {"good": Quality.GOOD, "uncertain": Quality.UNCERTAIN, "bad": Quality.BAD}

# ---------------------------------------------------------------------------------------------
# The JSON convention.


def _reject(reason: Reason, detail: str, topic: str, ts: float) -> Rejected:
    return Rejected(reason=reason, detail=detail, received_ts=ts, address=topic, source=SOURCE_JSON)


def _timestamp(ts: Any) -> float | None:
    """Unix seconds from a JSON ``ts`` (seconds, milliseconds above 1e11, or ISO 8601 text with
    UTC assumed when no offset is given); None if it is none of those."""
    if isinstance(ts, bool):
        return None
    if isinstance(ts, int | float):
        if not math.isfinite(ts) or ts < 0:
            return None
        return ts / 1000.0 if ts > _MS_THRESHOLD else float(ts)
    if isinstance(ts, str):
        try:
            dt = datetime.fromisoformat(ts)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    return None


def decode_json(topic: str, payload: bytes, received_ts: float) -> Telemetry:
    """One MQTT message with a JSON payload as telemetry; the topic is the address.

    A bare scalar (number, string, bool) is the value; an object has ``value`` (required),
    ``ts`` (optional) and ``quality`` (optional, good/uncertain/bad, default good); its other
    keys are ignored. ``null`` (bare or as ``value``) is a value None of quality bad. Anything
    else is a :class:`Rejected`: MALFORMED for what is not JSON or not the documented shape,
    WRONG_TYPE for a value that is an array or an object. Never raises.
    """
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return _reject(Reason.MALFORMED, f"not JSON: {exc}", topic, received_ts)
    source_ts = None
    quality = Quality.GOOD
    if isinstance(doc, dict):
        if "value" not in doc:
            return _reject(Reason.MALFORMED, "object without 'value'", topic, received_ts)
        value = doc["value"]
        ts = doc.get("ts")
        if ts is not None:
            source_ts = _timestamp(ts)
            if source_ts is None:
                return _reject(Reason.MALFORMED, f"bad ts {ts!r}", topic, received_ts)
        q = doc.get("quality")
        if q is not None:
            quality_or_none = _QUALITY.get(q.lower()) if isinstance(q, str) else None
            if quality_or_none is None:
                return _reject(Reason.MALFORMED, f"bad quality {q!r}", topic, received_ts)
            quality = quality_or_none
        if isinstance(value, dict | list):
            return _reject(
                Reason.WRONG_TYPE, f"value is a {type(value).__name__}", topic, received_ts
            )
    elif isinstance(doc, list):
        return _reject(Reason.MALFORMED, "a JSON array is not a sample", topic, received_ts)
    else:
        value = doc
    if value is None:
        quality = Quality.BAD
    return Sample(
        address=topic,
        value=value,
        received_ts=received_ts,
        source_ts=source_ts,
        quality=quality,
        source=SOURCE_JSON,
    )


def encode_json(value: Any, *, ts: float | None = None, quality: Quality = Quality.GOOD) -> bytes:
    """The JSON payload ``{"value", "ts", "quality"}`` (``ts`` in Unix seconds, omitted if None)."""
    doc: dict[str, Any] = {"value": value, "quality": quality.value}
    if ts is not None:
        doc["ts"] = ts
    return json.dumps(doc, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------
# Connection settings.


#: The broker password for a URL with a user name and no password (``mqtts://twin@host:8883``).
PASSWORD_ENV = "TWIN_MQTT_PASSWORD"


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttConfig:
    """How to reach the broker. ``url`` is ``mqtt://HOST:PORT`` or ``mqtts://HOST:PORT`` (TLS,
    with ``tls_context`` or the system's default trust). ``client_id`` must be fixed and unique
    per client: it names the persistent session the broker keeps while the client is away."""

    url: str = "mqtt://127.0.0.1:1883"  # mqtt://USER:PASSWORD@HOST:PORT also accepted
    client_id: str = "twin"
    username: str | None = None
    password: str | None = None
    tls_context: ssl.SSLContext | None = None
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 10.0
    batch_max: int = 2000  # telemetry items per on_telemetry call, at most (messages not split)
    batch_wait_s: float = 0.002  # on a busy stream, batches this far apart (a message waits)

    def credentials(self) -> tuple[str | None, str | None]:
        """(user name, password): the fields if set, else the URL's; a user name without a
        password takes ``TWIN_MQTT_PASSWORD`` from the environment if it is set (so that the
        password needs not be on a command line, where ``ps`` shows it)."""
        parts = urlsplit(self.url)
        user = self.username if self.username is not None else parts.username
        password = self.password if self.password is not None else parts.password
        if user is not None and password is None:
            password = os.environ.get(PASSWORD_ENV)
        return user, password

    def endpoint(self) -> tuple[str, int, ssl.SSLContext | None]:
        """(host, port, TLS context or None); ConfigError for a URL that is not mqtt(s)://."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(
                f"MQTT url {redact_url(self.url)!r}: expected mqtt://HOST:PORT or mqtts://"
            )
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ConfigError(f"MQTT url {redact_url(self.url)!r}: {exc}") from exc
        context = (self.tls_context or ssl.create_default_context()) if tls else None
        return parts.hostname, port, context


def subscriptions_for(addresses: Iterable[str]) -> list[str]:
    """The topic filters that cover ``addresses``: each plain MQTT address as itself, and one
    ``spBv1.0/GROUP/#`` per Sparkplug group (births, deaths and data of the whole group)."""
    out: dict[str, None] = {}
    for address in addresses:
        if address.startswith(_SPB):
            parts = address.split("/")
            out[f"{NAMESPACE}/{parts[1]}/#" if len(parts) > 2 else f"{NAMESPACE}/#"] = None
        else:
            out[address] = None
    return list(out)


def _config(config: MqttConfig | str, client_id: str | None) -> MqttConfig:
    if isinstance(config, str):
        config = MqttConfig(url=config)
    return config if client_id is None else replace(config, client_id=client_id)


def _client(config: MqttConfig, will: tuple[str, bytes] | None = None) -> Any:
    import aiomqtt  # imported where used: the `live` extra

    host, port, context = config.endpoint()
    user, password = config.credentials()
    return aiomqtt.Client(
        host,
        port,
        identifier=config.client_id,
        clean_session=False,
        username=user,
        password=password,
        tls_context=context,
        keepalive=config.keepalive_s,
        timeout=config.connect_timeout_s,
        will=aiomqtt.Will(will[0], will[1], qos=1) if will else None,
    )


# ---------------------------------------------------------------------------------------------
# MQTT 3.1.1 on the wire, sans I/O: what the twin's subscriber needs of it.


class MqttProtocolError(TwinError):
    """The broker broke MQTT 3.1.1 (a malformed or unexpected packet), or refused the
    connection (a CONNACK return code other than 0): the connection is dropped."""


class PacketType(IntEnum):
    """MQTT 3.1.1 control packet types (the high nibble of the first byte)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class Publish(NamedTuple):
    """A PUBLISH from the broker (to the client); ``packet_id`` is 0 for QoS 0."""

    topic: str
    payload: bytes
    packet_id: int
    qos: int


@dataclass(frozen=True, slots=True)
class ConnAck:
    """The broker's answer to CONNECT (to the client): ``return_code`` 0 is accepted."""

    session_present: bool
    return_code: int


@dataclass(frozen=True, slots=True)
class SubAck:
    """The broker's answer to SUBSCRIBE (to the client): the granted QoS per filter, 0x80 for
    a refused one."""

    packet_id: int
    granted: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PingResp:
    """The broker's answer to PINGREQ (to the client)."""


MqttEvent = Publish | ConnAck | SubAck | PingResp

_CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}
#: A batch of at least this many messages marks a busy stream, whose next batch waits up to
#: ``MqttConfig.batch_wait_s`` for more; after a smaller one the next goes at once.
_BUSY_BATCH = 4
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    if len(b) > 0xFFFF:
        raise ValueError(f"an MQTT string is at most 65,535 bytes, got {len(b)}")
    return len(b).to_bytes(2, "big") + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _remaining_length(len(body)) + body


def encode_connect(
    client_id: str,
    *,
    clean_session: bool,
    keepalive_s: int,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT (MQTT 3.1.1, no will). A password is sent only with a user name."""
    flags = 0x02 if clean_session else 0
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    header = _string("MQTT") + bytes((4, flags)) + int(keepalive_s).to_bytes(2, "big")
    return _packet(PacketType.CONNECT << 4, header + payload)


def encode_subscribe(packet_id: int, filters: Iterable[tuple[str, int]]) -> bytes:
    """SUBSCRIBE ``(topic filter, QoS)`` pairs under ``packet_id``."""
    body = packet_id.to_bytes(2, "big") + b"".join(_string(t) + bytes((q,)) for t, q in filters)
    return _packet((PacketType.SUBSCRIBE << 4) | 0x02, body)


def encode_publish(topic: str, payload: bytes, packet_id: int = 0) -> bytes:
    """PUBLISH at QoS 0 (the subscriber's Sparkplug commands), or at QoS 1 under ``packet_id``
    (1 to 65,535; the broker answers with a PUBACK of that id)."""
    if not packet_id:
        return _packet(PacketType.PUBLISH << 4, _string(topic) + payload)
    if not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"an MQTT packet id is 1 to 65,535, got {packet_id}")
    body = _string(topic) + packet_id.to_bytes(2, "big") + payload
    return _packet((PacketType.PUBLISH << 4) | 0x02, body)


def encode_pubacks(packet_ids: Sequence[int]) -> bytes:
    """PUBACKs for ``packet_ids``, one buffer (each is ``0x40 0x02`` and the id)."""
    return struct.pack(f">{len(packet_ids)}I", *[0x40020000 | p for p in packet_ids])


class MqttReader:
    """Bytes from the broker in, packets out: :meth:`receive_data` takes whatever the socket
    gave and returns the complete packets in it (a packet split across reads is kept until its
    end arrives). Raises :class:`MqttProtocolError` for what MQTT 3.1.1 does not allow a
    broker to send a subscriber (the caller drops the connection)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def receive_data(self, data: bytes) -> list[MqttEvent]:
        buf = self._buffer + data if self._buffer else bytes(data)
        n = len(buf)
        i = 0
        out: list[MqttEvent] = []
        while i + 2 <= n:
            first = buf[i]
            length = buf[i + 1]
            j = i + 2
            if length & 0x80:  # a remaining length of more than one byte
                length &= 0x7F
                shift = 7
                complete = False
                while j < n and shift <= 21:
                    b = buf[j]
                    j += 1
                    length |= (b & 0x7F) << shift
                    if not b & 0x80:
                        complete = True
                        break
                    shift += 7
                if not complete:
                    if shift > 21:
                        raise MqttProtocolError("remaining length longer than 4 bytes")
                    break  # the rest of the length is still to come
            end = j + length
            if end > n:
                break
            kind = first >> 4
            if kind == 3:  # PUBLISH
                qos = (first >> 1) & 3
                if length < 2:
                    raise MqttProtocolError(f"PUBLISH of {length} bytes has no topic length")
                k = j + 2 + ((buf[j] << 8) | buf[j + 1])
                if k > end:
                    raise MqttProtocolError("PUBLISH topic runs past the packet")
                try:
                    topic = buf[j + 2 : k].decode()
                except UnicodeDecodeError as exc:
                    raise MqttProtocolError(f"PUBLISH topic is not UTF-8: {exc}") from exc
                if qos:
                    if qos != 1 or k + 2 > end:
                        raise MqttProtocolError(f"PUBLISH with QoS {qos} (subscribed at 1)")
                    out.append(Publish(topic, buf[k + 2 : end], (buf[k] << 8) | buf[k + 1], qos))
                else:
                    out.append(Publish(topic, buf[k:end], 0, 0))
            elif kind == 2 and length == 2:
                out.append(ConnAck(bool(buf[j] & 1), buf[j + 1]))
            elif kind == 9 and length >= 3:
                out.append(SubAck((buf[j] << 8) | buf[j + 1], tuple(buf[j + 2 : end])))
            elif kind == 13:
                out.append(PingResp())
            elif kind in (4, 11):  # PUBACK, UNSUBACK: never asked for, harmless
                pass
            else:
                raise MqttProtocolError(f"unexpected packet type {kind} (length {length})")
            i = end
        self._buffer = buf[i:]
        return out


# ---------------------------------------------------------------------------------------------
# The twin's subscriber.


class _Connection(asyncio.Protocol):
    """One connection of an :class:`MqttSource`: drives an :class:`MqttReader` on an asyncio
    transport and holds the batch read on it (telemetry, packet ids to acknowledge, messages
    to publish), which belongs to this connection only."""

    def __init__(self, source: MqttSource, loop: asyncio.AbstractEventLoop) -> None:
        self.source = source
        self.loop = loop
        self.reader = MqttReader()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[str] = loop.create_future()
        self.waiting: dict[type, asyncio.Future[Any]] = {}
        self.items: list[Telemetry] = []
        self.packet_ids: list[int] = []
        self.to_send: list[tuple[str, bytes]] = []
        self.messages = 0  # in the batch
        self.flush_handle: asyncio.Handle | None = None
        self.last_flush = -math.inf  # loop time
        self.last_batch = 0  # messages in the previous batch
        self.last_write = loop.time()
        self.ping_sent: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            events = self.reader.receive_data(data)
        except MqttProtocolError as exc:
            logger.warning("MQTT %s: %s", redact_url(self.source.config.url), exc)
            self.abort(f"protocol error: {exc}")
            return
        self.source._receive(self, events)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost(f"connection lost: {exc}" if exc else "connection closed by the broker")

    def lost(self, detail: str) -> None:
        if not self.closed.done():
            self.closed.set_result(detail)
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError(detail))
        self.waiting.clear()

    def expect(self, kind: type) -> asyncio.Future[Any]:
        """A future for the next packet of ``kind`` (ConnAck, SubAck)."""
        fut: asyncio.Future[Any] = self.loop.create_future()
        if self.closed.done():
            fut.set_exception(ConnectionError(self.closed.result()))
        else:
            self.waiting[kind] = fut
        return fut

    def answer(self, event: MqttEvent) -> None:
        if type(event) is PingResp:
            self.ping_sent = None
            return
        fut = self.waiting.pop(type(event), None)
        if fut is not None and not fut.done():
            fut.set_result(event)

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_write = self.loop.time()

    def abort(self, detail: str) -> None:
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        self.lost(detail)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Leave gracefully (DISCONNECT) if still connected."""
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        self.write(DISCONNECT)
        if self.transport is not None:
            self.transport.close()
        self.lost("disconnected")


class MqttSource:
    """Telemetry from an MQTT broker, delivered in batches to ``on_telemetry``.

    ``config`` is an :class:`MqttConfig` or just its URL (``client_id`` overrides its client id).
    The topic filters (``topics``, by default :func:`subscriptions_for` of ``addresses``, with
    ``spBv1.0/#`` instead of per-group filters if ``sparkplug``) are subscribed with QoS 1 on
    every connection.
    Messages on ``spBv1.0/...`` go through ``host`` (a fresh :class:`SparkplugHost` unless one
    is given), whose rebirth requests are published; all others through :func:`decode_json`.

    Batches: whatever arrived since the previous batch, at most ``batch_max`` telemetry items
    (a Sparkplug message is not split). On a busy stream (the previous batch held several
    messages) a batch follows the previous one after ``batch_wait_s``, so that it holds more;
    otherwise it goes at once.

    ``on_telemetry`` runs on the event loop and should return quickly. A QoS 1 message is
    acknowledged only after the call that delivered its telemetry has returned; if it raises,
    :meth:`run` disconnects without acknowledging and re-raises (the broker keeps the
    messages for the session). Delivery is at least once: after a reconnect the broker may
    send again what was delivered but not yet acknowledged.
    """

    def __init__(
        self,
        config: MqttConfig | str,
        on_telemetry: Callable[[list[Telemetry]], None],
        *,
        addresses: Iterable[str] = (),
        sparkplug: bool = False,
        topics: Iterable[str] | None = None,
        client_id: str | None = None,
        host: SparkplugHost | None = None,
    ) -> None:
        self.config = _config(config, client_id)
        self.config.endpoint()  # fail early on a bad URL
        if topics is None:
            topics = subscriptions_for(addresses)
            if sparkplug:
                topics = [f"{NAMESPACE}/#", *(t for t in topics if not t.startswith(_SPB))]
        self.topics = list(topics)
        self.host = host or SparkplugHost()
        self._on_telemetry = on_telemetry
        self._up: bool | None = None
        self._failure: BaseException | None = None
        self._task: asyncio.Task[Any] | None = None
        self._in_session = False
        self.received = 0  # MQTT messages received (all connections)

    async def run(self) -> None:
        """Connect, receive and reconnect until cancelled (or until ``on_telemetry`` raises)."""
        self._task = asyncio.current_task()
        delay = self.config.reconnect_min_s
        while True:
            detail = "disconnected"
            self._in_session = True
            conn: _Connection | None = None
            pinger: asyncio.Task[None] | None = None
            try:
                conn = await self._open()
                self._link(up=True, detail=f"connected to {redact_url(self.config.url)}")
                delay = self.config.reconnect_min_s
                pinger = asyncio.create_task(self._keep_alive(conn))
                detail = await conn.closed
            except (OSError, TimeoutError, MqttProtocolError) as exc:
                detail = str(exc) or type(exc).__name__
            except asyncio.CancelledError:
                if self._failure is None or self._task is None:
                    raise
                self._task.uncancel()  # cancelled by _deliver: on_telemetry failed
            finally:
                self._in_session = False
                if pinger is not None:
                    pinger.cancel()
                if conn is not None:
                    self._flush(conn)  # what was read (acknowledged if still connected)
                    conn.close()
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            self._link(up=False, detail=detail)
            logger.info(
                "MQTT %s: %s; reconnecting in %.1f s", redact_url(self.config.url), detail, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.reconnect_max_s)

    async def _open(self) -> _Connection:
        """Connect, CONNECT (persistent session), SUBSCRIBE (QoS 1); the connection once the
        broker has answered both."""
        config = self.config
        host, port, context = config.endpoint()
        user, password = config.credentials()
        loop = asyncio.get_running_loop()
        conn = _Connection(self, loop)
        try:
            async with asyncio.timeout(config.connect_timeout_s):
                await loop.create_connection(
                    lambda: conn, host, port, ssl=context, server_hostname=host if context else None
                )
                connack = conn.expect(ConnAck)
                conn.write(
                    encode_connect(
                        config.client_id,
                        clean_session=False,
                        keepalive_s=config.keepalive_s,
                        username=user,
                        password=password,
                    )
                )
                answer: ConnAck = await connack
                if answer.return_code:
                    reason = _CONNACK_CODES.get(answer.return_code, "unknown reason")
                    raise MqttProtocolError(
                        f"connection refused: {reason} (CONNACK code {answer.return_code})"
                    )
                if self.topics:
                    suback = conn.expect(SubAck)
                    conn.write(encode_subscribe(1, [(t, 1) for t in self.topics]))
                    granted: SubAck = await suback
                    refused = [
                        t for t, g in zip(self.topics, granted.granted, strict=False) if g & 0x80
                    ]
                    if refused:
                        logger.warning(
                            "MQTT %s refused subscriptions %s", redact_url(config.url), refused
                        )
        except BaseException:
            conn.abort("connection failed")
            raise
        return conn

    async def _keep_alive(self, conn: _Connection) -> None:
        """PINGREQ when nothing was sent for half the keepalive; drop the connection when a
        PINGRESP takes longer than the keepalive."""
        period = self.config.keepalive_s
        if period <= 0:
            return
        while conn.open:
            await asyncio.sleep(period / 2)
            now = conn.loop.time()
            if conn.ping_sent is not None:
                if now - conn.ping_sent > period:
                    conn.abort(f"no PINGRESP within {period} s")
                    return
            elif now - conn.last_write >= period / 2:
                conn.write(PINGREQ)
                conn.ping_sent = now

    def _link(self, *, up: bool, detail: str) -> None:
        if self._up is up:
            return
        self._up = up
        self._deliver([Link(up=up, received_ts=time.time(), detail=detail, source=SOURCE_LINK)])

    def _deliver(self, items: list[Telemetry]) -> bool:
        if self._failure is not None:
            return False
        try:
            self._on_telemetry(items)
        except Exception as exc:
            logger.exception("on_telemetry failed; disconnecting without acknowledging")
            self._failure = exc
            if self._in_session and self._task is not None:
                self._task.cancel()  # run() leaves the session (no acks) and re-raises
            return False
        return True

    def _receive(self, conn: _Connection, events: list[MqttEvent]) -> None:
        """Decode what one read brought into the connection's batch; deliver the batch when
        it holds ``batch_max`` items, else schedule its delivery."""
        ts = time.time()
        host = self.host
        items = conn.items
        batch_max = self.config.batch_max
        for event in events:
            if type(event) is not Publish:
                conn.answer(event)
                continue
            topic, payload, packet_id, qos = event
            if topic.startswith(_SPB):
                telemetry, send = host.receive(topic, payload, ts)
                items += telemetry
                if send:
                    conn.to_send += send
            else:
                items.append(decode_json(topic, payload, ts))
            if qos:
                conn.packet_ids.append(packet_id)
            conn.messages += 1
            self.received += 1
            if len(items) >= batch_max:
                self._flush(conn)
                items = conn.items
        if conn.messages and conn.flush_handle is None:
            loop = conn.loop
            delay = 0.0
            if conn.last_batch >= _BUSY_BATCH:  # a busy stream: wait for more
                delay = conn.last_flush + self.config.batch_wait_s - loop.time()
            if delay > 0:
                conn.flush_handle = loop.call_later(delay, self._flush, conn)
            else:
                conn.flush_handle = loop.call_soon(self._flush, conn)

    def _flush(self, conn: _Connection) -> None:
        """Hand the connection's batch over, then acknowledge it and publish what the
        Sparkplug host asked for (in one write)."""
        if conn.flush_handle is not None:
            conn.flush_handle.cancel()
            conn.flush_handle = None
        if not conn.messages:
            return
        items, packet_ids, to_send = conn.items, conn.packet_ids, conn.to_send
        conn.last_batch = conn.messages
        conn.items, conn.packet_ids, conn.to_send, conn.messages = [], [], [], 0
        conn.last_flush = conn.loop.time()
        if items and not self._deliver(items):
            return
        if self._failure is not None or not conn.open:
            return  # disconnected: the broker sends the unacknowledged ones again
        out = encode_pubacks(packet_ids) if packet_ids else b""
        if to_send:
            out += b"".join(encode_publish(t, p) for t, p in to_send)
        if out:
            conn.write(out)


# ---------------------------------------------------------------------------------------------
# The gateway simulator's publisher.


class MqttPublisher:
    """Publishes JSON samples, or Sparkplug B messages through ``node``, and keeps its
    connection (persistent session, reconnects with backoff).

    With a node: each connection registers the node's NDEATH (fresh ``bdSeq``) as its will,
    publishes the births, and subscribes to the node's NCMD to answer rebirth requests.
    Each ``publish*`` call waits for a connection, then returns True once the broker has
    acknowledged the message (PUBACK for QoS 1), False if the connection was lost first.
    Use as ``async with MqttPublisher(...) as pub:``.
    """

    def __init__(
        self,
        config: MqttConfig | str,
        *,
        node: SparkplugNode | None = None,
        qos: int = 1,
        client_id: str | None = None,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self.config = _config(
            config, client_id or ("gateway-sim" if isinstance(config, str) else None)
        )
        self.config.endpoint()
        self.node = node
        self.qos = qos
        self.publish_timeout_s = publish_timeout_s
        self.births_sent = 0  # NBIRTH messages published (first births and rebirths)
        self.connections = 0
        self._client: Any = None
        self._lost: asyncio.Future[None] | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MqttPublisher:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect (gracefully: no will) and stop reconnecting."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout_s)

    async def _run(self) -> None:
        import aiomqtt

        delay = self.config.reconnect_min_s
        loop = asyncio.get_running_loop()
        while True:
            will = self.node.connect() if self.node is not None else None
            client = _client(self.config, will)
            lost: asyncio.Future[None] = loop.create_future()
            try:
                async with client:
                    self._client, self._lost = client, lost
                    self.connections += 1
                    delay = self.config.reconnect_min_s
                    if self.node is not None:
                        ncmd = f"{NAMESPACE}/{self.node.group}/NCMD/{self.node.node}"
                        await client.subscribe(ncmd, qos=1)
                        await self._births(client)
                    self._ready.set()
                    async for message in client.messages:
                        if self.node is not None:
                            answer = self.node.receive(
                                str(message.topic), bytes(message.payload), _now_ms()
                            )
                            if answer:
                                self._ready.clear()
                                for t, p in answer:
                                    await self._send(client, t, p)
                                self.births_sent += 1
                                self._ready.set()
            except aiomqtt.MqttError as exc:
                logger.info("publisher %s: %s", redact_url(self.config.url), exc)
            finally:
                self._ready.clear()
                self._client = self._lost = None
                if not lost.done():
                    lost.set_result(None)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.reconnect_max_s)

    async def _births(self, client: Any) -> None:
        assert self.node is not None
        for t, p in self.node.births(_now_ms()):
            await self._send(client, t, p)
        self.births_sent += 1

    async def _send(self, client: Any, topic: str, payload: bytes) -> None:
        await client.publish(topic, payload, qos=self.qos, timeout=self.publish_timeout_s)

    async def _publish(self, build: Callable[[], tuple[str, bytes]]) -> bool:
        import aiomqtt

        await self._ready.wait()
        client, lost = self._client, self._lost
        if client is None or lost is None:
            return False
        topic, payload = build()  # built now: a Sparkplug seq belongs to this connection
        send = asyncio.ensure_future(self._send(client, topic, payload))
        done, _ = await asyncio.wait({send, lost}, return_when=asyncio.FIRST_COMPLETED)
        if send not in done:
            send.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await send
            return False
        try:
            send.result()
        except aiomqtt.MqttError:
            return False
        return True

    async def publish(
        self, address: str, value: Any, *, ts: float | None = None, quality: Quality = Quality.GOOD
    ) -> bool:
        """Publish one JSON sample on topic ``address``; True once acknowledged."""
        payload = encode_json(value, ts=ts, quality=quality)
        return await self._publish(lambda: (address, payload))

    async def publish_data(
        self, device: str | None, values: Mapping[str, Any], *, ts: float | None = None
    ) -> bool:
        """Publish NDATA (``device`` None) or DDATA through the node; True once acknowledged."""
        node = self.node
        if node is None:
            raise ConfigError("publish_data needs a SparkplugNode")
        ts_ms = _now_ms() if ts is None else int(ts * 1000)
        return await self._publish(lambda: node.data(device, values, ts_ms))

    async def publish_raw(self, build: Callable[[], tuple[str, bytes]]) -> bool:
        """Publish the message ``build()`` returns, built once connected (for hand-made
        Sparkplug messages: ``lambda: node.raw_data(...)``); True once acknowledged."""
        return await self._publish(build)


def _now_ms() -> int:
    return int(time.time() * 1000)
