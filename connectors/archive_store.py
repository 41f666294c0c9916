"""The archive on any fsspec filesystem: deterministic file names, atomic publication, progress checkpoints.

A published file is named ``<topic>-p<partition>-<first offset:020d>-<last offset:020d>.<extension>`` after the
Kafka records it holds, so its name says exactly where it came from and a listing of a directory tells how
far each partition got there. Publication is atomic: on a local filesystem the bytes go to a hidden temporary
file in the same directory, are fsynced and renamed into place; on object stores (S3 through s3fs) one PUT
(or one multipart upload, completed at once) makes the object appear whole. A reader never sees half a file.

``_checkpoints/<topic>/partition=<p>.json`` records, per partition, the offset below which every record is
archived: the archive flows restart consuming from there (`connectors.archive`).
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
import orjson
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

__all__ = ["ArchiveStore", "FileName"]

CHECKPOINTS = "_checkpoints"
_NAME = re.compile(
    r"^(?P<topic>[A-Za-z0-9_-][A-Za-z0-9._-]*)-p(?P<partition>\d+)-(?P<first>\d{20})-(?P<last>\d{20})"
    r"\.(?P<extension>[a-z0-9]+(?:\.[a-z0-9]+)?)$"
)


@dataclass(frozen=True, slots=True)
class FileName:
    """The name of one archive file: topic, Kafka partition, first and last offset, extension."""

    topic: str
    partition: int
    first: int
    last: int
    extension: str

    def __str__(self) -> str:
        return f"{self.topic}-p{self.partition}-{self.first:020d}-{self.last:020d}.{self.extension}"

    @classmethod
    def parse(cls, name: str) -> FileName | None:
        """The parts of an archive file name, or None for any other name."""
        match = _NAME.match(name)
        if match is None:
            return None
        return cls(match["topic"], int(match["partition"]), int(match["first"]), int(match["last"]), match["extension"])


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


class ArchiveStore:
    """The archive rooted at ``root`` on ``fs``; every path argument is relative to the root."""

    def __init__(self, fs: AbstractFileSystem, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)

    @classmethod
    def open(cls, url: str, storage_options: dict[str, Any] | None = None) -> ArchiveStore:
        """The archive at an fsspec URL (``var/archive``, ``file:///data/archive``, ``s3://bucket/prefix``)."""
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return cls(fs, root)

    @property
    def url(self) -> str:
        """The root as a URL (for readers such as pyarrow.dataset and DuckDB)."""
        return self.root if self._local else self.fs.unstrip_protocol(self.root)

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}" if relative else self.root

    def publish(self, relative: str, data: bytes) -> None:
        """Make ``data`` appear at ``relative`` all at once (replacing any file of that name)."""
        target = self.path(relative)
        if not self._local:
            self.fs.pipe_file(target, data)
            return
        directory, name = os.path.split(target)
        os.makedirs(directory, exist_ok=True)
        temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # the rename itself survives a power loss
        finally:
            os.close(descriptor)

    def names(self, directory: str) -> list[str]:
        """File names in ``directory`` (not recursive; fresh from the store, never from a cache)."""
        try:
            paths = self.fs.ls(self.path(directory), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return [_basename(str(path)) for path in paths]

    def files(self, directory: str, topic: str, partition: int) -> list[FileName]:
        """The archive files of one topic-partition in ``directory``, by first offset.

        Temporary files a crashed writer of this partition left behind (local filesystems only) are removed on
        the way: the partition has one writer, so they can only be dead leftovers.
        """
        found: list[FileName] = []
        leftover_prefix = f".{topic}-p{partition}-"
        for name in self.names(directory):
            parsed = FileName.parse(name)
            if parsed is not None and parsed.topic == topic and parsed.partition == partition:
                found.append(parsed)
            elif self._local and name.startswith(leftover_prefix) and name.endswith(".tmp"):
                self.fs.rm_file(self.path(f"{directory}/{name}"))
        return sorted(found, key=lambda f: f.first)

    def _checkpoint_path(self, topic: str, partition: int) -> str:
        return f"{CHECKPOINTS}/{topic}/partition={partition}.json"

    def read_checkpoint(self, topic: str, partition: int) -> int | None:
        """The offset below which the partition is fully archived, or None when nothing was recorded."""
        try:
            data = self.fs.cat_file(self.path(self._checkpoint_path(topic, partition)))
        except FileNotFoundError:
            return None
        offset: int = orjson.loads(data)["next_offset"]
        return offset

    def write_checkpoint(self, topic: str, partition: int, next_offset: int) -> None:
        """Record that every record of the partition below ``next_offset`` is archived."""
        body = {"topic": topic, "partition": partition, "next_offset": next_offset}
        self.publish(self._checkpoint_path(topic, partition), orjson.dumps(body))
