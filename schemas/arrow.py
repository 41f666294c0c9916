"""Arrow (and so Parquet) schemas derived from the Avro schemas, the single source of truth for columns.

=================================  ========================================================================
Avro                               Arrow
=================================  ========================================================================
``long`` + ``timestamp-micros``    ``timestamp("us", tz="UTC")`` (Parquet TIMESTAMP, adjusted to UTC)
``long`` + ``timestamp-millis``    ``timestamp("ms", tz="UTC")``
``int`` / ``long``                 ``int32`` / ``int64``
``float`` / ``double``             ``float32`` / ``float64``
``boolean``                        ``bool``
``bytes`` / ``fixed``              ``binary`` / ``fixed_size_binary``
``string``, ``enum``               ``string`` (Parquet dictionary-encodes repeated strings on its own)
``string`` + ``uint256``/int256    ``string``: the exact decimal text
``array`` / ``map`` / ``record``   ``list`` / ``map<string, _>`` / ``struct``
``["null", X]``                    X, nullable
=================================  ========================================================================

Why uint256/int256 stay strings rather than ``decimal256``: 2**256 - 1 has 78 decimal digits, and Arrow's
decimal256 (like Parquet's 32-byte DECIMAL) holds at most 76, so the largest token amounts and ids would not
fit. The text is exact; SQL engines cast it where they need numbers (``CAST(value AS NUMERIC)`` in Postgres,
``CAST(value AS DOUBLE)`` in DuckDB for approximate sums). The Avro logical type is kept as field metadata
(``avro.logicalType``) and each field's Avro ``doc`` as ``description``, so readers can tell.

Fields are non-nullable unless the Avro type is a union with ``null``; a union of several non-null types has
no faithful Arrow column and raises `ArrowSchemaError`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pyarrow as pa

from schemas import load_schema

__all__ = ["ArrowSchemaError", "arrow_schema", "avro_to_arrow"]

_PRIMITIVES: dict[str, pa.DataType] = {
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
_TIMESTAMPS: dict[str, pa.DataType] = {
    "timestamp-micros": pa.timestamp("us", tz="UTC"),
    "timestamp-millis": pa.timestamp("ms", tz="UTC"),
}
#: Integer logical types carried as exact decimal text (see the module docstring).
BIG_INTEGERS = frozenset({"uint256", "int256"})


class ArrowSchemaError(ValueError):
    """An Avro type with no faithful Arrow equivalent."""


class _Converter:
    """Walks one Avro schema; remembers named types (records, enums, fixed) so later references resolve."""

    def __init__(self) -> None:
        self.named: dict[str, pa.DataType] = {}

    def _remember(self, node: dict[str, Any], arrow_type: pa.DataType) -> pa.DataType:
        name = node.get("name")
        if name:
            namespace = node.get("namespace")
            self.named[name] = arrow_type
            if namespace and "." not in name:
                self.named[f"{namespace}.{name}"] = arrow_type
        return arrow_type

    def field(self, name: str, avro_type: Any, doc: str | None = None) -> pa.Field:
        nullable = False
        if isinstance(avro_type, list):
            branches = [branch for branch in avro_type if branch != "null"]
            if len(branches) != 1:
                raise ArrowSchemaError(f"field {name!r}: union {avro_type} has no single Arrow type")
            nullable = len(branches) < len(avro_type)
            avro_type = branches[0]
        metadata: dict[str, str] = {}
        if isinstance(avro_type, dict) and "logicalType" in avro_type:
            metadata["avro.logicalType"] = str(avro_type["logicalType"])
        if doc:
            metadata["description"] = doc
        return pa.field(name, self.type(avro_type, name), nullable=nullable, metadata=metadata or None)

    def type(self, avro_type: Any, where: str) -> pa.DataType:
        if isinstance(avro_type, str):
            if avro_type in _PRIMITIVES:
                return _PRIMITIVES[avro_type]
            if avro_type in self.named:
                return self.named[avro_type]
            raise ArrowSchemaError(f"{where}: unknown Avro type {avro_type!r}")
        if isinstance(avro_type, list):
            return self.field(where, avro_type).type
        kind = avro_type.get("type")
        logical = avro_type.get("logicalType")
        if logical in _TIMESTAMPS and kind == "long":
            return _TIMESTAMPS[logical]
        if logical == "decimal" and kind in ("bytes", "fixed"):
            precision, scale = int(avro_type["precision"]), int(avro_type.get("scale", 0))
            decimal = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
            return self._remember(avro_type, decimal) if kind == "fixed" else decimal
        if kind == "record":
            fields = [self.field(f["name"], f["type"], f.get("doc")) for f in avro_type["fields"]]
            return self._remember(avro_type, pa.struct(fields))
        if kind == "enum":
            return self._remember(avro_type, pa.string())
        if kind == "fixed":
            return self._remember(avro_type, pa.binary(int(avro_type["size"])))
        if kind == "array":
            item = self.field("element", avro_type["items"])
            return pa.list_(item)
        if kind == "map":
            value = self.field("value", avro_type["values"])
            return pa.map_(pa.string(), value)
        if isinstance(kind, str | list | dict):
            # {"type": "string", "logicalType": "uint256"} and other annotated primitives.
            return self.type(kind, where)
        raise ArrowSchemaError(f"{where}: unsupported Avro type {avro_type!r}")


def avro_to_arrow(avro_schema: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of an Avro record schema: one column per field, in order."""
    if avro_schema.get("type") != "record":
        raise ArrowSchemaError(f"top-level Avro schema must be a record, not {avro_schema.get('type')!r}")
    converter = _Converter()
    fields = [converter.field(f["name"], f["type"], f.get("doc")) for f in avro_schema["fields"]]
    metadata = {"avro.name": f"{avro_schema.get('namespace', '')}.{avro_schema['name']}".lstrip(".")}
    if avro_schema.get("doc"):
        metadata["description"] = avro_schema["doc"]
    return pa.schema(fields, metadata=metadata)


@cache
def arrow_schema(schema_name: str) -> pa.Schema:
    """The Arrow schema of the topic schema ``schemas/avro/<schema_name>.avsc``."""
    return avro_to_arrow(load_schema(schema_name))
