"""MQTT telemetry: the JSON payload convention, the twin's subscriber and the simulator's publisher.

- :func:`decode_json` turns one MQTT message with a JSON payload into telemetry (pure; the
  convention is in ``docs/telemetry.md``): a bare scalar, or ``{"value", "ts", "quality"}``.
- :class:`MqttSource` is the twin's side: an aiomqtt client with a persistent session (fixed
  client id, ``clean_session`` off) subscribed with QoS 1. It decodes JSON topics with
  :func:`decode_json` and ``spBv1.0/`` topics with a :class:`~twin.live.sparkplug.SparkplugHost`,
  hands telemetry to a callback in batches, and acknowledges each QoS 1 message (PUBACK) only
  after the callback that received it has returned: what the callback recorded is what the
  broker may forget. It reconnects by itself with exponential backoff and reports
  :class:`~twin.live.telemetry.Link` events.
- :class:`MqttPublisher` is the gateway simulator's side: JSON samples, or Sparkplug B through a
  :class:`~twin.live.sparkplug.SparkplugNode` (NDEATH as the will, births on every connection
  and on rebirth requests). It also keeps a persistent session and reconnects by itself.

aiomqtt does not expose paho's manual acknowledgement, so both classes reach the wrapped
paho client (``aiomqtt.Client._client``) for ``manual_ack_set``, ``ack`` and a batching
``on_message`` hook; everything else goes through aiomqtt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import select
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from scenes.errors import ConfigError

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
    batch_max: int = 2000  # telemetry items per callback, at most (about)

    def endpoint(self) -> tuple[str, int, ssl.SSLContext | None]:
        """(host, port, TLS context or None); ConfigError for a URL that is not mqtt(s)://."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"MQTT url {self.url!r}: expected mqtt://HOST:PORT or mqtts://")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ConfigError(f"MQTT url {self.url!r}: {exc}") from exc
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
    parts = urlsplit(config.url)
    return aiomqtt.Client(
        host,
        port,
        identifier=config.client_id,
        clean_session=False,
        username=config.username if config.username is not None else parts.username,
        password=config.password if config.password is not None else parts.password,
        tls_context=context,
        keepalive=config.keepalive_s,
        timeout=config.connect_timeout_s,
        will=aiomqtt.Will(will[0], will[1], qos=1) if will else None,
    )


# ---------------------------------------------------------------------------------------------
# The twin's subscriber.


class MqttSource:
    """Telemetry from an MQTT broker, delivered in batches to ``on_telemetry``.

    ``config`` is an :class:`MqttConfig` or just its URL (``client_id`` overrides its client id).
    The topic filters (``topics``, by default :func:`subscriptions_for` of ``addresses``, with
    ``spBv1.0/#`` instead of per-group filters if ``sparkplug``) are subscribed with QoS 1 on
    every connection.
    Messages on ``spBv1.0/...`` go through ``host`` (a fresh :class:`SparkplugHost` unless one
    is given), whose rebirth requests are published; all others through :func:`decode_json`.

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
        self._pending: list[tuple[str, bytes, int, int, float]] = []
        self._flush_scheduled = False
        self._paho: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._up: bool | None = None
        self._failure: BaseException | None = None
        self._task: asyncio.Task[Any] | None = None
        self._in_session = False
        self.received = 0  # MQTT messages received (all connections)

    async def run(self) -> None:
        """Connect, receive and reconnect until cancelled (or until ``on_telemetry`` raises)."""
        import aiomqtt

        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        delay = self.config.reconnect_min_s
        while True:
            client = _client(self.config)
            paho = client._client  # manual acks and the batching hook live on paho
            paho.manual_ack_set(True)
            paho.on_message = self._on_message
            detail = "disconnected"
            self._in_session = True
            try:
                async with client:
                    self._paho = paho
                    if self.topics:
                        await client.subscribe([(t, 1) for t in self.topics])
                    self._link(up=True, detail=f"connected to {self.config.url}")
                    delay = self.config.reconnect_min_s
                    # The hook above bypasses aiomqtt's queue, so this iterator yields nothing:
                    # it ends with MqttError when the connection is lost.
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as exc:
                detail = str(exc) or type(exc).__name__
            except asyncio.CancelledError:
                if self._failure is None or self._task is None:
                    raise
                self._task.uncancel()  # cancelled by _deliver: on_telemetry failed
            finally:
                self._in_session = False
                self._flush(final=True)
                self._paho = None
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            self._link(up=False, detail=detail)
            logger.info("MQTT %s: %s; reconnecting in %.1f s", self.config.url, detail, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.reconnect_max_s)

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

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        # paho calls this on the event loop's thread, once per PUBLISH read.
        self._pending.append(
            (message.topic, message.payload, message.mid, message.qos, time.time())
        )
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _more_to_read(self) -> bool:
        paho = self._paho
        sock = paho.socket() if paho is not None else None
        if sock is None:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def _flush(self, final: bool = False) -> None:
        """Read what else the socket holds (up to ``batch_max`` messages), decode the batch,
        hand it over, then acknowledge it.

        Reading here, with paho's ``loop_read`` (what aiomqtt's reader callback calls), saves
        one event-loop turn per message; a read error is left to that callback, which sees it
        on its next turn and ends the connection."""
        paho = self._paho
        if not final and paho is not None:
            self._flush_scheduled = True  # messages read below join this batch
            while len(self._pending) < self.config.batch_max and self._more_to_read():
                try:
                    if paho.loop_read() != 0:
                        break
                except OSError:
                    break
        self._flush_scheduled = False
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self.received += len(pending)
        items: list[Telemetry] = []
        to_send: list[tuple[str, bytes]] = []
        host = self.host
        for topic, payload, _mid, _qos, ts in pending:
            if topic.startswith(_SPB):
                telemetry, send = host.receive(topic, payload, ts)
                items += telemetry
                to_send += send
            else:
                items.append(decode_json(topic, payload, ts))
        if items and not self._deliver(items):
            return
        paho = self._paho
        if paho is None:
            return  # disconnected: the broker sends the unacknowledged ones again
        for _topic, _payload, mid, qos, _ts in pending:
            if qos:
                paho.ack(mid, qos)
        for topic, payload in to_send:
            paho.publish(topic, payload, qos=0)


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
                logger.info("publisher %s: %s", self.config.url, exc)
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
