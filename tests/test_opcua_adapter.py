"""The OPC UA adapter for real, over loopback: an ``OpcUaPlant`` (asyncua server) on 127.0.0.1 and
an ``OpcUaSource`` (asyncua client) subscribed to it; no mocks.

Covers source timestamps and the three qualities as the server set them, a missing node id
rejected once without stopping the others, per-node order, values of any type passed through,
and the loss of the server (Link down, one Stale per monitored address) followed by a restart on
the same port that the source finds by itself. The translation is also checked without sockets.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from conftest import Collector as BaseCollector

from twin.live.opcua import (
    OpcUaPlant,
    OpcUaSource,
    OpcUaSourceConfig,
    decode_datavalue,
    encode_datavalue,
    quality_of,
)
from twin.live.telemetry import Link, Quality, Reason, Rejected, Sample, Stale, Telemetry

TEMP = "ns=2;s=Filler.BowlTemp"
COUNT = "ns=2;i=1001"
STATE = "ns=3;s=Capper.State"
MISSING = "ns=2;s=Filler.NoSuchTag"
FAST = OpcUaSourceConfig(
    publishing_interval_s=0.05,
    watchdog_s=0.5,
    request_timeout_s=2.0,
    backoff_initial_s=0.2,
    backoff_max_s=0.5,
    queue_size=100,
)


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), timeout=30))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector(BaseCollector):
    timeout_s = 8.0


def values(items: list[Telemetry], address: str) -> list[Any]:
    return [i.value for i in items if isinstance(i, Sample) and i.address == address]


def links(items: list[Telemetry]) -> list[bool]:
    return [i.up for i in items if isinstance(i, Link)]


# --- translation, no sockets --------------------------------------------------------------------


def test_status_codes_map_to_quality_by_severity() -> None:
    assert quality_of(None) is Quality.GOOD
    assert quality_of(ua.StatusCode(0)) is Quality.GOOD
    assert quality_of(ua.StatusCodes.GoodClamped) is Quality.GOOD
    assert quality_of(ua.StatusCodes.Uncertain) is Quality.UNCERTAIN
    assert quality_of(ua.StatusCodes.UncertainLastUsableValue) is Quality.UNCERTAIN
    assert quality_of(ua.StatusCodes.Bad) is Quality.BAD
    assert quality_of(ua.StatusCodes.BadSensorFailure) is Quality.BAD
    assert quality_of(0xC0000000) is Quality.BAD  # reserved severity 11 counts as Bad


def test_timestamps_fall_back_from_source_to_server_to_none() -> None:
    source = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    server = datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)
    both = ua.DataValue(ua.Variant(1.5), ua.StatusCode(0), source, server)
    only_server = ua.DataValue(ua.Variant(1.5), ua.StatusCode(0), None, server)
    naive = ua.DataValue(ua.Variant(1.5), ua.StatusCode(0), source.replace(tzinfo=None))
    null_1601 = ua.DataValue(ua.Variant(1.5), ua.StatusCode(0), datetime(1601, 1, 1, tzinfo=UTC))
    assert decode_datavalue(TEMP, both, received_ts=9.0).source_ts == source.timestamp()
    assert decode_datavalue(TEMP, only_server, received_ts=9.0).source_ts == server.timestamp()
    assert decode_datavalue(TEMP, naive, received_ts=9.0).source_ts == source.timestamp()
    assert decode_datavalue(TEMP, null_1601, received_ts=9.0).source_ts is None
    sample = decode_datavalue(TEMP, ua.DataValue(ua.Variant("x")), received_ts=9.0)
    assert (sample.value, sample.source_ts, sample.quality, sample.source) == (
        "x",
        None,
        Quality.GOOD,
        "opcua",
    )


def test_encode_then_decode_round_trips() -> None:
    data = encode_datavalue(3, source_ts=1_700_000_000.25, quality=Quality.UNCERTAIN,
                            variant_type=ua.VariantType.Double)  # fmt: skip
    assert data.Value is not None and data.Value.VariantType == ua.VariantType.Double
    sample = decode_datavalue(COUNT, data, received_ts=0.0)
    assert (sample.value, sample.source_ts, sample.quality) == (
        3.0,
        1_700_000_000.25,
        Quality.UNCERTAIN,
    )


# --- over loopback ------------------------------------------------------------------------------


def test_samples_carry_source_timestamps_and_qualities_and_missing_nodes_are_rejected() -> None:
    async def scenario() -> None:
        plant = OpcUaPlant([TEMP, COUNT, STATE], port=0, initial={TEMP: 20.0, STATE: "idle"})
        await plant.start()
        assert plant.url == f"opc.tcp://127.0.0.1:{plant.port}/twin/"
        got = Collector()
        addresses = [TEMP, MISSING, COUNT, STATE, "ns=2;s=Filler.NoSuchTag", "plant1/filler/speed"]
        source = OpcUaSource(plant.url, addresses, got, config=FAST)
        try:
            await source.start()
            # Link up, then each node's current value (the server sends it first).
            await got.until(lambda items: all(values(items, a) for a in (TEMP, COUNT, STATE)))
            assert links(got.items) == [True]
            assert values(got.items, TEMP) == [20.0]
            assert values(got.items, STATE) == ["idle"]
            first_count = got.samples(COUNT)[0]  # nothing written yet: Bad, no value
            assert (first_count.quality, first_count.value) == (Quality.BAD, None)
            assert source.monitored == (TEMP, COUNT, STATE)

            # The missing node id and the MQTT topic: one Rejected each, with the reason why.
            rejected = {i.address: i for i in got.items if isinstance(i, Rejected)}
            assert set(rejected) == {MISSING, "plant1/filler/speed"}
            assert all(r.reason is Reason.UNKNOWN_TAG for r in rejected.values())
            assert "BadNodeIdUnknown" in rejected[MISSING].detail
            assert "not an OPC UA node id" in rejected["plant1/filler/speed"].detail

            # Source timestamps and qualities as the server set them.
            t0 = 1_700_000_000.0
            await plant.write(TEMP, 21.5, t0 + 1, Quality.GOOD)
            await plant.write(TEMP, 22.5, t0 + 2, Quality.UNCERTAIN)
            await plant.write(TEMP, 23.5, t0 + 3, Quality.BAD)
            await plant.write(TEMP, 24.5, t0 + 4, status=ua.StatusCodes.UncertainLastUsableValue)
            await plant.write(TEMP, 24.5, t0 + 5)  # same value, new timestamp: reported too
            before = time.time()
            await plant.write(TEMP, 25, None)  # an int on a Double node; no source timestamp
            # Order per node: 50 counts written back to back arrive in order, none lost.
            for n in range(50):
                await plant.write(COUNT, n, t0 + n / 100)
            # A value the twin cannot use for a number still arrives (the reducer judges it).
            await plant.write(STATE, "running", t0 + 6)
            await got.until(lambda items: len(values(items, COUNT)) == 51)
            await got.until(lambda items: len(values(items, TEMP)) == 7)
            await got.until(lambda items: "running" in values(items, STATE))

            temps = got.samples(TEMP)[1:]
            assert [(s.value, s.source_ts, s.quality) for s in temps[:5]] == [
                (21.5, t0 + 1, Quality.GOOD),
                (22.5, t0 + 2, Quality.UNCERTAIN),
                (None, t0 + 3, Quality.BAD),  # OPC UA: a Bad value is null
                (24.5, t0 + 4, Quality.UNCERTAIN),
                (24.5, t0 + 5, Quality.GOOD),
            ]
            last = temps[5]  # no source timestamp: the server's, taken at the write
            assert last.value == 25.0 and last.source_ts is not None
            assert before - 1 <= last.source_ts <= time.time() + 1
            counts = got.samples(COUNT)[1:]
            assert [s.value for s in counts] == list(range(50))
            assert [s.source_ts for s in counts] == [t0 + n / 100 for n in range(50)]
            assert all(s.source == "opcua" and s.received_ts >= before - 1 for s in counts)
            assert len(got.batches) < len(got.items)  # delivered in batches, not one by one
            assert sum(isinstance(i, Rejected) for i in got.items) == 2
        finally:
            await source.stop()
            await plant.stop()
        # Stopping the source says so: link down and every monitored tag stale.
        assert links(got.items) == [True, False]
        assert sorted(i.prefix for i in got.items if isinstance(i, Stale)) == sorted(
            [TEMP, COUNT, STATE]
        )

    run(scenario)


def test_server_restart_marks_tags_stale_then_reconnects_by_itself() -> None:
    async def scenario() -> None:
        port = free_port()
        plant = OpcUaPlant([TEMP, COUNT], port=port, initial={TEMP: 20.0, COUNT: 0})
        await plant.start()
        got = Collector()
        source = OpcUaSource(plant.url, [TEMP, COUNT, MISSING], got, config=FAST)
        try:
            await source.start()
            await got.until(lambda items: values(items, TEMP) == [20.0])
            await plant.write(COUNT, 1, 1_700_000_001.0)
            await got.until(lambda items: 1 in values(items, COUNT))

            # The server goes away: link down, then one Stale per monitored address.
            await plant.stop()
            await got.until(lambda items: any(isinstance(i, Stale) for i in items))
            down = next(n for n, i in enumerate(got.items) if isinstance(i, Link) and not i.up)
            stale = [i for i in got.items if isinstance(i, Stale)]
            assert sorted(s.prefix for s in stale) == sorted([TEMP, COUNT])
            assert all(got.items.index(s) > down for s in stale)
            assert not source.connected and source.monitored == ()
            await asyncio.sleep(0.8)  # failed attempts in between say nothing more
            assert links(got.items) == [True, False]

            # Back on the same port: the source finds it, re-subscribes, values flow again.
            mark = len(got.items)
            await plant.write(COUNT, 2, 1_700_000_002.0)  # while down: served on restart
            await plant.start()
            await got.until(lambda items: 2 in values(items[mark:], COUNT))
            assert links(got.items) == [True, False, True]
            assert source.connected and source.monitored == (TEMP, COUNT)
            await plant.write(COUNT, 3, 1_700_000_003.0, Quality.UNCERTAIN)
            await got.until(lambda items: 3 in values(items[mark:], COUNT))
            after = [s for s in got.samples(COUNT) if got.items.index(s) >= mark]
            assert [s.value for s in after] == [2, 3]
            assert [s.quality for s in after] == [Quality.GOOD, Quality.UNCERTAIN]
            # The missing node was rejected once, not once per session.
            assert [i.address for i in got.items if isinstance(i, Rejected)] == [MISSING]
        finally:
            await source.stop()
            await plant.stop()

    run(scenario)
