"""Request signing for the ZEGO server APIs."""

from __future__ import annotations

import re

from worker.vendors.zego.signing import SIGNATURE_VERSION, api_signature, signed_params


def test_documented_vector() -> None:
    """The signature of ZEGO's documented example matches ZEGO's documented result."""
    assert (
        api_signature(12345, "4fd24687296dd9f3", "9193cc662a4c0ec135ec71fb57194b38", 1615186943)
        == "43e5cfcca828314675f91b001390566a"
    )


def test_signed_params_sign_what_they_send() -> None:
    """The query carries the nonce and timestamp that were hashed, with version 2.0."""
    params = signed_params(
        12345, "9193cc662a4c0ec135ec71fb57194b38", now=1615186943.9, nonce="4fd24687296dd9f3"
    )
    assert params == {
        "AppId": "12345",
        "SignatureNonce": "4fd24687296dd9f3",
        "Timestamp": "1615186943",
        "Signature": "43e5cfcca828314675f91b001390566a",
        "SignatureVersion": SIGNATURE_VERSION,
    }


def test_every_request_gets_a_fresh_16_hex_nonce() -> None:
    """Two requests in the same second differ in nonce and signature; nonces are 16 hex chars."""
    first = signed_params(1, "secret", now=100)
    second = signed_params(1, "secret", now=100)
    assert re.fullmatch(r"[0-9a-f]{16}", first["SignatureNonce"])
    assert first["SignatureNonce"] != second["SignatureNonce"]
    assert first["Signature"] != second["Signature"]
    assert "secret" not in "".join(first.values())
