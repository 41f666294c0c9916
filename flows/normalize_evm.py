"""Decode Ethereum logs: ``ethereum_logs`` -> ``token_transfers``, ``dex_swaps``, ``dex_liquidity``.

    python -m bytewax.run flows.normalize_evm:flow -r RECOVERY_DIR -s 5 -b 30
    python -m bytewax.run "flows.normalize_evm:offline('LOGS.json', 'OUT.jsonl')"

The Kafka flow reads ``ethereum_logs`` (keyed by contract address) and writes the decoded records keyed by token or
pool address; logs it cannot decode go to ``dead_letter`` with the reason (see ``operators.evm.normalize``). Token
decimals and pool tokens come from ``EVM_METADATA_RPC_URL`` (eth_call, cached) when set. Offline mode decodes a
JSON Lines file of logs in ethereum-etl's export shape and writes one ``{"topic", "key", "value"}`` object per
record, big integers as decimal strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeGuard, cast

import bytewax.operators as op
import orjson
from bytewax.connectors.files import FileSink, FileSource
from bytewax.dataflow import Dataflow, Stream

from connectors.avro_sink import AvroKafkaSink
from connectors.config import Settings, settings
from connectors.evm.settings import EvmSettings, evm_settings
from connectors.evm.token_metadata import token_metadata
from connectors.kafka import AvroDecoder, SourceRecord, ensure_topics, raw_source
from connectors.logs import configure_logging
from operators.dead_letter import SourceRef
from operators.evm.chain_records import KeyedOutput
from operators.evm.etl_logs import export_log_item
from operators.evm.normalize import FLOW, LogItem, LogNormalizer
from operators.records import Output

__all__ = ["DECODED_TOPICS", "build", "offline"]

LOGS_TOPIC = "ethereum_logs"
DECODED_TOPICS = ("token_transfers", "dex_swaps", "dex_liquidity")


def _log_item(decoded: SourceRecord | Output) -> LogItem | KeyedOutput:
    if isinstance(decoded, SourceRecord):
        key = decoded.key.encode() if decoded.key is not None else None
        return decoded.value, SourceRef(decoded.topic, decoded.partition, decoded.offset, key)
    key_bytes = decoded[1]["key"]
    return (key_bytes.decode("utf-8", "replace") if key_bytes else ""), decoded


def _is_log(item: LogItem | KeyedOutput) -> TypeGuard[LogItem]:
    return isinstance(item[1], SourceRef)


def _rejected(falses: Stream[LogItem | KeyedOutput]) -> Stream[KeyedOutput]:
    return cast(Stream[KeyedOutput], falses)  # `_is_log` is False exactly for keyed dead letters


def build(config: Settings, evm: EvmSettings) -> Dataflow:
    """The Kafka dataflow; creates the topics it uses if they are missing."""
    configure_logging(FLOW, config.log_level, config.log_format)
    ensure_topics(config, [LOGS_TOPIC, *DECODED_TOPICS, config.dead_letter_topic])
    flow = Dataflow(FLOW)
    messages = op.input("logs_in", flow, raw_source(config, [LOGS_TOPIC]))
    decoded = op.map("avro_decode", messages, AvroDecoder(config, FLOW))
    items = op.map("log_items", decoded, _log_item)
    split = op.branch("split_unreadable", items, _is_log)
    normalized = op.flat_map_batch("normalize", split.trues, LogNormalizer(token_metadata(evm)))
    outputs = op.merge("all_outputs", normalized, _rejected(split.falses))
    op.output("kafka_out", outputs, AvroKafkaSink(config, FLOW))
    return flow


def _json_default(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")  # Avro's JSON encoding of bytes: one code point per byte
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _to_json_line(key_output: KeyedOutput) -> tuple[str, str]:
    key, (topic, record) = key_output
    return key, orjson.dumps({"topic": topic, "key": key, "value": record}, default=_json_default).decode()


def offline(logs_path: str, out_path: str) -> Dataflow:
    """The same decoding over an ethereum-etl logs export (JSON Lines), writing JSON Lines to ``out_path``."""
    evm = evm_settings()
    source = SourceRef(topic=f"file:{Path(logs_path).name}")

    def parse(line: str) -> LogItem | KeyedOutput | None:
        return export_log_item(line, source, evm.evm_chain)

    flow = Dataflow(f"{FLOW}_offline")
    lines = op.input("logs_in", flow, FileSource(logs_path))
    items: Stream[LogItem | KeyedOutput] = op.filter_map("parse_export", lines, parse)
    split = op.branch("split_unreadable", items, _is_log)
    normalized = op.flat_map_batch("normalize", split.trues, LogNormalizer(token_metadata(evm)))
    outputs = op.merge("all_outputs", normalized, _rejected(split.falses))
    json_lines = op.map("to_json_line", outputs, _to_json_line)
    op.output("jsonl_out", json_lines, FileSink(Path(out_path)))
    return flow


def __getattr__(name: str) -> Dataflow:
    # ``flows.normalize_evm:flow`` is built on first access, so importing the module needs no Kafka.
    if name == "flow":
        return build(settings(), evm_settings())
    raise AttributeError(name)
