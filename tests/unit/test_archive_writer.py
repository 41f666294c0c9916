"""The archive writer (connectors.archive) on real records and a real directory: rotation, late data, open-file
bound, and exactly-once across crashes at arbitrary points."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.archive import (
    ArchiveItem,
    ArchiveLogic,
    PerWorker,
    Rejected,
    RotationLimits,
    archive_logic_builder,
)
from connectors.archive_formats import FileFormat, JsonLinesFormat, ParquetFormat
from connectors.archive_placement import hour_directory
from connectors.archive_store import ArchiveStore, FileName
from schemas.arrow import arrow_schema
from tests.support import HFTBACKTEST, capture, envelopes, normalize, records

import zstandard  # isort: skip

TOPIC = "trades"
START = datetime(2026, 11, 23, 12, tzinfo=UTC)
NO_LIMIT = 1 << 40


class Clock:
    """The writer's wall clock, moved by the test (no sleeping, no thresholds on real time)."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _hft_trades() -> list[dict[str, Any]]:
    return records(normalize(envelopes(HFTBACKTEST, venue="binance")), "trades")


def _items(rows: Iterable[dict[str, Any]], partition: int = 0, first_offset: int = 0) -> list[ArchiveItem]:
    """Records as they would come off partition ``partition``: offsets in order, placed by event hour.

    The payload is a JSON line led by the offset, so every archived line names the record it came from.
    """
    out = []
    for offset, row in enumerate(rows, first_offset):
        line = orjson.dumps({"offset": offset, **row})
        out.append(ArchiveItem(TOPIC, partition, offset, hour_directory(row["event_timestamp"]), line, len(line)))
    return out


def _batch(items: Sequence[ArchiveItem]) -> list[ArchiveItem | Rejected]:
    return list(items)


def _store(tmp_path: Path) -> ArchiveStore:
    return ArchiveStore.open(str(tmp_path / "archive"))


def _jsonl(topic: str) -> FileFormat:
    return JsonLinesFormat("zstd")


def _logic(store: ArchiveStore, limits: RotationLimits, clock: Clock, workers: PerWorker | None = None) -> ArchiveLogic:
    return archive_logic_builder(store, _jsonl, limits, workers or PerWorker(64, None), clock)(None)


def _archived(store: ArchiveStore) -> dict[str, list[tuple[FileName, list[dict[str, Any]]]]]:
    """Directory -> [(file name, its lines decoded)] by first offset, read straight from the directory."""
    root = Path(store.root)
    out: dict[str, list[tuple[FileName, list[dict[str, Any]]]]] = defaultdict(list)
    for path in sorted(root.glob(f"{TOPIC}/**/*.jsonl.zst")):
        name = FileName.parse(path.name)
        assert name is not None, path
        text = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes())).read()
        out[str(path.parent.relative_to(root / TOPIC))].append((name, [orjson.loads(x) for x in text.splitlines()]))
    for files in out.values():
        files.sort(key=lambda f: f[0].first)
    assert not list(root.rglob("*.tmp")), "a temporary file was left behind"
    return dict(out)


def _assert_exactly(store: ArchiveStore, items: list[ArchiveItem]) -> dict[str, list[tuple[FileName, list[Any]]]]:
    """Each directory's files, in order, hold exactly its records in offset order; names match contents."""
    archived = _archived(store)
    expected: dict[str, list[int]] = defaultdict(list)
    for item in items:
        expected[item.directory].append(item.offset)
    assert set(archived) == set(expected)
    for directory, files in archived.items():
        assert [line["offset"] for _, lines in files for line in lines] == expected[directory], directory
        for name, lines in files:
            assert (name.first, name.last) == (lines[0]["offset"], lines[-1]["offset"])
    return archived


def test_rows_limit_cuts_files_of_exactly_that_many_records(tmp_path: Path) -> None:
    items = _items(_hft_trades())
    store = _store(tmp_path)
    logic = _logic(store, RotationLimits(1000, NO_LIMIT, 3600), Clock())
    published, _ = logic.on_batch(_batch(items))
    assert [p.records for p in published] == [1000] * 9  # 9,738 trades in hour 23, 19 in hour 00: both open
    logic.on_eof()
    archived = _assert_exactly(store, items)
    assert [len(lines) for _, lines in archived["year=2024/month=08/day=08/hour=23"]] == [1000] * 9 + [738]
    assert [len(lines) for _, lines in archived["year=2024/month=08/day=09/hour=00"]] == [19]


