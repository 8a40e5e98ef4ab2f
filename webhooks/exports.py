"""GET /v1/exports/{kind}.{format}: sessions or turns as JSON Lines, CSV or Parquet (read scope).

The body streams: ``worker.analysis.exports.stream`` is a sync iterator that holds its own database
session, and Starlette pulls it a chunk at a time in its threadpool, so the event loop never
waits on the database and memory stays flat whatever the size. When the client goes away
mid-export, ``_ClosingStream`` closes the iterator, and with it the session and the server-side
cursor, at once rather than whenever the garbage collector gets to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from webhooks.auth import readable, sees_raw_text
from webhooks.queries import invalid_query
from webhooks.receiver import error
from worker.analysis import exports
from worker.analysis.catalog import FilterError, SessionFilter
from worker.db import describe_failure

log = structlog.get_logger(__name__)


class _ClosingStream(StreamingResponse):
    """A streaming response that closes its sync iterator however the response ends."""

    def __init__(self, content: Iterator[bytes], media_type: str, headers: dict[str, str]) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._source = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: after a disconnect this runs inside a cancelled scope. No thread is
            # inside the iterator by now (a threadpool call is not abandoned on cancellation).
            close = getattr(self._source, "close", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(close)


class ExportFailed(Exception):
    """Raised past the first byte: the server then drops the connection without the last chunk."""


def _failing_loudly(source: Iterator[bytes], fmt: str) -> Iterator[bytes]:
    """``source``, but a failure mid-way can never pass for the end of the file.

    The status line went out with the first chunk, so the only signals left are in the body and
    the framing: JSON Lines gets a last line ``{"error": "export_failed", ...}``, and every format
    ends with an aborted chunked encoding (uvicorn closes the connection when the app raises after
    the response started), which HTTP clients report as an error rather than a short file.
    """
    try:
        yield from source
    except Exception as exc:
        detail = describe_failure(exc)
        log.error("export_failed", export_format=fmt, error=detail)
        if fmt == "jsonl":
            yield orjson.dumps({"error": "export_failed", "detail": detail}) + b"\n"
        raise ExportFailed(detail) from None
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


# Parameters an export understands besides the filters; anything else is a typo worth a 400.
_FILTERS = frozenset(SessionFilter.__dataclass_fields__)


@readable
async def export(request: Request) -> Response:
    kind, fmt = request.path_params["kind"], request.path_params["format"]
    if kind not in exports.KINDS:
        return error(404, "not_found", f"no export of {kind!r}; kinds: {', '.join(exports.KINDS)}")
    if fmt not in exports.FORMATS:
        return error(404, "not_found", f"no format {fmt!r}; formats: {', '.join(exports.FORMATS)}")
    for name in request.query_params:
        if name not in _FILTERS:
            return invalid_query(
                FilterError(name, f"unknown parameter {name!r}; filters: {', '.join(sorted(_FILTERS))}")
            )
    try:
        f = SessionFilter.from_query(request.query_params)
    except FilterError as exc:
        return invalid_query(exc)
    filename = f"roomwarden-{kind}.{fmt}"
    return _ClosingStream(
        _failing_loudly(
            exports.stream(request.app.state.sessions, kind, fmt, f, raw=sees_raw_text(request)), fmt
        ),
        media_type=exports.MEDIA_TYPES[fmt],
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )
