"""Sparkplug B v1.0: the payload codec and two sans-I/O state machines (host and edge node).

Three parts, none of which touches a socket:

- the codec: :func:`encode_payload` / :func:`decode_payload` between :class:`Payload` values and
  the protobuf bytes of Eclipse Tahu's ``sparkplug_b.proto`` (message classes are built at import
  time from a descriptor written out below, so no generated code pins a protobuf runtime);
- :class:`SparkplugHost`: what the twin runs. ``receive(topic, payload, received_ts)`` returns the
  telemetry (:mod:`twin.live.telemetry`) and the MQTT messages to publish (rebirth requests).
  Bad input never raises: it becomes a :class:`~twin.live.telemetry.Rejected` with a reason;
- :class:`SparkplugNode`: an edge node (the gateway simulator): births with aliases, data with
  ``seq``, the NDEATH will with ``bdSeq``, and fresh births when a host asks for a rebirth.

The rules the host applies are written out in ``docs/telemetry.md`` and in the docstring of
:class:`SparkplugHost`. Errors::

    TwinError (scenes.errors)
    └── SparkplugError (ValueError)    bytes that are not a Sparkplug B payload, or a value that
                                       does not fit its datatype (raised by the codec only)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from google.protobuf import (  # type: ignore[import-untyped]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from scenes.errors import TwinError

from .telemetry import Quality, Reason, Rejected, Sample, Stale, Telemetry

NAMESPACE = "spBv1.0"
SOURCE = "sparkplug"
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"

Message = tuple[str, bytes]
"""An MQTT message to publish: (topic, payload)."""


class SparkplugError(TwinError, ValueError):
    """Bytes that are not a Sparkplug B payload, or a value that does not fit its datatype."""


class DataType(IntEnum):
    """Sparkplug B datatypes (``DataType`` in Tahu's ``sparkplug_b.proto``; names as there)."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34


# ---------------------------------------------------------------------------------------------
# The schema: Tahu's sparkplug_b.proto (proto2, package org.eclipse.tahu.protobuf), field by
# field with the official numbers and types.

_FD = descriptor_pb2.FieldDescriptorProto
_OPT, _REP = _FD.LABEL_OPTIONAL, _FD.LABEL_REPEATED
_U32, _U64, _FLT, _DBL = _FD.TYPE_UINT32, _FD.TYPE_UINT64, _FD.TYPE_FLOAT, _FD.TYPE_DOUBLE
_BOOL, _STR, _BYTES, _MSG = _FD.TYPE_BOOL, _FD.TYPE_STRING, _FD.TYPE_BYTES, _FD.TYPE_MESSAGE
_PKG = "org.eclipse.tahu.protobuf"
_P = f".{_PKG}.Payload"

# (name, number, type, label, message type or "", oneof index or -1)
_FieldSpec = tuple[str, int, int, int, str, int]


def _msg(
    name: str,
    fields: Sequence[_FieldSpec],
    *,
    nested: Sequence[descriptor_pb2.DescriptorProto] = (),
    oneof: str = "",
    extensions_from: int = 0,
) -> descriptor_pb2.DescriptorProto:
    d = descriptor_pb2.DescriptorProto(name=name)
    if oneof:
        d.oneof_decl.add(name=oneof)
    for fname, number, ftype, label, type_name, oneof_index in fields:
        f = d.field.add(name=fname, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name
        if oneof_index >= 0:
            f.oneof_index = oneof_index
    d.nested_type.extend(nested)
    if extensions_from:
        d.extension_range.add(start=extensions_from, end=536870912)
    return d


def _schema() -> descriptor_pb2.FileDescriptorProto:
    o, r = _OPT, _REP

    def ext(name: str) -> list[descriptor_pb2.DescriptorProto]:
        return [_msg(name, [], extensions_from=1)]

    parameter = _msg(
        "Parameter",
        [
            ("name", 1, _STR, o, "", -1),
            ("type", 2, _U32, o, "", -1),
            ("int_value", 3, _U32, o, "", 0),
            ("long_value", 4, _U64, o, "", 0),
            ("float_value", 5, _FLT, o, "", 0),
            ("double_value", 6, _DBL, o, "", 0),
            ("boolean_value", 7, _BOOL, o, "", 0),
            ("string_value", 8, _STR, o, "", 0),
            ("extension_value", 9, _MSG, o, f"{_P}.Template.Parameter.ParameterValueExtension", 0),
        ],
        nested=ext("ParameterValueExtension"),
        oneof="value",
    )
    template = _msg(
        "Template",
        [
            ("version", 1, _STR, o, "", -1),
            ("metrics", 2, _MSG, r, f"{_P}.Metric", -1),
            ("parameters", 3, _MSG, r, f"{_P}.Template.Parameter", -1),
            ("template_ref", 4, _STR, o, "", -1),
            ("is_definition", 5, _BOOL, o, "", -1),
        ],
        nested=[parameter],
        extensions_from=6,
    )
    dataset_value = _msg(
        "DataSetValue",
        [
            ("int_value", 1, _U32, o, "", 0),
            ("long_value", 2, _U64, o, "", 0),
            ("float_value", 3, _FLT, o, "", 0),
            ("double_value", 4, _DBL, o, "", 0),
            ("boolean_value", 5, _BOOL, o, "", 0),
            ("string_value", 6, _STR, o, "", 0),
            ("extension_value", 7, _MSG, o, f"{_P}.DataSet.DataSetValue.DataSetValueExtension", 0),
        ],
        nested=ext("DataSetValueExtension"),
        oneof="value",
    )
    row = _msg(
        "Row",
        [("elements", 1, _MSG, r, f"{_P}.DataSet.DataSetValue", -1)],
        extensions_from=2,
    )
    dataset = _msg(
        "DataSet",
        [
            ("num_of_columns", 1, _U64, o, "", -1),
            ("columns", 2, _STR, r, "", -1),
            ("types", 3, _U32, r, "", -1),
            ("rows", 4, _MSG, r, f"{_P}.DataSet.Row", -1),
        ],
        nested=[dataset_value, row],
        extensions_from=5,
    )
    property_value = _msg(
        "PropertyValue",
        [
            ("type", 1, _U32, o, "", -1),
            ("is_null", 2, _BOOL, o, "", -1),
            ("int_value", 3, _U32, o, "", 0),
            ("long_value", 4, _U64, o, "", 0),
            ("float_value", 5, _FLT, o, "", 0),
            ("double_value", 6, _DBL, o, "", 0),
            ("boolean_value", 7, _BOOL, o, "", 0),
            ("string_value", 8, _STR, o, "", 0),
            ("propertyset_value", 9, _MSG, o, f"{_P}.PropertySet", 0),
            ("propertysets_value", 10, _MSG, o, f"{_P}.PropertySetList", 0),
            ("extension_value", 11, _MSG, o, f"{_P}.PropertyValue.PropertyValueExtension", 0),
        ],
        nested=ext("PropertyValueExtension"),
        oneof="value",
    )
    property_set = _msg(
        "PropertySet",
        [
            ("keys", 1, _STR, r, "", -1),
            ("values", 2, _MSG, r, f"{_P}.PropertyValue", -1),
        ],
        extensions_from=3,
    )
    property_set_list = _msg(
        "PropertySetList",
        [("propertyset", 1, _MSG, r, f"{_P}.PropertySet", -1)],
        extensions_from=2,
    )
    metadata = _msg(
        "MetaData",
        [
            ("is_multi_part", 1, _BOOL, o, "", -1),
            ("content_type", 2, _STR, o, "", -1),
            ("size", 3, _U64, o, "", -1),
            ("seq", 4, _U64, o, "", -1),
            ("file_name", 5, _STR, o, "", -1),
            ("file_type", 6, _STR, o, "", -1),
            ("md5", 7, _STR, o, "", -1),
            ("description", 8, _STR, o, "", -1),
        ],
        extensions_from=9,
    )
    metric = _msg(
        "Metric",
        [
            ("name", 1, _STR, o, "", -1),
            ("alias", 2, _U64, o, "", -1),
            ("timestamp", 3, _U64, o, "", -1),
            ("datatype", 4, _U32, o, "", -1),
            ("is_historical", 5, _BOOL, o, "", -1),
            ("is_transient", 6, _BOOL, o, "", -1),
            ("is_null", 7, _BOOL, o, "", -1),
            ("metadata", 8, _MSG, o, f"{_P}.MetaData", -1),
            ("properties", 9, _MSG, o, f"{_P}.PropertySet", -1),
            ("int_value", 10, _U32, o, "", 0),
            ("long_value", 11, _U64, o, "", 0),
            ("float_value", 12, _FLT, o, "", 0),
            ("double_value", 13, _DBL, o, "", 0),
            ("boolean_value", 14, _BOOL, o, "", 0),
            ("string_value", 15, _STR, o, "", 0),
            ("bytes_value", 16, _BYTES, o, "", 0),
            ("dataset_value", 17, _MSG, o, f"{_P}.DataSet", 0),
            ("template_value", 18, _MSG, o, f"{_P}.Template", 0),
            ("extension_value", 19, _MSG, o, f"{_P}.Metric.MetricValueExtension", 0),
        ],
        nested=ext("MetricValueExtension"),
        oneof="value",
    )
    payload = _msg(
        "Payload",
        [
            ("timestamp", 1, _U64, o, "", -1),
            ("metrics", 2, _MSG, r, f"{_P}.Metric", -1),
            ("seq", 3, _U64, o, "", -1),
            ("uuid", 4, _STR, o, "", -1),
            ("body", 5, _BYTES, o, "", -1),
        ],
        nested=[
            template,
            dataset,
            property_value,
            property_set,
            property_set_list,
            metadata,
            metric,
        ],
        extensions_from=6,
    )
    fdp = descriptor_pb2.FileDescriptorProto(
        name="twin/sparkplug_b.proto", package=_PKG, syntax="proto2"
    )
    fdp.message_type.append(payload)
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_schema())
_PbPayload: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PKG}.Payload"))
_PbMetric: Any = _PbPayload.Metric


