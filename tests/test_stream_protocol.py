"""The twin.v1 codec: every message type round-trips, bad input gets the right error code."""

from __future__ import annotations

import contextlib
import math

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.errors import RemoteProtocolError
from streaming.protocol import (
    CLIENT_TYPES,
    SERVER_TYPES,
    Command,
    ErrorCode,
    Interest,
    Join,
    MsgType,
    Ping,
    Resync,
    Subscribe,
    TelemetryBatch,
    decode,
    encode,
    pack_transforms,
    parse_client,
    serialize_client,
    unpack_transforms,
)
from streaming.store import SceneStore, delta_message, snapshot_messages

names = st.text(min_size=1, max_size=20)
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | finite | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def interests(draw: st.DrawFn) -> Interest:
    area = None
    if draw(st.booleans()):
        x0, x1 = sorted((draw(finite), draw(finite)))
        y0, y1 = sorted((draw(finite), draw(finite)))
        area = (x0, y0, x1, y1)
    max_hz = draw(st.none() | st.floats(min_value=0.1, max_value=120))
    return Interest(ids=tuple(draw(st.lists(names, max_size=5))), area=area, max_hz=max_hz)


client_messages = st.one_of(
    st.builds(
        Join,
        session=st.none() | st.text(min_size=1, max_size=64),
        last_seq=st.none() | st.integers(0, 2**40),
        last_eseq=st.none() | st.integers(0, 2**40),
        interest=interests(),
    ),
    st.builds(Subscribe, interest=interests()),
    st.builds(Resync, reason=st.text(max_size=200)),
    st.builds(
        Command,
        id=st.text(min_size=1, max_size=128),
        target=st.text(min_size=1, max_size=256),
        action=st.text(min_size=1, max_size=64),
        args=st.dictionaries(st.text(max_size=8), msgpack_values, max_size=4),
    ),
    st.builds(Ping, nonce=st.none() | st.integers(0, 2**31) | st.text(max_size=10)),
    st.builds(
        TelemetryBatch,
        samples=st.lists(
            st.fixed_dictionaries({"address": st.text(max_size=20), "value": msgpack_values}),
            min_size=1,
            max_size=5,
        ).map(tuple),
    ),
)


@settings(max_examples=300, deadline=None)
@given(client_messages)
def test_every_client_message_round_trips(m: object) -> None:
    wire = encode(serialize_client(m))  # type: ignore[arg-type]
    back = parse_client(decode(wire))
    assert back == m


def test_the_type_sets_cover_every_message_type() -> None:
    assert set(MsgType) == CLIENT_TYPES | SERVER_TYPES
    assert not CLIENT_TYPES & SERVER_TYPES


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 300),
    st.integers(0, 2**32 - 1),
)
def test_transform_blocks_round_trip(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 2**32 - 1, n, dtype=np.uint64).astype(np.uint32)
    pos = rng.normal(0, 100, (n, 3)).astype(np.float32)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    block = decode(encode({"type": "delta", "xf": pack_transforms(ids, pos, q)}))["xf"]
    assert len(block["ids"]) == 4 * n and len(block["pos"]) == 12 * n and len(block["rot"]) == 8 * n
    xf = unpack_transforms(block)
    assert np.array_equal(xf.ids, ids)
    assert np.array_equal(xf.pos, pos)  # positions travel exactly as float32
    # 16-bit normalized quaternions: each component within 1/32767 (+ renormalization)
    assert np.allclose(xf.quat, q, atol=1e-4)
    assert np.allclose(np.linalg.norm(xf.quat, axis=1), 1.0, atol=1e-5) if n else True


def test_transform_block_is_little_endian_struct_of_arrays() -> None:
    block = pack_transforms(
        np.array([1, 258], np.uint32),
        np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32),
        np.array([[0, 0, 0, 1], [0, 0, 1, 0]], np.float32),
    )
    assert block["ids"] == b"\x01\x00\x00\x00\x02\x01\x00\x00"
    assert block["pos"][:4] == np.float32(1.0).astype("<f4").tobytes()
    assert np.frombuffer(block["rot"], "<i2").tolist() == [0, 0, 0, 32767, 0, 0, 32767, 0]


