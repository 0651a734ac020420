from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tahoe_auth.api.errors import to_status
from tahoe_auth.domain import errors
from tahoe_auth.store.kv import StoreUnavailable
from tahoe_auth.v1 import errors_pb2


def details(status: grpc.Status) -> dict[str, object]:
    raw = dict(status.trailing_metadata)["grpc-status-details-bin"]
    parsed = status_pb2.Status.FromString(raw)
    found: dict[str, object] = {}
    for any_detail in parsed.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, error_details_pb2.QuotaFailure):
            if any_detail.Is(cls.DESCRIPTOR):
                message = cls()
                any_detail.Unpack(message)
                found[cls.__name__] = message
    return found


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("email", "bad email"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.InvalidCredentials(), grpc.StatusCode.UNAUTHENTICATED),
        (errors.RefreshTokenReused(), grpc.StatusCode.UNAUTHENTICATED),
        (errors.TenantSuspended(), grpc.StatusCode.PERMISSION_DENIED),
        (errors.NotFound("user"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("user"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.LastOwner(), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Unavailable("db down"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_domain_errors_map_to_codes_with_error_info(error: errors.TahoeError, code: grpc.StatusCode) -> None:
    status = to_status(error, "req-1")
    assert status.code == code
    info = details(status)["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == error.reason and info.domain == "tahoe.auth"
    assert info.metadata["request_id"] == "req-1"


def test_every_reason_is_in_the_proto_enum() -> None:
    enum_names = {name.removeprefix("ERROR_REASON_") for name in errors_pb2.ErrorReason.keys()}  # noqa: SIM118
    classes = [errors.TahoeError]
    seen: set[str] = set()
    while classes:
        cls = classes.pop()
        seen.add(cls.reason)
        classes.extend(cls.__subclasses__())
    assert seen - enum_names == set()


def test_throttling_carries_retry_info_and_quota_failure() -> None:
    found = details(to_status(errors.LoginThrottled(retry_after=2.2), "r"))
    retry = found["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo) and retry.retry_delay.seconds == 3
    assert isinstance(found["QuotaFailure"], error_details_pb2.QuotaFailure)


def test_unknown_exceptions_become_internal_without_their_text(caplog: pytest.LogCaptureFixture) -> None:
    status = to_status(RuntimeError("psycopg: password=hunter2 host=db"), "req-9")
    assert status.code == grpc.StatusCode.INTERNAL
    assert "hunter2" not in status.details and "req-9" in status.details
    assert "unhandled error" in caplog.text


def test_store_outage_is_unavailable() -> None:
    assert to_status(StoreUnavailable("timeout"), "r").code == grpc.StatusCode.UNAVAILABLE


def test_an_overloaded_server_says_when_to_retry_and_an_outage_does_not() -> None:
    busy = details(to_status(errors.Unavailable("busy hashing", retry_after=1.0), "r"))
    retry = busy["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo) and retry.retry_delay.seconds == 1
    assert "QuotaFailure" not in busy  # not the caller's quota: the server's capacity
    assert "RetryInfo" not in details(to_status(StoreUnavailable("timeout"), "r"))
