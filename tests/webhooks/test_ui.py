"""/ui: a static page served without a token, under a strict CSP, that reads with a read token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from starlette.testclient import TestClient

from tests.seeded import SEEDS, seed_committed
from webhooks import ui
from webhooks.app import create_app
from worker.db import make_sessionmaker
from worker.settings import Settings

READ_TOKEN = "ui-test-read-token-42"


@pytest.fixture
def ui_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"read_token": SecretStr(READ_TOKEN)})


@pytest.fixture
def web(ui_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(ui_settings)) as client:
        yield client


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parsed(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


def test_the_page_is_served_without_a_token_under_a_strict_csp(web: TestClient) -> None:
    """GET /ui answers the HTML to anyone; its CSP allows scripts and styles from this origin only."""
    response = web.get("/ui")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert web.get("/ui/").text == response.text


def test_the_page_has_no_inline_code_and_loads_nothing_from_elsewhere(web: TestClient) -> None:
    """No inline script or style (the CSP would block them) and no CDN: the page works offline."""
    html = web.get("/ui").text
    tags = parsed(html)
    scripts = [attrs for tag, attrs in tags if tag == "script"]
    assert scripts, "the page loads its script"
    assert all((attrs.get("src") or "").startswith("/ui/static/") for attrs in scripts)
    assert "<style" not in html
    assert not any("style" in attrs or any(k.startswith("on") for k in attrs) for _, attrs in tags)
    for _, attrs in tags:
        for name in ("src", "href"):
            link = attrs.get(name) or ""
            assert not re.match(r"^(https?:)?//", link), link
    for name, asset in ui.load().items():
        assert b"http://" not in asset.body.replace(b"http://www.w3.org/2000/svg", b""), name
        assert b"https://" not in asset.body, name
        assert b"@import" not in asset.body, name


def test_every_file_the_page_loads_is_served_with_its_content_type(web: TestClient) -> None:
    """Scripts (and every module they import), the stylesheets and the icon of the page and of the
    API reference (/docs) come with the right types."""
    expected = {
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
    }
    wanted = {
        attrs.get("src") or attrs.get("href")
        for page in ("/ui", "/docs")
        for tag, attrs in parsed(web.get(page).text)
        if tag in ("script", "link", "img")
        and not (attrs.get("href") or "").startswith(("/docs", "/openapi"))
    }
    seen: set[str] = set()
    while wanted:
        path = wanted.pop()
        assert path is not None
        if path in seen:
            continue
        seen.add(path)
        response = web.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == expected[path[path.rindex(".") :]], path
        assert response.headers["x-content-type-options"] == "nosniff"
        if path.endswith(".js"):
            wanted |= {f"/ui/static/{m}" for m in re.findall(r'from "\./([\w-]+\.js)"', response.text)}
    assert {"/ui/static/app.js", "/ui/static/style.css", "/ui/static/charts.js"} <= seen
    # Every servable file is reachable from the page: nothing stale is shipped.
    pages = ("index.html", "docs.html")
    assert {f"/ui/static/{name}" for name in ui.load() if name not in pages} == seen


def test_unknown_or_escaping_paths_are_not_served(web: TestClient) -> None:
    """Only the page's own files: not the Python beside them, nor anything up the tree."""
    for path in (
        "/ui/static/nope.js",
        "/ui/static/../ui.py",
        "/ui/static/%2e%2e/ui.py",
        "/ui/static/index.html",
        "/ui/static/docs.html",
    ):
        assert web.get(path).status_code == 404, path


def test_unchanged_files_answer_304_to_their_etag(web: TestClient) -> None:
    """A returning browser revalidates cheaply; a deploy's new file changes its ETag."""
    first = web.get("/ui/static/app.js")
    again = web.get("/ui/static/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert web.get("/ui/static/app.js", headers={"If-None-Match": '"stale"'}).status_code == 200


def test_the_page_carries_no_secrets(web: TestClient, ui_settings: Settings) -> None:
    """Neither token, nor any setting's secret, is in what /ui serves: the page asks for a token."""
    bodies = [web.get("/ui").content, *(a.body for a in ui.load().values())]
    secrets = [READ_TOKEN, ui_settings.api_token.get_secret_value() if ui_settings.api_token else "x" * 40]
    for body in bodies:
        for secret in secrets:
            assert secret.encode() not in body
        assert b"Bearer " not in body.replace(b"Bearer ${", b"")


def test_what_the_page_reads_needs_a_token_and_a_read_token_is_enough(
    web: TestClient, clean_engine: Engine, ui_settings: Settings
) -> None:
    """The page's API calls refuse an anonymous browser and answer one holding the read token."""
    seed_committed(make_sessionmaker(clean_engine), ui_settings)
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert web.get("/v1/sessions").status_code == 401
    listed = web.get("/v1/sessions", params={"has_interruptions": "true"}, headers=read)
    assert listed.status_code == 200, listed.text
    rows = listed.json()["sessions"]
    assert {r["id"] for r in rows} == {s.session_id for s in SEEDS if s.interrupted}
    # The fields the table draws (webhooks/ui/sessions.js).
    table = {"id", "started_at", "duration_seconds", "agent_name", "agent_id", "room_id", "user_id",
             "provider", "template", "app_id", "state", "end_reason", "end_code", "turns",
             "interruptions", "exceptions", "recreations"}  # fmt: skip
    assert all(table <= set(r) for r in rows)
    one = rows[0]["id"]
    assert web.get(f"/v1/sessions/{one}").status_code == 401
    detail = web.get(f"/v1/sessions/{one}", headers=read)
    assert detail.status_code == 200
    assert {"summary", "rounds", "instances", "exceptions", "timeline"} <= set(detail.json())
    transcript = web.get(f"/v1/sessions/{one}/transcript", params={"format": "json"}, headers=read)
    assert transcript.status_code == 200
    assert any(t["interrupted"] and t["played_text"] for t in transcript.json()["turns"])
