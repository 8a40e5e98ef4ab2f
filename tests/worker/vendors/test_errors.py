"""One error tree for every vendor: a task asks "may I retry, what do I tell the user" once."""

from __future__ import annotations

import pytest

from worker.vendors.coze import specs as coze_specs
from worker.vendors.coze.errors import error_for
from worker.vendors.errors import (
    Failure,
    PermanentVendorError,
    SpecError,
    TransientVendorError,
    VendorError,
    VendorValidationError,
    classify,
)
from worker.vendors.zego import specs as zego_specs
from worker.vendors.zego.errors import error_for_code, error_for_http_status


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (error_for_code(410000001, "system error", request_id="r", action="A"), True),
        (error_for_code(410000011, "quota", request_id="r", action="A"), False),
        (error_for_http_status(503, action="A"), True),
        (error_for(5000, "internal", "log-1"), True),
        (error_for(4100, "bad token", "log-2"), False),
        (error_for(None, "HTTP 404 without a Coze envelope", None, http_status=404), False),
    ],
)
def test_zego_and_coze_errors_share_one_root_and_one_transient_or_permanent_split(
    error: VendorError, transient: bool
) -> None:
    """Whatever the vendor, the class says whether a retry can help, and classify says the same."""
    assert isinstance(error, VendorError)
    assert isinstance(error, TransientVendorError) is transient
    assert isinstance(error, PermanentVendorError) is not transient
    assert classify(error) == Failure(error.code, str(error), transient)


def test_both_vendors_specs_raise_the_one_spec_error_naming_the_field() -> None:
    """A bad request to either vendor is refused before sending with the same exception class."""
    with pytest.raises(SpecError) as zego:
        zego_specs.RegisterAgent.model_validate({"AgentId": ""})
    with pytest.raises(SpecError) as coze:
        coze_specs.CreateRoom.model_validate({"bot_id": "b", "voice_id": 3})
    for caught, vendor in ((zego.value, "ZEGO"), (coze.value, "Coze")):
        assert isinstance(caught, VendorValidationError) and isinstance(caught, ValueError)
        assert caught.field and caught.field in str(caught)
        assert f"invalid {vendor}" in str(caught) or vendor == "ZEGO"
        assert classify(caught) == Failure(None, str(caught), False)


def test_an_exception_of_ours_is_not_a_vendor_failure() -> None:
    assert classify(KeyError("x")) is None
