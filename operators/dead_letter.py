"""Dead letters: input a flow could not process, kept with the reason so nothing disappears without a trace."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from operators.records import Output

__all__ = ["SourceRef", "dead_letter", "dead_letter_headers"]


class SourceRef(msgspec.Struct, frozen=True, gc=False):
    """Where an input came from: a Kafka record, or a capture file line in offline mode.

    A msgspec struct: one is made per consumed record and crosses between workers with it, and a struct is
    built and pickled in C (about a tenth of a frozen dataclass's cost).
    """

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None
    value: bytes | None = None


def dead_letter(
    flow: str,
    step: str,
    reason: str,
    error_type: str,
    source: SourceRef,
    payload: bytes,
    event_ts: int | None = None,
    exchange: str | None = None,
    symbol: str | None = None,
) -> Output:
    """A ``dead_letter`` record. ``payload`` is the original bytes, unchanged."""
    now = time.time_ns() // 1000
    record: dict[str, Any] = {
        "flow": flow,
        "step": step,
        "reason": reason,
        "error_type": error_type,
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "exchange": exchange,
        "symbol": symbol,
        "key": source.key,
        "payload": payload,
        "event_timestamp": event_ts if event_ts is not None else now,
        "receipt_timestamp": now,
    }
    return ("dead_letter", record)


def dead_letter_headers(record: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The same facts as Kafka headers, for tools that never decode the Avro value."""
    headers = [
        ("dlq.flow", record["flow"].encode()),
        ("dlq.step", record["step"].encode()),
        ("dlq.reason", record["reason"].encode()),
        ("dlq.error_type", record["error_type"].encode()),
    ]
    if record["source_topic"] is not None:
        headers.append(("dlq.source_topic", record["source_topic"].encode()))
    if record["source_partition"] is not None:
        headers.append(("dlq.source_partition", str(record["source_partition"]).encode()))
    if record["source_offset"] is not None:
        headers.append(("dlq.source_offset", str(record["source_offset"]).encode()))
    return headers
