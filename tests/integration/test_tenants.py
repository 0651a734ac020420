"""TenantService: tenants (platform administration) and users, on a real server."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from tahoe_auth.store.db import SYSTEM
from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests.support import RunningServer, bearer, call_error, error_reason, wait_until


def platform(server: RunningServer) -> tuple[tuple[str, str], ...]:
    return bearer(server.platform_key)


def test_platform_admin_creates_lists_and_updates_tenants(server: RunningServer) -> None:
    settings = tenant_pb2.TenantSettings()
    settings.rate_limits.update({"per_tenant": {"limit": 50, "period": 1, "strategy": "gcra", "burst": 100}})
    settings.quotas.update({"transcription.seconds": {"included": 3600, "limit": "hard"}})
    with server.app.db.unit_of_work(SYSTEM) as uow:  # plans are defined with UsageService.UpsertPlan
        uow.usage.save_plan("pro", "Pro", {})
        uow.usage.save_plan("enterprise", "Enterprise", {})
        uow.commit()
    created = server.tenants.CreateTenant(
        tenant_pb2.CreateTenantRequest(tenant=tenant_pb2.Tenant(slug="Acme", plan="pro", settings=settings)),
        metadata=platform(server),
    ).tenant
    assert created.slug == "acme" and created.display_name == "acme" and created.plan == "pro"
    assert created.state == tenant_pb2.TENANT_STATE_ACTIVE
    assert created.settings.rate_limits == settings.rate_limits and created.settings.quotas == settings.quotas
    # The security policy always reads as in effect: the defaults when none was set.
    assert created.settings.security == tenant_pb2.SecurityPolicy(
        mfa_requirement=tenant_pb2.MFA_REQUIREMENT_OPTIONAL, step_up_minutes=15, password_min_length=8
    )
    # The rate limiter and quotas read what TenantService stored.
    config = server.app.tenant_config.get(created.id)
    assert config.limits.policies["per_tenant"].limit == 50 and config.plan == "pro"
    assert config.quota_overrides["transcription.seconds"] == {"included": 3600, "limit": "hard"}
    for bad in ({"per_tenant": {"limit": 0}}, {"per_moon": {}}):
        invalid = tenant_pb2.TenantSettings()
        invalid.rate_limits.update(bad)
        error = call_error(
            server.tenants.CreateTenant,
            tenant_pb2.CreateTenantRequest(tenant=tenant_pb2.Tenant(slug="bad", settings=invalid)),
            metadata=platform(server),
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    unknown_plan = call_error(
        server.tenants.CreateTenant,
        tenant_pb2.CreateTenantRequest(tenant=tenant_pb2.Tenant(slug="bad", plan="gold")),
        metadata=platform(server),
    )
    assert unknown_plan.code() == grpc.StatusCode.NOT_FOUND

    duplicate = call_error(
        server.tenants.CreateTenant,
        tenant_pb2.CreateTenantRequest(tenant=tenant_pb2.Tenant(slug="acme")),
        metadata=platform(server),
    )
    assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS

    for slug in ("b-corp", "c-corp"):
        server.tenants.CreateTenant(
            tenant_pb2.CreateTenantRequest(tenant=tenant_pb2.Tenant(slug=slug)), metadata=platform(server)
        )
    first = server.tenants.ListTenants(tenant_pb2.ListTenantsRequest(page_size=2), metadata=platform(server))
    rest = server.tenants.ListTenants(
        tenant_pb2.ListTenantsRequest(page_size=2, page_token=first.next_page_token), metadata=platform(server)
    )
    assert [t.slug for t in [*first.tenants, *rest.tenants]] == ["acme", "b-corp", "c-corp"]
    assert not rest.next_page_token

    updated = server.tenants.UpdateTenant(
        tenant_pb2.UpdateTenantRequest(
            tenant=tenant_pb2.Tenant(id=created.id, display_name="Acme Inc", plan="enterprise"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=platform(server),
    ).tenant
    assert updated.display_name == "Acme Inc" and updated.plan == "pro"  # only masked fields change


def test_tenant_creation_and_suspension_are_platform_only(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    for call, request in [
        (server.tenants.CreateTenant, tenant_pb2.CreateTenantRequest(tenant=tenant_pb2.Tenant(slug="mine"))),
        (server.tenants.ListTenants, tenant_pb2.ListTenantsRequest()),
        (server.tenants.SuspendTenant, tenant_pb2.SuspendTenantRequest(tenant_id=tenant.id)),
    ]:
        error = call_error(call, request, metadata=owner)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, call
        assert error_reason(error) == "PERMISSION_DENIED"


def test_owner_edits_display_name_but_not_plan_or_limits(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    renamed = server.tenants.UpdateTenant(
        tenant_pb2.UpdateTenantRequest(
            tenant=tenant_pb2.Tenant(display_name="Renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=owner,
    ).tenant
    assert renamed.id == tenant.id and renamed.display_name == "Renamed"
    for path in ("plan", "settings.quotas", "slug"):
        error = call_error(
            server.tenants.UpdateTenant,
            tenant_pb2.UpdateTenantRequest(
                tenant=tenant_pb2.Tenant(plan="enterprise", slug="x"),
                update_mask=field_mask_pb2.FieldMask(paths=[path]),
            ),
            metadata=owner,
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, path
    bad = call_error(
        server.tenants.UpdateTenant,
        tenant_pb2.UpdateTenantRequest(update_mask=field_mask_pb2.FieldMask(paths=["id"])),
        metadata=owner,
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_suspension_stops_every_credential_within_a_second_and_reactivation_restores(
    server: RunningServer,
) -> None:
    tenant = server.create_tenant()
    token = server.owner_token(tenant)
    key = server.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(name="ci", scopes=["tenant:read"]), metadata=bearer(token)
    ).secret
    for credential in (token, key):  # warm every cache
        server.tenants.GetTenant(tenant_pb2.GetTenantRequest(), metadata=bearer(credential))

    suspended = server.tenants.SuspendTenant(
        tenant_pb2.SuspendTenantRequest(tenant_id=tenant.id, reason="unpaid"), metadata=platform(server)
    ).tenant
    assert suspended.state == tenant_pb2.TENANT_STATE_SUSPENDED and suspended.suspend_reason == "unpaid"

    def refused(credential: str) -> bool:
        try:
            server.tenants.GetTenant(tenant_pb2.GetTenantRequest(), metadata=bearer(credential))
            return False
        except grpc.RpcError as error:
            assert error_reason(error) == "TENANT_SUSPENDED"
            return True

    for credential in (token, key):
        assert wait_until(lambda c=credential: refused(c)) < 1.0
    assert call_error(server.login, tenant).code() == grpc.StatusCode.UNAUTHENTICATED

    server.tenants.ReactivateTenant(tenant_pb2.ReactivateTenantRequest(tenant_id=tenant.id), metadata=platform(server))
    assert server.tenants.GetTenant(tenant_pb2.GetTenantRequest(), metadata=bearer(key)).tenant.id == tenant.id
    again = call_error(
        server.tenants.ReactivateTenant,
        tenant_pb2.ReactivateTenantRequest(tenant_id=tenant.id),
        metadata=platform(server),
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_create_tenant_with_owner_invitation(server: RunningServer) -> None:
    response = server.tenants.CreateTenant(
        tenant_pb2.CreateTenantRequest(tenant=tenant_pb2.Tenant(slug="fresh"), owner_email="Boss@Fresh.test"),
        metadata=platform(server),
    )
    assert response.owner_invitation.role == "owner" and response.owner_invitation.email == "boss@fresh.test"
    accepted = server.tenants.AcceptInvitation(
        tenant_pb2.AcceptInvitationRequest(token=response.owner_invitation_token, password="a long password")
    )
    assert accepted.tenant_id == response.tenant.id
    me = server.tenants.GetEffectivePermissions(
        tenant_pb2.GetEffectivePermissionsRequest(), metadata=bearer(accepted.tokens.access_token)
    )
    assert list(me.roles) == ["owner"] and "*:*" in me.permissions
