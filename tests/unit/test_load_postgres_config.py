"""The loader's settings (clear errors at start-up) and its waiting out of an unreachable database."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg2
import pytest

from connectors.config import ConfigError
from connectors.postgres_config import PostgresLoaderSettings, loader_settings
from connectors.postgres_retry import Backoff, retry_transient
from embedded.process import free_port


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in PostgresLoaderSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    loader_settings.cache_clear()
    yield monkeypatch
    loader_settings.cache_clear()


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("POSTGRES_BATCH_SIZE", "1001", "POSTGRES_BATCH_SIZE"),
        ("POSTGRES_BATCH_SIZE", "0", "POSTGRES_BATCH_SIZE"),
        ("DATABASE_URL", "mysql://user@db/market", "is not postgresql://"),
        ("DATABASE_URL", "postgresql+asyncpg://user@db/market", "psycopg2"),
        ("DATABASE_URL", "db.example.com:5432", "DATABASE_URL"),
        ("POSTGRES_RETRY_MAX_S", "0.1", "POSTGRES_RETRY_MAX_S must be at least POSTGRES_RETRY_MIN_S"),
        ("POSTGRES_TOPICS", "trades,orders", "no table for orders"),
        ("POSTGRES_SCHEMA", "Market Data", "POSTGRES_SCHEMA"),
        ("POSTGRES_TABLE_PREFIX", "md-", "POSTGRES_TABLE_PREFIX"),
        ("POSTGRES_WRITE_METHOD", "bulk", "POSTGRES_WRITE_METHOD"),
    ],
)
def test_an_invalid_setting_stops_the_flow_with_a_message_naming_it(
    environment: pytest.MonkeyPatch, variable: str, value: str, complaint: str
) -> None:
    environment.setenv(variable, value)
    with pytest.raises(ConfigError, match=complaint):
        loader_settings()


def test_a_missing_database_url_is_a_clear_error_before_kafka_is_touched(environment: pytest.MonkeyPatch) -> None:
    from flows.load_postgres import build

    environment.setenv("KAFKA_BROKERS", f"127.0.0.1:{free_port()}")  # nothing listens: touching Kafka would hang
    config = loader_settings()
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        build(config)


def test_database_urls_are_read_as_psycopg2_urls_and_tables_are_named_by_prefix(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("DATABASE_URL", "postgres://loader:secret@db.internal:6432/market?sslmode=require")
    environment.setenv("POSTGRES_TABLE_PREFIX", "md_")
    environment.setenv("DEAD_LETTER_TOPIC", "dlq")
    config = loader_settings()
    url = config.engine_url()
    assert (url.drivername, url.host, url.port, url.database) == ("postgresql+psycopg2", "db.internal", 6432, "market")
    assert url.query == {"sslmode": "require"}
    assert (config.table_name("trades"), config.table_name("dlq")) == ("md_trades", "md_dead_letter")
    assert config.postgres_batch_size == 1000


def _refused_connection(port: int) -> None:
    psycopg2.connect(host="127.0.0.1", port=port, user="postgres", connect_timeout=2)


def test_an_unreachable_database_is_waited_out_with_one_log_line_and_growing_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there: every attempt is a real "connection refused"
    attempts: list[int] = []
    waits: list[float] = []

    def write() -> str:
        attempts.append(1)
        if len(attempts) <= 6:
            _refused_connection(port)
        return "landed"

    backoff = Backoff(0.5, 4.0)
    with caplog.at_level(logging.INFO, logger="connectors.postgres_retry"):
        assert retry_transient(write, backoff, "1000 rows for table trades", "test", sleep=waits.append) == "landed"
    assert len(attempts) == 7
    nominal = [min(4.0, 0.5 * 2**n) for n in range(6)]
    assert all(n / 2 <= w <= n for w, n in zip(waits, nominal, strict=True)), waits
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "PostgreSQL unavailable (OperationalError" in messages[0] and "1000 rows for table trades" in messages[0]
    assert "available again" in messages[1] and "6 retries" in messages[1]


def test_errors_that_waiting_cannot_fix_propagate_at_once() -> None:
    waits: list[float] = []

    def broken() -> None:
        raise RuntimeError("a bug, not an outage")

    with pytest.raises(RuntimeError, match="a bug"):
        retry_transient(broken, Backoff(0.5, 4.0), "rows", "test", sleep=waits.append)
    assert waits == []