def test_bytes_limit_closes_a_file_with_the_record_that_reaches_it(tmp_path: Path) -> None:
    items = _items(_hft_trades()[:3000])
    limit = 100_000
    store = _store(tmp_path)
    logic = _logic(store, RotationLimits(NO_LIMIT, limit, 3600), Clock())
    logic.on_batch(_batch(items))
    logic.on_eof()
    size = {item.offset: item.size for item in items}
    files = _assert_exactly(store, items)["year=2024/month=08/day=08/hour=23"]
    assert len(files) > 3
    for _, lines in files[:-1]:
        sizes = [size[line["offset"]] for line in lines]
        assert sum(sizes) >= limit > sum(sizes[:-1])
    assert sum(size[line["offset"]] for line in files[-1][1]) < limit


def test_a_quiet_partition_gets_its_file_closed_on_time_and_its_progress_checkpointed(tmp_path: Path) -> None:
    items = _items(_hft_trades()[:10])
    clock = Clock()
    store = _store(tmp_path)
    logic = _logic(store, RotationLimits(NO_LIMIT, NO_LIMIT, 60), clock)
    assert logic.on_batch(_batch(items))[0] == []
    assert logic.notify_at() == START + timedelta(seconds=60)
    clock.advance(59)
    assert logic.on_notify()[0] == []
    assert store.read_checkpoint(TOPIC, 0) is None
    clock.advance(1)
    published, _ = logic.on_notify()
    assert [(p.records, p.first_offset, p.last_offset) for p in published] == [(10, 0, 9)]
    assert logic.notify_at() is None
    assert store.read_checkpoint(TOPIC, 0) == 10
    _assert_exactly(store, items)


def test_late_records_go_to_a_new_file_of_their_hour_and_are_batched_there(tmp_path: Path) -> None:
    """Hour 23's file is closed on time; hour-23 trades arriving after that (behind hour 00's) all land in one
    new hour-23 file, named after the first late offset, under the same rotation rules."""
    trades = _hft_trades()
    hour_23 = [t for t in trades if hour_directory(t["event_timestamp"]).endswith("hour=23")]
    hour_00 = [t for t in trades if hour_directory(t["event_timestamp"]).endswith("hour=00")]
    items = _items([*hour_23[:1000], *hour_00, *hour_23[1000:]])
    clock = Clock()
    store = _store(tmp_path)
    logic = _logic(store, RotationLimits(20_000, NO_LIMIT, 60), clock)
    logic.on_batch(_batch(items[:1000]))
    clock.advance(60)
    assert [p.records for p in logic.on_notify()[0]] == [1000]
    logic.on_batch(_batch(items[1000:]))  # 19 for hour 00, then 8,738 late ones for hour 23
    assert logic.notify_at() == START + timedelta(seconds=120)  # the late file rotates like any other
    clock.advance(60)
    published = logic.on_notify()[0]
    assert sorted((p.records, p.first_offset) for p in published) == [(19, 1000), (len(hour_23) - 1000, 1019)]
    archived = _assert_exactly(store, items)
    assert [len(lines) for _, lines in archived["year=2024/month=08/day=08/hour=23"]] == [1000, len(hour_23) - 1000]


