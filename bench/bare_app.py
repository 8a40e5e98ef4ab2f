"""The baseline for ``bench/ingest``: Starlette reading the body and answering, nothing else.

It answers on the receiver's path with the receiver's "stored" reply, so the same wrk script and
the same server flags drive both, and the difference between the two is the durable ingest.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_STORED = Response(b'{"status":"stored"}', media_type="application/json")


async def callback(request: Request) -> Response:
    await request.body()
    return _STORED


app = Starlette(routes=[Route("/callbacks/zego", callback, methods=["POST"])])
