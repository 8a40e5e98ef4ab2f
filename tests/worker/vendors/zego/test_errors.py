"""The ZEGO error tree: which codes are retried, and what an error shows."""

from __future__ import annotations

import pytest

from worker.vendors.errors import PermanentVendorError, SpecError, VendorValidationError
from worker.vendors.zego.errors import (
    CODE_CLASSES,
    ZegoAuthError,
    ZegoConflictError,
    ZegoError,
    ZegoHttpError,
    ZegoInstanceBusyError,
    ZegoNotFoundError,
    ZegoPermanentError,
    ZegoQuotaError,
    ZegoTimeoutError,
    ZegoTransientError,
    ZegoValidationError,
    error_for_code,
    error_for_http_status,
    is_transient,
    is_transient_unprocessed,
)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (100000015, ZegoTransientError),
        (410000001, ZegoTransientError),
        (410000009, ZegoTransientError),
        (410000010, ZegoTransientError),
        (410001025, ZegoTransientError),
        (410001029, ZegoTransientError),
        (206, ZegoTransientError),
        (207, ZegoTransientError),
        (410000003, ZegoValidationError),
        (410000004, ZegoValidationError),
        (410000014, ZegoValidationError),
        (100000004, ZegoAuthError),
        (100000005, ZegoAuthError),
        (100000010, ZegoAuthError),
        (410000002, ZegoAuthError),
        (410000005, ZegoAuthError),
        (410000006, ZegoAuthError),
        (410001047, ZegoAuthError),
        (410001002, ZegoNotFoundError),
        (410001009, ZegoNotFoundError),
        (5018, ZegoNotFoundError),
        (5024, ZegoNotFoundError),
        (50001, ZegoNotFoundError),
        (104, ZegoNotFoundError),
        (410001008, ZegoConflictError),
        (410000011, ZegoQuotaError),
        (410001031, ZegoQuotaError),
        (410001041, ZegoInstanceBusyError),
        (410001013, ZegoInstanceBusyError),
        (999999999, ZegoPermanentError),
    ],
)
def test_codes_map_onto_the_tree(code: int, cls: type[ZegoError]) -> None:
    """Each documented code becomes its typed error; only transient ones are retried."""
    error = error_for_code(code, "msg", request_id="1", action="CreateAgentInstance")
    assert type(error) is cls
    assert error.code == code
    assert is_transient(error) == issubclass(cls, ZegoTransientError)


def test_every_mapped_class_is_transient_or_permanent() -> None:
    """No code escapes the two branches of the tree."""
    for cls in CODE_CLASSES.values():
        assert issubclass(cls, (ZegoTransientError, ZegoPermanentError))


def test_str_shows_action_code_message_and_request_id() -> None:
    """An error reads as what failed, with which code, why, and the id to give ZEGO support."""
    error = error_for_code(
        410000011, "instance limit", request_id="8825223157230377926", action="CreateAgentInstance"
    )
    text = str(error)
    for part in ("CreateAgentInstance", "410000011", "instance limit", "8825223157230377926"):
        assert part in text


@pytest.mark.parametrize(
    ("status", "transient", "maybe"),
    [(429, True, False), (503, True, False), (502, True, True), (500, True, True), (404, False, False)],
)
def test_http_failures_without_an_envelope(status: int, transient: bool, maybe: bool) -> None:
    """429/503 are retried even for creates; 500/502/504 may have been processed; 4xx is permanent."""
    error = error_for_http_status(status, action="CreateAgentInstance")
    assert is_transient(error) == transient
    assert error.maybe_processed == maybe
    assert is_transient_unprocessed(error) == (transient and not maybe)
    if transient:
        assert isinstance(error, ZegoHttpError)


def test_timeouts_know_whether_the_request_went_out() -> None:
    """A connect timeout is safe to repeat for any action; a read timeout may have been processed."""
    assert is_transient_unprocessed(ZegoTimeoutError("t", phase="connect", action="A"))
    assert not is_transient_unprocessed(ZegoTimeoutError("t", phase="read", action="A"))


def test_spec_errors_are_permanent_validation_errors_and_value_errors() -> None:
    """Callers catching a vendor validation error or ValueError both see client-side failures."""
    error = SpecError([("LLM.Temperature", "too hot")], spec="CreateAgentInstance")
    assert isinstance(error, VendorValidationError) and isinstance(error, PermanentVendorError)
    assert isinstance(error, ValueError)
    assert error.field == "LLM.Temperature"
    assert "LLM.Temperature: too hot" in str(error)
