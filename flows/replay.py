"""Replay recorded captures into ``raw``, exactly as the live collector produces them.

    REPLAY_CAPTURES='data/cex/cryptofeed/*.jsonl.zst' python -m bytewax.run flows.replay:flow
    python -m bytewax.run "flows.replay:replay('capture.gz', venue='binance')"

Each capture is read through its venue's framer (the collector's own code), so keys, envelopes and the
per-instrument order are the live ones. One capture file is one input partition: ``-w``/``-i`` spread files
over workers, and recovery resumes a file where it stopped.
"""

from __future__ import annotations

import glob

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.capture import CaptureSource
from connectors.collector.messages import raw_message
from connectors.config import ConfigError, Settings, settings
from connectors.kafka import ensure_topics, kafka_sink
from connectors.logs import configure_logging

__all__ = ["build", "replay"]


def build(config: Settings, paths: list[str], venue: str | None = None) -> Dataflow:
    """A dataflow producing the envelopes of ``paths`` to the raw topic."""
    configure_logging("replay", config.log_level, config.log_format)
    ensure_topics(config, [config.raw_topic])
    flow = Dataflow("replay")
    envelopes = op.input("capture_in", flow, CaptureSource(paths, venue))
    messages = op.map("to_raw_message", envelopes, raw_message)
    op.output("raw_out", messages, kafka_sink(config, config.raw_topic))
    return flow


def replay(capture: str, venue: str | None = None) -> Dataflow:
    """Replay one capture file (``venue`` names the venue of hftbacktest files)."""
    return build(settings(), [capture], venue)


def _configured_paths(config: Settings) -> list[str]:
    if not config.replay_captures:
        raise ConfigError("REPLAY_CAPTURES is not set: give capture files or globs, comma-separated")
    paths: list[str] = []
    for pattern in config.replay_captures.split(","):
        matches = sorted(glob.glob(pattern.strip()))
        if not matches:
            raise ConfigError(f"REPLAY_CAPTURES pattern {pattern.strip()!r} matches no file")
        paths.extend(matches)
    return paths


def __getattr__(name: str) -> Dataflow:
    if name == "flow":
        config = settings()
        return build(config, _configured_paths(config), config.replay_venue)
    raise AttributeError(name)
