"""OPC UA for the live twin: a subscribing client that turns data changes into telemetry, and a
small server that plays a plant's gateway.

:class:`OpcUaSource` connects to a server, monitors the node ids the line's tags are bound to
(a tag's ``address`` is the node id in its string form, ``ns=2;s=Filler.BowlTemp`` or
``ns=2;i=1001``) and hands each data change to the twin as a :class:`~twin.live.telemetry.Sample`
with the item's source timestamp and its status code as a
:class:`~twin.live.telemetry.Quality`. It only translates: a node the server does not have becomes
one :class:`~twin.live.telemetry.Rejected`, a lost session a :class:`~twin.live.telemetry.Link`
and one :class:`~twin.live.telemetry.Stale` per monitored address, and the reducer decides what
every value means. It reconnects by itself, with backoff.

:class:`OpcUaPlant` serves a set of node ids on loopback, each written with a value, a source
timestamp and a quality: the gateway simulator and the tests use it.

The translation itself (:func:`decode_datavalue`, :func:`encode_datavalue`, :func:`quality_of`)
is pure and needs no socket. See ``docs/telemetry-opcua.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from scenes.errors import ConfigError, TwinError

from .telemetry import Link, Quality, Reason, Rejected, Sample, Stale, Telemetry

try:
    from asyncua import ua
    from asyncua.client.client import Client
    from asyncua.common.node import Node
    from asyncua.common.subscription import DataChangeNotif, Subscription
    from asyncua.server.server import Server
    from asyncua.ua.attribute_ids import AttributeIds
    from asyncua.ua.object_ids import ObjectIds
    from asyncua.ua.status_codes import StatusCodes
    from asyncua.ua.uaerrors import UaStatusCodeError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("twin.live.opcua needs asyncua: pip install 'twin-engine[live]'") from exc

__all__ = [
    "SOURCE",
    "OpcUaPlant",
    "OpcUaSource",
    "OpcUaSourceConfig",
    "decode_datavalue",
    "encode_datavalue",
    "parse_node_id",
    "quality_of",
]

logger = logging.getLogger(__name__)

SOURCE = "opcua"
"""The ``source`` field of everything :class:`OpcUaSource` emits."""

_EPOCH_FLOOR = datetime(1601, 1, 2, tzinfo=UTC)  # OPC UA's "no timestamp" is 1601-01-01
_FLOAT_TYPES = (ua.VariantType.Float, ua.VariantType.Double)
_FILTER_REFUSED = frozenset(
    (
        StatusCodes.BadMonitoredItemFilterInvalid,
        StatusCodes.BadMonitoredItemFilterUnsupported,
        StatusCodes.BadFilterNotAllowed,
    )
)


# --- translation (pure) -------------------------------------------------------------------------


def quality_of(status: ua.StatusCode | int | None) -> Quality:
    """Map an OPC UA status code to the twin's quality by its severity (the two top bits):
    ``00`` Good, ``01`` Uncertain, ``10`` and ``11`` Bad. ``None`` (no status sent) is Good."""
    if status is None:
        return Quality.GOOD
    code = status if isinstance(status, int) else status.value
    severity = (code >> 30) & 0b11
    if severity == 0:
        return Quality.GOOD
    if severity == 1:
        return Quality.UNCERTAIN
    return Quality.BAD


def _unix(dt: datetime | None) -> float | None:
    """Unix seconds of an OPC UA timestamp; None for a missing or null (1601) one.
    asyncua decodes UTC, as aware datetimes in recent versions and naive ones in older."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if dt < _EPOCH_FLOOR:
        return None
    return dt.timestamp()


def _status_text(status: ua.StatusCode) -> str:
    try:
        name = status.name
    except Exception:  # an unknown code: asyncua cannot name it
        name = "status"
    return f"{name} (0x{status.value:08X})"


def decode_datavalue(address: str, value: ua.DataValue, *, received_ts: float) -> Sample:
    """One monitored item's DataValue as a Sample of ``address``.

    ``source_ts`` is the DataValue's SourceTimestamp, else its ServerTimestamp, else None;
    ``quality`` comes from its StatusCode (:func:`quality_of`); ``value`` is passed as asyncua
    decoded it (a Bad value is usually None), whatever its type: the reducer judges it.
    """
    source_ts = _unix(value.SourceTimestamp)
    if source_ts is None:
        source_ts = _unix(value.ServerTimestamp)
    raw = value.Value.Value if value.Value is not None else None
    return Sample(
        address=address,
        value=raw,
        received_ts=received_ts,
        source_ts=source_ts,
        quality=quality_of(value.StatusCode),
        source=SOURCE,
    )


