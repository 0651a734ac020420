"""The one place where exceptions become gRPC statuses with google.rpc.ErrorInfo.

Domain errors map by class (store outages are `Unavailable` too); anything else becomes
INTERNAL with a generic message, and the full exception goes to the log under the
request id. Raw driver messages never reach callers.
"""

from __future__ import annotations

import logging
import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tahoe_auth.domain import errors

log = logging.getLogger(__name__)

DOMAIN = "tahoe.auth"

_CODES: list[tuple[type[errors.TahoeError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
]


def code_for(error: errors.TahoeError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(error: BaseException, request_id: str) -> grpc.Status:
    if not isinstance(error, errors.TahoeError):
        log.error("unhandled error (request %s)", request_id, exc_info=error)
        error = errors.TahoeError(f"internal error; quote request id {request_id}")
    code = code_for(error)
    metadata = dict(error.metadata)
    if request_id:
        metadata["request_id"] = request_id
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=metadata))]
    if isinstance(error, errors.ResourceExhausted) or (isinstance(error, errors.Unavailable) and error.retry_after):
        seconds = max(1, math.ceil(error.retry_after))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))))
    if isinstance(error, errors.ResourceExhausted) and error.quota:
        violation = error_details_pb2.QuotaFailure.Violation(subject=error.quota, description=error.message)
        details.append(_pack(error_details_pb2.QuotaFailure(violations=[violation])))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message, details=details)
    return rpc_status.to_status(status)
