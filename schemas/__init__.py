"""Avro schemas: one ``.avsc`` per topic, the single source of truth for every sink's columns.

`load_schema` returns the JSON schema of a topic, `parsed_schema` the fastavro-parsed form.
Topic names equal the schema file names (``schemas/avro/<topic>.avsc``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

__all__ = [
    "CEX_TOPICS",
    "CHAIN_TOPICS",
    "DEAD_LETTER",
    "SCHEMA_DIR",
    "STANDARD_TOPICS",
    "load_schema",
    "parsed_schema",
    "topic_names",
]

SCHEMA_DIR = Path(__file__).parent / "avro"

#: Standardized exchange topics written by ``flows.normalize_cex``.
CEX_TOPICS = ("trades", "lob", "ticker", "candles", "funding", "open_interest", "liquidations")
#: On-chain topics written by ``flows.collect_evm`` and ``flows.normalize_evm``.
CHAIN_TOPICS = (
    "ethereum_blocks",
    "ethereum_transactions",
    "ethereum_logs",
    "token_transfers",
    "dex_swaps",
    "dex_liquidity",
)
DEAD_LETTER = "dead_letter"
#: Every Avro topic of the pipeline.
STANDARD_TOPICS = (*CEX_TOPICS, *CHAIN_TOPICS, DEAD_LETTER)


def topic_names() -> list[str]:
    """Names of all topics that have a schema file."""
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc"))


@cache
def load_schema(topic: str) -> dict[str, Any]:
    """The Avro schema of ``topic`` as a JSON object; raises KeyError for an unknown topic."""
    path = SCHEMA_DIR / f"{topic}.avsc"
    if not path.exists():
        raise KeyError(f"no Avro schema for topic {topic!r} (known: {', '.join(topic_names())})")
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


@cache
def parsed_schema(topic: str) -> Any:
    """The fastavro-parsed schema of ``topic``."""
    return fastavro.parse_schema(load_schema(topic))
