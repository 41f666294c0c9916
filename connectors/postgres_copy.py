"""Table rows -> PostgreSQL's binary COPY format, the payload of the loader's COPY path.

Why binary: in COPY's text format both sides spell out every float (``repr`` here, ``float8in`` on the server),
and the level arrays of order-book rows hold dozens of them. In the binary format a float travels as its eight
IEEE bytes, so it is stored bit for bit (NaN, infinities and -0.0 included) and neither side converts it.
``benchmarks/postgres_loader.py`` prints the difference (one COPY of the same rows in each format).

The format (PostgreSQL manual, COPY, "Binary Format"): a signature, flags and an extension length; per row a
16-bit field count, then per field a 32-bit length (-1 for NULL) and the value in its type's ``send`` form;
a -1 field count at the end. Integers go big-endian, timestamps as microseconds since 2000-01-01 UTC, NUMERIC as
base-10000 digits, arrays with their element type's OID.

An encoder is compiled per table, like `schemas.avro_writer`: one expression per row, adjacent NOT NULL
fixed-width columns packed by one ``struct`` call, repeating strings encoded once. A value the compiled path
cannot take sends the batch through a column-by-column path that either produces the same bytes and leaves the
server to judge (a NULL in a NOT NULL column), or raises `CopyValueError` naming the column, which the writer
treats as a row the database refuses.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from schemas.string_cache import string_encoder

__all__ = ["BinaryCopyEncoder", "CopyValueError"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
NULL = struct.pack(">i", -1)
#: 2000-01-01T00:00:00Z in Unix microseconds: the zero of PostgreSQL's binary timestamps.
PG_EPOCH_MICROS = 946_684_800_000_000

_LENGTH = struct.Struct(">i")
_ARRAY_HEADER = struct.Struct(">iiiiii")  # byte length, dimensions, has-nulls flag, element OID, size, lower bound
_EMPTY_ARRAY = struct.Struct(">iiii")  # byte length, no dimensions, no nulls, element OID
_NUMERIC_HEADER = struct.Struct(">ihhhh")  # byte length, digit count, weight, sign, display scale
_NUMERIC_NEGATIVE = 0x4000
_UUID_LENGTH = _LENGTH.pack(16)
_FLOAT8_OID = 701
#: Arrays of doubles up to this length take the ``struct`` path (faster for them, measured); longer ones the slices.
_SHORT_ARRAY = 256
_FLOAT8_ELEMENT = _LENGTH.pack(8) + bytes(8)


class CopyValueError(ValueError):
    """A value that has no binary COPY form in its column (the message names the column)."""


@dataclass(frozen=True, slots=True)
class _Fixed:
    """A fixed-width column: its ``struct`` code, byte size, and the expression of the value to pack."""

    code: str
    size: int
    value: str = "{x}"


@dataclass(frozen=True, slots=True)
class _Variable:
    """A column whose bytes (length prefix included) come from an expression over the value ``{x}``."""

    expression: str


_Kind = _Fixed | _Variable

#: The OID of each element type an array column may have.
_ELEMENT_OIDS = {
    "text": 25,
    "float8": _FLOAT8_OID,
    "float4": 700,
    "int8": 20,
    "int4": 23,
    "bool": 16,
    "bytea": 17,
    "timestamptz": 1184,
    "numeric": 1700,
    "uuid": 2950,
}


def _bytea(value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return _LENGTH.pack(len(value)) + bytes(value)


def _uuid(value: bytes) -> bytes:
    """A UUID from its 16 bytes (the rows' content hash)."""
    if not isinstance(value, bytes) or len(value) != 16:
        raise ValueError(f"{value!r} is not the 16 bytes of a UUID")
    return _UUID_LENGTH + value


def _numeric(value: str | int) -> bytes:
    """A decimal integer (the text of a uint256/int256) as NUMERIC: sign, then base-10000 digits."""
    number = int(value)
    sign = _NUMERIC_NEGATIVE if number < 0 else 0
    text = str(abs(number)) if number else ""
    text = text.zfill(-(-len(text) // 4) * 4)
    digits = [int(text[i : i + 4]) for i in range(0, len(text), 4)]
    count = len(digits)
    header = _NUMERIC_HEADER.pack(8 + 2 * count, count, max(count - 1, 0), sign, 0)
    return header + struct.pack(f">{count}H", *digits)


def _float8_array() -> Callable[[Sequence[float]], bytes]:
    """Arrays of doubles: short ones in one ``struct`` call (a format per length, cached) whose arguments, each
    element's length then its value, are laid out by one list slice assignment; long ones (book snapshots) as one
    big-endian ``array`` whose 8-byte items are spliced between the length prefixes by slice assignment."""
    formats: dict[int, struct.Struct] = {}
    empty = _EMPTY_ARRAY.pack(12, 0, 0, _FLOAT8_OID)

    def encode(values: Sequence[float]) -> bytes:
        count = len(values)
        if not count:
            return empty
        if count > _SHORT_ARRAY:
            return _long_float8_array(values)
        form = formats.get(count)
        if form is None:
            form = formats[count] = struct.Struct(f">iiiiii{'id' * count}")
        fields = [8, 0.0] * count
        fields[1::2] = values
        return form.pack(form.size - 4, 1, 0, _FLOAT8_OID, count, 1, *fields)

    return encode


def _long_float8_array(values: Sequence[float]) -> bytes:
    items = array("d", values)
    if sys.byteorder == "little":
        items.byteswap()
    data = items.tobytes()
    count = len(items)
    out = bytearray(_FLOAT8_ELEMENT * count)
    for byte in range(8):
        out[4 + byte :: 12] = data[byte::8]
    return _ARRAY_HEADER.pack(20 + len(out), 1, 0, _FLOAT8_OID, count, 1) + out


def _array(oid: int, element: Callable[[Any], bytes]) -> Callable[[Sequence[Any]], bytes]:
    """Arrays of any other element type: each element with its own length prefix."""
    empty = _EMPTY_ARRAY.pack(12, 0, 0, oid)

    def encode(values: Sequence[Any]) -> bytes:
        if not values:
            return empty
        body = b"".join(map(element, values))
        return _ARRAY_HEADER.pack(20 + len(body), 1, 0, oid, len(values), 1) + body

    return encode


def _scalar(column_type: sa.types.TypeEngine[Any]) -> tuple[str, _Kind]:
    """The type's name in `_ELEMENT_OIDS` terms and how its values are written. Order matters: a Float is a
    Numeric and a BigInteger an Integer to SQLAlchemy."""
    if isinstance(column_type, pg.DOUBLE_PRECISION):
        return "float8", _Fixed("d", 8)
    if isinstance(column_type, pg.REAL):
        return "float4", _Fixed("f", 4)
    if isinstance(column_type, sa.BigInteger):
        return "int8", _Fixed("q", 8)
    if isinstance(column_type, sa.Integer):
        return "int4", _Fixed("i", 4)
    if isinstance(column_type, sa.Boolean):
        return "bool", _Fixed("?", 1)
    if isinstance(column_type, sa.DateTime):
        return "timestamptz", _Fixed("q", 8, "{x} - PG_EPOCH")
    if isinstance(column_type, pg.UUID):
        return "uuid", _Variable("uuid({x})")
    if isinstance(column_type, sa.Numeric):
        return "numeric", _Variable("numeric({x})")
    if isinstance(column_type, pg.BYTEA):
        return "bytea", _Variable("bytea({x})")
    if isinstance(column_type, sa.String):
        return "text", _Variable("(cached{i}({x}) or string{i}({x}))")
    raise TypeError(f"no binary COPY encoding for {column_type!r}")


class BinaryCopyEncoder:
    """Encodes rows (tuples in the table's column order) as one binary COPY payload."""

    def __init__(self, table: sa.Table) -> None:
        self.columns = tuple(column.name for column in table.columns)
        self._scope: dict[str, Any] = {
            "NULL": NULL,
            "PG_EPOCH": PG_EPOCH_MICROS,
            "HEADER": HEADER,
            "TRAILER": TRAILER,
            "COUNT": struct.pack(">h", len(self.columns)),
            "uuid": _uuid,
            "numeric": _numeric,
            "bytea": _bytea,
        }
        kinds = [self._kind(i, column.type) for i, column in enumerate(table.columns)]
        self._per_column = tuple(self._column_function(i, kind) for i, kind in enumerate(kinds))
        self._encode_batch = self._compile(kinds, [column.nullable is not False for column in table.columns])

    def encode(self, rows: Iterable[Sequence[Any]]) -> bytes:
        """The payload of ``COPY ... FROM STDIN WITH (FORMAT binary)`` for ``rows``' value tuples."""
        rows = rows if isinstance(rows, list) else list(rows)
        try:
            return self._encode_batch(rows)
        except Exception:
            return self._encode_by_column(rows)

    def _kind(self, index: int, column_type: sa.types.TypeEngine[Any]) -> _Kind:
        item_type = column_type.item_type if isinstance(column_type, pg.ARRAY) else None
        name, kind = _scalar(item_type if item_type is not None else column_type)
        if name == "text":
            self._scope[f"cached{index}"], self._scope[f"string{index}"] = string_encoder(_LENGTH.pack)
        if item_type is None:
            return kind
        if name == "float8":
            self._scope[f"array{index}"] = _float8_array()
        elif name in _ELEMENT_OIDS:
            self._scope[f"array{index}"] = _array(_ELEMENT_OIDS[name], self._column_function(index, kind))
        else:
            raise TypeError(f"no binary COPY encoding for arrays of {item_type!r}")
        return _Variable(f"array{index}({{x}})")

    def _expression(self, index: int, kind: _Kind, value: str) -> str:
        """The bytes of column ``index``'s value (the variable ``value``), length prefix included."""
        if isinstance(kind, _Fixed):
            self._scope[f"one{index}"] = struct.Struct(f">i{kind.code}").pack
            return f"one{index}({kind.size}, {kind.value.format(x=value)})"
        return kind.expression.format(x=value, i=index)

    def _column_function(self, index: int, kind: _Kind) -> Callable[[Any], bytes]:
        """One column's value -> its bytes (the column-by-column path, and array elements)."""
        function: Callable[[Any], bytes] = eval(f"lambda x: {self._expression(index, kind, 'x')}", self._scope)
        return function

    def _compile(self, kinds: list[_Kind], nullable: list[bool]) -> Callable[[list[Any]], bytes]:
        parts: list[str] = []
        group: list[tuple[int, _Fixed]] = []  # consecutive NOT NULL fixed-width columns, packed together

        def close_group() -> None:
            if group:
                name = f"group{group[0][0]}"
                self._scope[name] = struct.Struct(">" + "".join(f"i{kind.code}" for _, kind in group))
                values = ", ".join(f"{kind.size}, {kind.value.format(x=f'v{i}')}" for i, kind in group)
                parts.append(f"{name}.pack({values})")
                group.clear()

        for i, (kind, may_be_null) in enumerate(zip(kinds, nullable, strict=True)):
            if isinstance(kind, _Fixed) and not may_be_null:
                group.append((i, kind))
                continue
            close_group()
            expression = self._expression(i, kind, f"v{i}")
            parts.append(f"(NULL if v{i} is None else {expression})" if may_be_null else expression)
        close_group()
        names = ", ".join(f"v{i}" for i in range(len(kinds)))
        source = (
            "def encode(rows):\n"
            "    out = [HEADER]\n"
            "    for row in rows:\n"
            f"        {names}, = row\n"
            f"        out += (COUNT, {', '.join(parts)})\n"
            "    out.append(TRAILER)\n"
            "    return b''.join(out)\n"
        )
        exec(source, self._scope)
        compiled: Callable[[list[Any]], bytes] = self._scope["encode"]
        return compiled

    def _encode_by_column(self, rows: list[Sequence[Any]]) -> bytes:
        out = [HEADER]
        count = self._scope["COUNT"]
        for values in rows:
            out.append(count)
            for name, encode, value in zip(self.columns, self._per_column, values, strict=True):
                if value is None:
                    out.append(NULL)
                    continue
                try:
                    out.append(encode(value))
                except Exception as exc:
                    shown = repr(value)
                    shown = shown if len(shown) <= 80 else shown[:77] + "..."
                    raise CopyValueError(f"column {name} = {shown}: {exc}") from exc
        out.append(TRAILER)
        return b"".join(out)