_QUALITY_CODES = {
    Quality.GOOD: StatusCodes.Good,
    Quality.UNCERTAIN: StatusCodes.Uncertain,
    Quality.BAD: StatusCodes.Bad,
}


def encode_datavalue(
    value: Any,
    *,
    source_ts: float | None = None,
    quality: Quality = Quality.GOOD,
    status: int | None = None,
    variant_type: ua.VariantType | None = None,
) -> ua.DataValue:
    """The DataValue a server holds for ``value`` (the inverse of :func:`decode_datavalue`).

    ``status`` (a raw OPC UA status code such as ``StatusCodes.BadSensorFailure``) overrides
    the generic code of ``quality``. ``variant_type`` forces the variant's type (an ``int``
    written to a Double node); by default asyncua infers it from the Python type.
    """
    code = _QUALITY_CODES[quality] if status is None else status
    if variant_type is not None and variant_type in _FLOAT_TYPES and _is_number(value):
        variant = ua.Variant(float(value), variant_type)
    else:
        variant = ua.Variant(value)
    stamp = None if source_ts is None else datetime.fromtimestamp(source_ts, tz=UTC)
    # Positional: the status field is named StatusCode in asyncua 2 and StatusCode_ in 1.x.
    return ua.DataValue(variant, ua.StatusCode(ua.UInt32(code)), stamp)  # type: ignore[arg-type]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_node_id(address: str) -> ua.NodeId:
    """The node id of a tag's address in OPC UA's string form (``ns=2;s=Filler.BowlTemp``,
    ``ns=2;i=1001``, ``ns=3;g=...``, ``ns=3;b=...``). Raises ValueError if it is not one."""
    try:
        return ua.NodeId.from_string(address)
    except Exception as exc:  # asyncua raises UaStringParsingError, IndexError, ...
        raise ValueError(f"not an OPC UA node id: {address!r}") from exc


