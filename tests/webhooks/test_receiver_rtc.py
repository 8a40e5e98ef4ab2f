"""``POST /callbacks/zego-rtc`` as ZEGO's RTC service sees it: answered, stored, refused."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from tests.factories import APP_ID, BODY_FORMS, RoomSigner, content_type, encode_body, inbox_rows

URL = "/callbacks/zego-rtc"
STORED = {"status": "stored"}
DUPLICATE = {"status": "duplicate"}


def post(client: TestClient, payload: dict[str, Any], form: str = "json") -> httpx.Response:
    return client.post(URL, content=encode_body(payload, form), headers={"content-type": content_type(form)})


@pytest.mark.parametrize("form", BODY_FORMS)
def test_each_room_event_is_stored_under_its_room(
    client: TestClient, clean_engine: Engine, form: str
) -> None:
    """room_login, stream_create, stream_close, room_logout: 200 stored, one stream per room."""
    room = RoomSigner("room_9")
    sent = [
        room.login(),
        room.stream("stream_create", "s1"),
        room.stream("stream_close", "s1"),
        room.logout(),
    ]
    for payload in sent:
        response = post(client, payload, form)
        assert (response.status_code, response.json()) == (200, STORED), response.text
    rows = inbox_rows(clean_engine)
    assert [r.event for r in rows] == ["room_login", "stream_create", "stream_close", "room_logout"]
    assert {(r.app_id, r.agent_instance_id, r.state, r.sequence) for r in rows} == {
        (APP_ID, "rtc:room_9", "pending", None)
    }
    assert [orjson.loads(r.payload) for r in rows] == sent
    assert rows[0].callback_ts == int(sent[0]["timestamp"]) * 1000  # seconds, unlike the agent's ms


def test_zegos_retry_of_a_room_callback_is_a_duplicate(client: TestClient, clean_engine: Engine) -> None:
    """Re-signed with a new nonce and timestamp, the same login is stored once."""
    room = RoomSigner()
    login = room.login()
    assert post(client, login).json() == STORED
    assert post(client, room.resign(login)).json() == DUPLICATE
    assert post(client, login).json() == DUPLICATE
    assert len(inbox_rows(clean_engine)) == 1


def test_a_second_login_of_the_same_user_is_its_own_callback(
    client: TestClient, clean_engine: Engine
) -> None:
    """user_update_seq tells a relogin from a retry."""
    room = RoomSigner()
    assert post(client, room.login()).json() == STORED
    assert post(client, room.login()).json() == STORED
    assert len(inbox_rows(clean_engine)) == 2


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"signature": "0" * 40}, 401, "bad_signature"),
        ({"appid": "999"}, 401, "unknown_app"),
        ({"timestamp": str(int(time.time()) - 3600)}, 401, "stale_timestamp"),
        ({"event": "room_create"}, 400, "malformed"),
        ({"room_id": ""}, 400, "malformed"),
        ({"user_update_seq": "one"}, 400, "malformed"),
        ({"user_account": "u" * 65}, 400, "malformed"),
        ({"room_id": "bad\nroom"}, 400, "malformed"),
    ],
)
def test_a_bad_room_callback_is_refused_and_nothing_stored(
    client: TestClient, clean_engine: Engine, change: dict[str, Any], status: int, error: str
) -> None:
    """Each fault gets its status and a named error; the inbox stays empty."""
    payload = {**RoomSigner().login(), **change}
    response = post(client, payload)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error and response.json()["detail"]
    assert inbox_rows(clean_engine) == []


def test_an_agent_callback_sent_to_the_room_path_is_refused(client: TestClient, clean_engine: Engine) -> None:
    """The two paths do not accept each other's callbacks: a misconfigured console shows at once."""
    from tests.factories import Signer

    response = post(client, Signer().callback("ASRResult"))
    assert response.status_code == 401 and response.json()["error"] == "missing_fields"
    assert inbox_rows(clean_engine) == []


def test_other_methods_on_the_room_path_are_405(client: TestClient) -> None:
    assert client.get(URL).status_code == 405
