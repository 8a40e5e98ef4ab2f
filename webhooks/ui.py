"""The analyst page at /ui: one static HTML page and its scripts, no build step, no CDN.

The page holds no data, so serving it needs no token: it asks for a read token once, keeps it in
the browser's localStorage and calls the read API (/v1/sessions, /v1/search, /v1/stats) with it.
A strict Content-Security-Policy (scripts and styles from this origin only, no inline code,
requests to this origin only) keeps an injected transcript line from running as script even
if the page had a bug that let one through as HTML.

The files are read once, when the routes are built, and served from memory with an ETag:
they are a few kilobytes, and a deploy replaces the process anyway.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

UI_DIR = Path(__file__).resolve().parent / "ui"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

# On every answer: the page, its scripts and its styles. no-cache means "revalidate", which the
# ETag makes cheap, so a deploy's new script is never mixed with an old page.
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str

    def response(self, request: Request) -> Response:
        headers = {**HEADERS, "ETag": self.etag}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        # media_type=None: the charset is already in the Content-Type header we set.
        return Response(self.body, headers={**headers, "Content-Type": self.media_type})


def load(directory: Path = UI_DIR) -> dict[str, Asset]:
    """Every servable file of the page, by name; files of other kinds are not served at all."""
    assets: dict[str, Asset] = {}
    for path in sorted(directory.iterdir()):
        media_type = CONTENT_TYPES.get(path.suffix)
        if media_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        assets[path.name] = Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')
    return assets


def routes(directory: Path = UI_DIR) -> list[BaseRoute]:
    """/ui (and /ui/) answer the page; /ui/static/<name> its files. Changed files need a restart."""
    assets = load(directory)
    page, reference = assets["index.html"], assets["docs.html"]

    async def index(request: Request) -> Response:
        return page.response(request)

    async def docs(request: Request) -> Response:
        # The API reference (docs.js renders /openapi.json): the same CSP, nothing from elsewhere.
        return reference.response(request)

    async def static(request: Request) -> Response:
        # A flat directory: a name with a slash (or "..") is simply not among the assets.
        asset = assets.get(request.path_params["name"])
        if asset is None or asset in (page, reference):
            return Response("not found", status_code=404, media_type="text/plain", headers=HEADERS)
        return asset.response(request)

    return [
        Route("/ui", index, methods=["GET", "HEAD"]),
        Route("/ui/", index, methods=["GET", "HEAD"]),
        Route("/ui/static/{name:path}", static, methods=["GET", "HEAD"]),
        Route("/docs", docs, methods=["GET", "HEAD"]),
    ]