# --- the client ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcUaSourceConfig:
    """How :class:`OpcUaSource` talks to its server. Times in seconds."""

    publishing_interval_s: float = 0.1  # the subscription's publishing interval
    sampling_interval_s: float = 0.0  # per monitored item; 0 asks the server for its fastest
    queue_size: int = 10  # per monitored item: changes kept between two publishes
    report_timestamp_changes: bool = True  # same value, new source timestamp -> a sample too
    request_timeout_s: float = 4.0  # each request, connect included
    watchdog_s: float = 1.0  # how often an idle session is probed (reads ServerStatus.State)
    backoff_initial_s: float = 0.5  # first wait before reconnecting; doubles per failed try
    backoff_max_s: float = 10.0
    username: str | None = None  # with password: a user-name identity token; None: anonymous
    password: str | None = None
    security: str | None = None  # asyncua security string; None: SecurityPolicy None, no signing

    def __post_init__(self) -> None:
        for name in ("publishing_interval_s", "request_timeout_s", "watchdog_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"OpcUaSourceConfig.{name} must be > 0")
        if self.sampling_interval_s < 0:
            raise ConfigError("OpcUaSourceConfig.sampling_interval_s must be >= 0")
        if self.queue_size < 0:
            raise ConfigError("OpcUaSourceConfig.queue_size must be >= 0")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ConfigError("OpcUaSourceConfig needs 0 < backoff_initial_s <= backoff_max_s")
        if self.password is not None and self.username is None:
            raise ConfigError("OpcUaSourceConfig.password needs a username")


class _Handler:
    """asyncua's callback object for one session's subscription (sync methods: asyncua calls
    them in the order the server sent the changes)."""

    def __init__(self, source: OpcUaSource, session: int) -> None:
        self._source = source
        self._session = session

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        self._source._on_change(self._session, data.monitored_item)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        self._source._on_status(self._session, status.Status)


class OpcUaSource:
    """Subscribes to ``addresses`` (node ids) on the server at ``url`` and hands what arrives to
    ``on_telemetry`` in batches, on the event loop's thread.

    Per session it emits ``Link(up=True)``, then one ``Sample`` per data change (the server
    sends each item's current value first), in the server's order. A node id the server does not
    have or cannot monitor becomes ``Rejected(UNKNOWN_TAG)`` (once per address, not per session);
    an address that is not a node id too. When the session is lost (the socket closes, the server
    stops answering, or the subscription reports a bad status) it emits ``Link(up=False)`` and a
    ``Stale(prefix=address)`` for every address it was monitoring, then reconnects with
    exponential backoff and re-creates the subscription. A change that reaches asyncua after the
    loss was declared is dropped (logged), so no sample follows the Stale of its session.
    """

    def __init__(
        self,
        url: str,
        addresses: Iterable[str],
        on_telemetry: Callable[[list[Telemetry]], None],
        *,
        config: OpcUaSourceConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.config = config or OpcUaSourceConfig()
        self._on_telemetry = on_telemetry
        self._clock = clock
        self._node_ids: dict[str, ua.NodeId] = {}
        self._unparsed: list[tuple[str, str]] = []
        for address in dict.fromkeys(addresses):
            try:
                self._node_ids[address] = parse_node_id(address)
            except ValueError as exc:
                self._unparsed.append((address, str(exc)))
        self._rejected: set[str] = set()
        self._handles: dict[int, str] = {}
        self._next_handle = 0
        self._monitored: list[str] = []
        self._session = 0
        self._active: int | None = None
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""
        self._link_up: bool | None = None
        self._pending: list[Telemetry] = []
        self._flush_scheduled = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle

    @property
    def connected(self) -> bool:
        """Whether a session with a live subscription is up now."""
        return self._link_up is True

    @property
    def monitored(self) -> tuple[str, ...]:
        """The addresses the current session monitors (empty while disconnected)."""
        return tuple(self._monitored)

    async def start(self) -> None:
        """Run :meth:`run` in a task of the running loop."""
        if self._task is not None and not self._task.done():
            raise TwinError("OpcUaSource already started")
        self._task = asyncio.create_task(self.run(), name=f"opcua-source {self.url}")

    async def stop(self) -> None:
        """Stop the task started by :meth:`start` (emits ``Link(up=False)`` and the Stales)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def __aenter__(self) -> OpcUaSource:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def run(self) -> None:
        """Connect, monitor, and reconnect after every loss, until cancelled."""
        now = self._clock()
        for address, detail in self._unparsed:
            self._reject(address, detail, now)
        delay = self.config.backoff_initial_s
        try:
            while True:
                client = self._make_client()
                outcome: tuple[bool, str] | None = None
                try:
                    outcome = await self._one_session(client)
                finally:
                    # None: cancelled mid-session, so there may be something to close.
                    connected, reason = outcome or (True, "stopped")
                    self._down(reason)
                    if connected:  # a failed connect has already closed its socket
                        await self._close(client)
                if connected:
                    delay = self.config.backoff_initial_s
                logger.info("OPC UA %s: %s; reconnecting in %.1f s", self.url, reason, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.config.backoff_max_s)
        finally:
            self._down("stopped")
            self._flush()

    # -- one session

    def _make_client(self) -> Client:
        client = Client(
            self.url,
            timeout=self.config.request_timeout_s,
            watchdog_intervall=self.config.watchdog_s,
        )
        if self.config.username is not None:
            client.set_user(self.config.username)
        if self.config.password is not None:
            client.set_password(self.config.password)
        return client

    async def _one_session(self, client: Client) -> tuple[bool, str]:
        """Connect, subscribe and watch; return (whether it connected, why it ended)."""
        self._session += 1
        session = self._session
        lost = asyncio.Event()
        self._lost, self._lost_reason = lost, ""

        async def on_connection_lost(exc: Exception) -> None:
            self._lose(session, f"connection lost: {exc!r}")

        client.connection_lost_callback = on_connection_lost
        try:
            if self.config.security is not None:
                await client.set_security_string(self.config.security)
            await client.connect()
        except Exception as exc:  # refused, timed out, a UaError: try again later
            return False, f"cannot connect: {exc!r}"
        try:
            subscription = await client.create_subscription(
                self.config.publishing_interval_s * 1000.0, _Handler(self, session)
            )
            self._active = session
            self._up()
            await self._monitor(subscription)
            return True, await self._watch(client, lost)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return True, f"session failed: {exc!r}"

    def _request(
        self, node_id: ua.NodeId, handle: int, *, with_filter: bool
    ) -> ua.MonitoredItemCreateRequest:
        read = ua.ReadValueId()
        read.NodeId = node_id
        read.AttributeId = AttributeIds.Value
        params = ua.MonitoringParameters()
        params.ClientHandle = handle
        params.SamplingInterval = self.config.sampling_interval_s * 1000.0
        params.QueueSize = self.config.queue_size
        params.DiscardOldest = True
        if with_filter:
            change = ua.DataChangeFilter()
            change.Trigger = ua.DataChangeTrigger.StatusValueTimestamp
            params.Filter = change
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = read
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    async def _monitor(self, subscription: Subscription) -> None:
        """Create one monitored item per address; reject those the server refuses."""
        with_filter = self.config.report_timestamp_changes
        todo = list(self._node_ids)
        while todo:
            requests = []
            for address in todo:
                self._next_handle += 1
                self._handles[self._next_handle] = address
                requests.append(
                    self._request(
                        self._node_ids[address], self._next_handle, with_filter=with_filter
                    )
                )
            results = await subscription.create_monitored_items(requests)
            retry = []
            now = self._clock()
            for request, result in zip(requests, results, strict=True):
                handle = request.RequestedParameters.ClientHandle
                address = self._handles[handle]
                if not isinstance(result, ua.StatusCode):
                    self._monitored.append(address)
                    continue
                del self._handles[handle]
                if with_filter and result.value in _FILTER_REFUSED:
                    retry.append(address)  # the server cannot filter: ask again without
                else:
                    self._reject(address, f"cannot monitor {address}: {_status_text(result)}", now)
            todo, with_filter = retry, False

    async def _watch(self, client: Client, lost: asyncio.Event) -> str:
        """Wait until the session is lost: a callback says so, or a probe gets no answer."""
        state = client.get_node(ua.NodeId(ua.Int32(ObjectIds.Server_ServerStatus_State)))
        while True:
            try:
                await asyncio.wait_for(lost.wait(), timeout=self.config.watchdog_s)
                return self._lost_reason
            except TimeoutError:
                pass
            try:
                await asyncio.wait_for(state.read_value(), timeout=self.config.request_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return f"server does not answer: {exc!r}"

    async def _close(self, client: Client) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), timeout=self.config.request_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the server is gone: nothing to close politely
            logger.debug("OPC UA %s: disconnect: %r", self.url, exc)

    # -- callbacks from asyncua

    def _on_change(self, session: int, item: ua.MonitoredItemNotification) -> None:
        address = self._handles.get(item.ClientHandle)
        if session != self._active or address is None:
            logger.debug("OPC UA %s: change after its session ended, dropped", self.url)
            return
        self._emit(decode_datavalue(address, item.Value, received_ts=self._clock()))

    def _on_status(self, session: int, status: ua.StatusCode) -> None:
        if quality_of(status) is not Quality.GOOD:
            self._lose(session, f"subscription status {_status_text(status)}")

    def _lose(self, session: int, reason: str) -> None:
        if session == self._session and self._lost is not None and not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    # -- what goes out

    def _up(self) -> None:
        self._link_up = True
        self._emit(Link(up=True, received_ts=self._clock(), detail=self.url, source=SOURCE))

    def _down(self, reason: str) -> None:
        self._active = None
        self._handles.clear()
        if self._link_up is False:
            return
        now = self._clock()
        self._emit(Link(up=False, received_ts=now, detail=reason, source=SOURCE))
        if self._link_up:
            for address in self._monitored:
                self._emit(Stale(prefix=address, received_ts=now, reason=reason, source=SOURCE))
        self._link_up = False
        self._monitored = []

    def _reject(self, address: str, detail: str, now: float) -> None:
        if address in self._rejected:
            return
        self._rejected.add(address)
        self._emit(
            Rejected(
                reason=Reason.UNKNOWN_TAG,
                detail=detail,
                received_ts=now,
                address=address,
                source=SOURCE,
            )
        )

    def _emit(self, item: Telemetry) -> None:
        self._pending.append(item)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self._on_telemetry(batch)
        except Exception:
            logger.exception("OPC UA %s: on_telemetry raised", self.url)


# --- the server ---------------------------------------------------------------------------------


class OpcUaPlant:
    """An OPC UA server that serves ``addresses`` (node ids, exactly as in the line file) at
    ``opc.tcp://HOST:PORT/twin/``, for the gateway simulator and the tests.

    Namespaces ``2..N`` are registered as ``urn:twin:plant:ns2`` and so on, so that ``ns=2;...``
    means the same node on both sides; ``ns=1`` is the server's own namespace and ``ns=0`` is
    refused. Each variable sits under the Objects folder, browse name = the identifier. A variable
    starts with ``initial[address]`` (Good) or as BadWaitingForInitialData; its data type is fixed
    by its first value. It binds to 127.0.0.1 unless ``host`` says otherwise, with security
    policy None and anonymous access. ``port=0`` picks a free port, kept across restarts.
    """

    def __init__(
        self,
        addresses: Iterable[str],
        *,
        host: str = "127.0.0.1",
        port: int = 4840,
        initial: Mapping[str, Any] | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self._node_ids: dict[str, ua.NodeId] = {}
        seen: dict[ua.NodeId, str] = {}
        for address in addresses:
            try:
                node_id = parse_node_id(address)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            if node_id.NamespaceIndex == 0:
                raise ConfigError(f"{address!r}: namespace 0 belongs to OPC UA itself")
            if node_id in seen and seen[node_id] != address:
                raise ConfigError(f"{address!r} and {seen[node_id]!r} are the same node")
            seen[node_id] = address
            self._node_ids[address] = node_id
        self._values: dict[str, ua.DataValue] = {
            address: encode_datavalue(None, status=StatusCodes.BadWaitingForInitialData)
            for address in self._node_ids
        }
        for address, value in (initial or {}).items():
            self._check(address)
            self._values[address] = encode_datavalue(value)
        self._types: dict[str, ua.VariantType] = {}
        self._server: Server | None = None
        self._nodes: dict[str, Node] = {}

    @property
    def port(self) -> int:
        """The TCP port (the one picked, after a start with ``port=0``)."""
        return self._port

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self._port}/twin/"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Build the address space (with the last value written to each node) and listen."""
        if self._server is not None:
            raise TwinError("OpcUaPlant already started")
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("twin-engine plant")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        namespaces = max((n.NamespaceIndex for n in self._node_ids.values()), default=1)
        while len(await server.get_namespace_array()) <= namespaces:
            await server.register_namespace(
                f"urn:twin:plant:ns{len(await server.get_namespace_array())}"
            )
        objects = server.nodes.objects
        self._types.clear()
        nodes: dict[str, Node] = {}
        for address, node_id in self._node_ids.items():
            name = ua.QualifiedName(str(node_id.Identifier), node_id.NamespaceIndex)
            nodes[address] = await objects.add_variable(node_id, name, None)
            await self._put(address, nodes[address], self._values[address])
        await server.start()
        self._nodes = nodes
        if self._port == 0 and server.bserver is not None:
            self._port = int(server.bserver.port)
            server.set_endpoint(self.url)
        self._server = server
        logger.info("OPC UA plant serving %d nodes at %s", len(self._node_ids), self.url)

    async def stop(self) -> None:
        """Close every session and stop listening (the values are kept for a restart)."""
        server, self._server = self._server, None
        self._nodes.clear()
        if server is not None:
            await server.stop()

    async def __aenter__(self) -> OpcUaPlant:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def write(
        self,
        address: str,
        value: Any,
        source_ts: float | None = None,
        quality: Quality = Quality.GOOD,
        *,
        status: int | None = None,
    ) -> None:
        """Set a node's DataValue: ``value`` with SourceTimestamp ``source_ts`` (Unix seconds;
        None sends none, so clients see only the ServerTimestamp) and the status code of
        ``quality`` (or the raw ``status``). A Bad value is stored as null, as OPC UA says.
        Numbers written to a Float/Double node are converted; a value of another type than the
        node's first one is refused (TwinError). Kept while stopped, served on start."""
        self._check(address)
        data = encode_datavalue(
            value,
            source_ts=source_ts,
            quality=quality,
            status=status,
            variant_type=self._types.get(address),
        )
        node = self._nodes.get(address)
        if node is not None:
            await self._put(address, node, data)
        self._values[address] = data

    def _check(self, address: str) -> None:
        if address not in self._node_ids:
            raise TwinError(f"the plant does not serve {address!r}")

    async def _put(self, address: str, node: Node, data: ua.DataValue) -> None:
        variant = data.Value
        if (
            address not in self._types
            and quality_of(data.StatusCode) is not Quality.BAD
            and variant is not None
            and variant.VariantType != ua.VariantType.Null
        ):
            # The node was created untyped (null): its first value fixes its DataType.
            vtype = variant.VariantType
            await node.write_attribute(
                AttributeIds.DataType,
                ua.DataValue(ua.Variant(ua.NodeId(ua.Int32(vtype.value)), ua.VariantType.NodeId)),
            )
            self._types[address] = vtype
        try:
            await node.write_value(data)
        except UaStatusCodeError as exc:
            raise TwinError(f"{address}: the OPC UA server refused {data.Value}: {exc}") from exc
