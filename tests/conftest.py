"""Pytest fixtures: real servers started by the project's own code (embedded/), stopped after use."""

from __future__ import annotations

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
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """One PostgreSQL for the session; tests create their own databases or tables."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """One moto S3 endpoint for the session; tests create their own buckets."""
    with MotoS3(tmp_path_factory.mktemp("s3")) as server:
        yield server
