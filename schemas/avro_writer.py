"""Record writers compiled from the project's Avro schemas: the encode fast path of `schemas.serde.AvroCodec`.

fastavro's ``schemaless_writer`` resolves every union branch by validating the value against each candidate type,
on every field of every record; on the flat records of market data that dominates the encode cost (about 8 us per
ticker record, more than normalizing the frame it came from). A writer compiled here is one Python function per
schema: fields in order, ``[null, T]`` unions decided by ``is None``, doubles and double arrays packed by
``struct``/``array``, constant strings (exchange, symbol) encoded once.

It covers the types the schemas in ``schemas/avro`` use (records of string, bytes, int, long, double, boolean,
enum, arrays of those, and ``[null, T]`` unions); `compile_writer` raises `Unsupported` for anything else so the
caller keeps fastavro. A record the compiled writer cannot take raises an ordinary Python exception, and the
codec then hands it to fastavro, which encodes it the same way or explains why it does not fit: the fast path
changes speed, never bytes or errors.
"""

from __future__ import annotations

import operator
import struct
from array import array
from collections.abc import Callable
from typing import Any

from schemas.string_cache import string_encoder

__all__ = ["RecordWriter", "Unsupported", "compile_writer", "zigzag"]

#: ``record -> bytes``: the prefix given to `compile_writer`, then the Avro binary body.
RecordWriter = Callable[[dict[str, Any]], bytes]

_LONG_LIMIT = 1 << 64
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_ONE_BYTE = [bytes((z,)) for z in range(0x80)]
#: Two varint groups, both marked "more follows", for every 14-bit value.
_TWO_GROUPS = [bytes(((c & 0x7F) | 0x80, ((c >> 7) & 0x7F) | 0x80)) for c in range(1 << 14)]
_FOUR_GROUPS = 1 << 28
_HIGH_GROUPS: dict[int, bytes] = {}
_HIGH_GROUPS_LIMIT = 65536


class Unsupported(ValueError):
    """The schema uses a type this module does not compile; encode it with fastavro."""


def _varint(z: int) -> bytes:
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def zigzag(value: int) -> bytes:
    """Avro ``long``: zig-zag, then base-128 varint, least significant group first.

    Values of 2**27 and more (timestamps, ids) take their low four groups from a table and their high groups
    from a cache: microsecond timestamps share their high groups for minutes.
    """
    z = (value << 1) ^ (value >> 63)
    if 0 <= z < 0x80:
        return _ONE_BYTE[z]
    if z < _FOUR_GROUPS:
        if z < 0:
            raise OverflowError(f"{value} does not fit an Avro long")
        return _varint(z)
    if z >= _LONG_LIMIT:
        raise OverflowError(f"{value} does not fit an Avro long")
    return _TWO_GROUPS[z & 0x3FFF] + _TWO_GROUPS[(z >> 14) & 0x3FFF] + (_HIGH_GROUPS.get(z >> 28) or _high_groups(z))


def _high_groups(z: int) -> bytes:
    """The varint groups of ``z`` above its low 28 bits, cached (they change every few minutes of timestamps)."""
    high = _varint(z >> 28)
    if len(_HIGH_GROUPS) < _HIGH_GROUPS_LIMIT:
        _HIGH_GROUPS[z >> 28] = high
    return high


def _int(value: int) -> bytes:
    if not _INT_MIN <= value <= _INT_MAX:
        raise OverflowError(f"{value} does not fit an Avro int")
    return zigzag(value)


