"""Pytest fixtures: real servers started by the project's own code (embedded/), stopped after use."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedded.kafka import TansuBroker
from embedded.postgres import EmbeddedPostgres
from embedded.s3 import MotoS3


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[TansuBroker]:
    """A fresh in-memory Tansu broker per test (it starts in milliseconds)."""
    with TansuBroker(tmp_path / "kafka") as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """One PostgreSQL for the session; tests create their own databases or tables.

    Its data directory lives outside pytest's base directory: PostgreSQL runs as an unprivileged user, and another
    pytest session resets that base directory to mode 0700 under a running server.
    """
    workdir = Path(tempfile.mkdtemp(prefix="marketpipe-postgres-"))
    server = EmbeddedPostgres(workdir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """One moto S3 endpoint for the session; tests create their own buckets."""
    with MotoS3(tmp_path_factory.mktemp("s3")) as server:
        yield server
