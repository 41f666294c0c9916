"""Raw archive throughput per process, next to plain compression of the same bytes.

    python -m benchmarks.raw_archive [--repeats N] [--quick]

Input: every raw-topic value of the shipped captures (10 cryptofeed recordings and the hftbacktest stream, about
61,000 envelopes, 38 MB, Coinbase's 6 MB book snapshots included) as Kafka messages of one partition. The
archive figure is the flow's whole step without Kafka: envelope validation, placement by exchange and receipt
hour, JSON Lines compression, atomic publication into a local directory and checkpoints. The baseline is the
same process compressing the same bytes, newline-joined, in one call at the same level (zstd 3, gzip 6).

zstd compresses these bytes at about 300 MB/s, faster than the archive can even validate them: checking that
every value is an envelope (msgspec, to decide between its exchange's directory and ``_invalid``) runs at about
190 MB/s on its own, which bounds the zstd ratio; with gzip, compression dominates and the ratio is higher.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import zlib
from functools import partial
from pathlib import Path
from typing import Literal

import zstandard
from bytewax.connectors.kafka import KafkaSourceMessage

from benchmarks.common import DATA, Figure, Result, best_rate, print_figures
from connectors.archive import ArchiveItem, PerWorker, Rejected, RotationLimits, archive_logic_builder
from connectors.archive_formats import FileFormat, JsonLinesFormat
from connectors.archive_placement import Message, RawPlacement
from connectors.archive_store import ArchiveStore
from connectors.capture import capture_envelopes

__all__ = ["measure"]

CAPTURES = [
    *sorted((DATA / "cex" / "cryptofeed").glob("*.jsonl.zst")),
    DATA / "cex" / "hftbacktest" / "binance-spot-btcusdt-20240808.gz",
]
MB = 1_000_000
#: Captures used with ``--quick`` (the small ones).
QUICK_CAPTURES = ("BINANCE", "OKX")


def _messages(quick: bool = False) -> list[Message]:
    out: list[Message] = []
    for path in CAPTURES:
        if quick and path.name.split(".")[0] not in QUICK_CAPTURES:
            continue
        venue = "binance" if path.suffix == ".gz" else None
        for env in capture_envelopes(path, venue):
            out.append(KafkaSourceMessage(env.key.encode(), env.to_json(), topic="raw", partition=0, offset=len(out)))
    return out


def _archive(messages: list[Message], compression: Literal["zstd", "gzip"], root: Path) -> int:
    """Bytes of Kafka values archived."""
    shutil.rmtree(root, ignore_errors=True)
    file_format = JsonLinesFormat(compression)

    def formats(topic: str) -> FileFormat:
        return file_format

    store = ArchiveStore.open(str(root))
    logic = archive_logic_builder(store, formats, RotationLimits(1_000_000, 256 * MB, 900), PerWorker(32, None))(None)
    place = RawPlacement("benchmark")
    size = 0
    for start in range(0, len(messages), 1000):  # Bytewax hands the step batches of the source's size
        batch: list[ArchiveItem | Rejected] = [place(msg)[1] for msg in messages[start : start + 1000]]
        size += sum(item.size for item in batch if isinstance(item, ArchiveItem))
        logic.on_batch(batch)
    logic.on_eof()
    return size


def _compress(values: list[bytes], compression: Literal["zstd", "gzip"]) -> int:
    data = b"\n".join(values) + b"\n"
    if compression == "zstd":
        zstandard.ZstdCompressor(level=3).compress(data)
    else:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        compressor.compress(data)
        compressor.flush()
    return sum(len(v) for v in values)


def measure(repeats: int = 3, quick: bool = False) -> list[Result]:
    messages = _messages(quick)
    values = [msg.value for msg in messages if isinstance(msg, KafkaSourceMessage) and msg.value is not None]
    total = sum(len(v) for v in values) / MB
    figures: list[Result] = []
    with tempfile.TemporaryDirectory() as scratch:
        compressions: tuple[Literal["zstd", "gzip"], ...] = ("zstd", "gzip")
        for compression in compressions:
            plain = best_rate(partial(_compress, values, compression), repeats) / MB
            archive = best_rate(partial(_archive, messages, compression, Path(scratch) / compression), repeats) / MB
            figures.append(
                Figure(
                    f"raw archive MB/s ({compression}, {len(values):,} envelopes, {total:.1f} MB)",
                    archive,
                    "MB/s",
                    plain,
                    f"{compression} compression of the same bytes in one call",
                    "ratio >= 0.25" if compression == "zstd" else "ratio >= 0.5",
                    f"best of {repeats}",
                )
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help=f"only the {' and '.join(QUICK_CAPTURES)} captures")
    args = parser.parse_args()
    print_figures(measure(args.repeats, args.quick), digits=1)


if __name__ == "__main__":
    main()
