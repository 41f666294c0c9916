"""Where each Kafka record goes in the archive: its hour partition, derived from the record alone.

Placement must be a function of the record (never of the wall clock or of arrival order): after a restart the
same record must land in the same directory, which is what makes skipping already-archived records exact
(`connectors.archive`).

* ``raw``: ``exchange=<exchange>/year=YYYY/month=MM/day=DD/hour=HH`` by the envelope's ``receipt_ts``; the line
  is the Kafka value, byte for byte. A value that cannot be such a line (not a valid envelope, an exchange that
  is not a safe path component, a line break inside) goes to ``exchange=_invalid/`` under the hour of its Kafka
  timestamp, as a JSON line with the reason, the coordinates and the exact key and value in base64. It is
  archived rather than dead-lettered because the raw archive is the record of everything that arrived (a
  replay from it must reproduce the topic), and normalize_cex already dead-letters such values with its reason.
* standardized topics: ``year=YYYY/month=MM/day=DD/hour=HH`` by ``event_timestamp``; the payload is the
  decoded Avro record. Undecodable values and impossible timestamps become dead letters.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from functools import lru_cache

import orjson
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage

from connectors.archive import ArchiveItem, Rejected, partition_key
from connectors.config import Settings
from connectors.kafka import AvroDecoder, SourceRecord
from operators.dead_letter import SourceRef, dead_letter
from schemas.raw import EnvelopeError, RawEnvelope

__all__ = ["INVALID_EXCHANGE", "Message", "RawPlacement", "RecordPlacement", "hour_directory"]

INVALID_EXCHANGE = "_invalid"
HOUR_US = 3_600_000_000
_SAFE_EXCHANGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Kafka's "no timestamp" type.
_TIMESTAMP_NOT_AVAILABLE = 0

#: What Bytewax's KafkaSource emits.
Message = KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None]
Placed = tuple[str, ArchiveItem | Rejected]


@lru_cache(maxsize=8192)
def _hour_path(hour: int) -> str:
    at = datetime.fromtimestamp(hour * 3600, UTC)
    return f"year={at.year:04d}/month={at.month:02d}/day={at.day:02d}/hour={at.hour:02d}"


def hour_directory(timestamp_us: int) -> str:
    """``year=YYYY/month=MM/day=DD/hour=HH`` of a UTC microsecond timestamp; ValueError when out of range."""
    try:
        return _hour_path(timestamp_us // HOUR_US)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"timestamp {timestamp_us} has no calendar hour: {exc}") from None


def _kafka_error(flow: str, msg: KafkaError[bytes | None, bytes | None]) -> Placed:
    src = msg.msg
    topic, partition = src.topic or "", src.partition if src.partition is not None else -1
    ref = SourceRef(topic, src.partition, src.offset, src.key, src.value)
    dead = dead_letter(flow, "kafka_in", f"Kafka consume error: {msg.err}", "kafka_error", ref, src.value or b"")
    return partition_key(topic, partition), Rejected(topic, partition, None, dead)


class RawPlacement:
    """A raw-topic message as ``(partition key, ArchiveItem)`` of a JSON line (Kafka errors: `Rejected`)."""

    def __init__(self, flow: str) -> None:
        self._flow = flow

    def __call__(self, msg: Message) -> Placed:
        if isinstance(msg, KafkaError):
            return _kafka_error(self._flow, msg)
        topic, partition, offset = msg.topic or "", msg.partition or 0, msg.offset or 0
        value = msg.value or b""
        try:
            directory = self._directory(value)
            line = value
        except (EnvelopeError, ValueError) as exc:
            directory, line = self._invalid(msg, value, str(exc))
        return partition_key(topic, partition), ArchiveItem(topic, partition, offset, directory, line, len(value))

    @staticmethod
    def _directory(value: bytes) -> str:
        env = RawEnvelope.from_json(value)
        if not _SAFE_EXCHANGE.match(env.exchange):
            raise ValueError(f"exchange {env.exchange!r} is not a safe path component")
        if b"\n" in value:
            raise ValueError("the value contains a line break, so it cannot be one JSON line")
        return f"exchange={env.exchange}/{hour_directory(env.receipt_ts)}"

    @staticmethod
    def _invalid(msg: KafkaSourceMessage[bytes | None, bytes | None], value: bytes, reason: str) -> tuple[str, bytes]:
        kind, timestamp_ms = msg.timestamp or (_TIMESTAMP_NOT_AVAILABLE, 0)
        if kind == _TIMESTAMP_NOT_AVAILABLE or timestamp_ms < 0:
            timestamp_ms = 0
        line = orjson.dumps(
            {
                "reason": reason,
                "topic": msg.topic,
                "partition": msg.partition,
                "offset": msg.offset,
                "timestamp_ms": timestamp_ms,
                "key_base64": base64.b64encode(msg.key).decode() if msg.key is not None else None,
                "value_base64": base64.b64encode(value).decode(),
            }
        )
        return f"exchange={INVALID_EXCHANGE}/{hour_directory(timestamp_ms * 1000)}", line


class RecordPlacement:
    """A standardized-topic message as ``(partition key, ArchiveItem)`` of its decoded record, or `Rejected`."""

    def __init__(self, settings: Settings, flow: str) -> None:
        self._flow = flow
        self._decode = AvroDecoder(settings, flow)

    def __call__(self, msg: Message) -> Placed:
        if isinstance(msg, KafkaError):
            return _kafka_error(self._flow, msg)
        topic, partition, offset = msg.topic or "", msg.partition or 0, msg.offset or 0
        key = partition_key(topic, partition)
        decoded = self._decode(msg)
        if not isinstance(decoded, SourceRecord):
            return key, Rejected(topic, partition, offset, decoded)
        value = msg.value or b""
        try:
            directory = hour_directory(decoded.value["event_timestamp"])
        except ValueError as exc:
            ref = SourceRef(topic, partition, offset, msg.key, value)
            dead = dead_letter(self._flow, "place_record", str(exc), "out_of_range", ref, value)
            return key, Rejected(topic, partition, offset, dead)
        return key, ArchiveItem(topic, partition, offset, directory, decoded.value, len(value))
