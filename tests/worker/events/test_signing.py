"""Signatures an app's Standard Webhooks library accepts: the published test vector, and our
own messages checked by a verifier written from the specification (tests/sinks.py)."""

from __future__ import annotations

import base64
import time

from tests.sinks import verify
from worker.events import signing

# From the Standard Webhooks reference implementations' tests.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_published_test_vector() -> None:
    assert signing.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_independent_verifier_agrees_with_the_vector() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    assert verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)
    assert not verify(VECTOR_SECRET, headers, VECTOR_BODY + b" ", now=VECTOR_TIMESTAMP)


def test_a_new_secret_is_whsec_and_at_least_24_random_bytes() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert signing.new_secret() != secret


def test_during_a_rotation_either_secret_verifies_the_message() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    body, now = b'{"type":"session.ended"}', int(time.time())
    headers = signing.headers([new, old], "evt_7", now, body)
    assert headers["webhook-id"] == "evt_7" and headers["webhook-timestamp"] == str(now)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(new, headers, body) and verify(old, headers, body)
    assert not verify(signing.new_secret(), headers, body)
