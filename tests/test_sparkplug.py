"""Sparkplug B: the codec (every datatype, the wire's field numbers), the host's rules (births,
aliases, seq, rebirth, deaths, bdSeq, quality), the edge node, and fuzzing of the host and the
JSON decoder (bad input becomes a Rejected, never an exception). No sockets here."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin.live.mqtt import decode_json
from twin.live.sparkplug import (
    DataSet,
    DataType,
    MetaData,
    Metric,
    Parameter,
    Payload,
    PropertyValue,
    SparkplugError,
    SparkplugHost,
    SparkplugNode,
    Template,
    _PbPayload,
    decode_payload,
    encode_payload,
    quality_of,
)
from twin.live.telemetry import Quality, Reason, Rejected, Sample, Stale

D = DataType

EXAMPLES: dict[DataType, Any] = {
    D.Int8: -128,
    D.Int16: -32768,
    D.Int32: -(2**31),
    D.Int64: -(2**63),
    D.UInt8: 255,
    D.UInt16: 65535,
    D.UInt32: 2**32 - 1,
    D.UInt64: 2**64 - 1,
    D.Float: 1.5,
    D.Double: 0.1,
    D.Boolean: True,
    D.String: "héllo",
    D.DateTime: 1_700_000_000_123,
    D.Text: "some text",
    D.UUID: "123e4567-e89b-12d3-a456-426614174000",
    D.DataSet: DataSet(
        columns=("a", "b", "c", "d"),
        types=(D.Int16, D.String, D.Double, D.Int64),
        rows=((-2, "x", 0.5, -(2**40)), (7, "y", None, 3)),
    ),
    D.Bytes: b"\x00\xff\x10",
    D.File: b"file contents",
    D.Template: Template(
        version="1.0",
        template_ref="Motor",
        is_definition=False,
        metrics=(
            Metric(name="rpm", datatype=D.Float, value=1450.5),
            Metric(name="on", datatype=D.Boolean, value=None),
        ),
        parameters=(
            Parameter(name="poles", datatype=D.Int32, value=-4),
            Parameter(name="maker", datatype=D.String, value=None),
        ),
    ),
    D.Int8Array: (-128, 0, 127),
    D.Int16Array: (-32768, 1, 32767),
    D.Int32Array: (-(2**31), 2**31 - 1),
    D.Int64Array: (-(2**63), 2**63 - 1),
    D.UInt8Array: (0, 255),
    D.UInt16Array: (0, 65535),
    D.UInt32Array: (0, 2**32 - 1),
    D.UInt64Array: (0, 2**64 - 1),
    D.FloatArray: (1.5, -2.25),
    D.DoubleArray: (0.1, -1e300),
    D.BooleanArray: (True, False, True, True, False, False, False, False, True),
    D.StringArray: ("a", "", "ü"),
    D.DateTimeArray: (1_700_000_000_000, 0),
}
METRIC_TYPES = [d for d in DataType if d not in (D.Unknown, D.PropertySet, D.PropertySetList)]


def test_examples_cover_every_metric_datatype() -> None:
    assert set(EXAMPLES) == set(METRIC_TYPES)


@pytest.mark.parametrize("datatype", METRIC_TYPES, ids=lambda d: d.name)
def test_round_trip_every_datatype(datatype: DataType) -> None:
    m = Metric(name=f"m/{datatype.name}", alias=7, timestamp=1234, datatype=datatype,
               value=EXAMPLES[datatype])  # fmt: skip
    p = Payload(timestamp=99, seq=3, metrics=(m, Metric(name="null", datatype=datatype)))
    assert decode_payload(encode_payload(p)) == p


def test_round_trip_properties_metadata_and_flags() -> None:
    props = {
        "engUnit": PropertyValue(datatype=D.String, value="rpm"),
        "Quality": PropertyValue(datatype=D.Int32, value=192),
        "nested": PropertyValue(
            datatype=D.PropertySet, value={"k": PropertyValue(datatype=D.Boolean, value=True)}
        ),
        "list": PropertyValue(
            datatype=D.PropertySetList, value=({"a": PropertyValue(datatype=D.UInt8, value=1)},)
        ),
        "nothing": PropertyValue(datatype=D.Double, value=None),
    }
    m = Metric(
        name="x",
        datatype=D.Bytes,
        value=b"abc",
        is_historical=True,
        is_transient=True,
        properties=props,
        metadata=MetaData(is_multi_part=False, content_type="text/plain", size=3, md5="0"),
    )
    p = Payload(timestamp=1, seq=0, uuid="my-uuid", body=b"raw", metrics=(m,))
    assert decode_payload(encode_payload(p)) == p


def test_wire_format_uses_tahu_field_numbers() -> None:
    p = Payload(
        timestamp=1,
        seq=2,
        uuid="u",
        body=b"b",
        metrics=(Metric(name="a", alias=3, timestamp=4, datatype=D.Int32, value=5),),
    )
    metric = b"\x0a\x01a" + b"\x10\x03" + b"\x18\x04" + b"\x20\x03" + b"\x50\x05"
    expected = b"\x08\x01" + b"\x12" + bytes([len(metric)]) + metric
    expected += b"\x18\x02" + b"\x22\x01u" + b"\x2a\x01b"
    assert encode_payload(p) == expected
    # float_value 12, boolean_value 14, string_value 15, bytes_value 16, is_null 7
    assert encode_payload(Payload(metrics=(Metric(datatype=D.Float, value=1.0),))).endswith(
        b"\x65\x00\x00\x80\x3f"
    )
    assert encode_payload(Payload(metrics=(Metric(datatype=D.Boolean, value=True),))).endswith(
        b"\x70\x01"
    )
    assert encode_payload(Payload(metrics=(Metric(datatype=D.String, value="s"),))).endswith(
        b"\x7a\x01s"
    )
    assert encode_payload(Payload(metrics=(Metric(datatype=D.Bytes, value=b"z"),))).endswith(
        b"\x82\x01\x01z"
    )
    assert encode_payload(Payload(metrics=(Metric(datatype=D.Int8),))).endswith(b"\x38\x01")
    # signed integers are two's complement in the unsigned fields (Tahu sign-extends)
    assert encode_payload(Payload(metrics=(Metric(datatype=D.Int8, value=-1),))).endswith(
        b"\x50\xff\xff\xff\xff\x0f"
    )


def test_signed_values_zero_extended_are_accepted() -> None:
    pb = _PbPayload()
    pb.metrics.add(datatype=int(D.Int8), int_value=0x80)
    pb.metrics.add(datatype=int(D.Int16), int_value=0xFFFF)
    pb.metrics.add(datatype=int(D.Int8), int_value=0xFFFFFF80)
    values = [m.value for m in decode_payload(pb.SerializeToString()).metrics]
    assert values == [-128, -1, -128]
    pb.metrics.add(datatype=int(D.Int8), int_value=0x1234)
    with pytest.raises(SparkplugError):
        decode_payload(pb.SerializeToString())


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (D.Int8, 128),
        (D.UInt8, -1),
        (D.UInt64, 2**64),
        (D.Int32, 1.5),
        (D.Int32, True),
        (D.Boolean, 1),
        (D.String, b"x"),
        (D.Double, "1"),
        (D.Int8Array, (1, 300)),
        (D.BooleanArray, (1, 0)),
        (D.StringArray, ("a\0b",)),
        (D.DataSet, "table"),
        (D.PropertySet, {}),
        (D.Unknown, 1),
    ],
)
def test_encode_refuses_values_that_do_not_fit(datatype: DataType, value: Any) -> None:
    with pytest.raises(SparkplugError):
        encode_payload(Payload(metrics=(Metric(name="x", datatype=datatype, value=value),)))


def _int_strategy(d: DataType) -> st.SearchStrategy[Any]:
    bits = {D.Int8: 8, D.Int16: 16, D.Int32: 32, D.Int64: 64}
    ubits = {D.UInt8: 8, D.UInt16: 16, D.UInt32: 32, D.UInt64: 64, D.DateTime: 64}
    if d in bits:
        return st.integers(-(2 ** (bits[d] - 1)), 2 ** (bits[d] - 1) - 1)
    return st.integers(0, 2 ** ubits[d] - 1)


SCALARS = st.one_of(
    *(
        st.tuples(st.just(d), _int_strategy(d))
        for d in (D.Int8, D.Int16, D.Int32, D.Int64, D.UInt8, D.UInt16, D.UInt32, D.UInt64)
    ),
    st.tuples(st.just(D.DateTime), _int_strategy(D.DateTime)),
    st.tuples(st.just(D.Float), st.floats(width=32, allow_nan=False)),
    st.tuples(st.just(D.Double), st.floats(allow_nan=False)),
    st.tuples(st.just(D.Boolean), st.booleans()),
    st.tuples(st.sampled_from([D.String, D.Text, D.UUID]), st.text()),
    st.tuples(st.sampled_from([D.Bytes, D.File]), st.binary()),
    st.tuples(st.just(D.Int16Array), st.lists(_int_strategy(D.Int16)).map(tuple)),
    st.tuples(st.just(D.BooleanArray), st.lists(st.booleans()).map(tuple)),
    st.tuples(
        st.just(D.StringArray), st.lists(st.text().filter(lambda s: "\0" not in s)).map(tuple)
    ),
)


@given(st.lists(SCALARS, max_size=8), st.none() | st.integers(0, 255))
def test_round_trip_property(values: list[tuple[DataType, Any]], seq: int | None) -> None:
    metrics = tuple(
        Metric(name=f"m{i}", alias=i, datatype=d, value=v) for i, (d, v) in enumerate(values)
    )
    p = Payload(timestamp=1_700_000_000_000, seq=seq, metrics=metrics)
    assert decode_payload(encode_payload(p)) == p


def test_decode_refuses_bytes_that_are_not_a_payload() -> None:
    for data in (b"\xff", b"\x12\x05ab", b"\x0a"):
        with pytest.raises(SparkplugError):
            decode_payload(data)


# ---------------------------------------------------------------------------------------------
# The host.

G, N = "body_shop", "biw1"
FRAMING = f"spBv1.0/{G}/DDATA/{N}/framing"


def make_node() -> SparkplugNode:
    return SparkplugNode(
        G,
        N,
        node_metrics={"Uptime": D.Int64},
        devices={
            "framing": {"State": D.String, "BodiesOut": D.UInt32, "CycleTime_ms": D.Double},
            "respot": {"State": D.String},
        },
    )


def born(node: SparkplugNode | None = None) -> tuple[SparkplugHost, SparkplugNode]:
    node = node or make_node()
    node.connect()
    host = SparkplugHost()
    for t, p in node.births(1_000):
        host.receive(t, p, 1.0)
    return host, node


def samples(items: list[Any]) -> dict[str, Any]:
    return {s.address: s.value for s in items if isinstance(s, Sample)}


def rejected(items: list[Any]) -> list[Reason]:
    return [r.reason for r in items if isinstance(r, Rejected)]


def test_births_define_metrics_and_are_samples() -> None:
    node = make_node()
    node.connect()
    node.data("framing", {"State": "RUN", "BodiesOut": 10}, 500)  # remembered for the births
    node.data(None, {"Uptime": 5}, 500)
    host = SparkplugHost()
    (t1, p1), (t2, p2), (t3, _) = node.births(1_000)
    assert (t1, t2, t3) == (
        f"spBv1.0/{G}/NBIRTH/{N}",
        f"spBv1.0/{G}/DBIRTH/{N}/framing",
        f"spBv1.0/{G}/DBIRTH/{N}/respot",
    )
    out, send = host.receive(t1, p1, 1.0)
    assert send == [] and rejected(out) == []
    assert samples(out) == {f"spBv1.0/{G}/NDATA/{N}/Uptime": 5}  # bdSeq, Node Control: protocol
    out, _ = host.receive(t2, p2, 1.0)
    assert samples(out) == {
        f"{FRAMING}/State": "RUN",
        f"{FRAMING}/BodiesOut": 10,
        f"{FRAMING}/CycleTime_ms": None,
    }
    never_set = next(s for s in out if isinstance(s, Sample) and s.value is None)
    assert never_set.quality == Quality.BAD
    assert all(s.source_ts == 1.0 and s.source == "sparkplug" for s in out)


def test_data_by_alias_and_by_name_with_millisecond_timestamps() -> None:
    host, node = born()
    out, send = host.receive(
        *node.data("framing", {"CycleTime_ms": 58_000.5}, 1_700_000_000_250), 2.0
    )
    assert send == []
    (s,) = out
    assert isinstance(s, Sample)
    assert s.address == f"{FRAMING}/CycleTime_ms" and s.value == 58_000.5
    assert s.source_ts == pytest.approx(1_700_000_000.25) and s.received_ts == 2.0
    by_name = node.raw_data(
        "framing", [Metric(name="BodiesOut", datatype=D.UInt32, value=11)], 3_000
    )
    out, _ = host.receive(*by_name, 3.0)
    assert samples(out) == {f"{FRAMING}/BodiesOut": 11}
    assert out[0].source_ts == 3.0  # no metric timestamp: the payload's
    out, _ = host.receive(*node.data(None, {"Uptime": 7}, 4_000), 4.0)
    assert samples(out) == {f"spBv1.0/{G}/NDATA/{N}/Uptime": 7}


def test_unknown_alias_is_rejected_and_asks_for_rebirth_once_per_holdoff() -> None:
    host, node = born()
    bad = node.raw_data("framing", [Metric(alias=999, datatype=D.Double, value=1.0)], 2_000)
    out, send = host.receive(*bad, 2.0)
    assert rejected(out) == [Reason.UNKNOWN_ALIAS]
    (cmd,) = send
    assert cmd[0] == f"spBv1.0/{G}/NCMD/{N}"
    # another unknown alias 1 s later: rejected again, no second request within the holdoff
    out, send = host.receive(
        *node.raw_data("framing", [Metric(alias=998, datatype=D.Int32, value=1)], 0), 3.0
    )
    assert rejected(out) == [Reason.UNKNOWN_ALIAS] and send == []
    out, send = host.receive(
        *node.raw_data("framing", [Metric(alias=998, datatype=D.Int32, value=1)], 0), 8.5
    )
    assert len(send) == 1
    # an alias of another device is unknown to this one; the good metric still applies
    respot_alias = node.aliases["respot", "State"]
    mixed = node.raw_data(
        "framing",
        [
            Metric(alias=respot_alias, datatype=D.String, value="x"),
            Metric(name="State", datatype=D.String, value="IDLE"),
        ],
        0,
    )
    out, _ = host.receive(*mixed, 9.0)
    assert rejected(out) == [Reason.UNKNOWN_ALIAS]
    assert samples(out) == {f"{FRAMING}/State": "IDLE"}


def test_rebirth_request_payload() -> None:
    host, node = born()
    _, send = host.receive(
        *node.raw_data("framing", [Metric(alias=999, datatype=D.Int32, value=1)], 0), 2.0
    )
    ((_, payload),) = send
    (m,) = decode_payload(payload).metrics
    assert (m.name, m.datatype, m.value) == ("Node Control/Rebirth", D.Boolean, True)


def test_seq_wraps_at_256_without_gaps() -> None:
    host, node = born()
    for k in range(600):
        out, send = host.receive(*node.data("framing", {"BodiesOut": k}, k), 2.0 + k)
        assert rejected(out) == [] and send == []
        assert samples(out) == {f"{FRAMING}/BodiesOut": k}


def test_seq_gap_is_rejected_values_applied_and_rebirth_asked() -> None:
    host, node = born()
    host.receive(*node.data("framing", {"BodiesOut": 1}, 0), 2.0)
    node.data("framing", {"BodiesOut": 2}, 0)  # lost
    out, send = host.receive(*node.data("framing", {"BodiesOut": 3}, 0), 3.0)
    assert rejected(out) == [Reason.SEQUENCE_GAP]
    assert "expected" in next(r for r in out if isinstance(r, Rejected)).detail
    assert samples(out) == {f"{FRAMING}/BodiesOut": 3}
    assert len(send) == 1
    out, send = host.receive(*node.data("framing", {"BodiesOut": 4}, 0), 4.0)
    assert rejected(out) == [] and send == []  # in step again


def test_message_without_seq_is_malformed_but_applied() -> None:
    host, _ = born()
    p = encode_payload(Payload(metrics=(Metric(name="State", datatype=D.String, value="RUN"),)))
    out, _ = host.receive(f"spBv1.0/{G}/DDATA/{N}/framing", p, 2.0)
    assert rejected(out) == [Reason.MALFORMED]
    assert samples(out) == {f"{FRAMING}/State": "RUN"}


def test_data_before_birth_is_rejected_with_a_rebirth_request() -> None:
    host = SparkplugHost()
    node = make_node()
    node.connect()
    node.births(0)
    for msg in (node.data("framing", {"State": "RUN"}, 0), node.data(None, {"Uptime": 1}, 0)):
        out, send = host.receive(*msg, 1.0)
        assert rejected(out) == [Reason.NO_BIRTH] and samples(out) == {}
    assert len(send) == 0  # second one within the holdoff
    # node born, but this device was not
    host2, node2 = SparkplugHost(), make_node()
    node2.connect()
    nbirth = node2.births(0)[0]
    host2.receive(*nbirth, 1.0)
    out, send = host2.receive(*node2.data("framing", {"State": "RUN"}, 0), 2.0)
    assert rejected(out) == [Reason.NO_BIRTH] and len(send) == 1
    # a DBIRTH before any NBIRTH
    out, send = SparkplugHost().receive(*node2.births(0)[1], 1.0)
    assert rejected(out) == [Reason.NO_BIRTH] and len(send) == 1


def test_ndeath_with_matching_bdseq_makes_the_node_stale() -> None:
    host, node = born()
    will = node.death()
    older = SparkplugNode(G, N, bd_seq=200).death()
    out, _ = host.receive(*older, 2.0)
    assert rejected(out) == [Reason.OUT_OF_ORDER]  # an older session's will: ignored
    out, _ = host.receive(*node.data("framing", {"State": "RUN"}, 0), 3.0)
    assert samples(out) == {f"{FRAMING}/State": "RUN"}
    out, _ = host.receive(*will, 4.0)
    assert [(s.prefix, s.reason) for s in out if isinstance(s, Stale)] == [
        (f"spBv1.0/{G}/NDATA/{N}/", "NDEATH"),
        (f"spBv1.0/{G}/DDATA/{N}/", "NDEATH"),
    ]
    out, send = host.receive(*node.data("framing", {"State": "RUN"}, 0), 5.0)
    assert rejected(out) == [Reason.NO_BIRTH] and len(send) == 1
    # reconnect: new bdSeq, births, data flows again
    new_will = node.connect()
    for msg in node.births(6_000):
        host.receive(*msg, 6.0)
    out, _ = host.receive(*node.data("framing", {"State": "IDLE"}, 0), 7.0)
    assert samples(out) == {f"{FRAMING}/State": "IDLE"}
    out, _ = host.receive(*will, 8.0)  # the first session's will, late
    assert rejected(out) == [Reason.OUT_OF_ORDER]
    out, _ = host.receive(*new_will, 9.0)
    assert len([s for s in out if isinstance(s, Stale)]) == 2


def test_ddeath_makes_the_device_stale_and_unborn() -> None:
    host, node = born()
    out, _ = host.receive(*node.device_death("framing", 2_000), 2.0)
    assert [s.prefix for s in out if isinstance(s, Stale)] == [f"{FRAMING}/"]
    out, _ = host.receive(*node.data("framing", {"State": "RUN"}, 0), 3.0)
    assert rejected(out) == [Reason.NO_BIRTH]
    out, _ = host.receive(*node.data("respot", {"State": "RUN"}, 0), 3.0)
    assert samples(out) == {f"spBv1.0/{G}/DDATA/{N}/respot/State": "RUN"}


def test_quality_null_and_wrong_types() -> None:
    host, node = born()
    q = {"Quality": PropertyValue(datatype=D.Int32, value=0)}
    msg = node.raw_data(
        "framing",
        [
            Metric(name="State", datatype=D.String, value="RUN", properties=q),
            Metric(name="BodiesOut", datatype=D.UInt32, value=None),
            Metric(name="CycleTime_ms", datatype=D.String, value="fast"),
        ],
        0,
    )
    out, _ = host.receive(*msg, 2.0)
    state, bodies, wrong = out
    assert isinstance(state, Sample) and state.quality == Quality.BAD and state.value == "RUN"
    assert isinstance(bodies, Sample) and bodies.quality == Quality.BAD and bodies.value is None
    assert isinstance(wrong, Rejected) and wrong.reason == Reason.WRONG_TYPE
    assert wrong.address == f"{FRAMING}/CycleTime_ms"
    pb = _PbPayload(seq=node.seq)
    pb.metrics.add(name="State")  # no value, not null
    pb.metrics.add(name="BodiesOut", string_value="12")  # value in the wrong field
    out, _ = host.receive(f"spBv1.0/{G}/DDATA/{N}/framing", pb.SerializeToString(), 3.0)
    assert rejected(out) == [Reason.MALFORMED, Reason.WRONG_TYPE]
    assert [quality_of(c) for c in (192, 216, 64, 0, 500)] == [
        Quality.GOOD,
        Quality.GOOD,
        Quality.UNCERTAIN,
        Quality.BAD,
        Quality.BAD,
    ]


def test_birth_problems_are_rejected() -> None:
    host = SparkplugHost()
    p = encode_payload(
        Payload(
            seq=0,
            metrics=(
                Metric(name="a", alias=1, datatype=D.Int32, value=1),
                Metric(name="b", alias=1, datatype=D.Int32, value=2),  # alias taken
                Metric(alias=2, datatype=D.Int32, value=3),  # no name
                Metric(name="c", alias=3, value=None),  # no datatype
            ),
        )
    )
    out, _ = host.receive(f"spBv1.0/{G}/NBIRTH/{N}", p, 1.0)
    assert rejected(out) == [
        Reason.MALFORMED,  # no bdSeq
        Reason.MALFORMED,
        Reason.MALFORMED,
        Reason.WRONG_TYPE,
    ]
    assert samples(out) == {f"spBv1.0/{G}/NDATA/{N}/a": 1}


def test_state_and_commands_are_ignored_bad_topics_rejected() -> None:
    host = SparkplugHost()
    assert host.receive("spBv1.0/STATE/scada1", b'{"online":true}', 1.0) == ([], [])
    assert host.receive(f"spBv1.0/{G}/NCMD/{N}", b"", 1.0) == ([], [])
    for topic in ("spBv1.0/g/NDATA", "spBv1.0/g/DDATA/n", "spBv1.0/g/NBIRTH/n/d", "other/x",
                  "spBv1.0/g/FOO/n", "spBv1.0//NDATA/n"):  # fmt: skip
        out, send = host.receive(topic, b"", 1.0)
        assert rejected(out) == [Reason.MALFORMED] and send == [], topic


def test_node_answers_only_rebirth_requests_and_counts_bdseq() -> None:
    node = make_node()
    assert node.connect()[0] == f"spBv1.0/{G}/NDEATH/{N}"
    assert node.bd_seq == 0
    node.connect()
    assert node.bd_seq == 1
    assert decode_payload(node.death()[1]).metrics[0].value == 1
    ncmd = f"spBv1.0/{G}/NCMD/{N}"
    assert node.receive(ncmd, b"\xff", 0) == []
    assert node.receive(f"spBv1.0/{G}/NCMD/other", b"", 0) == []
    off = encode_payload(
        Payload(metrics=(Metric(name="Node Control/Rebirth", datatype=D.Boolean, value=False),))
    )
    assert node.receive(ncmd, off, 0) == []
    births = node.receive(ncmd, _rebirth_payload(), 0)
    assert [t.split("/")[2] for t, _ in births] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert decode_payload(births[0][1]).seq == 0 and decode_payload(births[2][1]).seq == 2
    aliases = list(node.aliases.values())
    assert len(set(aliases)) == len(aliases)


def _rebirth_payload() -> bytes:
    return encode_payload(
        Payload(metrics=(Metric(name="Node Control/Rebirth", datatype=D.Boolean, value=True),))
    )


# ---------------------------------------------------------------------------------------------
# Fuzzing: nothing raises; every bad message is a Rejected; good ones in between still apply.

TOPICS = st.sampled_from(
    [
        f"spBv1.0/{G}/NBIRTH/{N}",
        f"spBv1.0/{G}/DBIRTH/{N}/framing",
        f"spBv1.0/{G}/DDATA/{N}/framing",
        f"spBv1.0/{G}/NDATA/{N}",
        f"spBv1.0/{G}/NDEATH/{N}",
        f"spBv1.0/{G}/DDEATH/{N}/respot",
        "spBv1.0/other/DDATA/n/d",
        "spBv1.0/STATE/x",
        "plant/line/x",
    ]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(TOPICS, st.binary(max_size=64)), max_size=20))
def test_host_never_raises_on_arbitrary_bytes(messages: list[tuple[str, bytes]]) -> None:
    host, _ = born()
    for topic, payload in messages:
        out, send = host.receive(topic, payload, 1.0)
        assert all(isinstance(x, Sample | Rejected | Stale) for x in out)
        assert all(isinstance(t, str) and isinstance(p, bytes) for t, p in send)
        try:
            decode_payload(payload)
        except SparkplugError:
            if topic.startswith("spBv1.0/") and "/STATE/" not in topic and "NCMD" not in topic:
                assert rejected(out) == [Reason.MALFORMED]


@settings(max_examples=300)
@given(st.binary(max_size=64), st.text(max_size=20))
def test_decode_json_never_raises(payload: bytes, topic: str) -> None:
    out = decode_json(topic, payload, 1.0)
    assert isinstance(out, Sample | Rejected)


JSON_DOCS = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(st.sampled_from(["value", "ts", "quality", "x"]), c, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=300)
@given(JSON_DOCS)
def test_decode_json_structured_documents(doc: Any) -> None:
    import json

    out = decode_json("t", json.dumps(doc).encode(), 1.0)
    if isinstance(out, Sample):
        v = out.value
        assert v is None or isinstance(v, bool | int | float | str)
        assert out.source_ts is None or math.isfinite(out.source_ts)
    else:
        assert out.reason in (Reason.MALFORMED, Reason.WRONG_TYPE)


def _bad_message(node: SparkplugNode, kind: int, n: int) -> tuple[tuple[str, bytes], Reason | None]:
    """A structurally valid but semantically wrong message, and the reason it must get (None:
    no output at all)."""
    if kind == 0:  # an alias nobody was born with
        return node.raw_data(
            "framing", [Metric(alias=10_000 + n, datatype=D.Int32, value=1)], 0
        ), Reason.UNKNOWN_ALIAS
    if kind == 1:  # a name nobody was born with
        return node.raw_data(
            "framing", [Metric(name=f"ghost{n}", datatype=D.Int32, value=1)], 0
        ), Reason.UNKNOWN_ALIAS
    if kind == 2:  # a known metric with another datatype
        m = Metric(name="BodiesOut", datatype=D.String, value=str(n))
        return node.raw_data("framing", [m], 0), Reason.WRONG_TYPE
    if kind == 3:  # a known metric without a value
        pb = _PbPayload(seq=node.seq)
        pb.metrics.add(alias=node.aliases["framing", "State"])
        node.seq = (node.seq + 1) & 0xFF
        return (f"spBv1.0/{G}/DDATA/{N}/framing", pb.SerializeToString()), Reason.MALFORMED
    if kind == 4:  # an older session's will
        return SparkplugNode(G, N, bd_seq=node.bd_seq + 1 + n % 5).death(), Reason.OUT_OF_ORDER
    if kind == 5:  # data from a node that never was born
        other = SparkplugNode(G, f"ghost{n}", devices={"d": {"x": D.Int32}})
        return other.data("d", {"x": n}, 0), Reason.NO_BIRTH
    if kind == 6:  # a UInt32 metric with its value in long_value
        pb = _PbPayload(seq=node.seq)
        pb.metrics.add(alias=node.aliases["framing", "BodiesOut"], long_value=2**40 + n)
        node.seq = (node.seq + 1) & 0xFF
        return (f"spBv1.0/{G}/DDATA/{N}/framing", pb.SerializeToString()), Reason.WRONG_TYPE
    return (f"spBv1.0/STATE/host{n}", b"\x00garbage"), None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 7), st.floats(0, 1e6, allow_nan=False)), max_size=30))
def test_wrong_messages_between_good_ones(script: list[int | float]) -> None:
    host, node = born()
    for n, step in enumerate(script):
        if isinstance(step, float):
            out, send = host.receive(*node.data("framing", {"CycleTime_ms": step}, 0), 2.0)
            assert rejected(out) == [] and send == []
            assert samples(out) == {f"{FRAMING}/CycleTime_ms": step}
        else:
            msg, reason = _bad_message(node, step, n)
            out, _ = host.receive(*msg, 2.0)
            assert rejected(out) == ([] if reason is None else [reason])
            assert samples(out) == {}
