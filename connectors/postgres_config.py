"""Configuration of the Postgres loader (``flows.load_postgres``): the Kafka settings plus the database's.

Field names are the environment variable names in lower case, as in `connectors.config.Settings`, which these
extend; every field is validated at start-up and an invalid one stops the flow with a message naming it.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Self

import sqlalchemy as sa
from pydantic import Field, field_validator, model_validator
from sqlalchemy.engine import URL

from connectors.config import ConfigError, Settings, load_settings
from connectors.postgres_writer import WriteMethod
from schemas.sql import TABLE_KEYS

__all__ = ["MAX_BATCH_ROWS", "PostgresLoaderSettings", "loader_settings"]

#: Rows per insert statement, at most (the project's contract with the database's operators).
MAX_BATCH_ROWS = 1000
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


class PostgresLoaderSettings(Settings):
    """Settings of ``flows.load_postgres`` (environment variables, case-insensitive)."""

    database_url: str | None = Field(
        None,
        description="Target database, postgresql://user:password@host:port/database (psycopg2 driver); required.",
    )
    postgres_batch_size: int = Field(
        MAX_BATCH_ROWS, ge=1, le=MAX_BATCH_ROWS, description="Rows per insert statement (1..1000)."
    )
    postgres_write_method: WriteMethod = Field(
        "copy",
        description="copy: binary COPY into the table, or into a temporary staging table + INSERT ... SELECT ... ON "
        "CONFLICT when a batch meets stored keys (fastest); values: multi-row INSERT ... VALUES ... ON CONFLICT, "
        "for Postgres-compatible databases without temp tables.",
    )
    postgres_retry_min_s: float = Field(
        0.5, gt=0, le=60, description="First wait before retrying a write the database could not take."
    )
    postgres_retry_max_s: float = Field(
        30.0, gt=0, le=3600, description="Longest wait between retries (the wait doubles up to it)."
    )
    postgres_schema: str | None = Field(
        None, description="Postgres schema of the tables (created if missing); unset = the connection's default."
    )
    postgres_table_prefix: str = Field("", description="Prefix of every table name, e.g. md_ -> md_trades.")
    postgres_topics: str | None = Field(
        None,
        description="Comma-separated topics to load; unset = every standardized topic and dead_letter, plus the "
        "chain topics that exist.",
    )
    postgres_statement_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest a batch may take (lock waits included) before it counts as failed and is retried.",
    )

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            url = sa.make_url(value)
        except sa.exc.ArgumentError:
            raise ValueError("DATABASE_URL is not a URL: expected postgresql://user:password@host:port/db") from None
        backend, _, driver = url.drivername.partition("+")
        if backend not in ("postgresql", "postgres"):
            raise ValueError(f"DATABASE_URL scheme {url.drivername!r} is not postgresql://")
        if driver not in ("", "psycopg2"):
            raise ValueError(f"DATABASE_URL driver {driver!r}: the loader uses psycopg2 (postgresql://)")
        return value

    @field_validator("postgres_schema")
    @classmethod
    def _schema(cls, value: str | None) -> str | None:
        if value and not _IDENTIFIER.match(value):
            raise ValueError(f"POSTGRES_SCHEMA {value!r} must be a lower-case identifier ([a-z_][a-z0-9_]*)")
        return value or None

    @field_validator("postgres_table_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and (not _IDENTIFIER.match(value) or len(value) > 20):
            raise ValueError(f"POSTGRES_TABLE_PREFIX {value!r} must be a lower-case identifier of at most 20 chars")
        return value

    @field_validator("postgres_topics")
    @classmethod
    def _topics(cls, value: str | None) -> str | None:
        if not value:
            return None
        topics = [topic.strip() for topic in value.split(",") if topic.strip()]
        if not topics:
            raise ValueError("POSTGRES_TOPICS lists no topic")
        return ",".join(topics)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.postgres_retry_max_s < self.postgres_retry_min_s:
            raise ValueError("POSTGRES_RETRY_MAX_S must be at least POSTGRES_RETRY_MIN_S")
        unknown = [topic for topic in self.selected_topics or () if self.schema_of(topic) not in TABLE_KEYS]
        if unknown:
            raise ValueError(f"POSTGRES_TOPICS: no table for {', '.join(unknown)} (known: {', '.join(TABLE_KEYS)})")
        return self

    @property
    def selected_topics(self) -> list[str] | None:
        return self.postgres_topics.split(",") if self.postgres_topics else None

    def schema_of(self, topic: str) -> str:
        """The schema (and unprefixed table) name of a topic: the topic, except the renamed dead-letter topic."""
        return "dead_letter" if topic == self.dead_letter_topic else topic

    def table_name(self, topic: str) -> str:
        return f"{self.postgres_table_prefix}{self.schema_of(topic)}"

    def engine_url(self) -> URL:
        """The psycopg2 URL of DATABASE_URL; raises ConfigError when it is not set."""
        if not self.database_url:
            raise ConfigError(
                "DATABASE_URL is not set: load_postgres needs postgresql://user:password@host:port/database"
            )
        return sa.make_url(self.database_url).set(drivername="postgresql+psycopg2")


@cache
def loader_settings() -> PostgresLoaderSettings:
    """The process's loader settings; raises ConfigError listing every invalid variable."""
    return load_settings(PostgresLoaderSettings, "Postgres loader configuration")
