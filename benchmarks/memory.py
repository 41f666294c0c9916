"""Memory of the normalize step: resident set after 1M records across 50 instruments, flat after warm-up.

    python -m benchmarks.memory [--quick]

A child process (nothing else in it) runs the flow's normalize step offline, as ``benchmarks.normalize`` does
(envelope JSON in, one ``NormalizeLogic`` per instrument, batches of 1000 grouped by key, outputs dropped), over
the real Binance spot recording rewritten to 50 instruments (``benchmarks.inputs``: 20,000 frames each, in
turns of 100 frames per instrument, so all 50 books live and grow together). It samples its resident set
(psutil, or /proc/self/statm) every 100,000 records. Figure: RSS after 1M records; baseline: RSS after the
200,000-record warm-up; ratio = final / warm-up (flat = 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchmarks.common import REPO, Figure, Result, print_figures

__all__ = ["measure"]

INSTRUMENTS = 50
MB = 1024 * 1024


def _rss() -> int:
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process().memory_info().rss)


def _child(per_instrument: int, every: int) -> None:
    """Run the step and print one JSON line per sample: records in, records out, RSS bytes."""
    from benchmarks.inputs import BASES, base_envelopes, interleaved
    from benchmarks.normalize import RawRecord, drive_batch
    from operators.normalize import NormalizeLogic
    from operators.venues.base import NormalizerSettings

    base_envelopes()  # the recording itself is loaded before the first sample
    settings = NormalizerSettings()
    logics: dict[str, NormalizeLogic] = {}
    consumed = produced = 0
    batch: list[RawRecord] = []
    print(json.dumps({"records": 0, "outputs": 0, "rss": _rss()}), flush=True)

    def run_batch() -> int:
        out = drive_batch(logics, batch, settings)
        batch.clear()
        return out

    for env in interleaved(list(BASES[:INSTRUMENTS]), per_instrument):
        batch.append((env.key.encode(), env.to_json()))
        if len(batch) == 1000:
            produced += run_batch()
            consumed += 1000
            if consumed % every == 0:
                print(json.dumps({"records": consumed, "outputs": produced, "rss": _rss()}), flush=True)
    if batch:
        consumed += len(batch)
        produced += run_batch()
        print(json.dumps({"records": consumed, "outputs": produced, "rss": _rss()}), flush=True)


def measure(quick: bool = False) -> list[Result]:
    per_instrument, every, warmup = (1000, 10_000, 20_000) if quick else (20_000, 100_000, 200_000)
    argv = [sys.executable, "-m", "benchmarks.memory", "--child", str(per_instrument), "--every", str(every)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child exited with {done.returncode}: {done.stderr[-2000:]}")
    samples = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    final = samples[-1]
    warm = next(s for s in samples if s["records"] >= warmup)
    series = " ".join(f"{s['rss'] / MB:.0f}" for s in samples if s["records"])
    return [
        Figure(
            f"normalize step RSS after {final['records']:,} records, {INSTRUMENTS} instruments",
            final["rss"] / MB,
            "MB",
            warm["rss"] / MB,
            f"RSS after the {warm['records']:,}-record warm-up",
            "ratio <= 1.05",
            f"growth {(final['rss'] - warm['rss']) / MB:+.1f} MB from {warm['records']:,} to {final['records']:,} "
            f"records ({final['outputs']:,} records out); RSS MB every {every:,}: {series}",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 records")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--every", type=int, default=100_000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.every)
        return
    print_figures(measure(args.quick), digits=1)


if __name__ == "__main__":
    main()
