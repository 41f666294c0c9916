"""File encodings of the archives: compressed JSON Lines (raw) and Parquet (standardized topics).

A format makes `ArchiveFile` buffers; a buffer takes records one by one and returns the finished file's bytes.
Both keep memory close to the compressed size: JSON Lines are compressed in 1 MiB chunks as they come, and Parquet
rows become Arrow record batches every few thousand rows and a compressed row group whenever a row group fills.
"""

from __future__ import annotations

import zlib
from typing import Any, Literal, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

__all__ = ["ArchiveFile", "FileFormat", "JsonLinesFormat", "ParquetFormat"]

#: Uncompressed bytes collected before a JSON Lines chunk goes through the compressor.
JSONL_CHUNK_BYTES = 1024 * 1024
#: Rows collected as Python objects before they become one Arrow record batch.
ARROW_CHUNK_ROWS = 8192


class ArchiveFile(Protocol):
    """One file being filled."""

    def append(self, payload: Any, size: int) -> None:
        """Add one record (``size``: its Kafka value length, for row-group bounds)."""

    def finish(self) -> bytes:
        """The complete file; the buffer is spent afterwards."""


class FileFormat(Protocol):
    """Makes empty files of one format."""

    @property
    def extension(self) -> str: ...

    def new_file(self) -> ArchiveFile: ...


class _JsonLinesFile:
    def __init__(self, compression: Literal["zstd", "gzip"]) -> None:
        if compression == "zstd":
            self._compressor: Any = zstandard.ZstdCompressor(level=3).compressobj()
        else:
            self._compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip member
        self._compressed: list[bytes] = []
        self._lines: list[bytes] = []
        self._pending = 0

    def append(self, payload: bytes, size: int) -> None:
        self._lines.append(payload)
        self._pending += len(payload) + 1
        if self._pending >= JSONL_CHUNK_BYTES:
            self._compress_pending()

    def _compress_pending(self) -> None:
        if self._lines:
            self._lines.append(b"")  # so the join ends the last line with its newline
            self._compressed.append(self._compressor.compress(b"\n".join(self._lines)))
            self._lines = []
            self._pending = 0

    def finish(self) -> bytes:
        self._compress_pending()
        self._compressed.append(self._compressor.flush())
        return b"".join(self._compressed)


class JsonLinesFormat:
    """JSON Lines, one Kafka value per line, compressed with zstd (``.jsonl.zst``) or gzip (``.jsonl.gz``)."""

    def __init__(self, compression: Literal["zstd", "gzip"]) -> None:
        self.compression = compression

    @property
    def extension(self) -> str:
        return "jsonl.zst" if self.compression == "zstd" else "jsonl.gz"

    def new_file(self) -> ArchiveFile:
        return _JsonLinesFile(self.compression)


class _ParquetFile:
    def __init__(self, schema: pa.Schema, row_group_rows: int, row_group_bytes: int) -> None:
        self._schema = schema
        self._row_group_rows = row_group_rows
        self._row_group_bytes = row_group_bytes
        self._sink = pa.BufferOutputStream()
        self._writer = pq.ParquetWriter(self._sink, schema, compression="zstd", use_dictionary=True)
        self._rows: list[dict[str, Any]] = []
        self._batches: list[pa.RecordBatch] = []
        self._group_rows = 0
        self._group_bytes = 0

    def append(self, payload: dict[str, Any], size: int) -> None:
        self._rows.append(payload)
        self._group_rows += 1
        self._group_bytes += size
        if self._group_rows >= self._row_group_rows or self._group_bytes >= self._row_group_bytes:
            self._write_row_group()
        elif len(self._rows) >= ARROW_CHUNK_ROWS:
            self._to_arrow()

    def _to_arrow(self) -> None:
        if self._rows:
            self._batches.append(pa.RecordBatch.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def _write_row_group(self) -> None:
        self._to_arrow()
        if self._batches:
            table = pa.Table.from_batches(self._batches, schema=self._schema)
            self._writer.write_table(table, row_group_size=table.num_rows)
        self._batches = []
        self._group_rows = 0
        self._group_bytes = 0

    def finish(self) -> bytes:
        self._write_row_group()
        self._writer.close()
        data: bytes = self._sink.getvalue().to_pybytes()
        return data


class ParquetFormat:
    """Parquet with zstd compression, columns from the topic's Avro schema (`schemas.arrow`)."""

    extension = "parquet"

    def __init__(self, schema: pa.Schema, row_group_rows: int, row_group_bytes: int) -> None:
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes

    def new_file(self) -> ArchiveFile:
        return _ParquetFile(self.schema, self.row_group_rows, self.row_group_bytes)
