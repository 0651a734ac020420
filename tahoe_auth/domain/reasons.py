"""Every authorization decision reason, once: what each one means on every surface.

One spelling per reason everywhere: `Decision.reason`, Check's JSON body `error`,
the tahoe_check_* metric labels, denial log lines, the aggregated `authz.denied`
audit entries and ExplainDecision's `reason`. The gRPC API raises `error` (its
ErrorInfo reason is `error_reason`), ext_authz Check answers `grpc_code`,
`http_status`, a body `{"error": <name>, "message": ...}` and the `challenge`.

Pure: gRPC codes are their names (`grpc.StatusCode[...]`, `google.rpc.code_pb2`).
A reason missing here is a bug: Check then fails closed (503).
"""

from __future__ import annotations

from dataclasses import dataclass

from tahoe_auth.domain import errors

ALLOW = "allowed"
NO_CREDENTIAL = "missing_credential"
INVALID_TOKEN = "invalid_token"
TENANT_SUSPENDED = "tenant_suspended"
SUBJECT_DISABLED = "subject_disabled"
PERMISSION_DENIED = "permission_denied"
NOT_FOUND = "not_found"
TENANT_REQUIRED = "tenant_required"
UNAVAILABLE = "unavailable"
RATE_LIMITED = "rate_limited"
QUOTA_EXCEEDED = "quota_exceeded"
MFA_ENROLLMENT_REQUIRED = "mfa_enrollment_required"

# www-authenticate challenges (RFC 6750): none; no error code when no credential was
# sent; `invalid_token` for a bad one; `insufficient_scope` (with the route's
# permission) when the credential lacks it.
NO_CHALLENGE = ""
BEARER = "bearer"
BEARER_INVALID_TOKEN = "invalid_token"
BEARER_INSUFFICIENT_SCOPE = "insufficient_scope"

REALM = 'Bearer realm="tahoe"'


@dataclass(frozen=True, slots=True)
class Reason:
    name: str
    grpc_code: str
    http_status: int
    # The domain error the gRPC API raises for it (None: not an error).
    error: type[errors.TahoeError] | None
    # google.rpc.ErrorInfo.reason: the ErrorReason enum name without its prefix.
    error_reason: str
    challenge: str = NO_CHALLENGE

    @property
    def body_error(self) -> str:
        """The `error` of the JSON body: the reason's own name."""
        return self.name

    def www_authenticate(self, permission: str = "") -> str | None:
        if self.challenge == BEARER:
            return REALM
        if self.challenge == BEARER_INVALID_TOKEN:
            return f'{REALM}, error="invalid_token"'
        if self.challenge == BEARER_INSUFFICIENT_SCOPE:
            return f'{REALM}, error="insufficient_scope", scope="{permission}"'
        return None


_ROWS = (
    Reason(ALLOW, "OK", 200, None, ""),
    Reason(NO_CREDENTIAL, "UNAUTHENTICATED", 401, errors.Unauthenticated, "UNAUTHENTICATED", BEARER),
    Reason(INVALID_TOKEN, "UNAUTHENTICATED", 401, errors.Unauthenticated, "UNAUTHENTICATED", BEARER_INVALID_TOKEN),
    Reason(TENANT_SUSPENDED, "PERMISSION_DENIED", 403, errors.TenantSuspended, "TENANT_SUSPENDED"),
    Reason(SUBJECT_DISABLED, "PERMISSION_DENIED", 403, errors.UserDisabled, "USER_DISABLED"),
    Reason(
        PERMISSION_DENIED,
        "PERMISSION_DENIED",
        403,
        errors.PermissionDenied,
        "PERMISSION_DENIED",
        BEARER_INSUFFICIENT_SCOPE,
    ),
    # Another tenant's resources are simply not there (no existence oracle).
    Reason(NOT_FOUND, "NOT_FOUND", 404, errors.NotFound, "NOT_FOUND"),
    Reason(TENANT_REQUIRED, "PERMISSION_DENIED", 403, errors.PermissionDenied, "PERMISSION_DENIED"),
    Reason(UNAVAILABLE, "UNAVAILABLE", 503, errors.Unavailable, "UNAVAILABLE"),
    Reason(RATE_LIMITED, "RESOURCE_EXHAUSTED", 429, errors.RateLimited, "RATE_LIMITED"),
    Reason(QUOTA_EXCEEDED, "RESOURCE_EXHAUSTED", 429, errors.QuotaExceeded, "QUOTA_EXCEEDED"),
    # A restricted token (it may only enroll a second factor) used for anything else.
    Reason(MFA_ENROLLMENT_REQUIRED, "PERMISSION_DENIED", 403, errors.MfaEnrollmentRequired, "MFA_ENROLLMENT_REQUIRED"),
)

REASONS: dict[str, Reason] = {row.name: row for row in _ROWS}


def of(reason: str) -> Reason:
    """The row of `reason`; KeyError for a reason nobody declared."""
    return REASONS[reason]
