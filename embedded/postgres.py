"""An embedded PostgreSQL 16, from the binaries of the ``pgserver`` wheel.

pgserver's own launcher listens on a Unix socket only and keeps stop/start to itself; this runs the same
bundled ``postgres`` directly on 127.0.0.1 so any client can reach it by URL, and so tests can stop it
(``stop``), crash it (``kill``) and bring it back (``start``) on the same port and data directory. As root,
PostgreSQL runs as the unprivileged ``pgserver`` user, as pgserver itself does.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg2
from pgserver import _commands as pg_commands

from embedded.process import ManagedProcess, free_port, wait_until

__all__ = ["EmbeddedPostgres"]

_SYSTEM_USER = "pgserver"


class EmbeddedPostgres:
    """PostgreSQL on ``127.0.0.1:port`` with trust auth for user ``postgres``; ``url`` is a SQLAlchemy URL."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.pgdata = workdir / "pgdata"
        self.port = port or free_port()
        self.user = _SYSTEM_USER if os.geteuid() == 0 else None
        self.process: ManagedProcess | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(self.user)
            ensure_prefix_permissions(pg_commands.POSTGRES_BIN_PATH)
            ensure_prefix_permissions(self.workdir)
            self.workdir.chmod(0o777)
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        pg_commands.initdb(  # type: ignore[attr-defined]  # generated at import time
            ["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=self.pgdata, user=self.user
        )

    def _ready(self) -> bool:
        assert self.process is not None
        self.process.check_alive()
        with psycopg2.connect(self.dsn, connect_timeout=1) as conn, conn.cursor() as cur:
            cur.execute("select 1")
        return True

    def start(self, timeout: float = 60.0) -> Self:
        """Start (or restart) the server on the same port and data directory."""
        self._prepare()
        self.process = ManagedProcess(
            "postgres",
            [
                str(pg_commands.POSTGRES_BIN_PATH / "postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.pgdata),
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            self.workdir / "postgres.log",
            user=self.user,
        ).start()
        wait_until(self._ready, timeout, f"PostgreSQL on 127.0.0.1:{self.port}", interval=0.1)
        return self

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected, data is kept."""
        if self.process is not None:
            self.process.stop(timeout=20.0, sig=signal.SIGINT)
            self.process = None

    def kill(self) -> None:
        """Crash the server (SIGKILL); a later ``start`` recovers from the write-ahead log."""
        if self.process is not None:
            self.process.kill()
            self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
