"""Normalize throughput per process, next to the parse-only limit of the same frames.

    python -m benchmarks.normalize [--repeats N] [--quick]

Input: the raw-topic values (envelope JSON bytes) of the hftbacktest Binance spot BTCUSDT stream, 41,249 frames
(trades, best bid/offer, depth diffs bridged to a REST snapshot). The normalize figure is the flow's own step
(envelope parse, per-instrument state, books, record building) without Kafka or Bytewax; the baseline is the
same process only decoding each venue frame with the fastest JSON decoder available (orjson or msgspec, both
measured, the faster one kept).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import msgspec
import orjson

from benchmarks.common import Figure, Result, best_rate, print_figures
from benchmarks.inputs import base_envelopes
from operators.dead_letter import SourceRef
from operators.normalize import Item, NormalizeLogic, key_raw_record
from operators.venues.base import NormalizerSettings
from schemas.raw import RawEnvelope

__all__ = ["QUICK_FRAMES", "RawRecord", "drive_batch", "fastest_decode", "measure", "normalize_all", "raw_records"]

#: A raw-topic record: (Kafka key, value).
RawRecord = tuple[bytes, bytes]

#: Frames of the recording used with ``--quick`` (the first ones: the REST snapshot is the 8th).
QUICK_FRAMES = 5000
DECODERS: dict[str, Callable[[str], Any]] = {"orjson": orjson.loads, "msgspec": msgspec.json.decode}


def drive_batch(logics: dict[str, NormalizeLogic], batch: Sequence[RawRecord], settings: NormalizerSettings) -> int:
    """One batch of raw Kafka records through the flow's keyed step as Bytewax drives it: keyed by their Kafka
    key, grouped per key, one logic per key (kept in ``logics``). Returns the number of outputs."""
    by_key: dict[str, list[Item]] = {}
    for key, value in batch:
        instrument, item = key_raw_record(SourceRef("raw", 0, None, key, value))
        by_key.setdefault(instrument, []).append(item)
    outputs = 0
    for instrument, items in by_key.items():
        logic = logics.get(instrument)
        if logic is None:
            logic = logics[instrument] = NormalizeLogic(None, settings)
        outputs += len(logic.on_batch(items)[0])
    return outputs


def normalize_all(records: Sequence[RawRecord], batch_size: int = 1000) -> int:
    """Every record through fresh per-instrument logics, in Bytewax-sized batches; returns the records."""
    logics: dict[str, NormalizeLogic] = {}
    settings = NormalizerSettings()
    for start in range(0, len(records), batch_size):
        drive_batch(logics, records[start : start + batch_size], settings)
    return len(records)


def raw_records(envelopes: Iterable[RawEnvelope]) -> list[RawRecord]:
    """The envelopes as the raw topic holds them: (Kafka key, JSON value)."""
    return [(env.key.encode(), env.to_json()) for env in envelopes]


def _parse_only(frames: Sequence[str], loads: Callable[[str], Any]) -> int:
    for frame in frames:
        loads(frame)
    return len(frames)


def fastest_decode(frames: Sequence[str], repeats: int) -> tuple[float, str]:
    """Frames/s of the fastest JSON decoder on ``frames``, and its name."""
    rates = {name: best_rate(partial(_parse_only, frames, loads), repeats) for name, loads in DECODERS.items()}
    name = max(rates, key=lambda n: rates[n])
    return rates[name], name


def measure(repeats: int = 5, quick: bool = False) -> list[Result]:
    envelopes = base_envelopes()[: QUICK_FRAMES if quick else None]
    values = raw_records(envelopes)
    frames = [env.frame for env in envelopes]
    parse, decoder = fastest_decode(frames, repeats)
    normalize = best_rate(lambda: normalize_all(values), repeats)
    return [
        Figure(
            "normalize frames/s (1 process, books included, no Kafka)",
            normalize,
            "frames/s",
            parse,
            f"{decoder} parse-only of the same frames (fastest of orjson, msgspec)",
            "ratio >= 0.15",
            f"{len(values):,} Binance spot frames (hftbacktest BTCUSDT), best of {repeats}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help=f"only the first {QUICK_FRAMES:,} frames")
    args = parser.parse_args()
    print_figures(measure(args.repeats, args.quick))


if __name__ == "__main__":
    main()
