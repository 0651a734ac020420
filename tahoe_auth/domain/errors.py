"""The domain's exception tree. One table in `tahoe_auth.api.errors` maps it to gRPC.

TahoeError
├── InvalidArgument            bad input (metadata: field)
├── Unauthenticated            no/bad credential
│   ├── InvalidCredentials     login failed (one answer for every cause)
│   ├── RefreshTokenInvalid
│   ├── RefreshTokenReused     the session was revoked as a consequence
│   ├── InvitationInvalid      unknown, used, revoked or expired invitation token
│   └── ClientCredentialsInvalid  a service account's client id or secret
├── PermissionDenied           (metadata: permission)
│   ├── CsrfHeaderMissing      a browser session call without its CSRF header (metadata: header)
│   ├── TenantSuspended
│   ├── UserDisabled
│   └── PrivilegeEscalation    granting what one does not hold
├── NotFound                   (metadata: resource)
├── AlreadyExists              (metadata: resource)
├── FailedPrecondition
│   ├── LastOwner
│   ├── RoleInUse              (metadata: role, holders)
│   └── SigningKeyRevoked      (metadata: kid)
├── Aborted                    concurrent change, retry
├── ResourceExhausted          (retry_after seconds)
│   ├── LoginThrottled
│   ├── RateLimited
│   └── QuotaExceeded
└── Unavailable                a dependency is down, or the server is overloaded
                               (retry_after seconds when the server knows)
"""

from __future__ import annotations


class TahoeError(Exception):
    reason = "INTERNAL"

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata


class InvalidArgument(TahoeError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)
        self.field = field


class Unauthenticated(TahoeError):
    reason = "UNAUTHENTICATED"


class InvalidCredentials(Unauthenticated):
    reason = "INVALID_CREDENTIALS"

    def __init__(self) -> None:
        super().__init__("invalid tenant, email or password")


class RefreshTokenInvalid(Unauthenticated):
    reason = "REFRESH_TOKEN_INVALID"

    def __init__(self) -> None:
        super().__init__("refresh token is invalid or expired")


class RefreshTokenReused(Unauthenticated):
    reason = "REFRESH_TOKEN_REUSED"

    def __init__(self) -> None:
        super().__init__("refresh token was already used; the session has been revoked")


class LinkInvalid(Unauthenticated):
    reason = "LINK_INVALID"

    def __init__(self) -> None:
        super().__init__("the link is invalid, already used or expired: ask for a new one")


class InvitationInvalid(Unauthenticated):
    reason = "INVITATION_INVALID"

    def __init__(self) -> None:
        super().__init__("invitation is invalid, already used, revoked or expired")


class ClientCredentialsInvalid(Unauthenticated):
    reason = "CLIENT_CREDENTIALS_INVALID"

    def __init__(self) -> None:
        super().__init__("invalid client id or client secret")


class MfaCodeInvalid(Unauthenticated):
    """Every failed second step: wrong, replayed or late code, used recovery code,
    refused passkey assertion, unknown or spent challenge. One answer for all of them."""

    reason = "MFA_CODE_INVALID"

    def __init__(self) -> None:
        super().__init__("the code or passkey was not accepted, or the challenge has expired")


class PermissionDenied(TahoeError):
    reason = "PERMISSION_DENIED"


class MfaRequired(PermissionDenied):
    reason = "MFA_REQUIRED"

    def __init__(self, max_age_seconds: int) -> None:
        super().__init__(
            "this method needs a session verified with a second factor recently:"
            " create a step-up challenge (MfaService.CreateStepUpChallenge) and answer it",
            max_age_seconds=str(max_age_seconds),
        )


class MfaEnrollmentRequired(PermissionDenied):
    reason = "MFA_ENROLLMENT_REQUIRED"

    def __init__(self) -> None:
        super().__init__("this token can only enroll a second factor (MfaService); then answer the login challenge")


class PasswordRejected(InvalidArgument):
    """The password breaks a rule of the password policy; `rule` names it."""

    reason = "PASSWORD_REJECTED"

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(field, message)
        self.metadata["rule"] = rule
        self.rule = rule


class CsrfHeaderMissing(PermissionDenied):
    reason = "CSRF_HEADER_MISSING"

    def __init__(self, header: str) -> None:
        super().__init__(
            f"send the request header `{header}: 1` (browser session methods require it against CSRF)", header=header
        )


class TenantSuspended(PermissionDenied):
    reason = "TENANT_SUSPENDED"

    def __init__(self) -> None:
        super().__init__("tenant is suspended")


class UserDisabled(PermissionDenied):
    reason = "USER_DISABLED"

    def __init__(self) -> None:
        super().__init__("user is disabled")


class PrivilegeEscalation(PermissionDenied):
    reason = "PRIVILEGE_ESCALATION"

    def __init__(self, permission: str) -> None:
        super().__init__(f"cannot grant {permission!r}: the caller does not hold it", permission=permission)


class NotFound(TahoeError):
    reason = "NOT_FOUND"

    def __init__(self, resource: str, message: str | None = None) -> None:
        super().__init__(message or f"{resource} not found", resource=resource)


class AlreadyExists(TahoeError):
    reason = "ALREADY_EXISTS"

    def __init__(self, resource: str, message: str | None = None) -> None:
        super().__init__(message or f"{resource} already exists", resource=resource)


class FailedPrecondition(TahoeError):
    reason = "FAILED_PRECONDITION"


class LastOwner(FailedPrecondition):
    reason = "LAST_OWNER"

    def __init__(self) -> None:
        super().__init__("the tenant's last owner cannot be removed or demoted")


class RoleInUse(FailedPrecondition):
    reason = "ROLE_IN_USE"

    def __init__(self, role: str, holders: int) -> None:
        super().__init__(
            f"role {role!r} is held by {holders} user(s); delete with force to remove it from them",
            role=role,
            holders=str(holders),
        )


class SigningKeyRevoked(FailedPrecondition):
    reason = "SIGNING_KEY_REVOKED"

    def __init__(self, kid: str) -> None:
        super().__init__(f"signing key {kid} is already revoked", kid=kid)


class Aborted(TahoeError):
    reason = "ABORTED"


class ResourceExhausted(TahoeError):
    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after: float, quota: str = "", **metadata: str) -> None:
        super().__init__(message, **metadata)
        self.retry_after = retry_after
        self.quota = quota


class LoginThrottled(ResourceExhausted):
    reason = "LOGIN_THROTTLED"

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed logins; retry later", retry_after, quota="login")


class RateLimited(ResourceExhausted):
    reason = "RATE_LIMITED"


class QuotaExceeded(ResourceExhausted):
    reason = "QUOTA_EXCEEDED"


class Unavailable(TahoeError):
    reason = "UNAVAILABLE"

    def __init__(self, message: str, retry_after: float = 0.0, **metadata: str) -> None:
        super().__init__(message, **metadata)
        # 0: no advice (a dependency is down for as long as it is).
        self.retry_after = retry_after
