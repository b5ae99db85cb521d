"""The gateway simulator: a :class:`~twin.live.plant.Plant` publishing its tags over MQTT (JSON
payloads, or Sparkplug B for ``spBv1.0/...`` addresses) and/or an OPC UA server, the way a real
line's gateway would (``twin gateway-sim``).

Sparkplug addresses name their group, edge node, device and metric
(``spBv1.0/GROUP/DDATA/NODE/DEVICE/METRIC``, or ``spBv1.0/GROUP/NDATA/NODE/METRIC``): the
simulator declares one edge node per (group, node) with those devices and metrics, publishes
births, then DDATA/NDATA by alias, and answers rebirth requests. Other addresses go out as JSON
(``{"value", "ts", "quality"}``) on the address as topic. OPC UA serves the tags whose address is
a node id (``ns=2;s=...``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scenes.errors import ConfigError

from .plant import Plant
from .tags import Kind, Tag
from .telemetry import Sample

log = logging.getLogger(__name__)

SPB = "spBv1.0/"


@dataclass(frozen=True, slots=True)
class SpbAddress:
    group: str
    node: str
    device: str | None
    metric: str


def parse_spb(address: str) -> SpbAddress | None:
    """A Sparkplug address's parts, or None if ``address`` is not one."""
    if not address.startswith(SPB):
        return None
    parts = address[len(SPB) :].split("/")
    if len(parts) >= 5 and parts[1] == "DDATA":
        return SpbAddress(parts[0], parts[2], parts[3], "/".join(parts[4:]))
    if len(parts) >= 4 and parts[1] == "NDATA":
        return SpbAddress(parts[0], parts[2], None, "/".join(parts[3:]))
    return None


def is_node_id(address: str) -> bool:
    return address.startswith("ns=") or address.startswith("i=") or address.startswith("s=")


def _datatype(tag: Tag) -> Any:
    from .sparkplug import DataType

    return {
        Kind.STATE: DataType.String,
        Kind.COUNTER: DataType.Int64,
        Kind.LEVEL: DataType.Int64,
        Kind.ALARM: DataType.Boolean,
    }.get(tag.kind, DataType.Double)


#: Seconds a gateway keeps its OPC UA server up after its last poll before a timed run ends
#: (ten of the twin's default publishing intervals).
OPCUA_LINGER_S = 1.0


