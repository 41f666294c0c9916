"""What the demo prints: a progress line per tick while it runs, and the summary a user can act on at the end."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg2
from confluent_kafka import Consumer, TopicPartition

from connectors.kafka import TopicError, read_topic
from embedded.demo.stack import Stack
from schemas import CEX_TOPICS, CHAIN_TOPICS

__all__ = ["Progress", "Summary", "progress", "summarize"]

EXAMPLE_SQL = (
    "SELECT exchange, symbol, date_trunc('hour', event_timestamp) AS hour, count(*) AS trades,\n"
    "       sum(price * size) / sum(size) AS vwap\n"
    "FROM trades GROUP BY 1, 2, 3 ORDER BY trades DESC LIMIT 10;"
)


@dataclass(frozen=True)
class Progress:
    """One tick: records per topic (broker watermarks) and what each flow reports it did."""

    topics: dict[str, int]
    flows: dict[str, int]

    def line(self, elapsed: float) -> str:
        topics = "  ".join(f"{topic} {count:,}" for topic, count in self.topics.items() if count)
        flows = "  ".join(f"{name} {count:,}" for name, count in self.flows.items())
        return f"[{elapsed:5.0f}s] records per topic: {topics or '-'}\n        per flow: {flows}"


#: Per flow, the counter that says how much it did.
_FLOW_COUNTERS = {
    "collect_cex": "marketpipe_records_out_total",
    "normalize_cex": "marketpipe_records_in_total",
    "normalize_evm": "marketpipe_records_in_total",
    "archive_raw": "marketpipe_archive_records_total",
    "archive_parquet": "marketpipe_archive_records_total",
    "load_postgres": "marketpipe_postgres_rows_total",
}


def _watermarks(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Records per topic as the broker reports them (Tansu's watermark trails by up to one batch)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "marketpipe-demo-progress"})
    try:
        metadata = consumer.list_topics(timeout=5).topics
        return {
            topic: sum(
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                for p in metadata[topic].partitions
            )
            for topic in topics
            if topic in metadata
        }
    finally:
        consumer.close()


Samples = dict[str, float]


def _total(samples: Samples, prefix: str) -> int:
    return int(sum(value for name, value in samples.items() if name.startswith(prefix)))


def _per_topic(samples: Samples, prefix: str) -> dict[str, int]:
    """``topic`` label -> value of the samples named ``prefix``."""
    counts: dict[str, int] = {}
    for name, value in samples.items():
        if name.startswith(prefix) and "topic=" in name:
            topic = name.split("topic=", 1)[1].split(",", 1)[0].rstrip("}")
            counts[topic] = counts.get(topic, 0) + int(value)
    return counts


def progress(stack: Stack) -> Progress:
    """Records per topic: what the producing flows count (exact), else the broker's watermark."""
    config = stack.settings()
    topics = _watermarks(stack.bootstrap, [config.raw_topic, *CEX_TOPICS, *CHAIN_TOPICS, config.dead_letter_topic])
    samples = {name: flow.metrics() for name, flow in stack.flows.items()}  # one /metrics request per flow
    # collect_evm is not asked: it reaches its end block and exits within the first tick.
    for producer in ("collect_cex", "normalize_cex", "normalize_evm"):
        for topic, count in _per_topic(samples[producer], "marketpipe_records_out_total").items():
            topics[topic] = max(topics.get(topic, 0), count)
    topics[config.raw_topic] = max(
        topics.get(config.raw_topic, 0), _total(samples["normalize_cex"], "marketpipe_records_in_total")
    )
    flows = {name: _total(samples[name], counter) for name, counter in _FLOW_COUNTERS.items()}
    return Progress(topics, flows)


@dataclass(frozen=True)
class Summary:
    """Everything the final report says, gathered while the servers still run."""

    topics: dict[str, int]
    dead_letters: list[tuple[int, str]]
    parquet: dict[str, tuple[int, int]]
    raw_files: dict[str, int]
    tables: dict[str, int]


