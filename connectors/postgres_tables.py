"""The loader at start-up: which topics it loads, its engine, and one table per topic created or evolved.

Tables are created if missing (``CREATE TABLE`` from `schemas.sql.build_table`, with keys, CHECK constraints,
the lookup index and the Avro docs as column comments) under an advisory lock, so several processes starting
together do not race. An existing table evolves with its schema the way Avro readers do: a field the schema
gained becomes a new nullable column, and a column whose field the schema dropped stops being NOT NULL. A type
that changed is reported and left alone (that needs a migration a person decides on).
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import AddConstraint, CreateSchema

from connectors.kafka import ensure_topics, existing_topics
from connectors.postgres_config import PostgresLoaderSettings
from schemas import CEX_TOPICS, CHAIN_TOPICS
from schemas.sql import build_table

__all__ = ["create_engine", "define_tables", "loader_topics", "prepare_tables"]

log = logging.getLogger(__name__)

#: Key of the advisory lock held while tables are created or evolved.
_DDL_LOCK = zlib.crc32(b"marketpipe.load_postgres.ddl")


def loader_topics(config: PostgresLoaderSettings) -> list[str]:
    """POSTGRES_TOPICS, or every standardized topic and dead_letter plus the chain topics that exist.

    Missing topics are created (so the loader may start before the flows that write them); chain topics are
    only loaded when present, because only deployments that collect a chain have them.
    """
    topics = config.selected_topics
    if topics is None:
        present = existing_topics(config)
        topics = [*CEX_TOPICS, config.dead_letter_topic, *(topic for topic in CHAIN_TOPICS if topic in present)]
    ensure_topics(config, topics)
    return topics


def create_engine(config: PostgresLoaderSettings) -> sa.Engine:
    """A pooled engine: one connection per worker, which the loader keeps from batch to batch and gives up
    after a transient error.

    pool_pre_ping checks a connection when it is taken from the pool, replacing those to a restarted server; TCP
    keepalives make a vanished server (not only a refused connection) an error within about a minute.
    """
    return sa.create_engine(
        config.engine_url(),
        pool_pre_ping=True,
        pool_size=1,  # a worker writes one batch at a time
        max_overflow=0,
        connect_args={
            "connect_timeout": 10,
            "application_name": "marketpipe-load_postgres",
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )


def define_tables(config: PostgresLoaderSettings, topics: list[str]) -> dict[str, sa.Table]:
    """Topic -> table, from the Avro schemas (no database access)."""
    metadata = sa.MetaData(schema=config.postgres_schema)
    return {topic: build_table(config.schema_of(topic), metadata, config.table_name(topic)) for topic in topics}


def prepare_tables(engine: sa.Engine, tables: dict[str, sa.Table]) -> None:
    """Create missing tables and evolve existing ones, in one transaction under an advisory lock."""
    with engine.begin() as conn:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_DDL_LOCK)))
        schemas = {table.schema for table in tables.values() if table.schema}
        for schema in sorted(schemas):
            conn.execute(CreateSchema(schema, if_not_exists=True))
        inspector = sa.inspect(conn)
        for table in tables.values():
            if inspector.has_table(table.name, schema=table.schema):
                _evolve(conn, inspector, table)
            else:
                table.create(conn)
                log.info("created table %s", table.fullname)


def _evolve(conn: sa.Connection, inspector: Any, table: sa.Table) -> None:
    existing = {column["name"]: column for column in inspector.get_columns(table.name, schema=table.schema)}
    preparer = conn.dialect.identifier_preparer
    target = preparer.format_table(table)
    for column in table.columns:
        if column.name in existing:
            stored = existing[column.name]["type"].compile(conn.dialect)
            wanted = column.type.compile(conn.dialect)
            if stored != wanted:
                log.warning("table %s column %s is %s, the schema says %s", table.fullname, column.name, stored, wanted)
            continue
        ddl = f"ALTER TABLE {target} ADD COLUMN {preparer.quote(column.name)} {column.type.compile(conn.dialect)}"
        conn.execute(sa.text(ddl))
        log.warning("table %s: added column %s (new schema field)", table.fullname, column.name)
        for constraint in table.constraints:
            if isinstance(constraint, sa.CheckConstraint) and constraint.info.get("column") == column.name:
                conn.execute(AddConstraint(constraint))
    for name, column in existing.items():
        if name not in table.columns and not column["nullable"]:
            conn.execute(sa.text(f"ALTER TABLE {target} ALTER COLUMN {preparer.quote(name)} DROP NOT NULL"))
            log.warning("table %s: column %s is no longer in the schema; it accepts NULL now", table.fullname, name)