def _bytes(value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return zigzag(len(value)) + bytes(value)


def _doubles(values: list[float]) -> bytes:
    """A whole ``{"type": "array", "items": "double"}`` value: one block, then the end marker."""
    if not values:
        return b"\x00"
    return zigzag(len(values)) + array("d", values).tobytes() + b"\x00"


def _value_writer(schema: Any) -> Callable[[Any], bytes]:
    """A function writing one value of ``schema`` (not a union)."""
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "enum":
            symbols = {symbol: zigzag(index) for index, symbol in enumerate(schema["symbols"])}
            return symbols.__getitem__
        if kind == "array":
            if schema["items"] in ("double", {"type": "double"}):
                return _doubles
            item = _value_writer(schema["items"])
            return lambda values: (zigzag(len(values)) + b"".join(map(item, values)) if values else b"") + b"\x00"
        if kind in ("record", "fixed", "map"):
            raise Unsupported(f"nested {kind}")
        return _value_writer(kind)  # a primitive with a logical type: same bytes as the primitive
    if schema == "string":
        cached, encode = string_encoder(zigzag)
        return lambda value: cached(value) or encode(value)
    if schema == "long":
        return zigzag
    if schema == "int":
        return _int
    if schema == "double":
        return struct.Struct("<d").pack
    if schema == "boolean":
        return {True: b"\x01", False: b"\x00"}.__getitem__
    if schema == "bytes":
        return _bytes
    raise Unsupported(f"type {schema!r}")


def _field_expression(kind: Any, index: int, scope: dict[str, Any]) -> str:
    """The Python expression writing field ``index`` (its value is ``v<index>``); its helpers go into ``scope``."""
    value = f"v{index}"
    if isinstance(kind, list):
        if len(kind) != 2 or kind[0] != "null":
            raise Unsupported(f"union {kind!r}")
        if kind[1] == "double":
            return f"(NULL if {value} is None else tagged_double(2, {value}))"
        return f"(NULL if {value} is None else b'\\x02' + {_field_expression(kind[1], index, scope)})"
    if kind == "long" or (isinstance(kind, dict) and kind.get("type") == "long"):
        # Timestamps and ids: zigzag's table path inline (no Python call); other values call zigzag.
        z = f"z{index}"
        return (
            f"(two_groups[{z} & 0x3FFF] + two_groups[({z} >> 14) & 0x3FFF] + (high_groups({z} >> 28) or high({z}))"
            f" if {_FOUR_GROUPS} <= ({z} := ({value} << 1) ^ ({value} >> 63)) < {_LONG_LIMIT} else zigzag({value}))"
        )
    if kind == "string":  # a cache hit costs no Python call; encoded strings are never empty
        scope[f"c{index}"], scope[f"s{index}"] = string_encoder(zigzag)
        return f"(c{index}({value}) or s{index}({value}))"
    scope[f"w{index}"] = _value_writer(kind)
    return f"w{index}({value})"


def compile_writer(schema: dict[str, Any], prefix: bytes = b"") -> RecordWriter:
    """A writer of ``prefix`` + the body of a ``schema`` record; raises `Unsupported` when fastavro must do it.

    The writer is one expression: every field fetched by one ``itemgetter`` call (a missing field raises
    KeyError), each field's bytes computed inline, and one ``join``.
    """
    if schema.get("type") != "record":
        raise Unsupported("only record schemas are compiled")
    fields = schema["fields"]
    if not fields:
        raise Unsupported("a record without fields")
    scope: dict[str, Any] = {
        "prefix": prefix,
        "NULL": b"\x00",
        "tagged_double": struct.Struct("<Bd").pack,
        "zigzag": zigzag,
        "two_groups": _TWO_GROUPS,
        "high_groups": _HIGH_GROUPS.get,
        "high": _high_groups,
        "fetch": operator.itemgetter(*(field["name"] for field in fields)),
    }
    parts = ", ".join(_field_expression(field["type"], i, scope) for i, field in enumerate(fields))
    values = ", ".join(f"v{i}" for i in range(len(fields)))
    fetch = "fetch(record)," if len(fields) == 1 else "fetch(record)"  # one name: itemgetter returns the value
    source = f"def write(record):\n    {values}, = {fetch}\n    return b''.join((prefix, {parts}))\n"
    exec(source, scope)
    compiled: RecordWriter = scope["write"]
    return compiled
