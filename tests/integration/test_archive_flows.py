"""archive_raw and archive_parquet end to end on real servers: captures replayed into Tansu, normalized, archived
to a local directory and to S3 (moto), then read back file by file, with pyarrow.dataset and with DuckDB.

The expected archive is computed independently of the code under test (`tests.integration.archive_support`).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import duckdb
import fsspec
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from connectors.kafka import ensure_topics, existing_topics, read_topic
from embedded.kafka import TansuBroker
from embedded.s3 import CREDENTIALS, MotoS3
from schemas import CHAIN_TOPICS
from schemas.serde import codec_for
from tests.harness import flow_env, run_flow, settings_for
from tests.integration.archive_support import (
    Layout,
    Pipeline,
    archived_parquet,
    archived_raw,
    assert_exactly_once,
    decompress,
    expected_raw,
    expected_records,
    hour,
    produce,
    raw_directory,
)
from tests.support import capture, envelopes, normalize, records

pytestmark = pytest.mark.integration


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_raw_archive_holds_every_raw_value_exactly_once_by_exchange_and_receipt_hour(
    pipeline: Pipeline, local_archive: Path
) -> None:
    archived = archived_raw(fsspec.filesystem("file"), str(local_archive))
    assert_exactly_once(expected_raw(pipeline.raw), archived)
    assert sum(len(values) for files in archived.values() for _, values in files) == len(pipeline.raw) > 20_000
    assert {d.split("/")[0] for d, _ in archived} >= {"exchange=binance", "exchange=coinbase", "exchange=_invalid"}
    invalid = [
        orjson.loads(line)
        for path in (local_archive / "raw" / "exchange=_invalid").rglob("*.jsonl.zst")
        for line in decompress(path.name, path.read_bytes()).splitlines()
    ]
    assert sorted(line["reason"].split(":")[0] for line in invalid) == sorted(
        [
            "raw value is not JSON",
            "exchange '../../escape' is not a safe path component",
            *["the value contains a line break, so it cannot be one JSON line"],
        ]
    )


def test_the_parquet_archive_equals_every_topic_record_for_record_by_event_hour(
    pipeline: Pipeline, local_archive: Path
) -> None:
    fs = fsspec.filesystem("file")
    for topic, rows in pipeline.topics.items():
        if rows:
            assert_exactly_once(expected_records(rows), archived_parquet(fs, str(local_archive), topic))
        else:
            assert not (local_archive / topic).exists(), topic
    counts = {topic: len(rows) for topic, rows in pipeline.topics.items()}
    # normalize_cex dead-letters the three bad raw values: not JSON, an unknown venue, and the multi-line envelope
    # (valid JSON to it) because it names a Kraken instrument under the Kafka key "bad".
    assert counts["trades"] > 2000 and counts["lob"] > 10_000
    reasons = sorted(row.value["error_type"] for row in pipeline.topics["dead_letter"])
    assert reasons == ["malformed_json", "unexpected_key", "unknown_venue"]


def test_a_second_run_over_the_same_input_changes_nothing(pipeline: Pipeline, local_archive: Path) -> None:
    before = _listing(local_archive)
    env = {**pipeline.env, "ARCHIVE_URL": str(local_archive)}
    run_flow("flows.archive_raw:flow", env)
    run_flow("flows.archive_parquet:flow", env)
    assert _listing(local_archive) == before


def _one(con: duckdb.DuckDBPyConnection, sql: str, parameters: list[Any]) -> tuple[Any, ...]:
    row = con.execute(sql, parameters).fetchone()
    assert row is not None
    return row


def test_duckdb_and_pyarrow_read_the_whole_archive_with_hive_partitions(
    pipeline: Pipeline, local_archive: Path
) -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for topic, rows in pipeline.topics.items():
        if not rows:
            continue
        glob = f"{local_archive}/{topic}/**/*.parquet"
        count, misplaced, kind = _one(
            con,
            "SELECT count(*), count(*) FILTER (WHERE year <> year(event_timestamp) OR month <> month(event_timestamp)"
            " OR day <> day(event_timestamp) OR hour <> hour(event_timestamp)), any_value(typeof(event_timestamp))"
            " FROM read_parquet(?, hive_partitioning = true)",
            [glob],
        )
        assert (count, misplaced, kind) == (len(rows), 0, "TIMESTAMP WITH TIME ZONE"), topic
        table = ds.dataset(local_archive / topic, format="parquet", partitioning="hive").to_table()
        assert table.num_rows == len(rows)
        assert table.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
        assert {"year", "month", "day", "hour"} <= set(table.schema.names)
    per_exchange = con.execute(
        "SELECT exchange, count(*) FROM read_json(?, format = 'newline_delimited', hive_partitioning = true,"
        " columns = {receipt_ts: 'BIGINT'}) GROUP BY exchange",
        [f"{local_archive}/raw/*/*/*/*/*/*.jsonl.zst"],
    ).fetchall()
    assert dict(per_exchange) == Counter(
        raw_directory(row.value).split("/")[0][len("exchange=") :] for row in pipeline.raw
    )
    trades = pipeline.topics["trades"]
    volume, ids = _one(
        con,
        "SELECT sum(size), count(DISTINCT (exchange, symbol, trade_id)) FROM read_parquet(?, hive_partitioning = true)",
        [f"{local_archive}/trades/**/*.parquet"],
    )
    assert volume == pytest.approx(sum(t.value["size"] for t in trades))
    assert ids == len({(t.value["exchange"], t.value["symbol"], t.value["trade_id"]) for t in trades})


@pytest.fixture
def bucket(s3: MotoS3) -> str:
    name = f"archive-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(name)
    return name


def test_both_archives_on_s3_with_gzip_and_two_workers_read_back_by_pyarrow_and_duckdb(
    pipeline: Pipeline, s3: MotoS3, bucket: str
) -> None:
    import s3fs

    env = {
        **pipeline.env,
        **CREDENTIALS,  # the AWS_* variables botocore reads, as on a real deployment
        "ARCHIVE_URL": f"s3://{bucket}/marketpipe",
        "ARCHIVE_S3_ENDPOINT_URL": s3.endpoint_url,
        "ARCHIVE_RAW_COMPRESSION": "gzip",
    }
    run_flow("flows.archive_raw:flow", env, "-w", "2")  # two workers share the partitions
    run_flow("flows.archive_parquet:flow", env, "-w", "2")
    fs = s3fs.S3FileSystem(**s3.storage_options())
    root = f"{bucket}/marketpipe"
    assert all(path.endswith(".jsonl.gz") for path in fs.find(f"{root}/raw/"))
    assert_exactly_once(expected_raw(pipeline.raw), archived_raw(fs, root))
    for topic, rows in pipeline.topics.items():
        if rows:
            assert_exactly_once(expected_records(rows), archived_parquet(fs, root, topic))
    trades = ds.dataset(f"{root}/trades", format="parquet", partitioning="hive", filesystem=fs).to_table()
    assert trades.num_rows == len(pipeline.topics["trades"])
    con = duckdb.connect()
    con.register_filesystem(fs)
    (count,) = _one(
        con, "SELECT count(*) FROM read_parquet(?, hive_partitioning = true)", [f"s3://{root}/lob/**/*.parquet"]
    )
    assert count == len(pipeline.topics["lob"])


def test_undecodable_records_are_dead_lettered_with_the_reason_and_the_rest_archived(
    kafka: TansuBroker, tmp_path: Path
) -> None:
    env = flow_env(
        kafka.bootstrap,
        KAFKA_STOP_AT_END="true",
        TOPIC_PARTITIONS="default=1",
        ARCHIVE_URL=str(tmp_path / "archive"),
        ARCHIVE_PARQUET_TOPICS="trades",
    )
    config = settings_for(env)
    ensure_topics(config, ["trades", "dead_letter"])
    trades = records(normalize(envelopes(capture("OKX"))), "trades")
    codec = codec_for("trades")
    values = [codec.encode(t) for t in trades]
    garbage = b"\x00\x00\x00\x00\x07not avro"
    produce(kafka.bootstrap, "trades", [*values[:10], garbage, *values[10:]])
    run_flow("flows.archive_parquet:flow", env)
    (dead,) = read_topic(config, "dead_letter")
    assert dead.value["error_type"] == "schema_violation" and dead.value["payload"] == garbage
    assert (dead.value["source_topic"], dead.value["source_offset"]) == ("trades", 10)
    assert dead.headers["dlq.reason"].decode() == dead.value["reason"] and "trades" in dead.value["reason"]
    layout: Layout = defaultdict(list)
    for offset, trade in [*enumerate(trades[:10]), *enumerate(trades[10:], 11)]:
        layout[(hour(trade["event_timestamp"]), 0)].append((offset, codec.decode(codec.encode(trade))))
    assert_exactly_once(dict(layout), archived_parquet(fsspec.filesystem("file"), str(tmp_path / "archive"), "trades"))


def test_chain_topics_are_archived_when_present_with_uint256_amounts_exact(kafka: TansuBroker, tmp_path: Path) -> None:
    """Two mainnet blocks (2023-05-02) collected from the recorded JSON-RPC node and decoded, then archived."""
    from evm_rpc import RecordedRpcServer

    root = tmp_path / "archive"
    with RecordedRpcServer(tmp_path / "node", head=17173050) as node:
        env = flow_env(
            kafka.bootstrap,
            EVM_RPC_URL=node.url,
            EVM_CONFIRMATIONS="0",
            EVM_START_BLOCK="17173049",
            EVM_END_BLOCK="17173050",
            KAFKA_STOP_AT_END="true",
            ARCHIVE_URL=str(root),
        )
        run_flow("flows.collect_evm:flow", env)
    run_flow("flows.normalize_evm:flow", env)
    config = settings_for(env)
    present = existing_topics(config)
    chain = [t for t in CHAIN_TOPICS if t in present]
    assert {"ethereum_blocks", "ethereum_transactions", "ethereum_logs", "token_transfers", "dex_swaps"} <= set(chain)
    run_flow("flows.archive_parquet:flow", env)
    fs = fsspec.filesystem("file")
    for topic in chain:
        rows = read_topic(config, topic)
        if rows:
            assert_exactly_once(expected_records(rows), archived_parquet(fs, str(root), topic))
    transfers = ds.dataset(root / "token_transfers", format="parquet", partitioning="hive").to_table()
    assert transfers.schema.field("value").type == pa.string()
    values = [int(v) for v in transfers.column("value").to_pylist()]
    assert sorted(values) == sorted(int(r.value["value"]) for r in read_topic(config, "token_transfers"))
    assert max(values) > 2**64  # beyond any integer column but decimal: kept as exact text
