"""The two places users query history agree: count and VWAP per instrument and hour over the Parquet archive
(DuckDB, hive partitions) equal the same query over the Postgres tables the loader filled from the same topics."""

from __future__ import annotations

from pathlib import Path

import duckdb
import psycopg2
import pytest

from embedded.postgres import EmbeddedPostgres
from tests.harness import run_flow
from tests.integration.archive_support import Pipeline
from tests.integration.load_postgres_support import LOADER, create_database

pytestmark = pytest.mark.integration

Row = tuple[str, str, str, int, float]  # exchange, symbol, hour (ISO, UTC), trades, VWAP

PARQUET_QUERY = """
    SELECT exchange, symbol, strftime(date_trunc('hour', event_timestamp), '%Y-%m-%dT%H') AS hour,
           count(*), sum(price * size) / sum(size)
    FROM read_parquet(?, hive_partitioning = true)
    GROUP BY ALL ORDER BY ALL
"""
POSTGRES_QUERY = """
    SELECT exchange, symbol, to_char(date_trunc('hour', event_timestamp), 'YYYY-MM-DD"T"HH24') AS hour,
           count(*), sum(price * size) / sum(size)
    FROM trades
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""


def test_count_and_vwap_per_instrument_hour_agree_between_parquet_and_postgres(
    pipeline: Pipeline, local_archive: Path, postgres: EmbeddedPostgres
) -> None:
    dsn = create_database(postgres, "archive_cross_check")
    run_flow(LOADER, {**pipeline.env, "DATABASE_URL": dsn})

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    from_parquet: list[Row] = con.execute(PARQUET_QUERY, [f"{local_archive}/trades/**/*.parquet"]).fetchall()
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(POSTGRES_QUERY)
            from_postgres: list[Row] = cur.fetchall()
    finally:
        conn.close()

    assert len(from_parquet) > 10 and len({(e, s) for e, s, *_ in from_parquet}) > 5
    assert sum(row[3] for row in from_parquet) == len(pipeline.topics["trades"])
    assert [row[:4] for row in from_postgres] == [row[:4] for row in from_parquet]
    for pg_row, pq_row in zip(from_postgres, from_parquet, strict=True):
        assert pg_row[4] == pytest.approx(pq_row[4], rel=1e-12), pg_row[:3]
