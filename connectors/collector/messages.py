"""What the collector produces to Kafka: raw envelopes keyed by instrument, and dead letters keyed by venue."""

from __future__ import annotations

from bytewax.connectors.kafka import KafkaSinkMessage

from connectors.metrics import RECORDS_OUT, count_outputs
from operators.records import Output
from schemas.raw import RawEnvelope

__all__ = ["COLLECTOR_FLOW", "count_envelopes", "keyed_dead_letter", "raw_envelope", "raw_message"]

#: The collector's flow name (in dead letters, logs and metrics).
COLLECTOR_FLOW = "collect_cex"
_RAW_OUT = RECORDS_OUT.labels(COLLECTOR_FLOW, "raw")


def count_envelopes(batch: list[RawEnvelope | Output]) -> None:
    """Count a batch's raw envelopes in ``marketpipe_records_out_total`` (once per batch, off the per-record path)."""
    envelopes = sum(1 for item in batch if isinstance(item, RawEnvelope))
    if envelopes:
        _RAW_OUT.inc(envelopes)


def raw_envelope(item: RawEnvelope | Output) -> RawEnvelope | None:
    """The item if it is a raw envelope."""
    return item if isinstance(item, RawEnvelope) else None


def keyed_dead_letter(item: RawEnvelope | Output) -> tuple[str, Output] | None:
    """The item, keyed by its venue, if it is a dead letter (counted by error type)."""
    if isinstance(item, RawEnvelope):
        return None
    count_outputs(COLLECTOR_FLOW, [item])
    return item[1]["exchange"] or "", item


def raw_message(env: RawEnvelope) -> KafkaSinkMessage[bytes, bytes]:
    """The message ``flows/replay.py`` produces for the same envelope (Kafka timestamp: receipt time, ms)."""
    return KafkaSinkMessage(key=env.key.encode(), value=env.to_json(), timestamp=env.receipt_ts // 1000)
