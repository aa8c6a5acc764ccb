"""Table writers as byte-chunk generators (a response streams them; the CLI writes them to a file).

CSV: a header, flags as ``true``/``false``, empty cells for missing values. JSON Lines: one object per
row. Parquet (pyarrow): one row group per ``batch_rows`` rows, each sent as soon as it is written.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from itertools import islice
from typing import Any, Literal

from shared.export.tables import Kind, Row, Table

ExportFormat = Literal["csv", "jsonl", "parquet"]
FORMATS: tuple[ExportFormat, ...] = ("csv", "jsonl", "parquet")
CONTENT_TYPES: dict[ExportFormat, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
BATCH_ROWS = 20_000


def _batches(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    while batch := list(islice(rows, size)):
        yield batch


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_csv(table: Table, *, batch_rows: int = BATCH_ROWS) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.names)
    for batch in _batches(iter(table.rows), batch_rows):
        writer.writerows([_cell(v) for v in row] for row in batch)
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


def write_jsonl(table: Table, *, batch_rows: int = BATCH_ROWS) -> Iterator[bytes]:
    names = table.names
    for batch in _batches(iter(table.rows), batch_rows):
        lines = (json.dumps(dict(zip(names, row, strict=True)), separators=(",", ":")) for row in batch)
        yield ("\n".join(lines) + "\n").encode()


class _Drain(io.RawIOBase):
    """A write-only file that hands over what was written since the last :meth:`take`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buf += data
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


def write_parquet(table: Table, *, batch_rows: int = BATCH_ROWS) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types: dict[Kind, Any] = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "str": pa.string()}
    schema = pa.schema([(name, types[kind]) for name, kind in table.columns])
    sink = _Drain()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    wrote = False
    for batch in _batches(iter(table.rows), batch_rows):
        columns = list(zip(*batch, strict=True))
        writer.write_table(pa.table(dict(zip(table.names, columns, strict=True)), schema=schema))
        wrote = True
        yield sink.take()
    if not wrote:
        writer.write_table(schema.empty_table())
    writer.close()
    yield sink.take()


def write_table(table: Table, fmt: ExportFormat) -> Iterator[bytes]:
    """The table in ``fmt`` as byte chunks (at most ``BATCH_ROWS`` rows each)."""
    if fmt == "csv":
        return write_csv(table)
    if fmt == "jsonl":
        return write_jsonl(table)
    return write_parquet(table)