def test_opening_a_file_beyond_the_workers_bound_closes_the_oldest_of_any_partition(tmp_path: Path) -> None:
    outs = normalize(envelopes(capture("BITFINEX")))
    rows = records(outs, "trades")
    by_hour: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_hour[hour_directory(row["event_timestamp"])].append(row)
    hours = sorted(by_hour, key=lambda h: -len(by_hour[h]))[:4]
    store = _store(tmp_path)
    workers = PerWorker(2, None)
    limits = RotationLimits(NO_LIMIT, NO_LIMIT, 3600)
    p0, p1 = _logic(store, limits, Clock(), workers), _logic(store, limits, Clock(), workers)
    first = _items(by_hour[hours[0]], partition=0)
    second = _items(by_hour[hours[1]], partition=1)
    assert p0.on_batch(_batch(first))[0] == [] and p1.on_batch(_batch(second))[0] == []
    assert len(workers.files()) == 2
    third = _items(by_hour[hours[2]], partition=0, first_offset=len(first))
    published = p0.on_batch(_batch(third))[0]
    assert [(p.path.split("/")[-1], p.records) for p in published] == [
        (str(FileName(TOPIC, 0, 0, len(first) - 1, "jsonl.zst")), len(first))
    ]
    fourth = _items(by_hour[hours[3]], partition=1, first_offset=len(second))
    assert [p.path.rsplit("/", 1)[-1].split("-")[1] for p in p1.on_batch(_batch(fourth))[0]] == ["p1"]
    assert len(workers.files()) == 2


def _read_parquet_file(store: ArchiveStore, path: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(Path(store.path(path)).read_bytes())).to_pylist()
    return rows


def test_parquet_row_groups_follow_the_row_group_size(tmp_path: Path) -> None:
    trades = _hft_trades()[:2500]
    store = _store(tmp_path)

    def parquet(topic: str) -> FileFormat:
        return ParquetFormat(arrow_schema(topic), 1000, NO_LIMIT)

    logic = archive_logic_builder(store, parquet, RotationLimits(NO_LIMIT, NO_LIMIT, 60), PerWorker(4, None))(None)
    items = [ArchiveItem(TOPIC, 0, i, hour_directory(t["event_timestamp"]), t, 100) for i, t in enumerate(trades)]
    logic.on_batch(_batch(items))
    (published,) = logic.on_eof()[0]
    metadata = pq.ParquetFile(io.BytesIO(Path(store.path(published.path)).read_bytes())).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [1000, 1000, 500]
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert [row["trade_id"] for row in _read_parquet_file(store, published.path)] == [t["trade_id"] for t in trades]


def _mixed_rows() -> list[dict[str, Any]]:
    """Real trades whose event hours interleave and go back in time (Bitfinex's trade snapshots)."""
    outs = [out for name in ("BITFINEX", "BINANCE_FUTURES", "OKX") for out in normalize(envelopes(capture(name)))]
    return records(outs, "trades")


MIXED = _mixed_rows()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    runs=st.lists(
        st.tuples(st.integers(0, len(MIXED)), st.integers(1, 60), st.integers(0, 4), st.integers(1, 97)),
        min_size=1,
        max_size=5,
    ),
    seconds=st.integers(1, 5),
    max_open=st.integers(1, 6),
)
def test_killed_at_any_point_and_resumed_from_the_checkpoint_every_record_lands_exactly_once(
    tmp_path_factory: Any, runs: list[tuple[int, int, int, int]], seconds: int, max_open: int
) -> None:
    """Each run ends in a crash (the writer vanishes with its open files, nothing flushed) but the last, which
    reaches the end; each restart is a fresh writer fed from the archive's checkpoint, as ArchiveSource does.
    Runs differ in rows limit, batch size and the time passing between batches (a redeploy may change the
    settings; wall-clock rotations fire at other records), so a restarted run cuts its files elsewhere."""
    items = _items(MIXED)
    store = _store(tmp_path_factory.mktemp("archive"))
    clock = Clock()
    *crashing, last = sorted(runs)
    for crash_at, rows, ticks, batch in [*crashing, (len(items), *last[1:])]:
        logic = _logic(store, RotationLimits(rows, NO_LIMIT, seconds), clock, PerWorker(max_open, None))
        start = store.read_checkpoint(TOPIC, 0) or 0
        for at in range(start, max(crash_at, start), batch):
            logic.on_batch(_batch(items[at : min(at + batch, crash_at)]))
            clock.advance(ticks)
            notify = logic.notify_at()
            if notify is not None and notify <= clock():
                logic.on_notify()
        if crash_at == len(items):
            logic.on_eof()
    _assert_exactly(store, items)
