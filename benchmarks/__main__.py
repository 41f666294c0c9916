"""Every performance figure, each next to a baseline measured in the same run, in one command.

    python -m benchmarks                      # every figure, as a table (progress on stderr)
    python -m benchmarks --json               # the same as a JSON array, one object per figure
    python -m benchmarks --only normalize,e2e # a subset (names: python -m benchmarks --list)
    python -m benchmarks --quick              # smaller inputs, for a smoke run

A figure that cannot be measured (a missing optional package, a server that would not start) is reported as
skipped with the reason; the others still run. Every server and process a figure starts is stopped when it
ends, on failure and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks import kafka_flows
from benchmarks.common import Result, Skipped, machine
from benchmarks.report import records, table, to_json

#: (figure name, result) pairs of one group.
Named = list[tuple[str, Result]]


@dataclass(frozen=True)
class Group:
    """Figures measured together (sharing inputs or servers); ``names`` are their ``--only`` names."""

    names: tuple[str, ...]
    run: Callable[[bool, tuple[str, ...]], Named]


def _each(name: str, module: str) -> Group:
    """A group of one name whose figures come from ``<module>.measure(quick=...)``, imported when it runs."""

    def measure(quick: bool, names: tuple[str, ...]) -> Named:
        results: list[Result] = importlib.import_module(module).measure(quick=quick)
        return [(name, result) for result in results]

    return Group((name,), measure)


def _kafka(quick: bool, names: tuple[str, ...]) -> Named:
    results = kafka_flows.measure(quick, names)
    return list(zip([n for n in kafka_flows.FIGURES if n in names], results, strict=True))


GROUPS = (
    _each("normalize", "benchmarks.normalize"),
    _each("cryptofeed", "benchmarks.cryptofeed_handler"),
    Group(kafka_flows.FIGURES, _kafka),
    _each("parquet", "benchmarks.parquet_sink"),
    _each("postgres", "benchmarks.postgres_loader"),
    _each("broadcaster", "benchmarks.broadcaster"),
    _each("e2e", "benchmarks.end_to_end"),
    _each("memory", "benchmarks.memory"),
    _each("raw_archive", "benchmarks.raw_archive"),
)
#: What each name measures (``--list``).
ABOUT = {
    "normalize": "normalize step frames/s, offline, vs JSON-decoding the same frames (orjson/msgspec)",
    "cryptofeed": "normalize step vs cryptofeed's Binance handler on the same frames (needs cryptofeed)",
    "kafka": "flows.normalize_cex through Tansu, 1 process, vs a KafkaSource->KafkaSink passthrough",
    "scaling": "flows.normalize_cex as 2 processes vs 1",
    "parquet": "Parquet archive sink rows/s vs pyarrow writing the same rows",
    "postgres": "Postgres loader rows/s (1000-row batches) vs one COPY of the same rows",
    "broadcaster": "broadcaster deliveries/s to 100 clients, and p99 latency at half that load",
    "e2e": "simulator -> collector -> normalize -> broadcaster -> client, p99 latency at the recorded pace",
    "memory": "normalize step RSS after 1M records over 50 instruments vs after warm-up",
    "raw_archive": "raw archive MB/s vs plain compression of the same bytes",
}
NAMES = tuple(name for group in GROUPS for name in group.names)


def _selected(only: str | None, parser: argparse.ArgumentParser) -> set[str]:
    if not only:
        return set(NAMES)
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    unknown = sorted(wanted - set(NAMES))
    if unknown:
        parser.error(f"unknown figure {', '.join(unknown)}; known: {', '.join(NAMES)}")
    return wanted


def run(wanted: set[str], quick: bool, progress: Callable[[str], None]) -> list[tuple[str, Result, float]]:
    """Measure the ``wanted`` figures, group by group; a group that fails is reported as skipped."""
    out: list[tuple[str, Result, float]] = []
    for group in GROUPS:
        names = tuple(name for name in group.names if name in wanted)
        if not names:
            continue
        progress(f"measuring {', '.join(names)} ...")
        started = time.monotonic()
        try:
            results = group.run(quick, names)
        except Exception as exc:  # one broken figure must not hide the others
            reason = f"failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            results = [(name, Skipped(ABOUT[name], reason)) for name in names]
        seconds = time.monotonic() - started
        progress(f"  done in {seconds:.0f}s")
        out.extend((name, result, seconds) for name, result in results)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print a JSON array, one object per figure")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="measure only these figures")
    parser.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run; figures are rougher)")
    parser.add_argument("--list", action="store_true", help="list the figure names and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name in NAMES:
            print(f"{name:12} {ABOUT[name]}")
        return 0
    wanted = _selected(args.only, parser)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    info = machine()
    try:
        results = run(wanted, args.quick, progress)
    except KeyboardInterrupt:
        progress("interrupted; every server started was stopped")
        return 130
    rows = records(results, info)
    print(to_json(rows) if args.json else table(rows, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
