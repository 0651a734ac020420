"""The one authorization decision, shared by ext_authz Check, the gRPC API's own
interceptor and ExplainDecision."""

from __future__ import annotations

from dataclasses import dataclass

from tahoe_auth.domain import errors
from tahoe_auth.domain.principal import Principal

ALLOW = "allowed"
NO_CREDENTIAL = "missing_credential"
INVALID_CREDENTIAL = "invalid_credential"
TENANT_SUSPENDED = "tenant_suspended"
SUBJECT_DISABLED = "subject_disabled"
PERMISSION_DENIED = "permission_denied"
WRONG_TENANT = "wrong_tenant"
TENANT_REQUIRED = "tenant_required"
UNAVAILABLE = "unavailable"
RATE_LIMITED = "rate_limited"
QUOTA_EXCEEDED = "quota_exceeded"

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
        return _HTTP_STATUS.get(self.reason, 403)


_HTTP_STATUS = {
    ALLOW: 200,
    NO_CREDENTIAL: 401,
    INVALID_CREDENTIAL: 401,
    # Another tenant's resources are simply not there (no existence oracle).
    WRONG_TENANT: 404,
    RATE_LIMITED: 429,
    QUOTA_EXCEEDED: 429,
    UNAVAILABLE: 503,
}


def decide(
    principal: Principal,
    required_permission: str = "",
    resource_tenant: str = "",
    *,
    platform_only: bool = False,
    tenant_required: bool = False,
) -> Decision:
    """Decide for an authenticated principal. Authentication failures are decided by
    the caller (`unauthenticated`), since there is no principal to reason about.

    `resource_tenant` is the tenant the request is about: another tenant's resources
    are denied as WRONG_TENANT (callers answer NOT_FOUND) unless the principal is not
    bound to a tenant (platform administrators and platform-wide service accounts,
    which still need the permission). `platform_only` methods (creating tenants,
    suspending them) are for platform administrators alone: no tenant role grants them.
    `tenant_required`: the request acts within one tenant (every request through
    Envoy does), so a credential bound to no tenant must name the resource's tenant."""
    if not principal.tenant_active:
        return Decision(False, TENANT_SUSPENDED, "tenant is suspended", principal, required_permission)
    if not principal.subject_active:
        return Decision(
            False, SUBJECT_DISABLED, f"{principal.subject_type} is disabled", principal, required_permission
        )
    if resource_tenant and resource_tenant != principal.tenant_id and not principal.platform_scoped:
        # The same words whether that tenant exists or not: anything else is an existence oracle.
        return Decision(
            False,
            WRONG_TENANT,
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
    if outcome.reason == TENANT_SUSPENDED:
        return errors.TenantSuspended()
    if outcome.reason == SUBJECT_DISABLED:
        return errors.UserDisabled()
    if outcome.reason == WRONG_TENANT:
        # No existence oracle: another tenant's resources are simply not there.
        return errors.NotFound("resource", NOT_FOUND_MESSAGE)
    return errors.PermissionDenied(outcome.message, permission=outcome.permission)