def _exact_counts(stack: Stack) -> tuple[dict[str, int], list[tuple[int, str]]]:
    config = stack.settings()
    counts: dict[str, int] = {}
    reasons: Counter[str] = Counter()
    for topic in (config.raw_topic, *CEX_TOPICS, *CHAIN_TOPICS, config.dead_letter_topic):
        try:
            rows = read_topic(config, topic, decode=topic != config.raw_topic)
        except TopicError:
            continue
        counts[topic] = len(rows)
        if topic == config.dead_letter_topic:
            reasons.update(f"{row.value['error_type']}: {row.value['reason'][:110]}" for row in rows)
    return counts, [(count, reason) for reason, count in reasons.most_common(8)]


def _parquet(archive: Path) -> dict[str, tuple[int, int]]:
    """Topic -> (files, rows) in the Parquet archive, read back with DuckDB."""
    found: dict[str, tuple[int, int]] = {}
    con = duckdb.connect()
    for directory in sorted(p for p in archive.iterdir() if p.is_dir() and not p.name.startswith(("_", "raw"))):
        files = list(directory.rglob("*.parquet"))
        if files:
            row = con.execute("SELECT count(*) FROM read_parquet(?)", [f"{directory}/**/*.parquet"]).fetchone()
            found[directory.name] = (len(files), int(row[0]) if row else 0)
    return found


def _raw_files(archive: Path) -> dict[str, int]:
    raw = archive / "raw"
    if not raw.is_dir():
        return {}
    return {
        directory.name.removeprefix("exchange="): sum(1 for _ in directory.rglob("*.jsonl.*"))
        for directory in sorted(raw.iterdir())
        if directory.is_dir()
    }


def _tables(dsn: str) -> dict[str, int]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"
        )
        names = [name for (name,) in cur.fetchall()]
        counts: dict[str, int] = {}
        for name in names:
            cur.execute(f'SELECT count(*) FROM "{name}"')  # names come from the catalog, not from input
            row = cur.fetchone()
            counts[name] = int(row[0]) if row else 0
    return counts


def summarize(stack: Stack) -> Summary:
    topics, dead = _exact_counts(stack)
    archive = stack.archive
    parquet = _parquet(archive) if archive.is_dir() else {}
    raw_files = _raw_files(archive) if archive.is_dir() else {}
    return Summary(topics, dead, parquet, raw_files, _tables(stack.dsn))


def render(summary: Summary, stack: Stack, still_running: bool) -> str:
    """The summary as text."""
    out = ["", "=== marketpipe demo: summary ===", "Records per Kafka topic:"]
    out += [f"  {topic:<22} {count:>9,}" for topic, count in summary.topics.items()]
    if summary.dead_letters:
        out.append("Dead letters by reason (inputs the pipeline refused, kept with the reason):")
        out += [f"  {count:>6}  {reason}" for count, reason in summary.dead_letters]
    else:
        out.append("Dead letters: none")
    out.append(f"Parquet archive, by event hour: {stack.archive}/<topic>/year=/month=/day=/hour=/")
    out += [f"  {topic:<22} {files:>4} files {rows:>9,} rows" for topic, (files, rows) in summary.parquet.items()]
    raw = ", ".join(f"{exchange} {files}" for exchange, files in summary.raw_files.items())
    out.append(f"Raw archive (zstd JSON Lines), files per exchange: {raw or 'none'}  ({stack.archive}/raw/)")
    out.append(
        '  query it: python -c "import duckdb; print(duckdb.sql(\\"SELECT exchange, symbol, count(*) FROM '
        f"read_parquet('{stack.archive}/trades/**/*.parquet', hive_partitioning=true) GROUP BY ALL\\\"))\""
    )
    out.append("Postgres tables (rows):")
    out += [f"  {table:<22} {count:>9,}" for table, count in summary.tables.items()]
    when = "while the demo runs" if still_running else "(stopped with the demo; data kept in the work directory)"
    out.append(f"  connection: {stack.dsn}  {when}")
    out.append("  example query (VWAP per instrument and hour):")
    out += [f"    {line}" for line in EXAMPLE_SQL.splitlines()]
    out.append(f"Live data: web page {stack.page_url}   websocket {stack.ws_url}   protocol {stack.page_url}protocol")
    out.append(f"Logs: {stack.logs}")
    return "\n".join(out)