# ---------------------------------------------------------------------------------------------
# Value types of the codec.


@dataclass(frozen=True, slots=True, kw_only=True)
class PropertyValue:
    """One property of a metric. ``value`` None means null; a PropertySet value is a mapping of
    keys to :class:`PropertyValue`, a PropertySetList value a tuple of such mappings."""

    datatype: DataType
    value: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaData:
    """A metric's ``metadata`` (multi-part bytes and files)."""

    is_multi_part: bool | None = None
    content_type: str | None = None
    size: int | None = None
    seq: int | None = None
    file_name: str | None = None
    file_type: str | None = None
    md5: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSet:
    """A table: ``types[i]`` is the datatype of column ``columns[i]``; each row is a tuple."""

    columns: tuple[str, ...]
    types: tuple[DataType, ...]
    rows: tuple[tuple[Any, ...], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Parameter:
    """A template parameter (``value`` None: not set)."""

    name: str
    datatype: DataType
    value: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Template:
    """A template definition or instance (UDT)."""

    metrics: tuple[Metric, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    version: str | None = None
    template_ref: str | None = None
    is_definition: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    """One metric of a payload.

    ``timestamp`` is Unix milliseconds as on the wire. ``value`` is a Python value of
    ``datatype`` (ints for the integer types and DateTime, float, bool, str, bytes, tuples for
    the array types, :class:`DataSet`, :class:`Template`); None means null (``is_null``). A
    metric decoded without a datatype (DATA messages usually omit it) carries the raw field
    value.
    """

    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: DataType | None = None
    value: Any = None
    is_historical: bool = False
    is_transient: bool = False
    properties: Mapping[str, PropertyValue] | None = None
    metadata: MetaData | None = None

    @property
    def is_null(self) -> bool:
        return self.value is None


@dataclass(frozen=True, slots=True, kw_only=True)
class Payload:
    """A Sparkplug B payload. ``timestamp`` is Unix milliseconds; ``seq`` 0-255."""

    timestamp: int | None = None
    metrics: tuple[Metric, ...] = ()
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None


# ---------------------------------------------------------------------------------------------
# Values: which protobuf field holds each datatype, and how it converts both ways.


def _signed_decoder(bits: int, width: int) -> Callable[[int], int]:
    """Decode a signed ``bits``-wide integer stored in a ``width``-bit unsigned field, as two's
    complement sign-extended to the field (Tahu) or zero-extended (seen in the wild)."""
    low, high, field_mod, mod = -(1 << (bits - 1)), 1 << (bits - 1), 1 << width, 1 << bits

    def decode(u: int) -> int:
        s = u - field_mod if u >= field_mod >> 1 else u
        if low <= s < high:
            return s
        if u < mod:
            return u - mod if u >= high else u
        raise SparkplugError(f"{u} does not fit a signed {bits}-bit integer")

    return decode


def _signed_encoder(bits: int, width: int) -> Callable[[Any], int]:
    low, high, mask = -(1 << (bits - 1)), 1 << (bits - 1), (1 << width) - 1

    def encode(v: Any) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v < high:
            raise SparkplugError(f"{v!r} is not a signed {bits}-bit integer")
        return v & mask

    return encode


def _unsigned_decoder(bits: int) -> Callable[[int], int]:
    mod = 1 << bits

    def decode(u: int) -> int:
        if u >= mod:
            raise SparkplugError(f"{u} does not fit an unsigned {bits}-bit integer")
        return u

    return decode


def _unsigned_encoder(bits: int) -> Callable[[Any], int]:
    mod = 1 << bits

    def encode(v: Any) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < mod:
            raise SparkplugError(f"{v!r} is not an unsigned {bits}-bit integer")
        return v

    return encode


def _check(kind: type | tuple[type, ...], what: str) -> Callable[[Any], Any]:
    def encode(v: Any) -> Any:
        if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
            raise SparkplugError(f"{v!r} is not {what}")
        return v

    return encode


def _identity(v: Any) -> Any:
    return v


def _float32(v: Any) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise SparkplugError(f"{v!r} is not a number")
    return float(v)


def _packed_array(fmt: str) -> tuple[Callable[[bytes], tuple[Any, ...]], Callable[[Any], bytes]]:
    size = struct.calcsize("<" + fmt)

    def decode(b: bytes) -> tuple[Any, ...]:
        if len(b) % size:
            raise SparkplugError(f"array of {len(b)} bytes is not a multiple of {size}")
        return tuple(x for (x,) in struct.iter_unpack("<" + fmt, b))

    def encode(v: Any) -> bytes:
        if isinstance(v, str | bytes) or not isinstance(v, Sequence):
            raise SparkplugError(f"{v!r} is not a sequence")
        if fmt not in "fd" and any(isinstance(x, bool) for x in v):
            raise SparkplugError(f"{v!r} holds booleans, not integers")
        try:
            return struct.pack(f"<{len(v)}{fmt}", *v)
        except struct.error as exc:
            raise SparkplugError(f"{v!r} does not fit {fmt!r}: {exc}") from exc

    return decode, encode


def _decode_bool_array(b: bytes) -> tuple[bool, ...]:
    # Sparkplug 3.0: a UInt32 (little-endian) count, then the values packed 8 to a byte, most
    # significant bit first.
    if len(b) < 4:
        raise SparkplugError("BooleanArray shorter than its count")
    (n,) = struct.unpack_from("<I", b)
    if len(b) != 4 + (n + 7) // 8:
        raise SparkplugError(f"BooleanArray of {n} values in {len(b) - 4} bytes")
    return tuple(bool(b[4 + i // 8] & (0x80 >> (i % 8))) for i in range(n))


def _encode_bool_array(v: Any) -> bytes:
    if isinstance(v, str | bytes) or not isinstance(v, Sequence):
        raise SparkplugError(f"{v!r} is not a sequence")
    out = bytearray(struct.pack("<I", len(v)) + bytes((len(v) + 7) // 8))
    for i, x in enumerate(v):
        if not isinstance(x, bool):
            raise SparkplugError(f"{x!r} is not a bool")
        if x:
            out[4 + i // 8] |= 0x80 >> (i % 8)
    return bytes(out)


def _decode_string_array(b: bytes) -> tuple[str, ...]:
    # Sparkplug 3.0: UTF-8 strings, each terminated by a NUL byte.
    if b and not b.endswith(b"\0"):
        raise SparkplugError("StringArray not NUL-terminated")
    try:
        return tuple(s.decode() for s in b.split(b"\0")[:-1])
    except UnicodeDecodeError as exc:
        raise SparkplugError(f"StringArray not UTF-8: {exc}") from exc


def _encode_string_array(v: Any) -> bytes:
    if isinstance(v, str | bytes) or not isinstance(v, Sequence):
        raise SparkplugError(f"{v!r} is not a sequence of strings")
    if not all(isinstance(s, str) and "\0" not in s for s in v):
        raise SparkplugError(f"{v!r} is not a sequence of strings without NUL")
    return b"".join(s.encode() + b"\0" for s in v)


@dataclass(frozen=True, slots=True)
class _Codec:
    field: str  # the oneof field of Metric that holds this datatype
    decode: Callable[[Any], Any]
    encode: Callable[[Any], Any]


def _codecs() -> dict[int, _Codec]:
    c: dict[int, _Codec] = {}
    for dt, bits in ((DataType.Int8, 8), (DataType.Int16, 16), (DataType.Int32, 32)):
        c[dt] = _Codec("int_value", _signed_decoder(bits, 32), _signed_encoder(bits, 32))
    c[DataType.Int64] = _Codec("long_value", _signed_decoder(64, 64), _signed_encoder(64, 64))
    for dt, bits in ((DataType.UInt8, 8), (DataType.UInt16, 16)):
        c[dt] = _Codec("int_value", _unsigned_decoder(bits), _unsigned_encoder(bits))
    c[DataType.UInt32] = _Codec("int_value", _identity, _unsigned_encoder(32))
    c[DataType.UInt64] = _Codec("long_value", _identity, _unsigned_encoder(64))
    c[DataType.DateTime] = _Codec("long_value", _identity, _unsigned_encoder(64))
    c[DataType.Float] = _Codec("float_value", _identity, _float32)
    c[DataType.Double] = _Codec("double_value", _identity, _float32)
    c[DataType.Boolean] = _Codec("boolean_value", _identity, _check(bool, "a bool"))
    for dt in (DataType.String, DataType.Text, DataType.UUID):
        c[dt] = _Codec("string_value", _identity, _check(str, "a str"))
    for dt in (DataType.Bytes, DataType.File):
        c[dt] = _Codec("bytes_value", bytes, _check((bytes, bytearray), "bytes"))
    for dt, fmt in (
        (DataType.Int8Array, "b"),
        (DataType.Int16Array, "h"),
        (DataType.Int32Array, "i"),
        (DataType.Int64Array, "q"),
        (DataType.UInt8Array, "B"),
        (DataType.UInt16Array, "H"),
        (DataType.UInt32Array, "I"),
        (DataType.UInt64Array, "Q"),
        (DataType.FloatArray, "f"),
        (DataType.DoubleArray, "d"),
        (DataType.DateTimeArray, "q"),
    ):
        dec, enc = _packed_array(fmt)
        c[dt] = _Codec("bytes_value", dec, enc)
    c[DataType.BooleanArray] = _Codec("bytes_value", _decode_bool_array, _encode_bool_array)
    c[DataType.StringArray] = _Codec("bytes_value", _decode_string_array, _encode_string_array)
    c[DataType.DataSet] = _Codec("dataset_value", lambda pb: _dataset_from_pb(pb), _identity)
    c[DataType.Template] = _Codec("template_value", lambda pb: _template_from_pb(pb), _identity)
    return c


_CODECS = _codecs()

# DataSet cells, template parameters and property values use a smaller set of fields.
_SCALAR_FIELD = {
    **{dt: "int_value" for dt in (1, 2, 3, 5, 6, 7)},
    **{dt: "long_value" for dt in (4, 8, 13)},
    9: "float_value",
    10: "double_value",
    11: "boolean_value",
    12: "string_value",
    14: "string_value",
    15: "string_value",
}


def _datatype(code: int) -> DataType:
    try:
        return DataType(code)
    except ValueError as exc:
        raise SparkplugError(f"unknown datatype {code}") from exc


def _scalar_to_pb(pb: Any, datatype: int, value: Any) -> None:
    fname = _SCALAR_FIELD.get(datatype)
    if fname is None:
        raise SparkplugError(f"datatype {datatype} is not allowed here")
    setattr(pb, fname, _CODECS[datatype].encode(value))


def _scalar_from_pb(pb: Any, datatype: int) -> Any:
    kind = pb.WhichOneof("value")
    if kind is None:
        return None
    if _SCALAR_FIELD.get(datatype) != kind:
        raise SparkplugError(f"{kind} holds a value of datatype {datatype}")
    return _CODECS[datatype].decode(getattr(pb, kind))


def _dataset_to_pb(pb: Any, ds: DataSet) -> None:
    if len(ds.columns) != len(ds.types):
        raise SparkplugError("DataSet: as many types as columns")
    pb.num_of_columns = len(ds.columns)
    pb.columns.extend(ds.columns)
    pb.types.extend(int(t) for t in ds.types)
    for row in ds.rows:
        if len(row) != len(ds.types):
            raise SparkplugError(f"DataSet row {row!r}: {len(ds.types)} cells expected")
        prow = pb.rows.add()
        for t, cell in zip(ds.types, row, strict=True):
            pcell = prow.elements.add()
            if cell is not None:
                _scalar_to_pb(pcell, t, cell)


def _dataset_from_pb(pb: Any) -> DataSet:
    types = tuple(_datatype(t) for t in pb.types)
    if len(pb.columns) != len(types) or (
        pb.HasField("num_of_columns") and pb.num_of_columns != len(types)
    ):
        raise SparkplugError("DataSet: columns, types and num_of_columns disagree")
    rows = []
    for prow in pb.rows:
        if len(prow.elements) != len(types):
            raise SparkplugError(f"DataSet row of {len(prow.elements)} cells, {len(types)} types")
        rows.append(
            tuple(_scalar_from_pb(cell, t) for t, cell in zip(types, prow.elements, strict=True))
        )
    return DataSet(columns=tuple(pb.columns), types=types, rows=tuple(rows))


def _template_to_pb(pb: Any, t: Template) -> None:
    if t.version is not None:
        pb.version = t.version
    if t.template_ref is not None:
        pb.template_ref = t.template_ref
    if t.is_definition is not None:
        pb.is_definition = t.is_definition
    for m in t.metrics:
        _metric_to_pb(pb.metrics.add(), m)
    for p in t.parameters:
        pp = pb.parameters.add(name=p.name, type=int(p.datatype))
        if p.value is not None:
            _scalar_to_pb(pp, p.datatype, p.value)


def _template_from_pb(pb: Any) -> Template:
    params = tuple(
        Parameter(
            name=p.name, datatype=_datatype(p.type), value=_scalar_from_pb(p, _datatype(p.type))
        )
        for p in pb.parameters
    )
    return Template(
        metrics=tuple(_metric_from_pb(m) for m in pb.metrics),
        parameters=params,
        version=pb.version if pb.HasField("version") else None,
        template_ref=pb.template_ref if pb.HasField("template_ref") else None,
        is_definition=pb.is_definition if pb.HasField("is_definition") else None,
    )


def _properties_to_pb(pb: Any, props: Mapping[str, PropertyValue]) -> None:
    for key, pv in props.items():
        pb.keys.append(key)
        ppv = pb.values.add(type=int(pv.datatype))
        if pv.value is None:
            ppv.is_null = True
        elif pv.datatype == DataType.PropertySet:
            _properties_to_pb(ppv.propertyset_value, pv.value)
        elif pv.datatype == DataType.PropertySetList:
            ppv.propertysets_value.SetInParent()
            for ps in pv.value:
                _properties_to_pb(ppv.propertysets_value.propertyset.add(), ps)
        else:
            _scalar_to_pb(ppv, pv.datatype, pv.value)


def _properties_from_pb(pb: Any) -> dict[str, PropertyValue]:
    if len(pb.keys) != len(pb.values):
        raise SparkplugError("PropertySet: as many values as keys")
    out: dict[str, PropertyValue] = {}
    for key, ppv in zip(pb.keys, pb.values, strict=True):
        dt = _datatype(ppv.type)
        kind = ppv.WhichOneof("value")
        if ppv.is_null or kind is None:
            value: Any = None
        elif dt == DataType.PropertySet and kind == "propertyset_value":
            value = _properties_from_pb(ppv.propertyset_value)
        elif dt == DataType.PropertySetList and kind == "propertysets_value":
            value = tuple(_properties_from_pb(ps) for ps in ppv.propertysets_value.propertyset)
        else:
            value = _scalar_from_pb(ppv, dt)
        out[key] = PropertyValue(datatype=dt, value=value)
    return out


_METADATA_FIELDS = tuple(MetaData.__dataclass_fields__)


def _metric_to_pb(pb: Any, m: Metric) -> None:
    if m.name is not None:
        pb.name = m.name
    if m.alias is not None:
        pb.alias = m.alias
    if m.timestamp is not None:
        pb.timestamp = m.timestamp
    if m.datatype is not None:
        pb.datatype = int(m.datatype)
    if m.is_historical:
        pb.is_historical = True
    if m.is_transient:
        pb.is_transient = True
    if m.metadata is not None:
        pb.metadata.SetInParent()
        for name in _METADATA_FIELDS:
            v = getattr(m.metadata, name)
            if v is not None:
                setattr(pb.metadata, name, v)
    if m.properties is not None:
        pb.properties.SetInParent()
        _properties_to_pb(pb.properties, m.properties)
    if m.value is None:
        pb.is_null = True
        return
    if m.datatype is None:
        raise SparkplugError(f"metric {m.name or m.alias}: a value needs a datatype")
    codec = _CODECS.get(m.datatype)
    if codec is None:
        raise SparkplugError(f"metric {m.name or m.alias}: {m.datatype.name} is not a metric type")
    if m.datatype == DataType.DataSet:
        if not isinstance(m.value, DataSet):
            raise SparkplugError(f"{m.value!r} is not a DataSet")
        pb.dataset_value.SetInParent()
        _dataset_to_pb(pb.dataset_value, m.value)
    elif m.datatype == DataType.Template:
        if not isinstance(m.value, Template):
            raise SparkplugError(f"{m.value!r} is not a Template")
        pb.template_value.SetInParent()
        _template_to_pb(pb.template_value, m.value)
    else:
        setattr(pb, codec.field, codec.encode(m.value))


_RAW = {"dataset_value": _dataset_from_pb, "template_value": _template_from_pb}


def _metric_value(pb: Any, datatype: int) -> Any:
    """The value of metric ``pb`` read as ``datatype``; SparkplugError if it holds another."""
    kind = pb.WhichOneof("value")
    codec = _CODECS.get(datatype)
    if codec is None:
        raise SparkplugError(f"datatype {datatype} is not a metric type")
    if kind != codec.field:
        raise SparkplugError(f"a {DataType(datatype).name} metric holding {kind or 'no value'}")
    return codec.decode(getattr(pb, kind))


def _metric_from_pb(pb: Any) -> Metric:
    datatype = _datatype(pb.datatype) if pb.HasField("datatype") else None
    kind = pb.WhichOneof("value")
    if pb.is_null or kind is None:
        value: Any = None
    elif datatype is not None:
        value = _metric_value(pb, datatype)
    elif kind == "extension_value":
        raise SparkplugError("metric with an extension value")
    else:
        raw = getattr(pb, kind)
        value = _RAW[kind](raw) if kind in _RAW else raw
    md = None
    if pb.HasField("metadata"):
        md = MetaData(
            **{
                n: getattr(pb.metadata, n) if pb.metadata.HasField(n) else None
                for n in _METADATA_FIELDS
            }
        )
    return Metric(
        name=pb.name if pb.HasField("name") else None,
        alias=pb.alias if pb.HasField("alias") else None,
        timestamp=pb.timestamp if pb.HasField("timestamp") else None,
        datatype=datatype,
        value=value,
        is_historical=pb.is_historical,
        is_transient=pb.is_transient,
        properties=_properties_from_pb(pb.properties) if pb.HasField("properties") else None,
        metadata=md,
    )


def encode_payload(payload: Payload) -> bytes:
    """The protobuf bytes of ``payload``. SparkplugError if a value does not fit its datatype."""
    pb = _PbPayload()
    if payload.timestamp is not None:
        pb.timestamp = payload.timestamp
    if payload.seq is not None:
        pb.seq = payload.seq
    if payload.uuid is not None:
        pb.uuid = payload.uuid
    if payload.body is not None:
        pb.body = payload.body
    try:
        for m in payload.metrics:
            _metric_to_pb(pb.metrics.add(), m)
        out: bytes = pb.SerializeToString()
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, SparkplugError):
            raise
        raise SparkplugError(f"cannot encode: {exc}") from exc
    return out


def _parse(data: bytes) -> Any:
    try:
        return _PbPayload.FromString(data)
    except (DecodeError, RecursionError, ValueError, TypeError) as exc:
        raise SparkplugError(f"not a Sparkplug B payload: {exc}") from exc


def decode_payload(data: bytes) -> Payload:
    """Decode Sparkplug B protobuf bytes. SparkplugError if they are not a valid payload (bad
    protobuf, an unknown datatype, a value that does not fit its datatype)."""
    pb = _parse(data)
    try:
        return Payload(
            timestamp=pb.timestamp if pb.HasField("timestamp") else None,
            metrics=tuple(_metric_from_pb(m) for m in pb.metrics),
            seq=pb.seq if pb.HasField("seq") else None,
            uuid=pb.uuid if pb.HasField("uuid") else None,
            body=pb.body if pb.HasField("body") else None,
        )
    except (RecursionError, UnicodeDecodeError) as exc:
        raise SparkplugError(f"not a Sparkplug B payload: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Topics and addresses.


def node_address(group: str, node: str, metric: str) -> str:
    """The address of a node metric (the same whether it came in NBIRTH or NDATA)."""
    return f"{NAMESPACE}/{group}/NDATA/{node}/{metric}"


def device_address(group: str, node: str, device: str, metric: str) -> str:
    """The address of a device metric (the same whether it came in DBIRTH or DDATA)."""
    return f"{NAMESPACE}/{group}/DDATA/{node}/{device}/{metric}"


def topic(group: str, message_type: str, node: str, device: str | None = None) -> str:
    """``spBv1.0/GROUP/TYPE/NODE[/DEVICE]``."""
    base = f"{NAMESPACE}/{group}/{message_type}/{node}"
    return base if device is None else f"{base}/{device}"


def rebirth_request(group: str, node: str, ts_ms: int) -> Message:
    """The NCMD that asks edge node ``node`` of ``group`` for fresh births."""
    payload = Payload(
        timestamp=ts_ms,
        metrics=(
            Metric(name=REBIRTH_METRIC, timestamp=ts_ms, datatype=DataType.Boolean, value=True),
        ),
    )
    return topic(group, "NCMD", node), encode_payload(payload)


def quality_of(code: int) -> Quality:
    """A metric's ``Quality`` property (OPC DA codes, as Ignition sends them): 192-255 good,
    64-191 uncertain, anything else (0, 500 stale, ...) bad."""
    if 192 <= code <= 255:
        return Quality.GOOD
    if 64 <= code < 192:
        return Quality.UNCERTAIN
    return Quality.BAD


# ---------------------------------------------------------------------------------------------
# The host: what the twin runs.


@dataclass(slots=True)
class _Info:
    address: str
    datatype: int
    device: str | None
    emit: bool  # False for the protocol's own metrics (bdSeq, Node Control/*)


@dataclass(slots=True)
class _Node:
    group: str
    node: str
    born: bool = False
    bd_seq: int | None = None
    seq: int | None = None
    aliases: dict[int, _Info] = field(default_factory=dict)
    metrics: dict[str, _Info] = field(default_factory=dict)  # node metrics by name
    devices: dict[str, dict[str, _Info]] = field(default_factory=dict)  # born devices
    device_aliases: dict[str, list[int]] = field(default_factory=dict)
    rebirth_asked_ts: float = -math.inf

    def reset(self) -> None:
        self.born = False
        self.seq = None
        self.aliases.clear()
        self.metrics.clear()
        self.devices.clear()
        self.device_aliases.clear()


_NODE_TYPES = {"NBIRTH", "NDATA", "NDEATH"}
_DEVICE_TYPES = {"DBIRTH", "DDATA", "DDEATH"}
_COMMANDS = {"NCMD", "DCMD"}


class SparkplugHost:
    """A Sparkplug B host application as a pure state machine (no sockets, no clock).

    Feed it every message received under ``spBv1.0/``; it returns telemetry and the messages
    to publish. The rules, in one place:

    - NBIRTH starts a node afresh (forgets its devices and aliases), records its ``bdSeq``
      metric and its ``seq``; DBIRTH (node born) defines a device's metrics. Birth metrics
      define names, datatypes and aliases, and each one with a value is also a sample.
      ``bdSeq`` and ``Node Control/*`` metrics are protocol, not samples.
    - NDATA/DDATA name metrics by alias or by name. An alias or name not in the births:
      ``Rejected(UNKNOWN_ALIAS)`` for that metric and a rebirth request; the message's other
      metrics still apply.
    - ``seq`` (every message of a node except NDEATH) must follow the node's previous one,
      modulo 256. A gap: ``Rejected(SEQUENCE_GAP)`` for the message, a rebirth request, and
      its values still apply (they are well-formed; only messages in between were lost). A
      message without a ``seq``, or one over 255: ``Rejected(MALFORMED)``, values applied.
    - Data, DBIRTH or DDEATH from a node (or device) that is not born: one
      ``Rejected(NO_BIRTH)`` for the message, none of its values, and a rebirth request.
    - NDEATH whose ``bdSeq`` matches the NBIRTH's (or where either lacks one): the node and its
      devices die: ``Stale`` for the prefixes ``spBv1.0/G/NDATA/N/`` and ``spBv1.0/G/DDATA/N/``.
      A mismatched ``bdSeq`` is an older session's will: ``Rejected(OUT_OF_ORDER)``, ignored.
    - DDEATH: ``Stale`` for ``spBv1.0/G/DDATA/N/D/``.
    - A null metric (``is_null``): a sample with value None and ``Quality.BAD``. A ``Quality``
      property maps through :func:`quality_of`. A value that does not fit the metric's
      datatype: ``Rejected(WRONG_TYPE)``; a metric without value: ``Rejected(MALFORMED)``.
    - Source timestamps: the metric's, else the payload's (milliseconds on the wire, seconds in
      the samples). Historical metrics are samples like the others (the reducer judges age).
    - STATE, NCMD and DCMD are ignored; bytes that are not a payload: ``Rejected(MALFORMED)``.
    - Rebirth requests go at most once per ``rebirth_holdoff_s`` per node.
    """

    def __init__(self, *, rebirth_holdoff_s: float = 5.0, source: str = SOURCE) -> None:
        self.rebirth_holdoff_s = rebirth_holdoff_s
        self.source = source
        self._nodes: dict[tuple[str, str], _Node] = {}

    def receive(
        self, topic: str, payload: bytes, received_ts: float
    ) -> tuple[list[Telemetry], list[Message]]:
        """Telemetry from one MQTT message, and the messages to publish in answer."""
        out: list[Telemetry] = []
        send: list[Message] = []
        parts = topic.split("/")
        if len(parts) < 2 or parts[0] != NAMESPACE:
            out.append(
                self._reject(Reason.MALFORMED, "not a Sparkplug B topic", topic, received_ts)
            )
            return out, send
        if parts[1] == "STATE":
            return out, send
        kind = parts[2] if len(parts) > 2 else ""
        if kind in _COMMANDS:
            return out, send
        n = len(parts)
        if not ((kind in _NODE_TYPES and n == 4) or (kind in _DEVICE_TYPES and n == 5)):
            out.append(
                self._reject(Reason.MALFORMED, "not a Sparkplug B topic", topic, received_ts)
            )
            return out, send
        if not all(parts[1:]):
            out.append(self._reject(Reason.MALFORMED, "empty topic level", topic, received_ts))
            return out, send
        try:
            pb = _parse(payload)
        except SparkplugError as exc:
            out.append(self._reject(Reason.MALFORMED, str(exc), topic, received_ts))
            return out, send
        group, node_id = parts[1], parts[3]
        key = (group, node_id)
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = _Node(group=group, node=node_id)
        device = parts[4] if n == 5 else None
        try:
            if kind == "NDATA" or kind == "DDATA":
                self._data(node, device, pb, topic, received_ts, out, send)
            elif kind == "NBIRTH":
                self._nbirth(node, pb, topic, received_ts, out, send)
            elif kind == "DBIRTH":
                self._dbirth(node, device or "", pb, topic, received_ts, out, send)
            elif kind == "DDEATH":
                self._ddeath(node, device or "", pb, topic, received_ts, out, send)
            else:
                self._ndeath(node, pb, topic, received_ts, out)
        except (UnicodeDecodeError, RecursionError) as exc:  # protobuf's lazy string checks
            out.append(self._reject(Reason.MALFORMED, str(exc), topic, received_ts))
        return out, send

    # -- helpers ---------------------------------------------------------------------------

    def _reject(self, reason: Reason, detail: str, address: str, ts: float) -> Rejected:
        return Rejected(
            reason=reason, detail=detail, received_ts=ts, address=address, source=self.source
        )

    def _rebirth(self, node: _Node, ts: float, send: list[Message]) -> None:
        if ts - node.rebirth_asked_ts >= self.rebirth_holdoff_s:
            node.rebirth_asked_ts = ts
            send.append(rebirth_request(node.group, node.node, int(ts * 1000)))

    def _seq(
        self,
        node: _Node,
        pb: Any,
        topic: str,
        ts: float,
        out: list[Telemetry],
        send: list[Message],
        *,
        birth: bool = False,
    ) -> None:
        if not pb.HasField("seq") or pb.seq > 255:
            what = f"seq {pb.seq} over 255" if pb.HasField("seq") else "no seq"
            out.append(self._reject(Reason.MALFORMED, what, topic, ts))
            node.seq = None
            return
        seq = pb.seq
        previous, node.seq = node.seq, seq
        if birth or previous is None:
            return
        expected = (previous + 1) & 0xFF
        if seq != expected:
            out.append(
                self._reject(Reason.SEQUENCE_GAP, f"seq {seq}, expected {expected}", topic, ts)
            )
            self._rebirth(node, ts, send)

    def _register(
        self,
        node: _Node,
        device: str | None,
        pb: Any,
        topic: str,
        ts: float,
        out: list[Telemetry],
    ) -> dict[str, _Info]:
        """The metrics a birth defines (by name), their aliases entered in the node's table;
        births' values are emitted as samples."""
        by_name: dict[str, _Info] = {}
        aliases = node.device_aliases.setdefault(device, []) if device is not None else None
        payload_ts = pb.timestamp / 1000.0 if pb.HasField("timestamp") else None
        for m in pb.metrics:
            name = m.name
            if not name:
                out.append(self._reject(Reason.MALFORMED, "birth metric without a name", topic, ts))
                continue
            if not m.HasField("datatype") or m.datatype not in _CODECS:
                out.append(
                    self._reject(
                        Reason.WRONG_TYPE,
                        f"birth metric {name!r} of datatype {m.datatype}",
                        topic,
                        ts,
                    )
                )
                continue
            if device is None:
                address = node_address(node.group, node.node, name)
            else:
                address = device_address(node.group, node.node, device, name)
            protocol = device is None and (name == BDSEQ_METRIC or name.startswith("Node Control/"))
            info = _Info(address=address, datatype=m.datatype, device=device, emit=not protocol)
            if m.HasField("alias"):
                if m.alias in node.aliases:
                    out.append(
                        self._reject(
                            Reason.MALFORMED,
                            f"alias {m.alias} of {name!r} already names "
                            f"{node.aliases[m.alias].address}",
                            address,
                            ts,
                        )
                    )
                    continue
                node.aliases[m.alias] = info
                if aliases is not None:
                    aliases.append(m.alias)
            by_name[name] = info
            if info.emit:
                out.append(self._sample(m, info, payload_ts, ts))
        return by_name

    def _sample(self, m: Any, info: _Info, payload_ts: float | None, ts: float) -> Telemetry:
        source_ts = m.timestamp / 1000.0 if m.HasField("timestamp") else payload_ts
        if m.HasField("datatype") and m.datatype != info.datatype:
            return self._reject(
                Reason.WRONG_TYPE,
                f"datatype {m.datatype}, born as {info.datatype}",
                info.address,
                ts,
            )
        quality = Quality.GOOD
        if m.HasField("properties"):
            props = m.properties
            for k, v in zip(props.keys, props.values, strict=False):
                if k == "Quality":
                    kind = v.WhichOneof("value")
                    if kind in ("int_value", "long_value"):
                        code = getattr(v, kind)
                        quality = quality_of(code - (1 << 32) if code >= 1 << 31 else code)
        if m.is_null:
            value = None
            quality = Quality.BAD
        else:
            try:
                value = _metric_value(m, info.datatype)
            except SparkplugError as exc:
                reason = Reason.MALFORMED if m.WhichOneof("value") is None else Reason.WRONG_TYPE
                return self._reject(reason, str(exc), info.address, ts)
        return Sample(
            address=info.address,
            value=value,
            received_ts=ts,
            source_ts=source_ts,
            quality=quality,
            source=self.source,
        )

    # -- messages ------------------------------------------------------------------------

    def _nbirth(
        self,
        node: _Node,
        pb: Any,
        topic: str,
        ts: float,
        out: list[Telemetry],
        send: list[Message],
    ) -> None:
        node.reset()
        self._seq(node, pb, topic, ts, out, send, birth=True)
        node.bd_seq = None
        for m in pb.metrics:
            if m.name == BDSEQ_METRIC and m.WhichOneof("value") in ("long_value", "int_value"):
                node.bd_seq = m.long_value if m.HasField("long_value") else m.int_value
        if node.bd_seq is None:
            out.append(self._reject(Reason.MALFORMED, "NBIRTH without bdSeq", topic, ts))
        node.born = True
        node.metrics = self._register(node, None, pb, topic, ts, out)

    def _dbirth(
        self,
        node: _Node,
        device: str,
        pb: Any,
        topic: str,
        ts: float,
        out: list[Telemetry],
        send: list[Message],
    ) -> None:
        if not node.born:
            self._no_birth(node, "DBIRTH", topic, ts, out, send)
            return
        self._seq(node, pb, topic, ts, out, send)
        self._forget_device(node, device)
        node.devices[device] = self._register(node, device, pb, topic, ts, out)

    def _forget_device(self, node: _Node, device: str) -> None:
        for alias in node.device_aliases.pop(device, ()):
            node.aliases.pop(alias, None)
        node.devices.pop(device, None)

    def _no_birth(
        self,
        node: _Node,
        what: str,
        topic: str,
        ts: float,
        out: list[Telemetry],
        send: list[Message],
    ) -> None:
        out.append(self._reject(Reason.NO_BIRTH, f"{what} before its birth", topic, ts))
        self._rebirth(node, ts, send)

    def _data(
        self,
        node: _Node,
        device: str | None,
        pb: Any,
        topic: str,
        ts: float,
        out: list[Telemetry],
        send: list[Message],
    ) -> None:
        if not node.born:
            self._no_birth(node, "NDATA" if device is None else "DDATA", topic, ts, out, send)
            return
        if device is None:
            by_name = node.metrics
        else:
            by_name_or_none = node.devices.get(device)
            if by_name_or_none is None:
                self._no_birth(node, "DDATA", topic, ts, out, send)
                return
            by_name = by_name_or_none
        self._seq(node, pb, topic, ts, out, send)
        payload_ts = pb.timestamp / 1000.0 if pb.HasField("timestamp") else None
        aliases = node.aliases
        for m in pb.metrics:
            info = None
            if m.HasField("alias"):
                info = aliases.get(m.alias)
                if info is not None and info.device != device:
                    info = None
            if info is None:
                name = m.name
                info = by_name.get(name) if name else None
                if info is None:
                    what = f"alias {m.alias}" if m.HasField("alias") else f"metric {name!r}"
                    out.append(
                        self._reject(Reason.UNKNOWN_ALIAS, f"{what} not in the birth", topic, ts)
                    )
                    self._rebirth(node, ts, send)
                    continue
            if info.emit:
                out.append(self._sample(m, info, payload_ts, ts))

    def _ddeath(
        self,
        node: _Node,
        device: str,
        pb: Any,
        topic: str,
        ts: float,
        out: list[Telemetry],
        send: list[Message],
    ) -> None:
        if node.born:
            self._seq(node, pb, topic, ts, out, send)
        self._forget_device(node, device)
        out.append(
            Stale(
                prefix=device_address(node.group, node.node, device, ""),
                received_ts=ts,
                reason="DDEATH",
                source=self.source,
            )
        )

    def _ndeath(self, node: _Node, pb: Any, topic: str, ts: float, out: list[Telemetry]) -> None:
        bd_seq = None
        for m in pb.metrics:
            if m.name == BDSEQ_METRIC and m.WhichOneof("value") in ("long_value", "int_value"):
                bd_seq = m.long_value if m.HasField("long_value") else m.int_value
        if bd_seq is None:
            out.append(self._reject(Reason.MALFORMED, "NDEATH without bdSeq", topic, ts))
        elif node.bd_seq is not None and bd_seq != node.bd_seq:
            out.append(
                self._reject(
                    Reason.OUT_OF_ORDER,
                    f"NDEATH bdSeq {bd_seq}, the NBIRTH's is {node.bd_seq}: an older session's will",
                    topic,
                    ts,
                )
            )
            return
        node.reset()
        for prefix in (
            f"{NAMESPACE}/{node.group}/NDATA/{node.node}/",
            f"{NAMESPACE}/{node.group}/DDATA/{node.node}/",
        ):
            out.append(Stale(prefix=prefix, received_ts=ts, reason="NDEATH", source=self.source))


# ---------------------------------------------------------------------------------------------
# The edge node: what the gateway simulator runs.


class SparkplugNode:
    """A Sparkplug B edge node as a pure state machine: it builds the messages, the caller
    publishes them.

    ``node_metrics`` and ``devices`` declare the metrics (name -> datatype). Every metric gets
    an alias, unique in the node; DATA messages name metrics by alias only. The node remembers
    the last value of each metric, so births (first ones and rebirths) carry current values.
    Call :meth:`connect` before each MQTT connection (it returns the NDEATH to register as
    will, with a fresh ``bdSeq``), then publish :meth:`births`.
    """

    def __init__(
        self,
        group: str,
        node: str,
        *,
        node_metrics: Mapping[str, DataType] | None = None,
        devices: Mapping[str, Mapping[str, DataType]] | None = None,
        bd_seq: int = -1,
    ) -> None:
        self.group = group
        self.node = node
        self.bd_seq = bd_seq
        self.seq = 0
        self._node_metrics = dict(node_metrics or {})
        self._devices = {d: dict(ms) for d, ms in (devices or {}).items()}
        self.aliases: dict[tuple[str | None, str], int] = {}
        alias = 1
        for name in self._node_metrics:
            self.aliases[None, name] = alias
            alias += 1
        for device, metrics in self._devices.items():
            for name in metrics:
                self.aliases[device, name] = alias
                alias += 1
        self._values: dict[tuple[str | None, str], Any] = {}

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (seq + 1) & 0xFF
        return seq

    def connect(self) -> Message:
        """Start a new MQTT session: ``bdSeq`` goes up by one; returns the NDEATH will."""
        self.bd_seq = (self.bd_seq + 1) & 0xFF
        return self.death()

    def death(self, ts_ms: int | None = None) -> Message:
        """The NDEATH of the current session (the will; or to publish before a clean leave)."""
        payload = Payload(
            timestamp=ts_ms,
            metrics=(Metric(name=BDSEQ_METRIC, datatype=DataType.UInt64, value=self.bd_seq),),
        )
        return topic(self.group, "NDEATH", self.node), encode_payload(payload)

    def births(self, ts_ms: int) -> list[Message]:
        """NBIRTH (``seq`` restarts at 0) and one DBIRTH per device, with current values."""
        self.seq = 0
        metrics = [
            Metric(name=BDSEQ_METRIC, datatype=DataType.UInt64, value=self.bd_seq),
            Metric(name=REBIRTH_METRIC, datatype=DataType.Boolean, value=False),
        ]
        metrics += self._birth_metrics(None, self._node_metrics)
        out = [self._message("NBIRTH", None, metrics, ts_ms)]
        for device, declared in self._devices.items():
            out.append(
                self._message("DBIRTH", device, self._birth_metrics(device, declared), ts_ms)
            )
        return out

    def _birth_metrics(self, device: str | None, declared: Mapping[str, DataType]) -> list[Metric]:
        return [
            Metric(
                name=name,
                alias=self.aliases[device, name],
                datatype=dt,
                value=self._values.get((device, name)),
            )
            for name, dt in declared.items()
        ]

    def _message(
        self, kind: str, device: str | None, metrics: Iterable[Metric], ts_ms: int
    ) -> Message:
        payload = Payload(timestamp=ts_ms, metrics=tuple(metrics), seq=self._next_seq())
        return topic(self.group, kind, self.node, device), encode_payload(payload)

    def data(self, device: str | None, values: Mapping[str, Any], ts_ms: int) -> Message:
        """NDATA (``device`` None) or DDATA with ``values`` by metric name, sent by alias.
        A value None is sent as null. KeyError for a metric not declared."""
        declared = self._node_metrics if device is None else self._devices[device]
        metrics = []
        for name, value in values.items():
            self._values[device, name] = value
            metrics.append(
                Metric(
                    alias=self.aliases[device, name],
                    timestamp=ts_ms,
                    datatype=declared[name],
                    value=value,
                )
            )
        return self.raw_data(device, metrics, ts_ms)

    def raw_data(self, device: str | None, metrics: Sequence[Metric], ts_ms: int) -> Message:
        """NDATA/DDATA with ``metrics`` as given (any names or aliases), with the next seq."""
        return self._message("NDATA" if device is None else "DDATA", device, metrics, ts_ms)

    def device_death(self, device: str, ts_ms: int) -> Message:
        """DDEATH for ``device``."""
        return self._message("DDEATH", device, (), ts_ms)

    def receive(self, topic_: str, payload: bytes, ts_ms: int) -> list[Message]:
        """Handle a message on this node's NCMD topic: a rebirth request returns fresh births;
        anything else returns nothing (never raises on bad input)."""
        if topic_ != topic(self.group, "NCMD", self.node):
            return []
        try:
            decoded = decode_payload(payload)
        except SparkplugError:
            return []
        if any(m.name == REBIRTH_METRIC and m.value is True for m in decoded.metrics):
            return self.births(ts_ms)
        return []
