"""Parquet archive throughput per process, next to pyarrow writing the same rows directly.

    python -m benchmarks.parquet_sink [--repeats N] [--quick]

Input: the standardized records of the hftbacktest Binance spot BTCUSDT stream (ticker, trades, lob: about 41,000
rows), as Avro values the way they sit on their topics. Figures, each against a baseline run in the same process
on the same rows into the same kind of local directory:

* sink: the archive writer (`connectors.archive`: per-partition files by event hour, rotation checks, zstd
  Parquet with row groups, atomic publication, checkpoints) fed decoded rows, against
  ``pa.Table.from_pylist`` + ``pq.write_table`` (zstd) of each topic's rows;
* whole step: Avro decode + placement + sink, against the same Avro decoding + the same pyarrow write.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from bytewax.connectors.kafka import KafkaSourceMessage

from benchmarks.common import Figure, Result, best_rate, print_figures
from benchmarks.inputs import base_envelopes
from connectors.archive import ArchiveItem, PerWorker, Rejected, RotationLimits, archive_logic_builder
from connectors.archive_formats import FileFormat, ParquetFormat
from connectors.archive_placement import RecordPlacement
from connectors.archive_store import ArchiveStore
from connectors.config import Settings
from operators.normalize import normalize_envelopes
from operators.venues.base import NormalizerSettings
from schemas.arrow import arrow_schema
from schemas.serde import codec_for

__all__ = ["measure"]

TOPICS = ("ticker", "trades", "lob")
ROW_GROUP_ROWS = 100_000
#: Envelopes of the recording used with ``--quick``.
QUICK_ENVELOPES = 5000


def _messages(limit: int | None = None) -> list[KafkaSourceMessage[bytes | None, bytes | None]]:
    """The records as Kafka messages of one partition per topic, offsets in order."""
    offsets = dict.fromkeys(TOPICS, 0)
    out: list[KafkaSourceMessage[bytes | None, bytes | None]] = []
    for key, (topic, record) in normalize_envelopes(base_envelopes()[:limit], NormalizerSettings()):
        if topic in offsets:
            value = codec_for(topic).encode(record)
            out.append(KafkaSourceMessage(key.encode(), value, topic=topic, partition=0, offset=offsets[topic]))
            offsets[topic] += 1
    return out


def _sink(items: list[ArchiveItem], root: Path) -> int:
    shutil.rmtree(root, ignore_errors=True)

    def formats(topic: str) -> FileFormat:
        return ParquetFormat(arrow_schema(topic), ROW_GROUP_ROWS, 1 << 40)

    limits = RotationLimits(1_000_000, 1 << 40, 3600)
    workers = PerWorker(32, None)
    by_topic: dict[str, list[ArchiveItem | Rejected]] = {}
    for item in items:
        by_topic.setdefault(item.topic, []).append(item)
    store = ArchiveStore.open(str(root))
    for topic_items in by_topic.values():
        logic = archive_logic_builder(store, formats, limits, workers)(None)
        for start in range(0, len(topic_items), 1000):  # Bytewax hands the step batches of the source's size
            logic.on_batch(topic_items[start : start + 1000])
        logic.on_eof()
    return len(items)


def _pyarrow(rows: dict[str, list[dict[str, Any]]], root: Path) -> int:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for topic, topic_rows in rows.items():
        table = pa.Table.from_pylist(topic_rows, schema=arrow_schema(topic))
        pq.write_table(table, root / f"{topic}.parquet", compression="zstd", row_group_size=ROW_GROUP_ROWS)
    return sum(len(r) for r in rows.values())


def _decode_and_sink(messages: list[KafkaSourceMessage[bytes | None, bytes | None]], root: Path) -> int:
    place = RecordPlacement(Settings(), "benchmark")
    items = [place(msg)[1] for msg in messages]
    return _sink([item for item in items if isinstance(item, ArchiveItem)], root)


def _decode_and_pyarrow(messages: list[KafkaSourceMessage[bytes | None, bytes | None]], root: Path) -> int:
    rows: dict[str, list[dict[str, Any]]] = {topic: [] for topic in TOPICS}
    codecs = {topic: codec_for(topic) for topic in TOPICS}
    for msg in messages:
        assert msg.topic is not None and msg.value is not None
        rows[msg.topic].append(codecs[msg.topic].decode(msg.value))
    return _pyarrow(rows, root)


def measure(repeats: int = 3, quick: bool = False) -> list[Result]:
    messages = _messages(QUICK_ENVELOPES if quick else None)
    place = RecordPlacement(Settings(), "benchmark")
    items = [item for item in (place(msg)[1] for msg in messages) if isinstance(item, ArchiveItem)]
    rows: dict[str, list[dict[str, Any]]] = {topic: [] for topic in TOPICS}
    for item in items:
        rows[item.topic].append(item.payload)
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        direct = best_rate(lambda: _pyarrow(rows, base / "pyarrow"), repeats)
        sink = best_rate(lambda: _sink(items, base / "sink"), repeats)
        decode_direct = best_rate(lambda: _decode_and_pyarrow(messages, base / "pyarrow"), repeats)
        decode_sink = best_rate(lambda: _decode_and_sink(messages, base / "sink"), repeats)
    return [
        Figure(
            f"parquet sink rows/s ({len(items):,} ticker/trades/lob rows, zstd)",
            sink,
            "rows/s",
            direct,
            "pa.Table.from_pylist + pq.write_table of the same rows",
            "ratio >= 0.7",
            f"best of {repeats}",
        ),
        Figure(
            "decode + place + parquet sink rows/s",
            decode_sink,
            "rows/s",
            decode_direct,
            "the same Avro decoding + pyarrow write",
            "ratio >= 0.5",
            f"best of {repeats}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help=f"the records of the first {QUICK_ENVELOPES:,} frames")
    args = parser.parse_args()
    print_figures(measure(args.repeats, args.quick))


if __name__ == "__main__":
    main()
