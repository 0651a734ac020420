"""Service accounts: client credentials for short-lived service tokens, rotation,
revocation, and platform-wide accounts acting across tenants within their permissions."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2, field_mask_pb2

from tahoe_auth.v1 import auth_pb2, principal_pb2, tenant_pb2, usage_pb2, usage_pb2_grpc
from tests.support import RunningServer, bearer, call_error, error_reason, wait_until


def create_account(
    server: RunningServer, credential: str, name: str, permissions: list[str], tenant_id: str = ""
) -> tenant_pb2.CreateServiceAccountResponse:
    return server.tenants.CreateServiceAccount(
        tenant_pb2.CreateServiceAccountRequest(
            tenant_id=tenant_id, service_account=tenant_pb2.ServiceAccount(name=name, permissions=permissions)
        ),
        metadata=bearer(credential),
    )


def issue(server: RunningServer, client_id: str, secret: str) -> auth_pb2.IssueServiceTokenResponse:
    return server.auth.IssueServiceToken(auth_pb2.IssueServiceTokenRequest(client_id=client_id, client_secret=secret))


def works(server: RunningServer, token: str) -> bool:
    try:
        server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token))
        return True
    except grpc.RpcError:
        return False


def test_client_credentials_give_a_short_lived_service_token(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    created = create_account(server, owner, "transcription", ["transcription:*", "usage:read"])
    assert created.client_secret.startswith("tahoe_sa_") and created.client_id == created.service_account.id
    assert created.service_account.tenant_id == tenant.id
    token = issue(server, created.client_id, created.client_secret)
    assert token.token_type == "Bearer" and 0 < token.expires_in <= 600
    found = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token.access_token)).principal
    assert found.subject_type == principal_pb2.SUBJECT_TYPE_SERVICE and found.subject == created.client_id
    assert found.tenant_id == tenant.id and set(found.permissions) == {"transcription:*", "usage:read"}
    # The token works on the API within its permissions only.
    assert not reads_tenant(server, token.access_token)
    typo = created.client_secret[:-1] + ("x" if created.client_secret[-1] != "x" else "y")
    for secret in ("tahoe_sa_wrong", typo):
        error = call_error(issue, server, created.client_id, secret)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and error_reason(error) == "CLIENT_CREDENTIALS_INVALID"
    other = create_account(server, owner, "other", ["usage:read"])
    assert error_reason(call_error(issue, server, other.client_id, created.client_secret)) == (
        "CLIENT_CREDENTIALS_INVALID"
    )
    # The secret itself is not a bearer credential: it is only exchanged.
    assert not works(server, created.client_secret)


def reads_tenant(server: RunningServer, token: str) -> bool:
    try:
        return bool(server.tenants.GetTenant(tenant_pb2.GetTenantRequest(), metadata=bearer(token)).tenant.id)
    except grpc.RpcError as error:
        assert error_reason(error) == "PERMISSION_DENIED"
        return False


def test_permission_changes_apply_to_issued_tokens(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    created = create_account(server, owner, "svc", ["usage:read"])
    token = issue(server, created.client_id, created.client_secret).access_token
    assert works(server, token) and not reads_tenant(server, token)
    server.tenants.UpdateServiceAccount(
        tenant_pb2.UpdateServiceAccountRequest(
            service_account=tenant_pb2.ServiceAccount(id=created.client_id, permissions=["tenant:read"]),
            update_mask=field_mask_pb2.FieldMask(paths=["permissions"]),
        ),
        metadata=bearer(owner),
    )
    assert (
        wait_until(lambda: server.tenants.GetTenant(tenant_pb2.GetTenantRequest(), metadata=bearer(token)).tenant) < 1
    )
    escalation = call_error(create_account, server, server.add_user(tenant, ["admin"])[1], "x", ["tenant:write"])
    assert error_reason(escalation) == "PRIVILEGE_ESCALATION"


def test_rotate_with_grace_and_revoke_everything(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    created = create_account(server, server.owner_token(tenant), "svc", ["usage:read"])
    old_token = issue(server, created.client_id, created.client_secret).access_token
    rotated = server.tenants.RotateServiceAccountSecret(
        tenant_pb2.RotateServiceAccountSecretRequest(
            service_account_id=created.client_id, grace_period=duration_pb2.Duration(seconds=300)
        ),
        metadata=owner,
    )
    assert rotated.client_secret != created.client_secret
    assert issue(server, created.client_id, created.client_secret).access_token  # within the grace period
    new_token = issue(server, created.client_id, rotated.client_secret).access_token

    revoked = server.tenants.RevokeServiceAccountSecret(
        tenant_pb2.RevokeServiceAccountSecretRequest(service_account_id=created.client_id), metadata=owner
    ).service_account
    assert revoked.secret_revoked and not revoked.secret_prefix
    for token in (old_token, new_token):
        assert wait_until(lambda t=token: not works(server, t)) < 1.0
    for secret in (created.client_secret, rotated.client_secret):
        assert error_reason(call_error(issue, server, created.client_id, secret)) == "CLIENT_CREDENTIALS_INVALID"
    # Rotating after a revocation issues a working secret again, whose tokens work.
    fresh = server.tenants.RotateServiceAccountSecret(
        tenant_pb2.RotateServiceAccountSecretRequest(service_account_id=created.client_id), metadata=owner
    ).client_secret
    fresh_token = issue(server, created.client_id, fresh).access_token
    assert wait_until(lambda: works(server, fresh_token), limit=2.5) < 2.5
    assert not works(server, old_token)


def test_deleting_an_account_stops_its_tokens(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    created = create_account(server, server.owner_token(tenant), "svc", ["usage:read"])
    token = issue(server, created.client_id, created.client_secret).access_token
    assert works(server, token)
    listed = server.tenants.ListServiceAccounts(tenant_pb2.ListServiceAccountsRequest(), metadata=owner)
    assert [a.name for a in listed.service_accounts] == ["svc"]
    server.tenants.DeleteServiceAccount(
        tenant_pb2.DeleteServiceAccountRequest(service_account_id=created.client_id), metadata=owner
    )
    assert wait_until(lambda: not works(server, token)) < 1.0


def test_a_platform_wide_account_acts_across_tenants_within_its_permissions(server: RunningServer) -> None:
    a, b = server.create_tenant(), server.create_tenant()
    created = create_account(server, server.platform_key, "transcription", ["users:read"])
    assert created.service_account.tenant_id == ""
    token = issue(server, created.client_id, created.client_secret).access_token
    principal = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token)).principal
    assert principal.tenant_id == "" and not principal.platform_admin
    for tenant in (a, b):
        users = server.tenants.ListUsers(tenant_pb2.ListUsersRequest(tenant_id=tenant.id), metadata=bearer(token))
        assert [u.id for u in users.users] == [tenant.owner_id]
    denied = call_error(
        server.tenants.CreateUser,
        tenant_pb2.CreateUserRequest(tenant_id=a.id, user=tenant_pb2.User(email="x@x.test")),
        metadata=bearer(token),
    )
    assert error_reason(denied) == "PERMISSION_DENIED"
    assert error_reason(
        call_error(server.tenants.ListTenants, tenant_pb2.ListTenantsRequest(), metadata=bearer(token))
    ) == ("PERMISSION_DENIED")
    # It names the tenant it acts on.
    unnamed = call_error(server.tenants.ListUsers, tenant_pb2.ListUsersRequest(), metadata=bearer(token))
    assert unnamed.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Tenant owners neither see nor manage the platform registry.
    owner = bearer(server.owner_token(a))
    assert not server.tenants.ListServiceAccounts(
        tenant_pb2.ListServiceAccountsRequest(), metadata=owner
    ).service_accounts
    missing = call_error(
        server.tenants.GetServiceAccount,
        tenant_pb2.GetServiceAccountRequest(service_account_id=created.client_id),
        metadata=owner,
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    listed = server.tenants.ListServiceAccounts(
        tenant_pb2.ListServiceAccountsRequest(), metadata=bearer(server.platform_key)
    ).service_accounts
    assert [s.id for s in listed] == [created.client_id]


def test_the_transcription_service_reports_usage_for_any_tenant(server: RunningServer) -> None:
    a, b = server.create_tenant(), server.create_tenant()
    created = create_account(server, server.platform_key, "transcription", ["usage:write"])
    token = bearer(issue(server, created.client_id, created.client_secret).access_token)
    usage = usage_pb2_grpc.UsageServiceStub(server.channel)
    event = usage_pb2.UsageEvent(metric="transcription.seconds", quantity=12.5)
    for tenant in (a, b):
        usage.RecordUsage(usage_pb2.RecordUsageRequest(tenant_id=tenant.id, event=event), metadata=token)
    unnamed = call_error(usage.RecordUsage, usage_pb2.RecordUsageRequest(event=event), metadata=token)
    assert unnamed.code() == grpc.StatusCode.INVALID_ARGUMENT
    reading = call_error(usage.GetUsageSummary, usage_pb2.GetUsageSummaryRequest(tenant_id=a.id), metadata=token)
    assert error_reason(reading) == "PERMISSION_DENIED"  # it writes usage, it does not read it
    server.app.usage_recorder.flush()
    for tenant in (a, b):
        owner = bearer(server.owner_token(tenant))
        summary = usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(), metadata=owner)
        assert [(m.metric, m.quantity) for m in summary.metrics] == [("transcription.seconds", 12.5)]