def test_inconsistent_transform_blocks_are_rejected() -> None:
    good = pack_transforms(
        np.zeros(2, np.uint32), np.zeros((2, 3)), np.tile([0, 0, 0, 1.0], (2, 1))
    )
    for broken in ({**good, "n": 3}, {**good, "pos": good["pos"][:-1]}, {**good, "ids": "text"}):
        with pytest.raises(RemoteProtocolError) as e:
            unpack_transforms(broken)
        assert e.value.code is ErrorCode.BAD_FIELD


def _code(data: bytes) -> ErrorCode:
    with pytest.raises(RemoteProtocolError) as e:
        parse_client(decode(data))
    return e.value.code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xc1garbage", ErrorCode.MALFORMED),
        (b"", ErrorCode.MALFORMED),
        (encode([1, 2]), ErrorCode.MALFORMED),  # type: ignore[arg-type]
        (encode({"no": "type"}), ErrorCode.MALFORMED),
        (encode({"type": 5}), ErrorCode.MALFORMED),
        (msgpack.packb({1: "int key", "type": "ping"}), ErrorCode.MALFORMED),
        (encode({"type": "teleport"}), ErrorCode.UNKNOWN_TYPE),
        (encode({"type": "delta"}), ErrorCode.UNEXPECTED),  # a server message
        (encode({"type": "join", "last_seq": -1}), ErrorCode.BAD_FIELD),
        (encode({"type": "join", "last_seq": "7"}), ErrorCode.BAD_FIELD),
        (encode({"type": "join", "session": "x" * 65}), ErrorCode.BAD_FIELD),
        (encode({"type": "subscribe", "ids": "station/a"}), ErrorCode.BAD_FIELD),
        (encode({"type": "subscribe", "area": [0, 0, 1]}), ErrorCode.BAD_FIELD),
        (encode({"type": "subscribe", "area": [2, 0, 1, 1]}), ErrorCode.BAD_FIELD),
        (encode({"type": "subscribe", "area": [0, 0, math.inf, 1]}), ErrorCode.BAD_FIELD),
        (encode({"type": "subscribe", "max_hz": 0}), ErrorCode.BAD_FIELD),
        (encode({"type": "subscribe", "max_hz": True}), ErrorCode.BAD_FIELD),
        (encode({"type": "command", "target": "a", "action": "b"}), ErrorCode.BAD_FIELD),
        (encode({"type": "command", "id": "", "target": "a", "action": "b"}), ErrorCode.BAD_FIELD),
        (encode({"type": "command", "id": 1, "target": "a", "action": "b"}), ErrorCode.BAD_FIELD),
        (
            encode({"type": "command", "id": "1", "target": "a", "action": "b", "args": [1]}),
            ErrorCode.BAD_FIELD,
        ),
        (encode({"type": "resync", "reason": 3}), ErrorCode.BAD_FIELD),
        (encode({"type": "ping", "nonce": [1]}), ErrorCode.BAD_FIELD),
        (encode({"type": "telemetry", "samples": []}), ErrorCode.BAD_FIELD),
        (encode({"type": "telemetry", "samples": [{"value": 1}]}), ErrorCode.BAD_FIELD),
    ],
)
def test_bad_client_messages_get_their_error_code(data: bytes, code: ErrorCode) -> None:
    assert _code(data) is code


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_anything_but_a_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        parse_client(decode(data))


def test_server_messages_round_trip_through_msgpack() -> None:
    store = SceneStore()
    store.add(
        "station/a",
        "station",
        props={"label": "A", "geometry": {"type": "box"}},
        pos=(1, 2, 3),
        state={"state": "busy", "produced": 3},
    )
    store.add("part/1", "part", pos=(4, 5, 6))
    store.commit()
    store.set_value("station/a", "state", "down")
    store.remove("part/1")
    store.commit()
    ch = store.changes(1)
    assert ch is not None
    delta = delta_message(ch, t=12.5, ts=1.7e9)
    back = decode(encode(delta))
    assert back["type"] == "delta" and back["seq"] == 2 and back["base_seq"] == 1
    assert back["rm"] == [1] and back["set"] == [[0, {"state": "down"}]]
    assert "xf" not in back and "add" not in back  # empty parts are left out
    snaps = snapshot_messages(store.snapshot(), t=12.5, ts=1.7e9, chunk_entities=1)
    assert [decode(encode(s))["chunk"] for s in snaps] == [0]
    assert decode(encode(snaps[0]))["entities"] == [
        [0, "station/a", "station", {"label": "A", "geometry": {"type": "box"}}]
    ]
