"""Fixtures shared by several integration modules (the servers themselves are in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.kafka import existing_topics, read_topic
from embedded.kafka import TansuBroker
from tests.harness import flow_env, run_flow, settings_for
from tests.integration.archive_support import ARCHIVED_TOPICS, BAD_RAW, Pipeline, produce
from tests.support import CRYPTOFEED


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Every cryptofeed capture replayed into raw (plus three unarchivable values) and normalized."""
    workdir = tmp_path_factory.mktemp("archive-pipeline")
    with TansuBroker(workdir / "kafka") as broker:
        env = flow_env(broker.bootstrap, KAFKA_STOP_AT_END="true", REPLAY_CAPTURES=str(CRYPTOFEED / "*.jsonl.zst"))
        run_flow("flows.replay:flow", env, "-w", "2")
        produce(broker.bootstrap, "raw", BAD_RAW)
        run_flow("flows.normalize_cex:flow", env)
        config = settings_for(env)
        present = existing_topics(config)
        topics = {t: read_topic(config, t) for t in ARCHIVED_TOPICS if t in present}
        yield Pipeline(env, read_topic(config, "raw", decode=False), topics)


@pytest.fixture(scope="session")
def local_archive(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both archive flows run once into a local directory (the default kind of ARCHIVE_URL)."""
    root = tmp_path_factory.mktemp("archive")
    env = {**pipeline.env, "ARCHIVE_URL": str(root)}
    run_flow("flows.archive_raw:flow", env)
    run_flow("flows.archive_parquet:flow", env)
    return root
