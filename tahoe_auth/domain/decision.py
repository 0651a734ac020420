"""The one authorization decision, shared by ext_authz Check, the gRPC API's own
interceptor and ExplainDecision."""

from __future__ import annotations

from dataclasses import dataclass

from tahoe_auth.domain import errors, reasons
from tahoe_auth.domain.principal import Principal
from tahoe_auth.domain.reasons import (
    ALLOW,
    INVALID_TOKEN,
    MFA_ENROLLMENT_REQUIRED,
    NO_CREDENTIAL,
    NOT_FOUND,
    PERMISSION_DENIED,
    QUOTA_EXCEEDED,
    RATE_LIMITED,
    SUBJECT_DISABLED,
    TENANT_REQUIRED,
    TENANT_SUSPENDED,
    UNAVAILABLE,
)

__all__ = [
    "ALLOW",
    "INVALID_TOKEN",
    "MFA_ENROLLMENT_REQUIRED",
    "NOT_FOUND",
    "NO_CREDENTIAL",
    "PERMISSION_DENIED",
    "QUOTA_EXCEEDED",
    "RATE_LIMITED",
    "SUBJECT_DISABLED",
    "TENANT_REQUIRED",
    "TENANT_SUSPENDED",
    "UNAVAILABLE",
    "Decision",
    "decide",
    "denial",
    "require",
    "unauthenticated",
]

# What a caller hears about another tenant's resource, existing or not; the gRPC API's
# errors.NotFound("resource") says the same.
NOT_FOUND_MESSAGE = "resource not found"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    message: str
    principal: Principal | None = None
    permission: str = ""
    # The grant that allowed the request, or what was missing.
    rule: str = ""
    # Why a credential was refused or the decision could not be made: for logs and
    # platform operators, never for the caller.
    detail: str = ""

    @property
    def http_status(self) -> int:
        """From the reason's row (domain/reasons.py), the only source of the status."""
        return reasons.REASONS[self.reason].http_status


def decide(
    principal: Principal,
    required_permission: str = "",
    resource_tenant: str = "",
    *,
    platform_only: bool = False,
    tenant_required: bool = False,
    allowed_restriction: str = "",
) -> Decision:
    """Decide for an authenticated principal. Authentication failures are decided by
    the caller (`unauthenticated`), since there is no principal to reason about.

    `resource_tenant` is the tenant the request is about: another tenant's resources
    are denied as NOT_FOUND unless the principal is not
    bound to a tenant (platform administrators and platform-wide service accounts,
    which still need the permission). `platform_only` methods (creating tenants,
    suspending them) are for platform administrators alone: no tenant role grants them.
    `tenant_required`: the request acts within one tenant (every request through
    Envoy does), so a credential bound to no tenant must name the resource's tenant.
    A restricted token is refused everywhere but where `allowed_restriction` names its
    restriction (the enrollment methods)."""
    if not principal.tenant_active:
        return Decision(False, TENANT_SUSPENDED, "tenant is suspended", principal, required_permission)
    if not principal.subject_active:
        return Decision(
            False, SUBJECT_DISABLED, f"{principal.subject_type} is disabled", principal, required_permission
        )
    if principal.restriction and principal.restriction != allowed_restriction:
        return Decision(
            False,
            MFA_ENROLLMENT_REQUIRED,
            "this token can only enroll a second factor",
            principal,
            required_permission,
            detail=f"restricted token: {principal.restriction}",
        )
    if resource_tenant and resource_tenant != principal.tenant_id and not principal.platform_scoped:
        # The same words whether that tenant exists or not: anything else is an existence oracle.
        return Decision(
            False,
            NOT_FOUND,
            NOT_FOUND_MESSAGE,
            principal,
            required_permission,
            detail="the resource's tenant is not the caller's",
        )
    if tenant_required and not (principal.tenant_id or resource_tenant):
        return Decision(False, TENANT_REQUIRED, "this credential is bound to no tenant", principal, required_permission)
    if platform_only and not principal.platform_admin:
        return Decision(
            False, PERMISSION_DENIED, "platform administrators only", principal, required_permission, "platform_only"
        )
    if not required_permission:
        return Decision(True, ALLOW, "valid credential; route needs no permission", principal, "", "authenticated")
    if principal.platform_admin:
        return Decision(True, ALLOW, "platform administrator", principal, required_permission, "platform_admin")
    grants = principal.permissions.relevant_to(required_permission)
    if grants:
        return Decision(True, ALLOW, f"granted by {grants[0]}", principal, required_permission, grants[0])
    return Decision(
        False,
        PERMISSION_DENIED,
        f"missing permission {required_permission}",
        principal,
        required_permission,
        f"no grant covers {required_permission}",
    )


def unauthenticated(reason: str, message: str, detail: str = "") -> Decision:
    return Decision(False, reason, message, detail=detail)


def require(
    principal: Principal, required_permission: str = "", resource_tenant: str = "", *, platform_only: bool = False
) -> Decision:
    """`decide`, raising the matching domain error when denied (for the gRPC API)."""
    outcome = decide(principal, required_permission, resource_tenant, platform_only=platform_only)
    if not outcome.allowed:
        raise denial(outcome)
    return outcome


def denial(outcome: Decision) -> errors.TahoeError:
    """The domain error the gRPC API raises for a denial: the class of its reason's row."""
    cls = reasons.REASONS[outcome.reason].error
    if cls is None:
        raise ValueError(f"{outcome.reason!r} is not a denial")
    if cls is errors.TenantSuspended:
        return errors.TenantSuspended()
    if cls is errors.UserDisabled:
        return errors.UserDisabled()
    if cls is errors.MfaEnrollmentRequired:
        return errors.MfaEnrollmentRequired()
    if cls is errors.NotFound:
        # No existence oracle: another tenant's resources are simply not there.
        return errors.NotFound("resource", NOT_FOUND_MESSAGE)
    if cls is errors.PermissionDenied:
        return errors.PermissionDenied(outcome.message, permission=outcome.permission)
    if issubclass(cls, errors.ResourceExhausted):
        return cls(outcome.message, retry_after=1.0)
    return cls(outcome.message)
