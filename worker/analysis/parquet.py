"""Parquet for exports: pyarrow's ``ParquetWriter`` one row group at a time into a small sink that
is emptied after every row group, so even the columnar format streams in constant memory.

Imported only when a Parquet export runs: pyarrow costs every process that loads it ~20 ms and
tens of megabytes, and most web processes never write Parquet.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from worker.analysis.exports import Columns

# Rows per row group; the writer holds one group (as Python dicts, then as Arrow) at a time.
ROW_GROUP_ROWS = 10_000

_TYPES = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def arrow_schema(columns: Columns) -> pa.Schema:
    return pa.schema([(name, _TYPES[kind]) for name, kind in columns.fields])


class _Sink:
    """A write-only file for ParquetWriter whose bytes are taken out after every row group."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def encode(columns: Columns, rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """The Parquet file, a row group's bytes at a time."""
    schema = arrow_schema(columns)
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
                yield sink.take()
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    finally:
        writer.close()  # writes the footer; a closed-early export is cut off anyway
    yield sink.take()
