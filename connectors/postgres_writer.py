"""Writing rows into one Postgres table, idempotently, and finding the rows the database rejects.

Two write paths produce the same rows and the same conflict handling (``ON CONFLICT DO NOTHING``, or
``DO UPDATE ... WHERE`` the incoming row is at least as recent for latest-state tables):

* ``copy`` (the default, measured faster by ``benchmarks/postgres_loader.py``): COPY the batch, in the binary
  format (`connectors.postgres_copy`), straight into the table; when a key is already there (a replay, an
  at-least-once duplicate) the unique index refuses the COPY, the transaction is rolled back, and the batch goes
  through a session-local staging table instead (``CREATE TEMP TABLE IF NOT EXISTS ... ON COMMIT DELETE ROWS``,
  so it also works through transaction-pooling proxies) and one ``INSERT INTO table SELECT ... FROM staging ON
  CONFLICT ...``. A COPY that succeeds met no existing key, so both give the same rows; batches keep the staging
  route while they meet existing keys, and return to the direct COPY after a batch that met none;
* ``values``: one multi-row ``INSERT ... VALUES ... ON CONFLICT ...`` (psycopg2's ``execute_values``), for
  Postgres-compatible databases without temporary tables.

Each batch is one transaction. When the database rejects a batch for its data (SQLSTATE classes 22 and 23, or
a value the client cannot send), `load` bisects it: halves are retried until every bad row is isolated, and every
other row is committed. Because the writes are idempotent, a batch interrupted by a lost connection is simply
written again.
"""

from __future__ import annotations

import contextlib
import io
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import psycopg2
import psycopg2.errorcodes
import psycopg2.errors
import psycopg2.extras
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from connectors.postgres_copy import BinaryCopyEncoder, CopyValueError
from operators.table_rows import Row, RowEncoder
from schemas.sql import TableKey

__all__ = ["Batch", "Loaded", "Rejection", "TableWriter", "WriteMethod", "failure_kind", "load"]

WriteMethod = Literal["copy", "values"]
FailureKind = Literal["transient", "rejected", "fatal"]

# SQLSTATE classes: 08 connection, 40 rollback (serialization, deadlock), 53 resources, 57 operator
# intervention (shutdown, statement timeout), 58 system error. All of them pass; the batch is written again.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
# 22 data exception (out of range, bad encoding), 23 integrity (NOT NULL, CHECK): the row, not the database.
_REJECTED_CLASSES = ("22", "23")


def failure_kind(exc: BaseException) -> FailureKind:
    """Whether an error from a write is worth waiting out, is a row's fault, or is a bug to surface."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, ValueError):  # e.g. a NUL character psycopg2 will not send, a value with no binary form
        return "rejected"
    if not isinstance(exc, psycopg2.Error):
        return "fatal"
    code = exc.pgcode or ""
    if code[:2] in _REJECTED_CLASSES:
        return "rejected"
    if code[:2] in _TRANSIENT_CLASSES or isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return "transient"
    return "fatal"


def rejection_reason(exc: BaseException) -> str:
    """The database's own words: SQLSTATE, its name, the message and the detail."""
    if isinstance(exc, psycopg2.Error) and exc.pgcode:
        diag = exc.diag
        name = psycopg2.errorcodes.lookup(exc.pgcode).lower()
        detail = f" ({diag.message_detail})" if diag.message_detail else ""
        return f"PostgreSQL rejected the row: {diag.message_primary}{detail} [SQLSTATE {exc.pgcode} {name}]"
    if isinstance(exc, CopyValueError):
        return f"The row has no binary COPY form: {exc}"
    return f"PostgreSQL client rejected the row: {exc}"


