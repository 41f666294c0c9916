"""Avro (de)serialization of topic records with fastavro.

Two wire formats, told apart by their first bytes so a reader never needs to be told which one:

* Avro single-object encoding (the default, no server needed): ``C3 01`` + the schema's 8-byte CRC-64-AVRO
  fingerprint (little endian) + the Avro body. Any process holding ``schemas/avro`` can decode it; the
  fingerprint names the exact schema version.
* Confluent Schema Registry wire format (when a registry URL is configured): ``00`` + 4-byte schema id (big
  endian) + the Avro body, with the schema registered under the subject ``<topic>-value``. This is what Kafka
  Connect, ksqlDB and the Confluent deserializers expect.

Records are plain dicts; timestamps are integers (UTC microseconds) on both sides. Logical types change only
how values are presented, never the bytes, so the decoder reads with logical types stripped.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from functools import cache
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas import SCHEMA_DIR, load_schema
from schemas.avro_writer import RecordWriter, Unsupported, compile_writer

__all__ = ["AvroCodec", "SchemaError", "codec_for", "schema_fingerprint"]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


class SchemaError(ValueError):
    """A record does not fit its schema, or bytes cannot be decoded."""


def _strip_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def schema_fingerprint(schema: dict[str, Any]) -> bytes:
    """CRC-64-AVRO fingerprint of the schema's parsing canonical form, little endian (Avro spec)."""
    canonical = to_parsing_canonical_form(fastavro.parse_schema(schema))
    return int(fingerprint(canonical, "CRC-64-AVRO"), 16).to_bytes(8, "little")


@cache
def _known_fingerprints() -> dict[bytes, Any]:
    """Reader schemas (logical types stripped) for every schema shipped in ``schemas/avro``."""
    readers: dict[bytes, Any] = {}
    for path in SCHEMA_DIR.glob("*.avsc"):
        schema = load_schema(path.stem)
        readers[schema_fingerprint(schema)] = fastavro.parse_schema(_strip_logical_types(schema))
    return readers


class AvroCodec:
    """Encoder/decoder for one topic's records.

    ``registry`` is a ``confluent_kafka.schema_registry.SchemaRegistryClient`` or None for the registry-free
    single-object format. Decoding accepts both formats regardless of how this codec encodes.
    """

    def __init__(self, topic: str, registry: Any = None) -> None:
        self.topic = topic
        self._registry = registry
        # Records carry timestamps as integer microseconds, so the plain ``long`` schema writes the same bytes as
        # the logical one, without fastavro's per-field logical-type dispatch. Records are written by a writer
        # compiled from the schema (`schemas.avro_writer`), with fastavro for anything it does not take.
        schema = _strip_logical_types(load_schema(topic))
        self._reader = fastavro.parse_schema(schema)
        self._schema = self._reader
        self._registry_readers: dict[int, Any] = {}
        if registry is None:
            self._prefix = SINGLE_OBJECT_MAGIC + schema_fingerprint(load_schema(topic))
        else:
            schema_id = self._register()
            self._prefix = CONFLUENT_MAGIC + struct.pack(">I", schema_id)
            self._registry_readers[schema_id] = self._reader
        self._write: Callable[..., Any] = fastavro.schemaless_writer
        try:
            self._compiled: RecordWriter | None = compile_writer(schema, self._prefix)
        except Unsupported:
            self._compiled = None

    def _register(self) -> int:
        from confluent_kafka.schema_registry import Schema

        schema_id: int = self._registry.register_schema(
            f"{self.topic}-value", Schema(json.dumps(load_schema(self.topic)), "AVRO")
        )
        return schema_id

    def encode(self, record: dict[str, Any]) -> bytes:
        """Serialize one record; raises SchemaError naming the topic when it does not fit the schema."""
        if self._compiled is not None:
            try:
                return self._compiled(record)
            except Exception:
                pass
        buf = io.BytesIO()
        buf.write(self._prefix)
        try:
            self._write(buf, self._schema, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SchemaError(f"record does not fit the {self.topic} schema: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Deserialize bytes in either wire format into a dict with integer timestamps."""
        if data[:2] == SINGLE_OBJECT_MAGIC:
            reader = _known_fingerprints().get(bytes(data[2:10]))
            if reader is None:
                raise SchemaError(f"unknown schema fingerprint {bytes(data[2:10]).hex()} on topic {self.topic}")
            body = data[10:]
        elif data[:1] == CONFLUENT_MAGIC and len(data) >= 5:
            (schema_id,) = struct.unpack(">I", data[1:5])
            reader = self._registry_reader(schema_id)
            body = data[5:]
        else:
            raise SchemaError(f"bytes on topic {self.topic} are neither Avro single-object nor Confluent framed")
        try:
            record: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(body), reader, None)  # type: ignore[assignment]
        except Exception as exc:  # fastavro raises a variety of errors on truncated bodies
            raise SchemaError(f"cannot decode Avro body on topic {self.topic}: {exc}") from exc
        return record

    def _registry_reader(self, schema_id: int) -> Any:
        reader = self._registry_readers.get(schema_id)
        if reader is None:
            if self._registry is None:
                raise SchemaError(
                    f"record on topic {self.topic} uses registry schema id {schema_id} but no registry is configured"
                )
            schema = json.loads(self._registry.get_schema(schema_id).schema_str)
            reader = fastavro.parse_schema(_strip_logical_types(schema))
            self._registry_readers[schema_id] = reader
        return reader


_codecs: dict[tuple[str, str | None], AvroCodec] = {}


def codec_for(topic: str, registry_url: str | None = None) -> AvroCodec:
    """A cached codec per (topic, registry URL), so each process registers a schema once."""
    key = (topic, registry_url)
    codec = _codecs.get(key)
    if codec is None:
        registry = None
        if registry_url:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            # new_client also understands confluent-kafka's in-process ``mock://`` registry (tests).
            registry = SchemaRegistryClient.new_client({"url": registry_url})
        codec = AvroCodec(topic, registry)
        _codecs[key] = codec
    return codec
