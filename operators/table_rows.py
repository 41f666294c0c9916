"""Standardized records -> rows of their Postgres table (`schemas.sql`), in the table's column order.

Row values are the record's own values (microseconds for timestamps, decimal strings for 256-bit integers, lists
for arrays, bytes for BYTEA), then the content hash (16 bytes) and the Kafka coordinates. The COPY path encodes
them in the binary format (`connectors.postgres_copy`); `RowEncoder.parameters` renders timestamps, floats and the
content hash as exact text for the VALUES path, so both paths store identical rows. A record that cannot become a
row (a timestamp outside years 1..9999) is returned with the reason instead, for the dead-letter topic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from connectors.kafka import SourceRecord
from schemas import load_schema
from schemas.sql import CONTENT_HASH, KAFKA_OFFSET, KAFKA_PARTITION, TABLE_KEYS

__all__ = ["Row", "RowEncoder", "content_hash"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Timestamps a row may hold: years 1..9999, what a Python datetime (the VALUES path's text) can spell.
_FIRST_MICROS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_LAST_MICROS = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_FLOAT_SPECIALS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


class Row(NamedTuple):
    """One table row and the Kafka record it came from (for dead letters and gap-free bookkeeping)."""

    source: SourceRecord
    values: tuple[Any, ...]


_BLAKE2B_128 = hashlib.blake2b(digest_size=16)


def content_hash(record: dict[str, Any]) -> bytes:
    """BLAKE2b-128 of the record's non-null fields as JSON (orjson, fields in record order): the 16 bytes of
    its Postgres UUID.

    Null fields are left out so that a schema adding an optional field does not change the identity of records
    written before it.
    """
    present = {name: value for name, value in record.items() if value is not None}
    digest = _BLAKE2B_128.copy()  # cheaper than a new object with its parameters
    digest.update(orjson.dumps(present, default=_bytes_as_hex))
    return digest.digest()


def _bytes_as_hex(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot hash {type(value).__name__}")


class TimestampText:
    """UTC microseconds -> ``YYYY-MM-DD HH:MM:SS.ffffff+00:00``, exactly, for the VALUES path.

    The text of each second is cached, because a batch's records share few seconds. Raises OverflowError outside
    years 1..9999.
    """

    _CACHE_LIMIT = 4096

    def __init__(self) -> None:
        self._seconds: dict[int, str] = {}

    def __call__(self, micros: int) -> str:
        seconds, fraction = divmod(micros, 1_000_000)
        prefix = self._seconds.get(seconds)
        if prefix is None:
            if len(self._seconds) >= self._CACHE_LIMIT:
                self._seconds.clear()
            prefix = (_EPOCH + timedelta(seconds=seconds)).isoformat(sep=" ")[:19]
            self._seconds[seconds] = prefix
        return f"{prefix}.{fraction:06d}+00:00"


# -- exact float text for the VALUES path (see `RowEncoder.parameters`) --------------------------------------
def _float(value: float) -> str:
    text = repr(value)
    return _FLOAT_SPECIALS[text] if text[-1] in "nf" else text  # nan, inf, -inf


def _float_array(value: list[float]) -> str:
    text = str(value)[1:-1]  # the items' repr, joined by ", " in C (Postgres allows the spaces)
    if "n" in text:  # nan or inf among the items
        text = text.replace("nan", "NaN").replace("inf", "Infinity")
    return "{" + text + "}"


def _uuid_text(value: bytes) -> str:
    return value.hex()


def _text_renderer(column_type: sa.types.TypeEngine[Any]) -> Callable[[Any], str] | None:
    if isinstance(column_type, pg.UUID):
        return _uuid_text
    if isinstance(column_type, pg.ARRAY):
        return _float_array if isinstance(column_type.item_type, (pg.DOUBLE_PRECISION, pg.REAL)) else None
    return _float if isinstance(column_type, (pg.DOUBLE_PRECISION, pg.REAL)) else None


#: ``Row(source, values)`` without the Python-level ``__new__`` a NamedTuple has.
_new_row = tuple.__new__


class RowEncoder:
    """Turns `SourceRecord` values of one topic into rows of its table, and rows into VALUES parameters."""

    def __init__(self, table: sa.Table, schema_name: str) -> None:
        key = TABLE_KEYS[schema_name]
        self.key = key
        self.table = table
        self.columns: tuple[str, ...] = tuple(column.name for column in table.columns)
        self._fields = tuple(field["name"] for field in load_schema(schema_name)["fields"])
        # One C call for the record's values in field order (a schema has more than one field, so a tuple).
        self._values_of = itemgetter(*self._fields)
        self._timestamp_positions = tuple(
            i for i, name in enumerate(self._fields) if isinstance(table.c[name].type, sa.DateTime)
        )
        self._by_content = key.by_content
        self._key_positions = tuple(self.columns.index(name) for name in key.columns)
        self._latest_positions = tuple(self.columns.index(name) for name in key.latest_by)
        # The VALUES path gets timestamps and floats as text (see `parameters`).
        as_text: dict[int, Callable[[Any], str]] = {i: TimestampText() for i in self._timestamp_positions}
        for i, column in enumerate(table.columns):
            render = _text_renderer(column.type)
            if render is not None:
                as_text[i] = render
        self._as_text = tuple(as_text.items())
        extra = {CONTENT_HASH, KAFKA_PARTITION, KAFKA_OFFSET}
        missing = [name for name in self.columns if name not in extra and name not in self._fields]
        if missing:
            raise ValueError(f"table {table.name} has columns {missing} that the {schema_name} schema lacks")

    @property
    def upsert(self) -> bool:
        """Whether a row with a stored key replaces the stored row (latest state wins)."""
        return bool(self._latest_positions)

    def rows(self, records: Iterable[SourceRecord]) -> tuple[list[Row], list[tuple[SourceRecord, str]]]:
        """Rows of ``records``, and the records without a row with the reason (a value Postgres cannot hold).

        The loader's hot loop, one pass with the lookups hoisted out of it.
        """
        rows: list[Row] = []
        failed: list[tuple[SourceRecord, str]] = []
        values_of, stamps, by_content = self._values_of, self._timestamp_positions, self._by_content
        for record in records:
            value = record.value
            try:
                values: tuple[Any, ...] = values_of(value)
            except KeyError:  # a field the record lacks is a NULL, for the database to judge
                values = tuple(map(value.get, self._fields))
            for i in stamps:
                micros = values[i]
                if micros is not None and not _FIRST_MICROS <= micros <= _LAST_MICROS:
                    reason = f"{self._fields[i]} = {micros} µs is outside the representable time range"
                    failed.append((record, reason))
                    break
            else:
                if by_content:
                    values = (*values, content_hash(value), record.partition, record.offset)
                else:
                    values = (*values, record.partition, record.offset)
                rows.append(_new_row(Row, (record, values)))
        return rows, failed

    def key_of(self, row: Row) -> tuple[Any, ...]:
        """The row's primary-key values."""
        return tuple(row.values[i] for i in self._key_positions)

    def latest_per_key(self, rows: Sequence[Row]) -> list[Row]:
        """For upsert tables, the most recent row of each key (one statement cannot update a row twice).

        Recency is the table's ``latest_by`` columns, then the Kafka order; the first occurrence's position is
        kept so the output follows the input order.
        """
        if not self.upsert:
            return list(rows)
        best: dict[tuple[Any, ...], Row] = {}
        for row in rows:
            key = self.key_of(row)
            held = best.get(key)
            if held is None or self._recency(row) >= self._recency(held):
                best[key] = row
        return list(best.values())

    def _recency(self, row: Row) -> tuple[Any, ...]:
        return (*(row.values[i] for i in self._latest_positions), row.source.partition, row.source.offset)

    def parameters(self, rows: Iterable[Row]) -> list[tuple[Any, ...]]:
        """The rows as psycopg2 parameters for ``INSERT ... VALUES``.

        Timestamps and floats go as text: psycopg2 writes -0.0 as the numeric expression "-0.0", which is 0, and
        float arrays as numeric[] constructors, while text is parsed by float8in exactly.
        """
        as_text = self._as_text
        out: list[tuple[Any, ...]] = []
        for row in rows:
            values = list(row.values)
            for i, render in as_text:
                if values[i] is not None:
                    values[i] = render(values[i])
            out.append(tuple(values))
        return out
