"""The MQTT adapter for real: a mosquitto broker on 127.0.0.1 (persistence on, in a temp dir),
``MqttPublisher`` publishing JSON and Sparkplug B, ``MqttSource`` receiving; no mocks.

Covers JSON samples end to end, Sparkplug births missed and recovered by a rebirth, an unknown
alias answered by a rebirth, acknowledgement only after the callback (a callback that fails
leaves the messages with the broker), and a broker killed (SIGKILL) mid-stream and restarted on
the same port: the source reconnects by itself and every message the broker acknowledged to
the publisher reaches the callback. The JSON convention is also checked without sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from conftest import Collector, Mosquitto, running

from scenes.errors import ConfigError
from twin.live.mqtt import (
    MqttConfig,
    MqttPublisher,
    MqttSource,
    decode_json,
    encode_json,
    subscriptions_for,
)
from twin.live.sparkplug import DataType, Metric, SparkplugHost, SparkplugNode
from twin.live.telemetry import Quality, Reason, Rejected, Sample, Telemetry


def run(coro: Callable[[], Coroutine[Any, Any, None]], timeout: float = 30) -> None:
    asyncio.run(asyncio.wait_for(coro(), timeout=timeout))


@pytest.fixture
def broker(mosquitto: Mosquitto) -> Mosquitto:
    return mosquitto


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def fast(url: str, client_id: str) -> MqttConfig:
    return MqttConfig(url=url, client_id=client_id, reconnect_min_s=0.05, reconnect_max_s=0.3)


# ---------------------------------------------------------------------------------------------
# Over a real broker.


def test_json_samples_end_to_end(broker: Mosquitto) -> None:
    topics = [f"plant1/bottling/filler/{t}" for t in ("state", "speed", "bowl_temp_raw")]

    async def main() -> None:
        got = Collector()
        source = MqttSource(fast(broker.url, "twin-json"), got, addresses=topics)
        async with running(source), MqttPublisher(fast(broker.url, "gw-json")) as pub:
            await got.until(lambda items: got.links() == [True])
            assert await pub.publish(topics[0], "RUNNING", ts=1_700_000_000.5)
            assert await pub.publish(topics[1], 3000, quality=Quality.UNCERTAIN)
            assert await pub.publish_raw(lambda: (topics[2], b"not json"))
            assert await pub.publish_raw(lambda: ("plant1/other", b"1"))  # not subscribed
            for k in range(200):
                assert await pub.publish(topics[2], k)
            await got.until(lambda items: len(got.samples()) == 202)
        first, second = got.samples()[:2]
        assert (first.address, first.value, first.source_ts) == (topics[0], "RUNNING", 1.7e9 + 0.5)
        assert first.source == "mqtt-json" and first.quality == Quality.GOOD
        assert (second.value, second.quality, second.source_ts) == (3000, Quality.UNCERTAIN, None)
        assert [s.value for s in got.samples()[2:]] == list(range(200))  # in order
        assert got.rejected() == [Reason.MALFORMED]
        assert all(abs(s.received_ts - time.time()) < 30 for s in got.samples())

    run(main)


def test_sparkplug_missed_births_and_unknown_alias_trigger_rebirths(broker: Mosquitto) -> None:
    node = SparkplugNode(
        "body_shop",
        "biw1",
        devices={"framing": {"State": DataType.String, "BodiesOut": DataType.UInt32}},
    )
    state = "spBv1.0/body_shop/DDATA/biw1/framing/State"
    bodies = "spBv1.0/body_shop/DDATA/biw1/framing/BodiesOut"

    async def main() -> None:
        got = Collector()
        async with MqttPublisher(fast(broker.url, "gw-spb"), node=node) as pub:
            await pub.wait_connected()
            assert pub.births_sent == 1  # nobody listening yet: these births are lost
            source = MqttSource(
                fast(broker.url, "twin-spb"),
                got,
                addresses=[state, bodies],
                host=SparkplugHost(rebirth_holdoff_s=0.0),
            )
            assert source.topics == ["spBv1.0/body_shop/#"]
            async with running(source):
                await got.until(lambda items: got.links() == [True])
                assert await pub.publish_data("framing", {"State": "RUN", "BodiesOut": 1})
                await got.until(lambda items: Reason.NO_BIRTH in got.rejected())
                # the source asked for a rebirth; the node answers with births (current values)
                await got.until(lambda items: any(s.address == bodies for s in got.samples()))
                await eventually(lambda: pub.births_sent == 2)
                assert {(s.address, s.value) for s in got.samples()} == {
                    (state, "RUN"),
                    (bodies, 1),
                }
                assert await pub.publish_data("framing", {"BodiesOut": 2})
                await got.until(lambda items: got.samples()[-1].value == 2)
                bad = [Metric(alias=4242, datatype=DataType.Int32, value=1)]
                assert await pub.publish_raw(lambda: node.raw_data("framing", bad, 0))
                await got.until(lambda items: Reason.UNKNOWN_ALIAS in got.rejected())
                await eventually(lambda: pub.births_sent == 3)
                assert await pub.publish_data("framing", {"BodiesOut": 3})
                await got.until(lambda items: got.samples()[-1].value == 3)
        assert got.rejected() == [Reason.NO_BIRTH, Reason.UNKNOWN_ALIAS]

    run(main)


def test_messages_are_acknowledged_only_after_the_callback(broker: Mosquitto) -> None:
    topic = "plant1/ack/count"

    async def main() -> None:
        async with MqttPublisher(fast(broker.url, "gw-ack")) as pub:
            first = Collector()
            # register the persistent session, then go away
            async with running(MqttSource(fast(broker.url, "twin-ack"), first, topics=[topic])):
                await first.until(lambda items: first.links() == [True])
            for k in range(50):
                assert await pub.publish(topic, k)

            def failing(batch: list[Telemetry]) -> None:
                if any(isinstance(i, Sample) for i in batch):
                    raise OSError("disk full")

            source = MqttSource(fast(broker.url, "twin-ack"), failing, topics=[topic])
            with pytest.raises(OSError, match="disk full"):
                await source.run()
            assert source.received > 0
            # nothing was acknowledged: the broker sends everything again
            again = Collector()
            async with running(MqttSource(fast(broker.url, "twin-ack"), again, topics=[topic])):
                await again.until(lambda items: len({s.value for s in again.samples()}) == 50)
        assert {s.value for s in again.samples()} == set(range(50))

    run(main)


def test_broker_killed_and_restarted_loses_nothing_acknowledged(broker: Mosquitto) -> None:
    topics = [f"plant1/restart/t{i}" for i in range(4)]

    async def main() -> None:
        got = Collector()
        acked: set[tuple[str, int]] = set()
        source = MqttSource(fast(broker.url, "twin-restart"), got, addresses=topics)
        async with running(source), MqttPublisher(fast(broker.url, "gw-restart")) as pub:
            await got.until(lambda items: got.links() == [True])
            await pub.wait_connected()

            async def restart_later() -> None:
                await asyncio.sleep(0.3)
                broker.start()

            restart = None
            for k in range(600):
                address = topics[k % len(topics)]
                if k == 300:
                    broker.kill()
                    restart = asyncio.create_task(restart_later())
                # while the broker is away, publish waits for the publisher to reconnect
                if await pub.publish(address, k):
                    acked.add((address, k))
            assert restart is not None
            await restart
            await got.until(
                lambda items: acked <= {(s.address, s.value) for s in got.samples()}, timeout=20
            )
            assert len(acked) >= 550
            assert got.links()[:3] == [True, False, True]
            assert pub.connections >= 2

    run(main, timeout=45)


# ---------------------------------------------------------------------------------------------
# The JSON convention, no sockets.


@pytest.mark.parametrize(
    ("payload", "value", "source_ts", "quality"),
    [
        (b"42", 42, None, Quality.GOOD),
        (b"-1.5", -1.5, None, Quality.GOOD),
        (b'"RUNNING"', "RUNNING", None, Quality.GOOD),
        (b"true", True, None, Quality.GOOD),
        (b"null", None, None, Quality.BAD),
        (b'{"value": 3, "ts": 1700000000.25}', 3, 1_700_000_000.25, Quality.GOOD),
        (b'{"value": 3, "ts": 1700000000250}', 3, 1_700_000_000.25, Quality.GOOD),
        (b'{"value": 3, "ts": "2023-11-14T22:13:20Z"}', 3, 1_700_000_000.0, Quality.GOOD),
        (b'{"value": 3, "ts": "2023-11-14T23:13:20+01:00"}', 3, 1_700_000_000.0, Quality.GOOD),
        (b'{"value": 3, "ts": "2023-11-14T22:13:20"}', 3, 1_700_000_000.0, Quality.GOOD),
        (b'{"value": "IDLE", "quality": "uncertain"}', "IDLE", None, Quality.UNCERTAIN),
        (b'{"value": 1, "quality": "BAD", "unit": "m"}', 1, None, Quality.BAD),
        (b'{"value": null, "quality": "good"}', None, None, Quality.BAD),
    ],
)
def test_decode_json_samples(payload: bytes, value: Any, source_ts: Any, quality: Quality) -> None:
    s = decode_json("a/b", payload, 5.0)
    assert isinstance(s, Sample)
    assert (s.address, s.value, s.source_ts, s.quality) == ("a/b", value, source_ts, quality)
    assert s.received_ts == 5.0 and s.source == "mqtt-json"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", Reason.MALFORMED),
        (b"{", Reason.MALFORMED),
        (b"\xff\xfe", Reason.MALFORMED),
        (b"[1, 2]", Reason.MALFORMED),
        (b'{"ts": 1}', Reason.MALFORMED),
        (b'{"value": 1, "ts": "yesterday"}', Reason.MALFORMED),
        (b'{"value": 1, "ts": true}', Reason.MALFORMED),
        (b'{"value": 1, "ts": -5}', Reason.MALFORMED),
        (b'{"value": 1, "quality": "great"}', Reason.MALFORMED),
        (b'{"value": 1, "quality": 192}', Reason.MALFORMED),
        (b'{"value": [1, 2]}', Reason.WRONG_TYPE),
        (b'{"value": {"x": 1}}', Reason.WRONG_TYPE),
    ],
)
def test_decode_json_rejections(payload: bytes, reason: Reason) -> None:
    r = decode_json("a/b", payload, 5.0)
    assert isinstance(r, Rejected)
    assert (r.reason, r.address, r.source) == (reason, "a/b", "mqtt-json")


def test_encode_json_round_trips() -> None:
    s = decode_json("t", encode_json(2.5, ts=1_700_000_000.5, quality=Quality.UNCERTAIN), 0.0)
    assert isinstance(s, Sample)
    assert (s.value, s.source_ts, s.quality) == (2.5, 1_700_000_000.5, Quality.UNCERTAIN)


def test_subscriptions_and_urls() -> None:
    assert subscriptions_for(
        [
            "plant1/a",
            "spBv1.0/body_shop/DDATA/biw1/framing/State",
            "spBv1.0/body_shop/NDATA/biw1/Uptime",
            "spBv1.0/paint/DDATA/p1/oven/T",
            "plant1/a",
        ]
    ) == ["plant1/a", "spBv1.0/body_shop/#", "spBv1.0/paint/#"]
    assert MqttConfig(url="mqtt://broker.local").endpoint() == ("broker.local", 1883, None)
    host, port, context = MqttConfig(url="mqtts://broker.local").endpoint()
    assert (host, port) == ("broker.local", 8883) and context is not None
    for bad in ("http://x", "mqtt://", "mqtt://x:notaport"):
        with pytest.raises(ConfigError):
            MqttConfig(url=bad).endpoint()
    source = MqttSource("mqtt://h:1", print, addresses=["plant1/a"], sparkplug=True)
    assert source.topics == ["spBv1.0/#", "plant1/a"] and source.config.client_id == "twin"


def test_messages_queued_while_the_twin_is_away_survive_a_broker_crash(broker: Mosquitto) -> None:
    topic = "plant1/away/count"

    async def main() -> None:
        first = Collector()
        async with running(MqttSource(fast(broker.url, "twin-away"), first, topics=[topic])):
            await first.until(lambda items: first.links() == [True])
        async with MqttPublisher(fast(broker.url, "gw-away")) as pub:
            acked = {k for k in range(100) if await pub.publish(topic, k)}
        assert len(acked) == 100
        # mosquitto acknowledges before it saves (after each change here, at its next loop
        # turn): give it that turn, or a crash loses what it acknowledged last
        await asyncio.sleep(0.5)
        broker.kill()
        broker.start()
        got = Collector()
        async with running(MqttSource(fast(broker.url, "twin-away"), got, topics=[topic])):
            await got.until(lambda items: {s.value for s in got.samples()} >= acked)

    run(main)
