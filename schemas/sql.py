"""Postgres tables from the Avro schemas: one table per topic, columns and keys derived, never hand-written.

Type mapping (Avro -> PostgreSQL):

=================================  ==================================================================
Avro                               PostgreSQL
=================================  ==================================================================
long / int                         BIGINT / INTEGER
double / float                     DOUBLE PRECISION / REAL
boolean                            BOOLEAN
string                             TEXT
bytes, fixed                       BYTEA
enum                               TEXT with a CHECK constraint listing the symbols (evolves with one
                                   ALTER, unlike a Postgres ENUM type; works inside transactions)
array of X                         X[] (DOUBLE PRECISION[], TEXT[], ...)
long timestamp-micros              TIMESTAMPTZ (microsecond resolution, UTC)
string uint256 / int256            NUMERIC(78,0) with a CHECK of the exact 256-bit range
["null", X]                        X, NULL allowed (every other field is NOT NULL)
=================================  ==================================================================

Every table also gets ``kafka_partition`` and ``kafka_offset``: where its row came from (per instrument, the
Kafka order, which is the replay order of ``lob``). Keys, per topic (see `TABLE_KEYS`):

* a natural key where the data has one (trades: venue trade id; candles: the candle; chain records: the block
  hash with the log index or transaction hash), with "latest state wins" upserts where a record is a state that
  is re-sent (candles update until closed; chain records are re-sent with ``removed = true`` after a reorg);
* ``content_hash`` (a 128-bit BLAKE2b of the record) for records that are facts without an id (book changes,
  tickers, funding, open interest, liquidations): normalization is deterministic, so a record the upstream
  at-least-once producer wrote twice is byte-identical and lands once;
* the Kafka coordinates for ``dead_letter``: each rejection is its own event.

Two records with equal content are one fact for book changes and tickers (applying the same change or state
twice changes nothing). For liquidations without an order id it means that two liquidations equal in every
field, both microsecond timestamps included, are stored once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from schemas import CEX_TOPICS, load_schema

__all__ = [
    "CONTENT_HASH",
    "KAFKA_OFFSET",
    "KAFKA_PARTITION",
    "TABLE_KEYS",
    "SchemaMappingError",
    "TableKey",
    "avro_column",
    "build_table",
]

KAFKA_PARTITION = "kafka_partition"
KAFKA_OFFSET = "kafka_offset"
CONTENT_HASH = "content_hash"

UINT256_MAX = 2**256 - 1
INT256_MIN, INT256_MAX = -(2**255), 2**255 - 1

_PRIMITIVES: dict[str, type[sa.types.TypeEngine[Any]]] = {
    "long": sa.BigInteger,
    "int": sa.Integer,
    "double": pg.DOUBLE_PRECISION,
    "float": pg.REAL,
    "boolean": sa.Boolean,
    "string": sa.Text,
    "bytes": pg.BYTEA,
}


class SchemaMappingError(ValueError):
    """An Avro type this mapping has no Postgres column for."""


@dataclass(frozen=True, slots=True)
class TableKey:
    """How a topic's rows are identified, and which index serves its usual queries.

    ``columns``: the primary key. ``latest_by``: when set, a row with the same key replaces the stored one if it
    is at least as recent by these columns (an upsert of the latest state); when empty, a row with a known key
    is ignored. ``index``: the secondary index (instrument, time).
    """

    columns: tuple[str, ...]
    index: tuple[str, ...]
    latest_by: tuple[str, ...] = ()

    @property
    def by_content(self) -> bool:
        return self.columns == (CONTENT_HASH,)


_INSTRUMENT_TIME = ("exchange", "symbol", "event_timestamp")
_BY_CONTENT = TableKey((CONTENT_HASH,), _INSTRUMENT_TIME)
_CHAIN_LATEST = ("receipt_timestamp",)

#: Key policy per topic (schema name). A topic missing here cannot be loaded.
TABLE_KEYS: dict[str, TableKey] = {
    **{topic: _BY_CONTENT for topic in CEX_TOPICS},
    "trades": TableKey(("exchange", "symbol", "trade_id"), _INSTRUMENT_TIME),
    "candles": TableKey(
        ("exchange", "symbol", "interval", "start_timestamp"),
        _INSTRUMENT_TIME,
        ("event_timestamp", "receipt_timestamp"),
    ),
    "dead_letter": TableKey((KAFKA_PARTITION, KAFKA_OFFSET), _INSTRUMENT_TIME),
    "ethereum_blocks": TableKey(("chain", "block_hash"), ("chain", "block_number"), _CHAIN_LATEST),
    "ethereum_transactions": TableKey(("chain", "block_hash", "hash"), ("chain", "block_number"), _CHAIN_LATEST),
    "ethereum_logs": TableKey(
        ("chain", "block_hash", "log_index"), ("chain", "address", "event_timestamp"), _CHAIN_LATEST
    ),
    "token_transfers": TableKey(
        ("chain", "block_hash", "log_index"), ("chain", "token_address", "event_timestamp"), _CHAIN_LATEST
    ),
    "dex_swaps": TableKey(
        ("chain", "block_hash", "log_index"), ("chain", "pool_address", "event_timestamp"), _CHAIN_LATEST
    ),
    "dex_liquidity": TableKey(
        ("chain", "block_hash", "log_index"), ("chain", "pool_address", "event_timestamp"), _CHAIN_LATEST
    ),
}


def _sql_type(avro_type: Any, where: str) -> sa.types.TypeEngine[Any]:
    """The column type of a non-union Avro type."""
    if isinstance(avro_type, str) and avro_type in _PRIMITIVES:
        return _PRIMITIVES[avro_type]()
    if not isinstance(avro_type, dict):
        raise SchemaMappingError(f"{where}: Avro type {avro_type!r} has no Postgres mapping")
    kind = avro_type.get("type")
    logical = avro_type.get("logicalType")
    if kind == "long" and logical == "timestamp-micros":
        return pg.TIMESTAMP(timezone=True)
    if kind == "string" and logical in ("uint256", "int256"):
        return pg.NUMERIC(78, 0)  # 2**256 has 78 decimal digits
    if kind == "enum":
        return sa.Text()
    if kind == "fixed":
        return pg.BYTEA()
    if kind == "array":
        item_type = _sql_type(avro_type["items"], f"{where}[]")
        if isinstance(item_type, pg.ARRAY):
            raise SchemaMappingError(f"{where}: nested arrays have no Postgres mapping")
        return pg.ARRAY(item_type)
    if isinstance(kind, str) and kind in _PRIMITIVES:
        return _PRIMITIVES[kind]()
    raise SchemaMappingError(f"{where}: Avro type {avro_type!r} has no Postgres mapping")


def _unwrap_nullable(avro_type: Any, where: str) -> tuple[Any, bool]:
    if isinstance(avro_type, list):
        others = [t for t in avro_type if t != "null"]
        if len(others) != 1 or len(avro_type) != 2:
            raise SchemaMappingError(f"{where}: only [null, X] unions have a Postgres mapping, not {avro_type}")
        return others[0], True
    return avro_type, False


def _checks(column: sa.Column[Any], avro_type: Any) -> list[sa.CheckConstraint]:
    """CHECK constraints for enums (the symbols) and 256-bit integers (the exact range)."""
    if not isinstance(avro_type, dict):
        return []
    name = column.name
    if avro_type.get("type") == "enum":
        return [_check(column.in_(avro_type["symbols"]), name, "enum")]
    logical = avro_type.get("logicalType")
    if logical == "uint256":
        return [_check(column.between(0, UINT256_MAX), name, "uint256")]
    if logical == "int256":
        return [_check(column.between(INT256_MIN, INT256_MAX), name, "int256")]
    return []


def _check(condition: sa.ColumnElement[bool], column: str, kind: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(condition, name=f"{column}_{kind}", info={"column": column})


def avro_column(field: dict[str, Any], where: str = "") -> tuple[sa.Column[Any], list[sa.CheckConstraint]]:
    """The column for one Avro record field, and the CHECK constraints its type carries."""
    label = f"{where}.{field['name']}" if where else field["name"]
    inner, nullable = _unwrap_nullable(field["type"], label)
    column: sa.Column[Any] = sa.Column(
        field["name"], _sql_type(inner, label), nullable=nullable, comment=field.get("doc")
    )
    return column, _checks(column, inner)


def build_table(schema_name: str, metadata: sa.MetaData, table_name: str | None = None) -> sa.Table:
    """The table of topic ``schema_name`` (named ``table_name``, default the topic) in ``metadata``.

    Raises KeyError for a topic without a schema or key policy, SchemaMappingError for an unmappable field.
    """
    schema = load_schema(schema_name)
    if schema_name not in TABLE_KEYS:
        raise KeyError(f"no table key policy for topic {schema_name!r}")
    key = TABLE_KEYS[schema_name]
    name = table_name or schema_name
    columns: list[sa.Column[Any]] = []
    checks: list[sa.CheckConstraint] = []
    for field in schema["fields"]:
        column, column_checks = avro_column(field, schema_name)
        columns.append(column)
        checks.extend(column_checks)
    reserved = {CONTENT_HASH, KAFKA_PARTITION, KAFKA_OFFSET} & {c.name for c in columns}
    if reserved:
        raise SchemaMappingError(f"{schema_name}: fields {sorted(reserved)} collide with the loader's columns")
    if key.by_content:
        columns.append(
            sa.Column(CONTENT_HASH, pg.UUID(as_uuid=False), nullable=False, comment="BLAKE2b-128 of the record.")
        )
    columns.append(sa.Column(KAFKA_PARTITION, sa.Integer(), nullable=False, comment="Kafka partition of the record."))
    columns.append(sa.Column(KAFKA_OFFSET, sa.BigInteger(), nullable=False, comment="Kafka offset of the record."))
    return sa.Table(
        name,
        metadata,
        *columns,
        *checks,
        sa.PrimaryKeyConstraint(*key.columns, name=f"{name}_pkey"),
        sa.Index(f"{name}_lookup_idx", *key.index),
        comment=schema.get("doc"),
    )
