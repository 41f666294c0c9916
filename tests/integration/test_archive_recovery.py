"""kill -9 of the archive flows mid-stream (small rotation limits, so files are being published when the blow
lands), restart with the same recovery directory: the archive ends up holding every record exactly once, and no
file published before a crash is ever rewritten or removed.

Each partition starts with a straggler (a record of an hour nothing else goes to) whose file stays open to the
end, so its checkpoint stays at its start while files of other hours are published: every restart consumes
records that are already archived and must recognise them, which is the hard part of exactly-once.
"""

from __future__ import annotations

import time
from pathlib import Path

import fsspec
import pytest
from confluent_kafka import Producer

from connectors.archive_store import ArchiveStore, FileName
from connectors.kafka import ensure_topics, read_topic
from embedded.kafka import TansuBroker
from schemas import CEX_TOPICS
from schemas.serde import codec_for
from tests.harness import flow_env, init_recovery, run_flow, settings_for, start_flow
from tests.integration.archive_support import (
    BAD_RAW,
    BAD_TIMESTAMP_MS,
    archived_parquet,
    archived_raw,
    assert_exactly_once,
    expected_raw,
    expected_records,
)
from tests.support import CRYPTOFEED, HFTBACKTEST, capture, envelopes, normalize, records

pytestmark = pytest.mark.integration

PARTITIONS = 2


def _stragglers(env: dict[str, str], topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None:
    """``value`` as the first record of every partition of ``topic``."""
    ensure_topics(settings_for(env), [topic])
    producer = Producer({"bootstrap.servers": env["KAFKA_BROKERS"]})
    for partition in range(PARTITIONS):
        producer.produce(topic, key=key, value=value, partition=partition, timestamp=timestamp_ms)
    producer.flush(10)


def _published(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and "_checkpoints" not in p.parts
    }


def _kill_after_more_files(spec: str, env: dict[str, str], log: Path, args: tuple[str, ...], root: Path) -> None:
    """Start the flow, let it publish a few more files, then kill -9 it while it still runs."""
    before = len(_published(root))
    flow = start_flow(spec, env, log, *args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_published(root)) < before + 5 and flow.running:
        time.sleep(0.02)
    assert flow.running, f"{spec} ended before it could be killed:\n{flow.log_tail()}"
    flow.kill()
    assert _archived_beyond_checkpoints(root), "nothing for the restart to skip: the crash proves little"


def _archived_beyond_checkpoints(root: Path) -> bool:
    """Whether some partition has records in published files at or past its checkpoint, which the restart will
    consume again and must recognise as archived (files of other hours were published while older ones were
    still open)."""
    store = ArchiveStore.open(str(root))
    last: dict[tuple[str, int], int] = {}
    for path in _published(root):
        name = FileName.parse(Path(path).name)
        assert name is not None
        key = (name.topic, name.partition)
        last[key] = max(last.get(key, -1), name.last)
    return any(offset >= (store.read_checkpoint(*key) or 0) for key, offset in last.items())


def _crash_twice_then_finish(
    spec: str, env: dict[str, str], tmp_path: Path, root: Path, rows: tuple[int, int, int]
) -> dict[str, bytes]:
    """Run, kill -9, run, kill -9, run to the end, all with one recovery directory. Each run cuts files at its
    own size (``rows``, as after a redeploy with new settings), so re-publishing re-read records instead of
    recognising them would duplicate them rather than rewrite identical files."""
    recovery = tmp_path / "recovery"
    init_recovery(recovery)
    args = ("-r", str(recovery), "-s", "1", "-b", "0")
    first, second, last = ({**env, "ARCHIVE_ROTATE_ROWS": str(n)} for n in rows)
    _kill_after_more_files(spec, first, tmp_path / "run-1.log", args, root)
    after_first = _published(root)
    _kill_after_more_files(spec, second, tmp_path / "run-2.log", args, root)
    after_second = _published(root)
    run_flow(spec, last, *args)
    final = _published(root)
    assert len(after_first) < len(after_second) < len(final)
    for path, data in {**after_first, **after_second}.items():
        assert final.get(path) == data, f"{path} was rewritten or removed after the crash"
    return final


def _env(kafka: TansuBroker, root: Path, **extra: str) -> dict[str, str]:
    return flow_env(
        kafka.bootstrap,
        KAFKA_STOP_AT_END="true",
        TOPIC_PARTITIONS=f"default={PARTITIONS}",
        CONSUMER_BATCH_SIZE="200",
        REPLAY_CAPTURES=str(CRYPTOFEED / "*.jsonl.zst"),
        ARCHIVE_URL=str(root),
        ARCHIVE_MAX_OPEN_FILES="1000",  # the stragglers' files must not be closed early to make room
        **extra,
    )


def _replay_everything(env: dict[str, str]) -> None:
    run_flow("flows.replay:flow", env)
    run_flow(f"flows.replay:replay('{HFTBACKTEST}', venue='binance')", env)


def test_archive_raw_killed_twice_mid_stream_holds_every_raw_value_exactly_once(
    kafka: TansuBroker, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    env = _env(kafka, root)
    _stragglers(env, "raw", b"bad", BAD_RAW[0], BAD_TIMESTAMP_MS)
    _replay_everything(env)
    raw = read_topic(settings_for(env), "raw", decode=False)
    _crash_twice_then_finish("flows.archive_raw:flow", env, tmp_path, root, rows=(400, 350, 300))
    archived = archived_raw(fsspec.filesystem("file"), str(root))
    assert_exactly_once(expected_raw(raw), archived)
    assert sum(len(values) for files in archived.values() for _, values in files) == len(raw) > 60_000


def test_archive_parquet_killed_twice_mid_stream_holds_every_record_exactly_once(
    kafka: TansuBroker, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    env = _env(kafka, root, ARCHIVE_ROW_GROUP_ROWS="100")
    straggler = records(normalize(envelopes(capture("OKX"))), "trades")[0]
    _stragglers(env, "trades", b"okx:straggler", codec_for("trades").encode(straggler), 0)
    _replay_everything(env)
    run_flow("flows.normalize_cex:flow", env)
    config = settings_for(env)
    topics = {topic: read_topic(config, topic) for topic in CEX_TOPICS}
    topics = {topic: rows for topic, rows in topics.items() if rows}
    assert {"trades", "ticker", "lob", "candles", "funding", "open_interest"} <= set(topics)
    _crash_twice_then_finish("flows.archive_parquet:flow", env, tmp_path, root, rows=(300, 250, 200))
    fs = fsspec.filesystem("file")
    for topic, rows in topics.items():
        archived = archived_parquet(fs, str(root), topic)
        assert_exactly_once(expected_records(rows), archived)
        assert sum(len(values) for files in archived.values() for _, values in files) == len(rows)
    trade_ids = [
        (row["exchange"], row["symbol"], row["trade_id"])
        for files in archived_parquet(fs, str(root), "trades").values()
        for _, values in files
        for row in values
    ]
    kafka_ids = [(r.value["exchange"], r.value["symbol"], r.value["trade_id"]) for r in topics["trades"]]
    assert sorted(trade_ids) == sorted(kafka_ids) and len(trade_ids) > 9000
