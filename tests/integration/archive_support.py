"""Shared by the archive integration tests: the expected archive, computed independently of the code under test,
and the archive read back file by file.

The expected archive: every Kafka record's hour partition from its own fields, and per (directory, partition)
the records in offset order. The archive must hold exactly those, file after file, with file names that match
the offsets of their first and last records.
"""

from __future__ import annotations

import base64
import gzip
import io
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard
from confluent_kafka import Producer

from connectors.archive_store import FileName
from connectors.kafka import TopicRecord
from schemas import CEX_TOPICS
from schemas.arrow import arrow_schema
from tests.support import capture, envelopes

ARCHIVED_TOPICS = (*CEX_TOPICS, "dead_letter")
#: Raw values that are not archivable envelopes: not JSON, a path-escaping exchange, an envelope over 3 lines.
_KRAKEN = orjson.loads(envelopes(capture("KRAKEN"))[3].to_json())
BAD_RAW = [
    b"not json",
    orjson.dumps({**_KRAKEN, "exchange": "../../escape"}),
    orjson.dumps(_KRAKEN, option=orjson.OPT_INDENT_2),
]
#: Their Kafka timestamp (the hour an unarchivable value is filed under): the Kraken frame's receipt time.
BAD_TIMESTAMP_MS = _KRAKEN["receipt_ts"] // 1000
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REQUIRED = ("exchange", "symbol", "venue_symbol", "channel", "kind", "receipt_ts", "frame")

Layout = dict[tuple[str, int], list[tuple[int, Any]]]  # (directory, partition) -> [(offset, what is archived)]
Archived = dict[tuple[str, int], list[tuple[FileName, list[Any]]]]


def hour(timestamp_us: int) -> str:
    return datetime.fromtimestamp(timestamp_us / 1e6, UTC).strftime("year=%Y/month=%m/day=%d/hour=%H")


def raw_directory(value: bytes) -> str:
    """Where a raw value belongs, decided here with plain JSON parsing."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        obj = None
    if (
        isinstance(obj, dict)
        and all(k in obj for k in _REQUIRED)
        and isinstance(obj["exchange"], str)
        and _SAFE.match(obj["exchange"])
        and type(obj["receipt_ts"]) is int
        and b"\n" not in value
    ):
        return f"exchange={obj['exchange']}/{hour(obj['receipt_ts'])}"
    assert value in BAD_RAW, value[:100]
    return "exchange=_invalid/" + hour(BAD_TIMESTAMP_MS * 1000)


def expected_raw(rows: list[TopicRecord]) -> Layout:
    layout: Layout = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r.partition, r.offset)):
        layout[(raw_directory(row.value), row.partition)].append((row.offset, row.value))
    return dict(layout)


def expected_records(rows: list[TopicRecord]) -> Layout:
    layout: Layout = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r.partition, r.offset)):
        layout[(hour(row.value["event_timestamp"]), row.partition)].append((row.offset, row.value))
    return dict(layout)


def decompress(name: str, data: bytes) -> bytes:
    if name.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    return gzip.decompress(data)


def _walk(fs: Any, root: str, topic: str) -> Iterator[tuple[str, FileName, bytes]]:
    base = f"{root}/{topic}/"
    for path in sorted(fs.find(base)):
        name = FileName.parse(path.rsplit("/", 1)[1])
        assert name is not None and name.topic == topic, f"unexpected file {path}"
        yield path[len(base) : path.rindex("/")], name, fs.cat_file(path)


def archived_raw(fs: Any, root: str, topic: str = "raw") -> Archived:
    out: Archived = defaultdict(list)
    for directory, name, data in _walk(fs, root, topic):
        lines = decompress(name.extension, data).split(b"\n")
        assert lines[-1] == b"", "the last line ends with a newline"
        values = [
            base64.b64decode(orjson.loads(line)["value_base64"]) if directory.startswith("exchange=_invalid/") else line
            for line in lines[:-1]
        ]
        out[(directory, name.partition)].append((name, values))
    return _by_first_offset(out)


def archived_parquet(fs: Any, root: str, topic: str) -> Archived:
    out: Archived = defaultdict(list)
    for directory, name, data in _walk(fs, root, topic):
        table = pq.read_table(io.BytesIO(data))
        assert table.schema.equals(arrow_schema(topic), check_metadata=False)
        columns = [pc.cast(c, pa.int64()) if pa.types.is_timestamp(c.type) else c for c in table.columns]
        out[(directory, name.partition)].append((name, pa.Table.from_arrays(columns, table.column_names).to_pylist()))
    return _by_first_offset(out)


def _by_first_offset(out: Archived) -> Archived:
    return {key: sorted(files, key=lambda f: f[0].first) for key, files in out.items()}


def assert_exactly_once(expected: Layout, archived: Archived) -> None:
    """Per (directory, partition): the files, in order, hold exactly the expected records in offset order, and
    each file's name carries the offsets of its first and last record."""
    assert set(archived) == set(expected)
    for key, files in archived.items():
        wanted = expected[key]
        assert [v for _, values in files for v in values] == [v for _, v in wanted], key
        at = 0
        for name, values in files:
            assert (name.first, name.last) == (wanted[at][0], wanted[at + len(values) - 1][0]), (key, name)
            at += len(values)


@dataclass(frozen=True)
class Pipeline:
    env: dict[str, str]
    raw: list[TopicRecord]
    topics: dict[str, list[TopicRecord]]


def produce(bootstrap: str, topic: str, values: list[bytes], timestamp_ms: int = BAD_TIMESTAMP_MS) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, key=b"bad", value=value, timestamp=timestamp_ms)
    producer.flush(10)