class Batch(NamedTuple):
    """Rows ready to write: the latest row per key for upsert tables, and their COPY payload (copy path)."""

    rows: Sequence[Row]
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row the database refused, with its reason."""

    row: Row
    reason: str


@dataclass(frozen=True, slots=True)
class Loaded:
    """What `load` did with a batch: rows written (inserted or updated) and rows refused."""

    written: int
    rejections: list[Rejection]


class TableWriter:
    """The SQL of one table for one write path; `write` runs one batch in one transaction."""

    def __init__(self, encoder: RowEncoder, method: WriteMethod, statement_timeout_s: float = 60.0) -> None:
        dialect = pg.dialect()
        self.encoder = encoder
        self.method = method
        table = encoder.table
        quote = dialect.identifier_preparer.quote
        self.stage = quote(f"{table.name}_stage")
        target = dialect.identifier_preparer.format_table(table)
        columns = ", ".join(quote(name) for name in encoder.columns)
        stage = sa.table(f"{table.name}_stage", *map(sa.column, encoder.columns))
        statement = _insert_select(table, stage, encoder.key)
        insert_select = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        # Both paths share the conflict clause; only the row source differs.
        conflict = insert_select[insert_select.index(" ON CONFLICT ") :]
        # Sent with the first statement of each transaction (no extra round trip): a write stuck behind a lock
        # or a hung server becomes a transient error, waited out and logged, instead of a silent hang.
        timeout = f"SET LOCAL statement_timeout = {max(1, round(statement_timeout_s * 1000))}; "
        create_stage = (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS; "
        )
        # Connections (sessions) known to hold the staging table: it is created once per session, not per batch.
        self._staged: weakref.WeakSet[Any] = weakref.WeakSet()
        self.copy_encoder = BinaryCopyEncoder(table)
        # The COPYs go in one query string with the statements before them: libpq runs those, then starts the
        # COPY, in one round trip.
        copy_stage = f"COPY {self.stage} ({columns}) FROM STDIN WITH (FORMAT binary)"
        self.copy_stage_sql = timeout + copy_stage
        self.create_and_copy_stage_sql = timeout + create_stage + copy_stage
        self.copy_table_sql = f"{timeout}COPY {target} ({columns}) FROM STDIN WITH (FORMAT binary)"
        #: Whether the next batch tries the direct COPY (the last one met no existing key).
        self.direct = True
        self.insert_select_sql = insert_select
        self.insert_values_sql = f"{timeout}INSERT INTO {target} ({columns}) VALUES %s{conflict}"

    def prepare(self, rows: Sequence[Row]) -> Batch:
        """The client-side work of a batch (no database): one row per key, encoded for COPY on the copy path."""
        rows = self.encoder.latest_per_key(rows)
        payload = self.copy_encoder.encode([row.values for row in rows]) if self.method == "copy" else None
        return Batch(rows, payload)

    def write(self, connection: Any, batch: Batch) -> int:
        """Write a prepared batch (at most one batch of rows) and commit; returns the rows inserted or updated."""
        rows, payload = batch
        if payload is not None and self.direct and self._copy_direct(connection, payload):
            return len(rows)
        connection.autocommit = False  # the statements below make one transaction
        try:
            with connection.cursor() as cursor:
                if payload is not None:
                    staged = connection in self._staged
                    copy = self.copy_stage_sql if staged else self.create_and_copy_stage_sql
                    cursor.copy_expert(copy, io.BytesIO(payload), len(payload))
                    cursor.execute(self.insert_select_sql)
                else:
                    psycopg2.extras.execute_values(
                        cursor, self.insert_values_sql, self.encoder.parameters(rows), page_size=len(rows)
                    )
                written: int = cursor.rowcount
            connection.commit()
            if payload is not None:
                self._staged.add(connection)  # only once committed: a rolled-back CREATE left no table
                self.direct = written == len(rows)
        except BaseException:
            _rollback_quietly(connection)
            raise
        return written

    def _copy_direct(self, connection: Any, payload: bytes) -> bool:
        """COPY the batch into the table, committed; False (nothing written) when one of its keys is there already.

        One round trip: in autocommit mode the statement timeout and the COPY go as one query string, which the
        server runs as one implicit transaction, committed when the COPY ends and rolled back if it fails.
        """
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                # One read of the whole payload (psycopg2 reads 8 KB at a time by default): 3-5% faster.
                cursor.copy_expert(self.copy_table_sql, io.BytesIO(payload), len(payload))
        except psycopg2.errors.UniqueViolation:
            self.direct = False
            return False
        return True


def _insert_select(table: sa.Table, source: sa.TableClause, key: TableKey) -> Any:
    names = [column.name for column in source.c]
    statement = pg.insert(table).from_select(names, sa.select(*source.c))
    if not key.latest_by:
        return statement.on_conflict_do_nothing(index_elements=list(key.columns))
    updated = {name: statement.excluded[name] for name in names if name not in key.columns}
    stored = sa.tuple_(*(table.c[name] for name in key.latest_by))
    incoming = sa.tuple_(*(statement.excluded[name] for name in key.latest_by))
    return statement.on_conflict_do_update(index_elements=list(key.columns), set_=updated, where=stored <= incoming)


def _rollback_quietly(connection: Any) -> None:
    with contextlib.suppress(psycopg2.Error):  # the connection is gone; the pool discards it
        connection.rollback()


def load(connection: Any, writer: TableWriter, rows: Sequence[Row] | Batch) -> Loaded:
    """Write ``rows`` (or a batch `TableWriter.prepare` made of them); rows the database rejects are isolated
    by bisection and returned, the rest committed.

    Transient and fatal errors propagate: rows committed before them stay committed, and writing the batch
    again is harmless because every write is idempotent.
    """
    if isinstance(rows, Batch):
        batch: Batch | None = rows
        rows = rows.rows
    else:
        batch = None
    if not rows:
        return Loaded(0, [])
    try:
        return Loaded(writer.write(connection, batch if batch is not None else writer.prepare(rows)), [])
    except Exception as exc:
        if failure_kind(exc) != "rejected":
            raise
        if len(rows) == 1:
            return Loaded(0, [Rejection(rows[0], rejection_reason(exc))])
    middle = len(rows) // 2
    first, second = load(connection, writer, rows[:middle]), load(connection, writer, rows[middle:])
    return Loaded(first.written + second.written, first.rejections + second.rejections)
