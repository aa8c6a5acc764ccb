"""``GET /api/sessions/{session}/export?format=csv|jsonl|parquet&table=timeline|students|events``.

The table is built from the gateway's history (the same rows as ``/timeline`` and ``/report``) and
streamed as a chunked response, one batch of rows at a time; the rows are taken from the history on the
event loop (it changes between awaits), each batch is encoded in a worker thread.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

from aiohttp import web

from services.gateway.context import GATEWAY
from services.gateway.history import SessionRecord
from services.gateway.report import build_report
from shared.export.tables import TABLES, Table, TableName, build_table, timeline_from_tuples
from shared.export.writers import CONTENT_TYPES, FORMATS, ExportFormat, write_table

EXPORT_QUERY = (
    ("format", "string", "csv (default), jsonl or parquet"),
    ("table", "string", "timeline (default: per second and participant), students (summary + attendance), events"),
)
_NOT_FOUND = '{"error": "no events seen for this session yet; publish to it first"}'
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=web.json_response({"error": message}).text, content_type="application/json")


def _choice(request: web.Request) -> tuple[ExportFormat, TableName]:
    fmt = request.query.get("format", "csv")
    table = request.query.get("table", "timeline")
    if fmt not in FORMATS:
        raise _bad(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if table not in TABLES:
        raise _bad(f"table must be one of {', '.join(TABLES)}, got {table!r}")
    return fmt, table  # type: ignore[return-value]


def _table(record: SessionRecord, table: TableName) -> Table:
    if table == "timeline":  # only the rows, as plain tuples: no summary, no models
        return timeline_from_tuples(record.timeline.observed_tuples())
    return build_table(table, build_report(record, timeline=False), alerts=list(record.alerts))


async def export(request: web.Request, session: str) -> web.StreamResponse:
    fmt, table = _choice(request)
    record = request.app[GATEWAY].history.get(session)
    if record is None:
        raise web.HTTPNotFound(text=_NOT_FOUND, content_type="application/json")
    rows = _table(record, table)  # on the loop: the history reader changes the record between awaits
    chunks: Iterator[bytes] = write_table(rows, fmt)
    name = f"{_SAFE.sub('_', session)}-{table}.{fmt}"
    resp = web.StreamResponse(headers={"Content-Type": CONTENT_TYPES[fmt],
                                       "Content-Disposition": f'attachment; filename="{name}"'})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        if chunk:
            await resp.write(chunk)
    await resp.write_eof()
    return resp
