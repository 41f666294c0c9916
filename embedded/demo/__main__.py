"""Run the whole pipeline on its embedded default and say where the results are.

    python -m embedded.demo [--duration SECONDS] [--workdir var/demo] [--keep-running]

Starts a Tansu broker, runs ``flows.normalize_cex`` (with Bytewax recovery) and replays the recorded captures
shipped in ``data/`` through ``flows.replay``, exactly as live collectors would feed it. Progress is printed
while it runs; at the end (all input normalized, ``--duration`` elapsed, or Ctrl-C) every process is stopped
and a summary lists records per topic, dead letters with their reasons, and the files it wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition

from connectors.config import Settings
from connectors.kafka import TopicError, ensure_topics, read_topic
from embedded.kafka import TansuBroker
from embedded.process import ManagedProcess
from schemas import CEX_TOPICS

REPO = Path(__file__).resolve().parents[1]
CAPTURES = sorted((REPO / "data" / "cex" / "cryptofeed").glob("*.jsonl.zst"))
HFTBACKTEST = REPO / "data" / "cex" / "hftbacktest" / "binance-spot-btcusdt-20240808.gz"


def _flow(name: str, spec: str, env: dict[str, str], workdir: Path, *args: str) -> ManagedProcess:
    argv = [sys.executable, "-m", "bytewax.run", spec, *args]
    return ManagedProcess(name, argv, workdir / "logs" / f"{name}.log", env=env, cwd=REPO).start()


def _floors(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Records per topic as the broker reports them (a floor: see connectors.kafka.read_topic)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-progress"})
    try:
        metadata = consumer.list_topics(timeout=5).topics
        counts = {}
        for topic in topics:
            if topic in metadata:
                counts[topic] = sum(
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                    for p in metadata[topic].partitions
                )
        return counts
    finally:
        consumer.close()


def _export(config: Settings, workdir: Path) -> dict[str, tuple[int, Path]]:
    """Decode every standardized topic into ``<workdir>/topics/<topic>.jsonl`` (one record per line)."""
    out_dir = workdir / "topics"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for topic in (*CEX_TOPICS, config.dead_letter_topic):
        try:
            rows = read_topic(config, topic)
        except TopicError:
            continue
        path = out_dir / f"{topic}.jsonl"
        with path.open("wb") as handle:
            for row in rows:
                handle.write(orjson.dumps({"key": row.key, "value": row.value}, default=_bytes_as_text) + b"\n")
        written[topic] = (len(rows), path)
    return written


def _bytes_as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(type(value).__name__)


def run(duration: float | None, workdir: Path, keep_running: bool) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    stop = False

    def _interrupt(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"marketpipe demo: working directory {workdir}")
    with TansuBroker(workdir / "kafka") as broker:
        env = {"KAFKA_BROKERS": broker.bootstrap, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
        config = Settings(kafka_brokers=broker.bootstrap)
        ensure_topics(config, ["raw", *CEX_TOPICS, config.dead_letter_topic])
        print(f"  Kafka (Tansu) on {broker.bootstrap}")
        recovery = workdir / "recovery" / "normalize_cex"
        if not recovery.exists():
            recovery.mkdir(parents=True)
            ManagedProcess(
                "recovery-init",
                [sys.executable, "-m", "bytewax.recovery", str(recovery), "1"],
                workdir / "logs" / "recovery-init.log",
            ).start().process.wait()  # type: ignore[union-attr]
        normalize = _flow(
            "normalize_cex", "flows.normalize_cex:flow", env, workdir, "-r", str(recovery), "-s", "5", "-b", "0"
        )
        replay = _flow(
            "replay",
            "flows.replay:flow",
            {**env, "REPLAY_CAPTURES": ",".join(str(p) for p in CAPTURES)},
            workdir,
            "-w",
            "2",
        )
        replay_hft = _flow("replay_hftbacktest", f"flows.replay:replay('{HFTBACKTEST}', venue='binance')", env, workdir)
        print(f"  replaying {len(CAPTURES) + 1} recorded captures (10 venues) into 'raw'; normalizing ...")
        started = time.monotonic()
        last: dict[str, int] = {}
        idle_rounds = 0
        topics = ["raw", *CEX_TOPICS, config.dead_letter_topic]
        while not stop:
            time.sleep(2)
            for proc in (normalize,):
                proc.check_alive()
            counts = _floors(broker.bootstrap, topics)
            line = "  ".join(f"{t}={counts.get(t, 0):,}" for t in topics if counts.get(t))
            print(f"  [{time.monotonic() - started:5.0f}s] {line}", flush=True)
            replaying = replay.running or replay_hft.running
            idle_rounds = idle_rounds + 1 if (counts == last and not replaying) else 0
            last = counts
            if duration is not None and time.monotonic() - started >= duration:
                break
            if idle_rounds >= 2 and not keep_running:
                break
        for proc in (replay, replay_hft, normalize):
            proc.stop()
        print("\nStopped the flows. Exporting the standardized topics ...")
        written = _export(config, workdir)
        _summary(config, written, workdir, broker.bootstrap)
    return 0


def _summary(config: Settings, written: dict[str, tuple[int, Path]], workdir: Path, bootstrap: str) -> None:
    print("\n=== Summary ===")
    print("Records per topic (decoded from Kafka, written as JSON Lines):")
    for topic, (count, path) in written.items():
        print(f"  {topic:<14} {count:>9,}  {path}")
    dead_count = written.get(config.dead_letter_topic, (0, None))[0]
    if dead_count:
        reasons: Counter[str] = Counter()
        for row in read_topic(config, config.dead_letter_topic):
            reasons[f"{row.value['error_type']}: {row.value['reason'][:100]}"] += 1
        print("Dead letters by reason:")
        for reason, count in reasons.most_common(10):
            print(f"  {count:>6}  {reason}")
    else:
        print("Dead letters: none")
    print(f"Logs: {workdir / 'logs'}   Bytewax recovery store: {workdir / 'recovery'}")
    print(f"The embedded broker ({bootstrap}) stops with the demo; point KAFKA_BROKERS at a real cluster to keep data.")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the pipeline on its embedded default.")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "demo")
    parser.add_argument("--keep-running", action="store_true", help="keep running after the input is consumed")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(run(args.duration, args.workdir.resolve(), args.keep_running))


if __name__ == "__main__":
    main()
