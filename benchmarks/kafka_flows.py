"""The normalize flow through Kafka (one and two processes), next to a passthrough flow of the same bytes.

    python -m benchmarks.kafka_flows [--quick] [--only kafka|scaling]

Real parts: an embedded Tansu broker; the raw topic preloaded by ``flows.replay`` from captures written for the
run (the hftbacktest Binance spot recording as 8 instruments, see ``benchmarks.inputs``: 330,000 frames, books
included); flows run as ``python -m bytewax.run`` processes with ``KAFKA_STOP_AT_END=true``.

* kafka: ``flows.normalize_cex:flow``, one process, against ``benchmarks.passthrough:flow`` (same Kafka source
  and sink, bytes untouched) over the same raw topic.
* scaling: the normalize flow as two processes (``-i 0``/``-i 1``, ``-a`` both addresses), against one process.
  The instruments are chosen so that each process owns and reads half of them (``benchmarks.routing``).

Rate = raw frames / the span of the run's output records' Kafka timestamps (first to last record produced), so
process start-up and cluster formation are left out. Runs alternate (baseline, figure, baseline, figure), and
the best of each is kept.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from benchmarks.common import REPO, Figure, Result, print_figures
from benchmarks.inputs import BASES, write_capture
from benchmarks.routing import balanced_keys
from connectors.config import FIRST_OFFSET
from embedded.kafka import TansuBroker
from embedded.process import ManagedProcess, ServerError, free_port
from schemas import CEX_TOPICS

__all__ = ["KafkaRig", "measure"]

NORMALIZE = "flows.normalize_cex:flow"
PASSTHROUGH = "benchmarks.passthrough:flow"
RAW_PARTITIONS = 4
FLOW_TIMEOUT_S = 600.0
#: The figures this module measures, by their ``python -m benchmarks --only`` names.
FIGURES = ("kafka", "scaling")


@dataclass(frozen=True)
class Run:
    """One flow run: frames in, records out, and when the outputs were produced."""

    frames: int
    records: int
    first_ms: int
    last_ms: int
    wall_s: float
    #: CPU seconds of the flow's processes (user + system), start-up included.
    cpu_s: float
    #: CPU seconds of the broker over the same time.
    broker_cpu_s: float

    @property
    def rate(self) -> float:
        return self.frames / max((self.last_ms - self.first_ms) / 1000, 0.001)


def _span(bootstrap: str, topics: Sequence[str], since_ms: int, until_ms: int) -> tuple[int, int, int]:
    """(records, first, last timestamp in ms) of the records of ``topics`` produced between the two times."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "enable.auto.commit": "false",
            "fetch.min.bytes": 1_000_000,
            "fetch.wait.max.ms": 100,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        present = [t for t in topics if t in metadata.topics and metadata.topics[t].error is None]
        consumer.assign([TopicPartition(t, p, FIRST_OFFSET) for t in present for p in metadata.topics[t].partitions])
        count, first, last = 0, sys.maxsize, 0
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 2.0:  # Tansu's watermarks are floors: read until idle
            batch = consumer.consume(10_000, 0.5)
            if batch:
                idle_since = time.monotonic()
            for msg in batch:
                if msg.error() is not None:
                    continue
                stamp = msg.timestamp()[1]
                if since_ms <= stamp <= until_ms:
                    count += 1
                    first = min(first, stamp)
                    last = max(last, stamp)
        return count, first, last
    finally:
        consumer.close()


