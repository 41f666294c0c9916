"""The project's own Prometheus metrics, next to Bytewax's.

Flows run with ``BYTEWAX_DATAFLOW_API_ENABLED=1`` serve ``/metrics`` on port 3030: Bytewax's metrics (consumer
lag per partition included) and everything registered in prometheus-client's default registry, which is where
these live. Counters are incremented once per batch, not per record, to stay off the hot path.
"""

from __future__ import annotations

from collections import Counter as Tally
from operator import itemgetter

from prometheus_client import Counter, Gauge

__all__ = [
    "BOOKS_OUT_OF_SYNC",
    "BOOK_RESYNCS",
    "DEAD_LETTERS",
    "RECORDS_IN",
    "RECORDS_OUT",
    "count_outputs",
]

RECORDS_IN = Counter("marketpipe_records_in_total", "Records a flow consumed.", ["flow"])
RECORDS_OUT = Counter("marketpipe_records_out_total", "Records a flow produced, per topic.", ["flow", "topic"])
DEAD_LETTERS = Counter("marketpipe_dead_letters_total", "Inputs sent to dead_letter.", ["flow", "error_type"])
BOOK_RESYNCS = Counter(
    "marketpipe_book_resyncs_total", "Order books invalidated (gap, checksum, reconnect).", ["exchange"]
)
BOOKS_OUT_OF_SYNC = Gauge(
    "marketpipe_books_out_of_sync", "Books resynced in this process and not yet rebuilt from a snapshot.", ["exchange"]
)


def count_outputs(flow: str, outputs: list[tuple[str, dict[str, object]]]) -> None:
    """Count a batch of ``(topic, record)`` outputs: per topic, dead letters per error type."""
    if not outputs:
        return
    per_topic = Tally(map(itemgetter(0), outputs))
    for topic, count in per_topic.items():
        RECORDS_OUT.labels(flow, topic).inc(count)
    if per_topic.get("dead_letter"):
        for error_type, count in Tally(
            str(rec["error_type"]) for topic, rec in outputs if topic == "dead_letter"
        ).items():
            DEAD_LETTERS.labels(flow, error_type).inc(count)
