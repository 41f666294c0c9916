"""The archive writer shared by ``flows.archive_raw`` and ``flows.archive_parquet``: exactly-once files.

The stream is keyed by Kafka topic-partition (``"<topic>:<partition>"``), so one partition's records reach one
`ArchiveLogic`, in offset order. Each record comes placed (`ArchiveItem`): its directory under the topic (an
hour partition, derived from the record alone) and what to write. Per directory the logic keeps at most one
open file; a file is published when it reaches ``rows`` or ``bytes``, ``seconds`` after its first record (wall
clock, also on a quiet partition), when the worker's open-file bound makes it the oldest one to close, or at the
end of the input. A record for a directory whose file was already published opens a new file there (late data
is never lost, and late records are batched under the same rules instead of making one file each).

Exactly-once: the archive is the source of truth (as in Kafka Connect's S3 sink), nothing unflushed lives in
Bytewax state, and the argument does not depend on when rotations happen, so wall-clock rotation keeps it.

1. Files are named after topic, partition, first and last offset and appear atomically (`ArchiveStore`).
2. One writer per partition appends records in offset order and keeps one open file per directory, so in
   directory D the files of partition p hold consecutive runs of R(D, p), the partition's records placed in
   D in offset order. Published runs form a prefix of R(D, p): the next file in D opens only after the
   previous one is published, and a crash loses only unpublished runs. So a record of R(D, p) is archived if
   and only if its offset is at most the largest last offset among p's files in D (the directory frontier).
3. After each publication the logic writes a checkpoint W: the smallest first offset of its open files, or
   the next offset when none is open (a record being placed counts only once it is in a file: opening its file
   may close older ones first). Every record below W is archived (or dead-lettered, and the dead-letter
   producer is flushed before W is written). W only grows, and may lag (it is written after the files).
4. On (re)start the source consumes each partition from its checkpoint W (`connectors.archive_source`),
   ignoring Bytewax's stored offsets. Re-read records are placed again, identically (placement depends only on
   the record), and one at or below its directory's frontier (listed from the store on first use) is skipped.
   So every record lands in exactly one file, however often the flow is killed, with or without Bytewax
   recovery, and with any number of workers: state is rebuilt from the archive, not restored.

Assumes one running cluster per archive (two would be two writers per partition), Kafka records that do not
change (no compaction of archived topics) and a store that lists what was just written (S3 has been strongly
consistent since 2020; local filesystems are). Dead letters are at-least-once like every Kafka output.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators import StatefulBatchLogic
from prometheus_client import Counter

from connectors.archive_config import ArchiveSettings
from connectors.archive_formats import ArchiveFile, FileFormat
from connectors.archive_store import ArchiveStore, FileName
from connectors.archive_worker import PerWorker, PublishedFile
from operators.records import Output

__all__ = [
    "ArchiveItem",
    "ArchiveLogic",
    "PerWorker",
    "PublishedFile",
    "Rejected",
    "RotationLimits",
    "archive_logic_builder",
    "log_published",
    "partition_key",
]

LOG = logging.getLogger(__name__)
#: Directory frontiers remembered per partition; older ones are listed again when needed.
MAX_FRONTIERS = 4096

FILES_PUBLISHED = Counter("marketpipe_archive_files_total", "Files published to the archive.", ["topic"])
RECORDS_ARCHIVED = Counter("marketpipe_archive_records_total", "Records in published archive files.", ["topic"])
RECORDS_SKIPPED = Counter(
    "marketpipe_archive_skipped_total", "Records consumed again after a restart, found already archived.", ["topic"]
)


def partition_key(topic: str, partition: int | None) -> str:
    """The stream key of a Kafka topic-partition."""
    return f"{topic}:{partition if partition is not None else -1}"


@dataclass(frozen=True, slots=True)
class ArchiveItem:
    """One Kafka record, placed: ``directory`` under the topic's directory, ``payload`` for the file format."""

    topic: str
    partition: int
    offset: int
    directory: str
    payload: Any
    size: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A Kafka record that cannot be archived; its dead letter says why."""

    topic: str
    partition: int
    offset: int | None
    dead_letter: Output


@dataclass(frozen=True, slots=True)
class RotationLimits:
    """When a file is closed: at ``rows`` records, ``bytes`` of Kafka values, or ``seconds`` after it opened."""

    rows: int
    bytes: int
    seconds: float

    @classmethod
    def from_settings(cls, archive: ArchiveSettings) -> RotationLimits:
        return cls(archive.archive_rotate_rows, archive.archive_rotate_bytes, archive.archive_rotate_seconds)


class _OpenFile:
    __slots__ = ("body", "bytes", "first", "last", "opened_at", "rows")

    def __init__(self, body: ArchiveFile, first: int, opened_at: datetime) -> None:
        self.body = body
        self.first = first
        self.last = first
        self.rows = 0
        self.bytes = 0
        self.opened_at = opened_at


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ArchiveLogic(StatefulBatchLogic[ArchiveItem | Rejected, PublishedFile, None]):
    """Writes one topic-partition's records into files (see the module docstring for the guarantees)."""

    def __init__(
        self,
        store: ArchiveStore,
        formats: Callable[[str], FileFormat],
        limits: RotationLimits,
        workers: PerWorker,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._store = store
        self._formats = formats
        self._limits = limits
        self._rotate_after = timedelta(seconds=limits.seconds)
        self._worker_files = workers.files()
        self._dead_letters = workers.dead_letters()
        self._clock = clock
        self.topic = ""
        self.partition = -1
        self._format: FileFormat | None = None
        self._files: dict[str, _OpenFile] = {}
        self._frontiers: OrderedDict[str, int] = OrderedDict()
        self._next_offset: int | None = None
        self._checkpointed: int | None = None
        self._checkpoint_due: datetime | None = None
        self._dead_letters_unflushed = False

    # -- Bytewax callbacks -------------------------------------------------------------------------------------

    def on_batch(self, values: list[ArchiveItem | Rejected]) -> tuple[list[PublishedFile], bool]:
        skipped = 0
        for item in values:
            if isinstance(item, Rejected):
                self._reject(item)
            elif not self._archive(item):
                skipped += 1
        if skipped:
            RECORDS_SKIPPED.labels(self.topic).inc(skipped)
        return self._drain(), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[PublishedFile], bool]:
        now = self._clock()
        for directory, file in list(self._files.items()):
            if file.opened_at + self._rotate_after <= now:
                self.close_file(directory)
        if self._checkpoint_due is not None and self._checkpoint_due <= now:
            self._checkpoint()
        return self._drain(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[PublishedFile], bool]:
        for directory in list(self._files):
            self.close_file(directory)
        self._checkpoint()
        return self._drain(), StatefulBatchLogic.DISCARD

    def notify_at(self) -> datetime | None:
        times = [file.opened_at + self._rotate_after for file in self._files.values()]
        if self._checkpoint_due is not None:
            times.append(self._checkpoint_due)
        return min(times) if times else None

    def snapshot(self) -> None:
        """Nothing: the archive and its checkpoints are the state (see the module docstring)."""
        return None

    # -- writing ------------------------------------------------------------------------------------------------

    def _bind(self, topic: str, partition: int) -> None:
        if self._format is None:
            self.topic, self.partition = topic, partition
            self._format = self._formats(topic)

    def _archive(self, item: ArchiveItem) -> bool:
        """Add one record to its directory's open file; False when it was archived before (skipped)."""
        self._bind(item.topic, item.partition)
        if self._next_offset is not None and item.offset < self._next_offset:
            return False  # delivered twice within one run; the first delivery is in a file or an open one
        file = self._files.get(item.directory)
        if file is None:  # with a file open in the directory, the record is past its frontier
            if item.offset <= self._frontier(item.directory):
                self._next_offset = item.offset + 1
                self._progressed()
                return False
            # Opening may close (and checkpoint) older files: the next offset must not count this record yet.
            file = self._open(item.directory, item.offset)
        file.body.append(item.payload, item.size)
        self._next_offset = item.offset + 1
        file.last = item.offset
        file.rows += 1
        file.bytes += item.size
        if file.rows >= self._limits.rows or file.bytes >= self._limits.bytes:
            self.close_file(item.directory)
        return True

    def _open(self, directory: str, first: int) -> _OpenFile:
        assert self._format is not None
        self._worker_files.admit(self, directory)
        file = _OpenFile(self._format.new_file(), first, self._clock())
        self._files[directory] = file
        return file

    def _reject(self, item: Rejected) -> None:
        self._bind(item.topic, item.partition)
        self._dead_letters.send(item.dead_letter)
        self._dead_letters_unflushed = True
        if item.offset is not None and (self._next_offset is None or item.offset >= self._next_offset):
            self._next_offset = item.offset + 1
            self._progressed()

    def close_file(self, directory: str) -> None:
        """Publish the open file of ``directory`` and record the progress."""
        assert self._format is not None
        file = self._files.pop(directory)
        self._worker_files.release(self, directory)
        data = file.body.finish()
        name = FileName(self.topic, self.partition, file.first, file.last, self._format.extension)
        path = f"{self.topic}/{directory}/{name}"
        self._store.publish(path, data)
        self._remember_frontier(directory, file.last)
        FILES_PUBLISHED.labels(self.topic).inc()
        RECORDS_ARCHIVED.labels(self.topic).inc(file.rows)
        self._worker_files.published.append(PublishedFile(path, file.rows, len(data), file.first, file.last))
        self._checkpoint()

    def _drain(self) -> list[PublishedFile]:
        published = self._worker_files.published
        self._worker_files.published = []
        return published

    # -- progress -----------------------------------------------------------------------------------------------

    def _frontier(self, directory: str) -> int:
        """The last offset of this partition already archived in ``directory`` (-1: none)."""
        frontier = self._frontiers.get(directory)
        if frontier is None:
            files = self._store.files(f"{self.topic}/{directory}", self.topic, self.partition)
            frontier = max((f.last for f in files), default=-1)
            self._remember_frontier(directory, frontier)
        else:
            self._frontiers.move_to_end(directory)
        return frontier

    def _remember_frontier(self, directory: str, last: int) -> None:
        self._frontiers[directory] = last
        self._frontiers.move_to_end(directory)
        while len(self._frontiers) > MAX_FRONTIERS:
            self._frontiers.popitem(last=False)

    def _safe_offset(self) -> int | None:
        if self._files:
            return min(file.first for file in self._files.values())
        return self._next_offset

    def _progressed(self) -> None:
        """Progress without a publication (skips, dead letters): checkpoint it within one rotation interval."""
        if not self._files and self._checkpoint_due is None:
            self._checkpoint_due = self._clock() + self._rotate_after

    def _checkpoint(self) -> None:
        self._checkpoint_due = None
        safe = self._safe_offset()
        if self.partition < 0 or safe is None or (self._checkpointed is not None and safe <= self._checkpointed):
            return
        if self._dead_letters_unflushed:
            self._dead_letters.flush()  # before W passes them: a dead letter is never lost
            self._dead_letters_unflushed = False
        self._store.write_checkpoint(self.topic, self.partition, safe)
        self._checkpointed = safe


def log_published(step_id: str, item: tuple[str, PublishedFile]) -> None:
    """An ``op.inspect`` callback: one log line per published file."""
    LOG.info("published %s: %d records", item[1].path, item[1].records)


def archive_logic_builder(
    store: ArchiveStore,
    formats: Callable[[str], FileFormat],
    limits: RotationLimits,
    workers: PerWorker,
    clock: Callable[[], datetime] = _utc_now,
) -> Callable[[None], ArchiveLogic]:
    """The ``op.stateful_batch`` builder; any resume state is ignored (the archive is the state)."""

    def build(resume_state: None) -> ArchiveLogic:
        return ArchiveLogic(store, formats, limits, workers, clock)

    return build
