"""Every AuthService and TenantService method declares its policy in one table."""

from __future__ import annotations

import pytest

from tahoe_auth import server
from tahoe_auth.api.interceptors import MethodPolicy, requested_tenant
from tahoe_auth.domain import decision
from tahoe_auth.domain.permissions import BUILTIN_ROLES, PermissionSet, parse
from tahoe_auth.domain.principal import Principal
from tahoe_auth.v1 import auth_pb2, tenant_pb2

GOVERNED = server.method_names(server.GOVERNED_SERVICES)


@pytest.mark.parametrize("method", GOVERNED)
def test_every_method_declares_a_policy(method: str) -> None:
    # Generated from the service descriptors: a new RPC without an entry fails here.
    assert method in server.POLICIES, f"{method} has no entry in server.POLICIES"
    policy = server.POLICIES[method]
    if policy.permission:
        parse(policy.permission)


def test_our_services_are_governed() -> None:
    names = {service.full_name for service in server.GOVERNED_SERVICES}
    assert {"tahoe_auth.v1.AuthService", "tahoe_auth.v1.TenantService"} <= names
    assert len(GOVERNED) > 40


def test_the_server_refuses_to_start_with_a_method_missing() -> None:
    incomplete = dict(server.POLICIES)
    del incomplete["/tahoe_auth.v1.TenantService/DeleteUser"]
    with pytest.raises(RuntimeError, match="DeleteUser"):
        server.check_policies(incomplete)
    server.check_policies()


def test_public_methods_are_exactly_the_credential_exchanges() -> None:
    public = {m.rsplit("/", 1)[1] for m in GOVERNED if server.POLICIES[m].public}
    assert public == {
        "Login",
        "Refresh",
        "ValidateToken",
        "IssueServiceToken",
        "AcceptInvitation",
        # The MFA challenge (from a login or a passkey sign-in) is the credential.
        "VerifyMfa",
        "BeginPasskeySignIn",
        # By password or by the refresh-token cookie (and the CSRF header).
        "BrowserLogin",
        "BrowserVerifyMfa",
        "BrowserRefresh",
        "BrowserLogout",
        # A mailed link's token is the credential; a reset request needs none and
        # answers alike for every account.
        "RequestPasswordReset",
        "ResetPasswordWithToken",
        "VerifyEmail",
    }


def test_owner_holds_every_tenant_permission_and_no_platform_power() -> None:
    owner = Principal("t1", "u1", "user", PermissionSet.of(BUILTIN_ROLES["owner"]))
    for method in GOVERNED:
        policy = server.POLICIES[method]
        outcome = decision.decide(owner, policy.permission, platform_only=policy.platform_only)
        assert outcome.allowed != policy.platform_only, method


def test_viewer_reads_but_does_not_write() -> None:
    viewer = Principal("t1", "u1", "user", PermissionSet.of(BUILTIN_ROLES["viewer"]))
    assert decision.decide(viewer, server.POLICIES[server.TENANT + "ListUsers"].permission).allowed
    assert not decision.decide(viewer, server.POLICIES[server.TENANT + "CreateUser"].permission).allowed


def test_the_request_names_the_resource_tenant() -> None:
    assert requested_tenant(tenant_pb2.GetUserRequest(tenant_id="t2", user_id="u")) == "t2"
    assert requested_tenant(auth_pb2.LoginRequest(tenant="t2")) == ""
    assert requested_tenant(None) == ""


def test_platform_only_and_platform_scoped_decisions() -> None:
    admin = Principal("", "p1", "platform", platform_admin=True)
    service = Principal("", "s1", "service", PermissionSet.of(["usage:write"]))
    owner = Principal("t1", "u1", "user", PermissionSet.of(["*:*"]))
    assert decision.decide(admin, "", platform_only=True).allowed
    assert decision.decide(owner, "", platform_only=True).reason == decision.PERMISSION_DENIED
    # A platform-wide service account acts on any tenant, but only within its permissions.
    assert decision.decide(service, "usage:write", resource_tenant="t9").allowed
    assert not decision.decide(service, "users:read", resource_tenant="t9").allowed
    assert decision.decide(owner, "users:read", resource_tenant="t9").reason == decision.NOT_FOUND
    assert MethodPolicy().permission == ""
