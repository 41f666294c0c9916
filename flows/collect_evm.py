"""Collect Ethereum: follow a JSON-RPC endpoint's chain into ``ethereum_blocks``, ``ethereum_transactions`` and
``ethereum_logs``.

    python -m bytewax.recovery /var/lib/marketpipe/collect_evm 1          # once
    export EVM_RPC_URL=http://node:8545
    python -m bytewax.run flows.collect_evm:flow -r /var/lib/marketpipe/collect_evm -s 5 -b 0

Blocks are collected once they are ``EVM_CONFIRMATIONS`` deep; a reorg re-sends the replaced blocks' records with
``removed=true`` before the new branch's (see ``connectors.evm.chain_source``). Keys: blocks by number, transactions
by hash, logs by contract address. Records that do not fit their schema go to ``dead_letter``. With recovery, a
restart continues after the last block in the snapshot; blocks completed after it are produced again (at-least-once,
identical but for ``receipt_timestamp``).
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.avro_sink import AvroKafkaSink
from connectors.config import Settings, settings
from connectors.evm.chain_source import ChainSource
from connectors.evm.settings import EvmSettings, evm_settings
from connectors.kafka import ensure_topics
from connectors.logs import configure_logging
from operators.evm.chain_records import FLOW

__all__ = ["CHAIN_RECORD_TOPICS", "build"]

CHAIN_RECORD_TOPICS = ("ethereum_blocks", "ethereum_transactions", "ethereum_logs")


def build(config: Settings, evm: EvmSettings) -> Dataflow:
    """The collector dataflow; creates the topics it writes if they are missing."""
    configure_logging(FLOW, config.log_level, config.log_format)
    ensure_topics(config, [*CHAIN_RECORD_TOPICS, config.dead_letter_topic])
    flow = Dataflow(FLOW)
    records = op.input("chain_in", flow, ChainSource(evm))
    op.output("kafka_out", records, AvroKafkaSink(config, FLOW))
    return flow


def __getattr__(name: str) -> Dataflow:
    # ``flows.collect_evm:flow`` is built on first access, so importing the module needs no Kafka.
    if name == "flow":
        return build(settings(), evm_settings())
    raise AttributeError(name)
