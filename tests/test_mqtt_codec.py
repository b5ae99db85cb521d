"""The sans-I/O MQTT 3.1.1 reader and encoders of the twin's subscriber, without sockets:
packets split at any boundary decode the same, lengths of every size, malformed input raises
MqttProtocolError (never anything else), encoders produce the bytes the spec defines."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.live.mqtt import (
    ConnAck,
    MqttProtocolError,
    MqttReader,
    PingResp,
    Publish,
    SubAck,
    encode_connect,
    encode_pubacks,
    encode_publish,
    encode_subscribe,
)


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        n, d = divmod(n, 128)
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_bytes(topic: str, payload: bytes, packet_id: int, qos: int) -> bytes:
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return bytes((0x30 | (qos << 1),)) + _remaining(len(body)) + body


publishes = st.builds(
    Publish,
    topic=st.text(min_size=1, max_size=40),
    payload=st.binary(max_size=300) | st.binary(min_size=16_384, max_size=20_000),
    packet_id=st.integers(1, 65535),
    qos=st.sampled_from([0, 1]),
).map(lambda p: p._replace(packet_id=p.packet_id if p.qos else 0))


@settings(max_examples=200, deadline=None)
@given(st.lists(publishes, min_size=1, max_size=8), st.data())
def test_packets_split_anywhere_decode_the_same(
    packets: list[Publish], data: st.DataObject
) -> None:
    stream = b"".join(publish_bytes(p.topic, p.payload, p.packet_id, p.qos) for p in packets)
    stream = b"\x20\x02\x01\x00" + stream + b"\x90\x03\x00\x07\x01" + b"\xd0\x00"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = MqttReader()
    events = []
    last = 0
    for c in [*cuts, len(stream)]:
        events += reader.receive_data(stream[last:c])
        last = c
    assert events == [ConnAck(True, 0), *packets, SubAck(7, (1,)), PingResp()]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([b"", b"\x30", b"\x32", b"\x20", b"\x90"]), st.binary(max_size=60))
def test_garbage_raises_only_the_protocol_error(head: bytes, rest: bytes) -> None:
    data = head + rest
    with contextlib.suppress(MqttProtocolError):
        MqttReader().receive_data(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x32\x05\x00\x09abc",  # topic runs past the packet
        b"\x34\x06\x00\x01a\x00\x01x",  # QoS 2 (never subscribed at 2)
        b"\x30\xff\xff\xff\xff\x01",  # remaining length of 5 bytes
        b"\x30\x04\x00\x02\xff\xfe",  # topic not UTF-8
        b"\x60\x02\x00\x01",  # PUBREL: not for a QoS 1 subscriber
        b"\x30\x00",  # PUBLISH without a topic length (found by hand: was an IndexError)
        b"\x32\x01\x00",
        b"\x32\x03\x00\x00\x01",  # QoS 1 without its packet id
    ],
)
def test_malformed_packets(data: bytes) -> None:
    with pytest.raises(MqttProtocolError):
        MqttReader().receive_data(data)


def test_encoders_follow_the_spec() -> None:
    c = encode_connect("twin", clean_session=False, keepalive_s=30, username="u", password="p")
    assert c[0] == 0x10 and c[2:8] == b"\x00\x04MQTT" and c[8] == 4
    assert c[9] == 0xC0  # user name and password flags, clean session off
    assert c[10:12] == (30).to_bytes(2, "big") and c.endswith(b"\x00\x01u\x00\x01p")
    assert encode_connect("x", clean_session=True, keepalive_s=5)[9] == 0x02
    s = encode_subscribe(3, [("a/#", 1), ("b", 0)])
    assert s == b"\x82\x0c\x00\x03\x00\x03a/#\x01\x00\x01b\x00"
    assert encode_publish("t", b"hi") == b"\x30\x05\x00\x01thi"
    assert encode_publish("t", b"hi", 258) == b"\x32\x07\x00\x01t\x01\x02hi"  # QoS 1
    for bad in (-1, 65_536):
        with pytest.raises(ValueError, match="packet id"):
            encode_publish("t", b"", bad)
    # what the broker forwards at QoS 1 reads back as sent
    (got,) = MqttReader().receive_data(encode_publish("a/b", b"v", 7))
    assert got == Publish("a/b", b"v", 7, 1)
    assert encode_pubacks([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"
    assert encode_pubacks([]) == b""
    big = encode_publish("t", b"x" * 200)  # remaining length 203: two bytes, 0xcb 0x01
    assert big[1:3] == b"\xcb\x01" and struct.unpack(">H", big[3:5])[0] == 1