class Gateway:
    """Publishes what a plant reports. ``await run(duration_s)``."""

    def __init__(
        self,
        plant: Plant,
        *,
        mqtt: str | None = None,
        sparkplug: bool = False,
        opcua_port: int | None = None,
        opcua_host: str = "127.0.0.1",
        client_id: str = "gateway-sim",
        period_s: float = 0.1,
        reconnect_every_s: float | None = None,
        push: tuple[str, str] | None = None,
    ) -> None:
        if mqtt is None and opcua_port is None and push is None:
            raise ConfigError("the gateway needs --mqtt URL, --opcua PORT or --push URL")
        self.push = push  # (ws://HOST:PORT/ws, token of role gateway)
        self.plant = plant
        self.mqtt = mqtt
        self.sparkplug = sparkplug
        self.opcua_port = opcua_port
        self.opcua_host = opcua_host
        self.client_id = client_id
        self.period_s = period_s
        self.reconnect_every_s = reconnect_every_s
        tags = list(plant.tags)
        self.spb = {t.address: a for t in tags if sparkplug and (a := parse_spb(t.address))}
        self.json = [
            t.address for t in tags if t.address not in self.spb and not is_node_id(t.address)
        ]
        self.opcua = (
            [t.address for t in tags if is_node_id(t.address)] if opcua_port is not None else []
        )
        self.pusher: Any = None
        self.published = 0
        self.acked = 0
        self.opcua_url: str | None = None

    def _nodes(self) -> dict[tuple[str, str], Any]:
        from .sparkplug import SparkplugNode

        devices: dict[tuple[str, str], dict[str | None, dict[str, Any]]] = defaultdict(dict)
        for address, a in self.spb.items():
            tag = self.plant.tags.by_address[address]
            devices[a.group, a.node].setdefault(a.device, {})[a.metric] = _datatype(tag)
        nodes = {
            key: SparkplugNode(
                key[0],
                key[1],
                node_metrics=devs.get(None, {}),
                devices={d: m for d, m in devs.items() if d is not None},
            )
            for key, devs in devices.items()
        }
        # births carry current values (a real edge node has them): prime each node with the
        # plant's readings, so no metric is born null
        now_ms = int(time.time() * 1000)
        current: dict[tuple[str, str, str | None], dict[str, Any]] = defaultdict(dict)
        for address, a in self.spb.items():
            tag = self.plant.tags.by_address[address]
            current[a.group, a.node, a.device][a.metric] = self.plant.raw_now(tag)
        for (group, node, device), values in current.items():
            nodes[group, node].data(device, values, now_ms)  # sets the values; not published
        return nodes

    async def run(self, duration_s: float | None = None) -> None:
        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            json_pub, spb_pubs, opc = await self._open(stack)
            started = last_reconnect = time.monotonic()
            while duration_s is None or time.monotonic() - started < duration_s:
                t0 = time.monotonic()
                samples = self.plant.poll(time.time())
                await self._publish(samples, json_pub, spb_pubs, opc)
                if (
                    self.reconnect_every_s
                    and self.mqtt
                    and time.monotonic() - last_reconnect > self.reconnect_every_s
                ):
                    await stack.aclose()  # drop every connection; sessions persist
                    json_pub, spb_pubs, opc = await self._open(stack)
                    last_reconnect = time.monotonic()
                await asyncio.sleep(max(0.0, self.period_s - (time.monotonic() - t0)))
            if opc is not None:
                # OPC UA clients learn of a change at their subscription's next publish: keep
                # serving a moment, so that a change made in the last poll reaches them.
                await asyncio.sleep(OPCUA_LINGER_S)

    async def _open(self, stack: Any) -> tuple[Any, dict[tuple[str, str], Any], Any]:
        json_pub = None
        spb_pubs: dict[tuple[str, str], Any] = {}
        opc = None
        if self.mqtt:
            from .mqtt import MqttPublisher

            if self.json:
                json_pub = await stack.enter_async_context(
                    MqttPublisher(self.mqtt, client_id=f"{self.client_id}-json")
                )
            for (group, node), sp in self._nodes().items():
                spb_pubs[group, node] = await stack.enter_async_context(
                    MqttPublisher(self.mqtt, node=sp, client_id=f"{self.client_id}-{group}-{node}")
                )
            # births go out on connect, stamped then: data sampled before would arrive older
            for pub in [json_pub, *spb_pubs.values()]:
                if pub is not None:
                    await pub.wait_connected(30.0)
        if self.push is not None:
            from .push import WsPusher

            self.pusher = WsPusher(*self.push)
            stack.push_async_callback(self.pusher.close)
        if self.opcua:
            from .opcua import OpcUaPlant

            opc = await stack.enter_async_context(
                OpcUaPlant(self.opcua, host=self.opcua_host, port=self.opcua_port or 4840)
            )
            self.opcua_url = opc.url
        return json_pub, spb_pubs, opc

    async def _publish(
        self,
        samples: Sequence[Sample],
        json_pub: Any,
        spb_pubs: dict[tuple[str, str], Any],
        opc: Any,
    ) -> None:
        jobs = []
        per_device: dict[tuple[str, str, str | None], dict[str, Any]] = defaultdict(dict)
        ts: dict[tuple[str, str, str | None], float] = {}
        for s in samples:
            a = self.spb.get(s.address)
            if a is not None:
                per_device[a.group, a.node, a.device][a.metric] = s.value
                ts[a.group, a.node, a.device] = s.source_ts or time.time()
            elif s.address in self.json and json_pub is not None:
                jobs.append(json_pub.publish(s.address, s.value, ts=s.source_ts))
            if opc is not None and is_node_id(s.address):
                jobs.append(opc.write(s.address, s.value, s.source_ts))
        for (group, node, device), values in per_device.items():
            pub = spb_pubs.get((group, node))
            if pub is not None:
                jobs.append(pub.publish_data(device, values, ts=ts[group, node, device]))
        if self.pusher is not None and samples:
            jobs.append(self.pusher.push(samples))
        if jobs:
            results = await asyncio.gather(*jobs, return_exceptions=True)
            self.published += len(jobs)
            self.acked += sum(1 for r in results if r is True)
            for r in results:
                if isinstance(r, Exception):
                    log.warning("publish failed: %s", r)
