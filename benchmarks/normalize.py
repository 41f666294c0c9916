"""Normalize throughput per process, next to the parse-only limit of the same frames.

    python -m benchmarks.normalize [--repeats N]

Input: the raw-topic values (envelope JSON bytes) of the hftbacktest Binance spot BTCUSDT stream, 41,249 frames
(trades, best bid/offer, depth diffs bridged to a REST snapshot). The normalize figure is the flow's own step
(envelope parse, per-instrument state, books, record building) without Kafka or Bytewax; the baseline is the
same process only decoding each venue frame with orjson, the fastest decoder available.
"""

from __future__ import annotations

import argparse

import orjson

from benchmarks.common import DATA, Figure, best_rate, machine
from connectors.capture import capture_envelopes
from operators.dead_letter import SourceRef
from operators.normalize import NormalizeLogic
from operators.venues.base import NormalizerSettings
from schemas.raw import RawEnvelope

__all__ = ["measure"]

CAPTURE = DATA / "cex" / "hftbacktest" / "binance-spot-btcusdt-20240808.gz"


def _normalize_all(values: list[bytes], batch_size: int = 1000) -> int:
    """The flow's step as Bytewax drives it: batches of raw values, grouped per key, one logic per key."""
    settings = NormalizerSettings()
    logics: dict[str, NormalizeLogic] = {}
    ref = SourceRef(topic="raw")
    for start in range(0, len(values), batch_size):
        by_key: dict[str, list[tuple[RawEnvelope, SourceRef]]] = {}
        for value in values[start : start + batch_size]:
            env = RawEnvelope.from_json(value)
            by_key.setdefault(env.key, []).append((env, ref))
        for key, items in by_key.items():
            logic = logics.get(key)
            if logic is None:
                logic = logics[key] = NormalizeLogic(None, settings)
            logic.on_batch(items)
    return len(values)


def _parse_only(frames: list[str]) -> int:
    loads = orjson.loads
    for frame in frames:
        loads(frame)
    return len(frames)


def measure(repeats: int = 5) -> list[Figure]:
    envelopes = list(capture_envelopes(CAPTURE, "binance"))
    values = [env.to_json() for env in envelopes]
    frames = [env.frame for env in envelopes]
    parse = best_rate(lambda: _parse_only(frames), repeats)
    normalize = best_rate(lambda: _normalize_all(values), repeats)
    return [
        Figure(
            "normalize frames/s (1 process, books included, no Kafka)",
            normalize,
            "frames/s",
            parse,
            "orjson parse-only of the same frames",
            "ratio >= 0.15",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    info = machine()
    print(f"machine: {info['cpus']} cpus, Python {info['python']}, {info['machine']}")
    for fig in measure(args.repeats):
        print(f"{fig.name}: {fig.value:,.0f} {fig.unit}")
        print(f"  baseline ({fig.baseline_name}): {fig.baseline:,.0f} {fig.unit}")
        print(f"  ratio: {fig.ratio:.3f}  (target {fig.target})")


if __name__ == "__main__":
    main()