class KafkaRig:
    """A Tansu broker whose raw topic holds the recording as the instruments ``<base>USDT`` of ``bases``.

    ``per_instrument`` frames each (all when None), replayed by ``flows.replay`` on entry.
    """

    def __init__(self, workdir: Path, bases: Sequence[str], per_instrument: int | None) -> None:
        self.workdir = workdir
        self.bases = list(bases)
        self.per_instrument = per_instrument
        self.frames = 0
        self.runs = 0
        self.broker = TansuBroker(workdir / "kafka")

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "KAFKA_BROKERS": self.broker.bootstrap,
                "PYTHONPATH": str(REPO),
                "TOPIC_PARTITIONS": f"default=4,raw={RAW_PARTITIONS}",
                "KAFKA_STOP_AT_END": "true",
                "LOG_LEVEL": "WARNING",
            }
        )
        env.update(extra)
        return env

    def __enter__(self) -> KafkaRig:
        self.broker.start()
        try:
            self._preload()
        except BaseException:
            self.broker.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.broker.stop()

    def _preload(self) -> None:
        paths = []
        for base in self.bases:
            path = self.workdir / f"binance-spot-{base.lower()}usdt.gz"
            self.frames += write_capture(path, base, self.per_instrument)
            paths.append(str(path))
        env = self.env(REPLAY_CAPTURES=",".join(paths), REPLAY_VENUE="binance")
        self._run_processes("flows.replay:flow", env, [["-w", "2"]], "replay")

    def _run_processes(self, spec: str, env: dict[str, str], argvs: list[list[str]], name: str) -> tuple[float, float]:
        """Run one process per ``argvs`` entry to completion; (wall seconds, CPU seconds of the processes)."""
        self.runs += 1
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        with ExitStack() as stack:
            processes = [
                stack.enter_context(
                    ManagedProcess(
                        f"{name}-{i}",
                        [sys.executable, "-m", "bytewax.run", spec, *args],
                        self.workdir / f"{name}-{self.runs}-{i}.log",
                        env,
                        REPO,
                    )
                )
                for i, args in enumerate(argvs)
            ]
            for proc in processes:
                assert proc.process is not None
                try:
                    code = proc.process.wait(max(1.0, FLOW_TIMEOUT_S - (time.monotonic() - started)))
                except subprocess.TimeoutExpired as exc:
                    raise ServerError(f"{spec} did not finish in {FLOW_TIMEOUT_S:.0f}s:\n{proc.log_tail()}") from exc
                if code != 0:
                    raise ServerError(f"{spec} exited with {code}:\n{proc.log_tail()}")
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime

    def run(self, spec: str, topics: Sequence[str], processes: int = 1, **extra: str) -> Run:
        """Run a flow over the whole raw topic as ``processes`` processes; its rate from its output timestamps."""
        env = self.env(**extra)
        argvs: list[list[str]] = [[]]
        if processes > 1:
            addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
            argvs = [["-i", str(i), "-a", addresses] for i in range(processes)]
        since = time.time_ns() // 1_000_000
        broker_before = self._broker_cpu_s()
        wall, cpu = self._run_processes(spec, env, argvs, spec.split(":")[0].rsplit(".", 1)[-1])
        broker_cpu = self._broker_cpu_s() - broker_before
        until = time.time_ns() // 1_000_000
        records, first, last = _span(self.broker.bootstrap, topics, since, until)
        if records == 0:
            raise ServerError(f"{spec} produced nothing to {', '.join(topics)}")
        return Run(self.frames, records, first, last, wall, cpu, broker_cpu)

    def _broker_cpu_s(self) -> float:
        """CPU seconds (user + system) the broker process has used so far."""
        process = self.broker.process.process
        assert process is not None
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def normalize(self, processes: int = 1) -> Run:
        return self.run(NORMALIZE, [*CEX_TOPICS, "dead_letter"], processes)

    def passthrough(self) -> Run:
        topic = f"raw_copy_{self.runs}"
        return self.run(PASSTHROUGH, [topic], PASSTHROUGH_TOPIC=topic)


@contextmanager
def _rig(bases: Sequence[str], per_instrument: int | None) -> Iterator[KafkaRig]:
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp, KafkaRig(Path(tmp), bases, per_instrument) as rig:
        yield rig


def _best(runs: list[Run]) -> Run:
    return max(runs, key=lambda run: run.rate)


def _describe(run: Run, what: str) -> str:
    span = (run.last_ms - run.first_ms) / 1000
    return (
        f"{what}: {run.records:,} records out in {span:.1f}s ({run.wall_s:.1f}s wall, {run.cpu_s:.1f} CPU-s, "
        f"broker {run.broker_cpu_s:.1f} CPU-s: {(run.cpu_s + run.broker_cpu_s) / run.wall_s:.2f} cores busy)"
    )


def measure(quick: bool = False, which: Collection[str] = FIGURES, repeats: int = 2) -> list[Result]:
    """The ``which`` figures (``kafka``, ``scaling``) over one preloaded broker."""
    count, per_instrument = (2, 5000) if quick else (8, None)
    keys = balanced_keys([f"binance:{base}.USDT" for base in BASES], count, "raw", RAW_PARTITIONS)
    bases = [key.split(":")[1].split(".")[0] for key in keys]
    copies: list[Run] = []
    singles: list[Run] = []
    pairs: list[Run] = []
    with _rig(bases, per_instrument) as rig:
        for _ in range(1 if quick else repeats):  # alternated, so each figure and baseline see the same weather
            if "kafka" in which:
                copies.append(rig.passthrough())
            singles.append(rig.normalize(1))
            if "scaling" in which:
                pairs.append(rig.normalize(2))
    single = _best(singles)
    size = f"{rig.frames:,} frames, {count} instruments, {RAW_PARTITIONS} raw partitions, best of {len(singles)}"
    results: list[Result] = []
    if copies:
        copy = _best(copies)
        results.append(
            Figure(
                "normalize flow frames/s through Kafka (1 process, Tansu)",
                single.rate,
                "frames/s",
                copy.rate,
                "KafkaSource -> KafkaSink passthrough of the same raw topic (benchmarks/passthrough.py)",
                "ratio >= 0.5",
                f"{size}; {_describe(single, 'normalize')}; {_describe(copy, 'passthrough')}",
            )
        )
    if pairs:
        pair = _best(pairs)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        results.append(
            Figure(
                "normalize flow scaling: 2 processes vs 1 (frames/s)",
                pair.rate,
                "frames/s",
                single.rate,
                "the same flow as 1 process over the same raw topic",
                "ratio >= 1.7",
                f"{size}; each process owns and reads half the instruments; {cores} cores shared with the broker; "
                f"{_describe(pair, '2 processes')}; {_describe(single, '1 process')}",
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 instruments, 5,000 frames each")
    parser.add_argument("--only", choices=FIGURES)
    args = parser.parse_args()
    print_figures(measure(args.quick, [args.only] if args.only else FIGURES))


if __name__ == "__main__":
    main()
