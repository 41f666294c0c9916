"""Recorded captures: read them, and turn them into raw envelopes exactly as the live collector would.

Two formats, detected from the content (compression too: zstd, gzip or none):

* cryptofeed raw-data recordings (``*.jsonl.zst``): a header line naming the exchange, then ``connect``,
  ``send``, ``recv`` and ``http`` events with local receipt times. Each connection's events are in receipt
  order in the file, but connections (and REST responses) are written one after another, so they are merged
  back into one timeline by receipt time; the merge keeps every connection's own order.
* hftbacktest collector files (``*.gz``): ``<receive_time_ns> <frame>`` per line, one connection; a line that
  is not a stream frame is a REST response (Binance's depth snapshot).

`capture_envelopes` feeds the events to the venue's `Framer`, the same one the live collector uses.
"""

from __future__ import annotations

import base64
import gzip
import heapq
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import zstandard
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from operators.venues import venue_for_capture
from operators.venues.base import Venue
from schemas.raw import RawEnvelope

__all__ = [
    "CaptureEvent",
    "CaptureFormatError",
    "CaptureSource",
    "capture_envelopes",
    "detect_venue",
    "read_capture",
]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


class CaptureFormatError(ValueError):
    """A file that is neither a cryptofeed nor an hftbacktest capture."""


@dataclass(frozen=True, slots=True)
class CaptureEvent:
    """One recorded event; ``ts`` in UTC microseconds."""

    kind: str  # connect | send | recv | http
    ts: int
    conn: str | None
    data: str | None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class CaptureHeader:
    format: str  # cryptofeed | hftbacktest
    exchange: str | None
    config: dict[str, Any]


def _open_text(path: Path) -> IO[str]:
    raw = path.open("rb")
    magic = raw.read(4)
    raw.seek(0)
    if magic.startswith(ZSTD_MAGIC):
        stream: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    elif magic.startswith(GZIP_MAGIC):
        stream = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
    else:
        stream = raw
    return io.TextIOWrapper(stream, encoding="utf-8", newline="\n")


def _seconds_to_us(ts: float) -> int:
    return round(ts * 1_000_000)


def _cryptofeed_events(lines: Iterator[str]) -> Iterator[CaptureEvent]:
    per_conn: dict[str, list[CaptureEvent]] = {}
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CaptureFormatError(f"line {number} is not JSON: {exc}") from exc
        kind = rec.get("t")
        ts = _seconds_to_us(rec["ts"])
        if kind == "http":
            event = CaptureEvent("http", ts, None, rec.get("data"), rec.get("url"))
            per_conn.setdefault("\0http", []).append(event)
            continue
        conn = rec.get("conn", "")
        if kind == "connect":
            event = CaptureEvent("connect", ts, conn, None, rec.get("addr"))
        elif kind in ("send", "recv"):
            data = rec.get("data")
            if data is None and "b64" in rec:
                data = base64.b64decode(rec["b64"]).decode("utf-8", errors="surrogateescape")
            event = CaptureEvent(kind, ts, conn, data, rec.get("addr"))
        else:
            continue
        per_conn.setdefault(conn, []).append(event)
    yield from heapq.merge(*per_conn.values(), key=lambda e: e.ts)


def _hftbacktest_events(first: str, lines: Iterator[str]) -> Iterator[CaptureEvent]:
    yield from (CaptureEvent("connect", 0, "hftbacktest", None, None),)
    for line in _chain_first(first, lines):
        stamp, sep, frame = line.rstrip("\n").partition(" ")
        if not sep:
            continue
        ts = int(stamp) // 1000
        if frame.startswith('{"stream"'):
            yield CaptureEvent("recv", ts, "hftbacktest", frame)
        else:
            yield CaptureEvent("http", ts, None, frame, None)


def _chain_first(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def read_capture(path: str | Path) -> tuple[CaptureHeader, Iterator[CaptureEvent]]:
    """The header and the merged event timeline of a capture file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"capture file {path} does not exist")
    handle = _open_text(path)
    lines = iter(handle)
    first = next(lines, "")
    if first.startswith("{"):
        try:
            header = orjson.loads(first)
        except orjson.JSONDecodeError as exc:
            raise CaptureFormatError(f"{path}: first line is not JSON: {exc}") from exc
        if header.get("t") != "header":
            raise CaptureFormatError(f"{path}: a cryptofeed capture starts with a header line")
        return (
            CaptureHeader("cryptofeed", header.get("exchange"), header.get("config") or {}),
            _cryptofeed_events(lines),
        )
    stamp = first.partition(" ")[0]
    if stamp.isdigit():
        return CaptureHeader("hftbacktest", None, {}), _hftbacktest_events(first, lines)
    raise CaptureFormatError(f"{path}: neither a cryptofeed (.jsonl[.zst]) nor an hftbacktest capture")


def detect_venue(header: CaptureHeader, venue: str | None) -> Venue:
    """The venue of a capture: ``venue`` when given, else the cryptofeed header's exchange."""
    if venue is not None:
        return venue_for_capture(venue)
    if header.exchange is None:
        raise CaptureFormatError("hftbacktest captures do not name their venue: pass venue=, e.g. venue='binance'")
    return venue_for_capture(header.exchange)


def capture_envelopes(path: str | Path, venue: str | None = None) -> Iterator[RawEnvelope]:
    """Raw envelopes of a capture, in the order the live collector would produce them."""
    header, events = read_capture(path)
    spec = detect_venue(header, venue)
    framer = spec.framer(spec.name)
    for event in events:
        if event.kind == "recv":
            if event.data is not None and event.conn is not None:
                yield from framer.on_recv(event.conn, event.data, event.ts)
        elif event.kind == "http":
            if event.data is not None:
                yield from framer.on_http(event.url, event.data, event.ts)
        elif event.kind == "send":
            if event.data is not None and event.conn is not None:
                framer.on_send(event.conn, event.data, event.ts)
        elif event.kind == "connect" and event.conn is not None:
            yield from framer.on_connect(event.conn, event.url or "", event.ts)


class _CapturePartition(StatefulSourcePartition[RawEnvelope, int]):
    def __init__(self, path: str, venue: str | None, resume_state: int | None, batch_size: int) -> None:
        self._envelopes = capture_envelopes(path, venue)
        self._position = 0
        self._batch_size = batch_size
        for _ in range(resume_state or 0):
            next(self._envelopes, None)
            self._position += 1

    def next_batch(self) -> list[RawEnvelope]:
        batch = list(itertools.islice(self._envelopes, self._batch_size))
        if not batch:
            raise StopIteration()
        self._position += len(batch)
        return batch

    def snapshot(self) -> int:
        return self._position


class CaptureSource(FixedPartitionedSource[RawEnvelope, int]):
    """Raw envelopes from capture files, one partition per file; resumes by envelope count."""

    def __init__(self, paths: list[str], venue: str | None = None, batch_size: int = 1000) -> None:
        if not paths:
            raise ValueError("CaptureSource needs at least one capture file")
        for path in paths:
            if not Path(path).exists():
                raise FileNotFoundError(f"capture file {path} does not exist")
        self._paths = paths
        self._venue = venue
        self._batch_size = batch_size

    def list_parts(self) -> list[str]:
        return list(self._paths)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _CapturePartition:
        return _CapturePartition(for_part, self._venue, resume_state, self._batch_size)
