"""The audit log on PostgreSQL: one entry per audited action (table-driven), chain
verification catching edited and deleted rows, append-only for the app role, reading
and exporting with tenant walls."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from sqlalchemy import create_engine, pool, text
from sqlalchemy.exc import DBAPIError

from tahoe_auth import cli
from tahoe_auth.domain import audit
from tahoe_auth.domain.audit import AuditFilter, StoredEntry, verify_chain
from tahoe_auth.kernel import logs
from tahoe_auth.store.db import SYSTEM
from tahoe_auth.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    keys_pb2,
    keys_pb2_grpc,
    tenant_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
    webhooks_pb2_grpc,
)
from tahoe_auth.v1 import tenant_pb2 as tn
from tahoe_auth.v1 import webhooks_pb2 as wh
from tests.support import RunningServer, Tenant, bearer, error_reason

pytestmark = [pytest.mark.postgres]

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PLATFORM = audit.PLATFORM_CHAIN


def entries(server: RunningServer, chain: str) -> list:  # type: ignore[type-arg]
    with server.app.db.unit_of_work(chain or SYSTEM) as uow:
        return list(reversed(uow.audit.find(chain, AuditFilter(), None, 10_000)))


@dataclass
class World:
    server: RunningServer
    tenant: Tenant
    calls: int = 0

    def md(self, token: str | None = None) -> list[tuple[str, str]]:
        self.calls += 1
        metadata = [("x-request-id", f"req-{self.calls}"), ("traceparent", TRACEPARENT)]
        if token:
            metadata += list(bearer(token))
        return metadata

    def token(self) -> str:
        return self.server.login(self.tenant).tokens.access_token

    def login(self, password: str | None = None, tenant: str | None = None) -> auth_pb2.LoginResponse:
        request = auth_pb2.LoginRequest(
            tenant=tenant or self.tenant.slug, email=self.tenant.owner_email, password=password or OWNER
        )
        return self.server.auth.Login(request, metadata=self.md())

    @property
    def hooks(self) -> webhooks_pb2_grpc.WebhookServiceStub:
        return webhooks_pb2_grpc.WebhookServiceStub(self.server.channel)

    def endpoint(self, token: str) -> str:
        created = self.hooks.CreateWebhookEndpoint(
            wh.CreateWebhookEndpointRequest(endpoint=wh.WebhookEndpoint(url="https://hooks.example.com/x")),
            metadata=bearer(token),
        )
        return created.endpoint.id


OWNER = "correct horse battery staple"


def expect_error(fn: Callable[[], object]) -> None:
    with pytest.raises(grpc.RpcError):
        fn()


# Each case: (name, setup -> act, chain ("tenant" or "platform"), action, outcome). `setup`
# runs first (its own entries are not counted); `act` is the audited call.
def _login_ok(w: World) -> Callable[[], object]:
    return w.login


def _login_bad_password(w: World) -> Callable[[], object]:
    return lambda: expect_error(lambda: w.login(password="wrong password entirely"))


def _login_unknown_tenant(w: World) -> Callable[[], object]:
    return lambda: expect_error(lambda: w.login(tenant="no-such-tenant"))


def _refresh(w: World) -> Callable[[], object]:
    refresh_token = w.server.login(w.tenant).tokens.refresh_token
    return lambda: w.server.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=refresh_token), metadata=w.md())


def _refresh_reuse(w: World) -> Callable[[], object]:
    refresh_token = w.server.login(w.tenant).tokens.refresh_token
    w.server.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=refresh_token))
    return lambda: expect_error(
        lambda: w.server.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=refresh_token), metadata=w.md())
    )


def _logout(w: World) -> Callable[[], object]:
    token = w.token()
    return lambda: w.server.auth.Logout(auth_pb2.LogoutRequest(), metadata=w.md(token))


def _logout_all(w: World) -> Callable[[], object]:
    w.token()
    token = w.token()
    return lambda: w.server.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=w.md(token))


def _revoke_session(w: World) -> Callable[[], object]:
    victim = w.server.login(w.tenant).tokens.session_id
    token = w.token()
    return lambda: w.server.auth.RevokeSession(auth_pb2.RevokeSessionRequest(session_id=victim), metadata=w.md(token))


def _upsert_plan(w: World) -> Callable[[], object]:
    stub = usage_pb2_grpc.UsageServiceStub(w.server.channel)
    return lambda: stub.UpsertPlan(
        usage_pb2.UpsertPlanRequest(plan=usage_pb2.Plan(name="pro")), metadata=w.md(w.server.platform_key)
    )


def _assign_plan(w: World) -> Callable[[], object]:
    stub = usage_pb2_grpc.UsageServiceStub(w.server.channel)
    stub.UpsertPlan(
        usage_pb2.UpsertPlanRequest(plan=usage_pb2.Plan(name="pro")), metadata=bearer(w.server.platform_key)
    )
    return lambda: stub.AssignPlan(
        usage_pb2.AssignPlanRequest(tenant_id=w.tenant.id, plan="pro"), metadata=w.md(w.server.platform_key)
    )


def _rotate_signing_key(w: World) -> Callable[[], object]:
    stub = keys_pb2_grpc.KeyServiceStub(w.server.channel)
    return lambda: stub.RotateSigningKey(keys_pb2.RotateSigningKeyRequest(), metadata=w.md(w.server.platform_key))


def _revoke_signing_key(w: World) -> Callable[[], object]:
    stub = keys_pb2_grpc.KeyServiceStub(w.server.channel)
    kid = w.server.app.keys.ring().active_kid
    return lambda: stub.RevokeSigningKey(
        keys_pb2.RevokeSigningKeyRequest(kid=kid), metadata=w.md(w.server.platform_key)
    )


def _webhook_create(w: World) -> Callable[[], object]:
    token = w.token()
    return lambda: w.hooks.CreateWebhookEndpoint(
        wh.CreateWebhookEndpointRequest(endpoint=wh.WebhookEndpoint(url="https://hooks.example.com/a")),
        metadata=w.md(token),
    )


def _webhook_update(w: World) -> Callable[[], object]:
    token = w.token()
    endpoint_id = w.endpoint(token)
    return lambda: w.hooks.UpdateWebhookEndpoint(
        wh.UpdateWebhookEndpointRequest(
            endpoint=wh.WebhookEndpoint(id=endpoint_id, description="billing"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        ),
        metadata=w.md(token),
    )


def _webhook_rotate(w: World) -> Callable[[], object]:
    token = w.token()
    endpoint_id = w.endpoint(token)
    return lambda: w.hooks.RotateWebhookSecret(
        wh.RotateWebhookSecretRequest(endpoint_id=endpoint_id), metadata=w.md(token)
    )


def _webhook_delete(w: World) -> Callable[[], object]:
    token = w.token()
    endpoint_id = w.endpoint(token)
    return lambda: w.hooks.DeleteWebhookEndpoint(
        wh.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id), metadata=w.md(token)
    )


def _audit_export(w: World) -> Callable[[], object]:
    token = w.token()
    stub = audit_pb2_grpc.AuditServiceStub(w.server.channel)
    return lambda: list(stub.ExportAuditEvents(audit_pb2.ExportAuditEventsRequest(), metadata=w.md(token)))


def _authz_denials(w: World) -> Callable[[], object]:
    def act() -> None:
        for _ in range(250):  # a flood: one entry with a count
            w.server.app.denials.record(w.tenant.id, "permission_denied", "transcription-write")
        w.server.app.denials.flush(everything=True)

    return act


# -- TenantService and API keys --------------------------------------------------------------


def _tenants(w: World) -> tenant_pb2_grpc.TenantServiceStub:
    return tenant_pb2_grpc.TenantServiceStub(w.server.channel)


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def _create_tenant(w: World) -> Callable[[], object]:
    request = tn.CreateTenantRequest(tenant=tn.Tenant(slug=f"new{w.tenant.slug}"), owner_email="o@new.test")
    return lambda: _tenants(w).CreateTenant(request, metadata=w.md(w.server.platform_key))


def _update_tenant(w: World) -> Callable[[], object]:
    token = w.token()
    request = tn.UpdateTenantRequest(
        tenant=tn.Tenant(id=w.tenant.id, display_name="Renamed"), update_mask=_mask("display_name")
    )
    return lambda: _tenants(w).UpdateTenant(request, metadata=w.md(token))


def _suspend_tenant(w: World) -> Callable[[], object]:
    request = tn.SuspendTenantRequest(tenant_id=w.tenant.id, reason="unpaid")
    return lambda: _tenants(w).SuspendTenant(request, metadata=w.md(w.server.platform_key))


def _reactivate_tenant(w: World) -> Callable[[], object]:
    key = w.server.platform_key
    _tenants(w).SuspendTenant(tn.SuspendTenantRequest(tenant_id=w.tenant.id), metadata=bearer(key))
    return lambda: _tenants(w).ReactivateTenant(tn.ReactivateTenantRequest(tenant_id=w.tenant.id), metadata=w.md(key))


def _create_user(w: World) -> Callable[[], object]:
    token = w.token()
    request = tn.CreateUserRequest(user=tn.User(email="new@x.test"), password=OWNER, roles=["viewer"])
    return lambda: _tenants(w).CreateUser(request, metadata=w.md(token))


def _with_user(w: World) -> tuple[str, str, str]:
    """(owner token, user id, the user's token)."""
    user_id, user_token = w.server.add_user(w.tenant, ["viewer"])
    return w.token(), user_id, user_token


def _update_user(w: World) -> Callable[[], object]:
    token, user_id, _ = _with_user(w)
    request = tn.UpdateUserRequest(user=tn.User(id=user_id, display_name="Bea"), update_mask=_mask("display_name"))
    return lambda: _tenants(w).UpdateUser(request, metadata=w.md(token))


def _disable_user(w: World) -> Callable[[], object]:
    token, user_id, _ = _with_user(w)
    return lambda: _tenants(w).DisableUser(tn.DisableUserRequest(user_id=user_id), metadata=w.md(token))


def _enable_user(w: World) -> Callable[[], object]:
    token, user_id, _ = _with_user(w)
    _tenants(w).DisableUser(tn.DisableUserRequest(user_id=user_id), metadata=bearer(token))
    return lambda: _tenants(w).EnableUser(tn.EnableUserRequest(user_id=user_id), metadata=w.md(token))


def _delete_user(w: World) -> Callable[[], object]:
    token, user_id, _ = _with_user(w)
    return lambda: _tenants(w).DeleteUser(tn.DeleteUserRequest(user_id=user_id), metadata=w.md(token))


def _change_password(w: World) -> Callable[[], object]:
    _, _, user_token = _with_user(w)
    request = tn.ChangePasswordRequest(current_password=OWNER, new_password="another long passphrase here")
    return lambda: _tenants(w).ChangePassword(request, metadata=w.md(user_token))


def _reset_password(w: World) -> Callable[[], object]:
    token, user_id, _ = _with_user(w)
    request = tn.ResetPasswordRequest(user_id=user_id, new_password="another long passphrase here")
    return lambda: _tenants(w).ResetPassword(request, metadata=w.md(token))


def _role(name: str = "transcriber") -> tn.Role:
    return tn.Role(name=name, permissions=["transcription:read"])


def _create_role(w: World) -> Callable[[], object]:
    token = w.token()
    return lambda: _tenants(w).CreateRole(tn.CreateRoleRequest(role=_role()), metadata=w.md(token))


def _update_role(w: World) -> Callable[[], object]:
    token = w.token()
    _tenants(w).CreateRole(tn.CreateRoleRequest(role=_role()), metadata=bearer(token))
    changed = tn.Role(name="transcriber", permissions=["transcription:*"])
    request = tn.UpdateRoleRequest(role=changed, update_mask=_mask("permissions"))
    return lambda: _tenants(w).UpdateRole(request, metadata=w.md(token))


def _delete_role(w: World) -> Callable[[], object]:
    token = w.token()
    _tenants(w).CreateRole(tn.CreateRoleRequest(role=_role()), metadata=bearer(token))
    return lambda: _tenants(w).DeleteRole(tn.DeleteRoleRequest(name="transcriber"), metadata=w.md(token))


def _assign_role(w: World) -> Callable[[], object]:
    token, user_id, _ = _with_user(w)
    request = tn.AssignRoleRequest(user_id=user_id, role="admin")
    return lambda: _tenants(w).AssignRole(request, metadata=w.md(token))


def _remove_role(w: World) -> Callable[[], object]:
    token, user_id, _ = _with_user(w)
    request = tn.RemoveRoleRequest(user_id=user_id, role="viewer")
    return lambda: _tenants(w).RemoveRole(request, metadata=w.md(token))


def _invite(w: World, token: str) -> tn.CreateInvitationResponse:
    request = tn.CreateInvitationRequest(email="guest@x.test", role="viewer")
    response: tn.CreateInvitationResponse = _tenants(w).CreateInvitation(request, metadata=bearer(token))
    return response


def _create_invitation(w: World) -> Callable[[], object]:
    token = w.token()
    request = tn.CreateInvitationRequest(email="guest@x.test", role="viewer")
    return lambda: _tenants(w).CreateInvitation(request, metadata=w.md(token))


def _resend_invitation(w: World) -> Callable[[], object]:
    token = w.token()
    request = tn.ResendInvitationRequest(invitation_id=_invite(w, token).invitation.id)
    return lambda: _tenants(w).ResendInvitation(request, metadata=w.md(token))


def _revoke_invitation(w: World) -> Callable[[], object]:
    token = w.token()
    request = tn.RevokeInvitationRequest(invitation_id=_invite(w, token).invitation.id)
    return lambda: _tenants(w).RevokeInvitation(request, metadata=w.md(token))


def _accept_invitation(w: World) -> Callable[[], object]:
    invitation = _invite(w, w.token())
    request = tn.AcceptInvitationRequest(token=invitation.token, password=OWNER)
    return lambda: _tenants(w).AcceptInvitation(request, metadata=w.md())


def _account(w: World, token: str) -> str:
    account = tn.ServiceAccount(name="ingest", permissions=["transcription:write"])
    request = tn.CreateServiceAccountRequest(service_account=account)
    return str(_tenants(w).CreateServiceAccount(request, metadata=bearer(token)).service_account.id)


def _create_service_account(w: World) -> Callable[[], object]:
    token = w.token()
    account = tn.ServiceAccount(name="ingest", permissions=["transcription:write"])
    request = tn.CreateServiceAccountRequest(service_account=account)
    return lambda: _tenants(w).CreateServiceAccount(request, metadata=w.md(token))


def _update_service_account(w: World) -> Callable[[], object]:
    token = w.token()
    account = tn.ServiceAccount(id=_account(w, token), description="nightly")
    request = tn.UpdateServiceAccountRequest(service_account=account, update_mask=_mask("description"))
    return lambda: _tenants(w).UpdateServiceAccount(request, metadata=w.md(token))


def _rotate_service_account(w: World) -> Callable[[], object]:
    token = w.token()
    request = tn.RotateServiceAccountSecretRequest(service_account_id=_account(w, token))
    return lambda: _tenants(w).RotateServiceAccountSecret(request, metadata=w.md(token))


def _revoke_service_account(w: World) -> Callable[[], object]:
    token = w.token()
    request = tn.RevokeServiceAccountSecretRequest(service_account_id=_account(w, token))
    return lambda: _tenants(w).RevokeServiceAccountSecret(request, metadata=w.md(token))


def _delete_service_account(w: World) -> Callable[[], object]:
    token = w.token()
    request = tn.DeleteServiceAccountRequest(service_account_id=_account(w, token))
    return lambda: _tenants(w).DeleteServiceAccount(request, metadata=w.md(token))


def _key(w: World, token: str) -> str:
    request = auth_pb2.CreateApiKeyRequest(name="ci", scopes=["transcription:read"])
    return str(w.server.auth.CreateApiKey(request, metadata=bearer(token)).api_key.id)


def _create_api_key(w: World) -> Callable[[], object]:
    token = w.token()
    request = auth_pb2.CreateApiKeyRequest(name="ci", scopes=["transcription:read"])
    return lambda: w.server.auth.CreateApiKey(request, metadata=w.md(token))


def _rotate_api_key(w: World) -> Callable[[], object]:
    token = w.token()
    request = auth_pb2.RotateApiKeyRequest(api_key_id=_key(w, token))
    return lambda: w.server.auth.RotateApiKey(request, metadata=w.md(token))


def _revoke_api_key(w: World) -> Callable[[], object]:
    token = w.token()
    request = auth_pb2.RevokeApiKeyRequest(api_key_id=_key(w, token))
    return lambda: w.server.auth.RevokeApiKey(request, metadata=w.md(token))


CASES = [
    ("login", _login_ok, "tenant", "auth.login", audit.SUCCESS),
    ("login with a wrong password", _login_bad_password, "tenant", "auth.login", audit.FAILURE),
    ("login to an unknown tenant", _login_unknown_tenant, "platform", "auth.login", audit.FAILURE),
    ("refresh", _refresh, "tenant", "auth.refresh", audit.SUCCESS),
    ("refresh token reuse", _refresh_reuse, "tenant", "auth.refresh_reuse", audit.FAILURE),
    ("logout", _logout, "tenant", "auth.logout", audit.SUCCESS),
    ("logout everywhere", _logout_all, "tenant", "auth.logout_all", audit.SUCCESS),
    ("revoke a session", _revoke_session, "tenant", "session.revoke", audit.SUCCESS),
    ("define a plan", _upsert_plan, "platform", "plan.upsert", audit.SUCCESS),
    ("change a tenant's plan", _assign_plan, "tenant", "plan.assign", audit.SUCCESS),
    ("rotate the signing key", _rotate_signing_key, "platform", "signing_key.rotate", audit.SUCCESS),
    ("revoke the signing key", _revoke_signing_key, "platform", "signing_key.revoke", audit.SUCCESS),
    ("create a webhook endpoint", _webhook_create, "tenant", "webhook.endpoint_create", audit.SUCCESS),
    ("update a webhook endpoint", _webhook_update, "tenant", "webhook.endpoint_update", audit.SUCCESS),
    ("rotate a webhook secret", _webhook_rotate, "tenant", "webhook.secret_rotate", audit.SUCCESS),
    ("delete a webhook endpoint", _webhook_delete, "tenant", "webhook.endpoint_delete", audit.SUCCESS),
    ("export the audit log", _audit_export, "tenant", "audit.export", audit.SUCCESS),
    ("ext_authz denials (aggregated)", _authz_denials, "tenant", "authz.denied", audit.DENIED),
    ("create a tenant", _create_tenant, "created", "tenant.create", audit.SUCCESS),
    ("update a tenant", _update_tenant, "tenant", "tenant.update", audit.SUCCESS),
    ("suspend a tenant", _suspend_tenant, "tenant", "tenant.suspend", audit.SUCCESS),
    ("reactivate a tenant", _reactivate_tenant, "tenant", "tenant.reactivate", audit.SUCCESS),
    ("create a user", _create_user, "tenant", "user.create", audit.SUCCESS),
    ("update a user", _update_user, "tenant", "user.update", audit.SUCCESS),
    ("disable a user", _disable_user, "tenant", "user.disable", audit.SUCCESS),
    ("enable a user", _enable_user, "tenant", "user.enable", audit.SUCCESS),
    ("delete a user", _delete_user, "tenant", "user.delete", audit.SUCCESS),
    ("change one's password", _change_password, "tenant", "password.change", audit.SUCCESS),
    ("reset a password", _reset_password, "tenant", "password.reset", audit.SUCCESS),
    ("create a role", _create_role, "tenant", "role.create", audit.SUCCESS),
    ("change a role's permissions", _update_role, "tenant", "role.update", audit.SUCCESS),
    ("delete a role", _delete_role, "tenant", "role.delete", audit.SUCCESS),
    ("assign a role", _assign_role, "tenant", "role.assign", audit.SUCCESS),
    ("remove a role", _remove_role, "tenant", "role.unassign", audit.SUCCESS),
    ("invite", _create_invitation, "tenant", "invitation.create", audit.SUCCESS),
    ("resend an invitation", _resend_invitation, "tenant", "invitation.resend", audit.SUCCESS),
    ("revoke an invitation", _revoke_invitation, "tenant", "invitation.revoke", audit.SUCCESS),
    ("accept an invitation", _accept_invitation, "tenant", "invitation.accept", audit.SUCCESS),
    ("create a service account", _create_service_account, "tenant", "service_account.create", audit.SUCCESS),
    ("update a service account", _update_service_account, "tenant", "service_account.update", audit.SUCCESS),
    (
        "rotate a service account secret",
        _rotate_service_account,
        "tenant",
        "service_account.secret_rotate",
        audit.SUCCESS,
    ),
    (
        "revoke a service account secret",
        _revoke_service_account,
        "tenant",
        "service_account.secret_revoke",
        audit.SUCCESS,
    ),
    ("delete a service account", _delete_service_account, "tenant", "service_account.delete", audit.SUCCESS),
    ("create an API key", _create_api_key, "tenant", "apikey.create", audit.SUCCESS),
    ("rotate an API key", _rotate_api_key, "tenant", "apikey.rotate", audit.SUCCESS),
    ("revoke an API key", _revoke_api_key, "tenant", "apikey.revoke", audit.SUCCESS),
]


@pytest.mark.parametrize(("name", "setup", "chain", "action", "outcome"), CASES, ids=[c[0] for c in CASES])
def test_each_action_writes_exactly_one_entry(
    server: RunningServer,
    name: str,
    setup: Callable[[World], Callable[[], object]],
    chain: str,
    action: str,
    outcome: str,
) -> None:
    world = World(server, server.create_tenant())
    act = setup(world)
    before = {c: len(entries(server, c)) for c in (world.tenant.id, PLATFORM)}
    result = act()
    chain_id = world.tenant.id if chain == "tenant" else PLATFORM if chain == "platform" else result.tenant.id  # type: ignore[attr-defined]
    before.setdefault(chain_id, 0)  # a tenant the action created
    new = {c: entries(server, c)[before[c] :] for c in before}
    assert len(new[chain_id]) == 1, [e.action for e in new[chain_id]]
    for other in set(new) - {chain_id}:
        assert new[other] == [], [e.action for e in new[other]]
    (entry,) = new[chain_id]
    assert (entry.action, entry.outcome) == (action, outcome)
    assert entry.occurred_at.tzinfo is not None and entry.target
    if action != "authz.denied":
        assert entry.request_id == f"req-{world.calls}" and entry.traceparent == TRACEPARENT
        assert entry.client_address == "127.0.0.1"
    serialized = json.dumps(entry.details) + entry.target
    for secret_marker in (OWNER, "another long passphrase", "whsec_", "rt_", "tahoe_pa_", "iv_"):
        assert secret_marker not in serialized
    assert not re.search(r"tahoe_s[ka]_\w{20,}", serialized)  # key prefixes (public ids) only, never a secret
    checked, problems = server.app.audit_verifier.verify()
    assert problems == [] and checked >= 1


def test_entries_name_actor_target_and_count(server: RunningServer) -> None:
    world = World(server, server.create_tenant())
    login = world.login()
    expect_error(lambda: world.login(password="not the password at all"))
    for _ in range(3):
        server.app.denials.record(world.tenant.id, "permission_denied", "r1")
    server.app.denials.flush(everything=True)
    created, ok, failed, denied = entries(server, world.tenant.id)
    assert (created.action, created.actor_type) == ("tenant.create", "system")  # the test's bootstrap
    assert (ok.actor, ok.actor_type, ok.target) == (login.user_id, "user", f"user:{login.user_id}")
    assert ok.details["session_id"] == login.tokens.session_id
    assert (failed.actor, failed.details["reason"]) == (login.user_id, "bad_credentials")
    assert failed.target == f"user:{world.tenant.owner_email}"
    assert denied.details["count"] == 3 and denied.details["reason"] == "permission_denied"
    assert [e.sequence for e in (created, ok, failed, denied)] == [1, 2, 3, 4]


def _tamper(url: str, statement: str) -> None:
    """As the database owner with triggers off: what an attacker with direct access does."""
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(statement))
    engine.dispose()


def _verify_cli(capsys: pytest.CaptureFixture[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict:  # type: ignore[type-arg]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(logs, "configure", lambda *args: None)  # keep pytest's log handlers
    code = cli.main(["audit", "verify"])
    report: dict = json.loads(capsys.readouterr().out)  # type: ignore[type-arg]
    assert code == (0 if report["ok"] else 1)
    return report


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ("UPDATE audit_events SET outcome = 'success' WHERE sequence = 3 AND tenant_id = :t", "entry was modified"),
        ("UPDATE audit_events SET details = '{}' WHERE sequence = 1 AND tenant_id = :t", "entry was modified"),
        ("DELETE FROM audit_events WHERE sequence = 2 AND tenant_id = :t", "entry 2 is missing"),
        ("DELETE FROM audit_events WHERE sequence = 4 AND tenant_id = :t", "newest entries were removed"),
    ],
)
def test_verify_catches_edited_and_deleted_rows(
    server: RunningServer,
    pg_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    statement: str,
    problem: str,
) -> None:
    world = World(server, server.create_tenant())  # entry 1: the tenant's creation
    world.login()  # 2
    expect_error(lambda: world.login(password="not the password at all"))  # 3
    world.login()  # 4
    assert _verify_cli(capsys, pg_env, monkeypatch)["ok"]
    _tamper(pg_env["TAHOE_DATABASE_URL"], statement.replace(":t", f"'{world.tenant.id}'"))
    report = _verify_cli(capsys, pg_env, monkeypatch)
    assert not report["ok"]
    (found,) = report["problems"]
    assert found["tenant_id"] == world.tenant.id and problem in found["problem"]


def test_the_app_role_cannot_change_or_delete_audit_rows(server: RunningServer, pg_env: dict[str, str]) -> None:
    world = World(server, server.create_tenant())
    world.login()
    engine = create_engine(pg_env["TAHOE_DATABASE_URL"], poolclass=pool.NullPool)
    try:
        for statement in [
            "UPDATE audit_events SET outcome = 'failure'",
            "DELETE FROM audit_events",
            "DELETE FROM audit_heads",
            "TRUNCATE audit_events",
        ]:
            with engine.connect() as conn:
                conn.execute(text("SET ROLE tahoe_app"))
                conn.execute(text("SELECT set_config('tahoe.scope', 'system', false)"))
                with pytest.raises(DBAPIError, match=r"(?i)permission denied|append-only"):
                    conn.execute(text(statement))
        with engine.connect() as conn:  # it may read and append
            conn.execute(text("SET ROLE tahoe_app"))
            conn.execute(text("SELECT set_config('tahoe.tenant_id', :t, false)"), {"t": world.tenant.id})
            assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar() == 2  # created, login
        # Even the owner is stopped by the trigger (it must be disabled on purpose).
        with engine.connect() as conn, pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text("UPDATE audit_events SET outcome = 'failure'"))
    finally:
        engine.dispose()


def test_listing_filters_pages_and_tenant_walls(server: RunningServer) -> None:
    world = World(server, server.create_tenant())
    other = World(server, server.create_tenant())
    started = dt.datetime.now(dt.UTC)
    for _ in range(3):
        world.login()
    expect_error(lambda: world.login(password="not the password at all"))
    token = world.token()
    stub = audit_pb2_grpc.AuditServiceStub(server.channel)
    page1 = stub.ListAuditEvents(audit_pb2.ListAuditEventsRequest(page_size=2), metadata=bearer(token))
    # tenant.create (bootstrap), three logins, a failed one, the login for `token`.
    assert [e.sequence for e in page1.events] == [6, 5] and page1.next_page_token
    page2 = stub.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(page_size=10, page_token=page1.next_page_token), metadata=bearer(token)
    )
    assert [e.sequence for e in page2.events] == [4, 3, 2, 1]
    failures = stub.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(outcome=audit_pb2.AUDIT_OUTCOME_FAILURE), metadata=bearer(token)
    )
    assert [e.action for e in failures.events] == ["auth.login"]
    by_prefix = stub.ListAuditEvents(audit_pb2.ListAuditEventsRequest(action="auth.*"), metadata=bearer(token))
    assert len(by_prefix.events) == 5
    start = timestamp_pb2.Timestamp()
    start.FromDatetime(started + dt.timedelta(hours=1))
    later = stub.ListAuditEvents(audit_pb2.ListAuditEventsRequest(start_time=start), metadata=bearer(token))
    assert list(later.events) == []
    user_id = page2.events[-2].actor
    mine = stub.ListAuditEvents(audit_pb2.ListAuditEventsRequest(actor=user_id), metadata=bearer(token))
    assert len(mine.events) == 5 and mine.events[0].details["session_id"]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(tenant_id=world.tenant.id), metadata=bearer(other.token())
        )
    assert error_reason(caught.value) == "NOT_FOUND"
    as_platform = stub.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(tenant_id=world.tenant.id), metadata=bearer(server.platform_key)
    )
    assert len(as_platform.events) == 6


def test_members_without_audit_read_are_refused(server: RunningServer) -> None:
    world = World(server, server.create_tenant())
    from tahoe_auth.store import models as m

    with server.app.db.unit_of_work(world.tenant.id) as uow:
        user = uow.users.add(
            m.User(tenant_id=world.tenant.id, email="m@x.test", password_hash=server.app.hasher.hash(OWNER))
        )
        uow.role_bindings.add(world.tenant.id, user.id, "member")
        uow.commit()
    token = server.auth.Login(
        auth_pb2.LoginRequest(tenant=world.tenant.slug, email="m@x.test", password=OWNER)
    ).tokens.access_token
    stub = audit_pb2_grpc.AuditServiceStub(server.channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListAuditEvents(audit_pb2.ListAuditEventsRequest(), metadata=bearer(token))
    assert error_reason(caught.value) == "PERMISSION_DENIED"
    with pytest.raises(grpc.RpcError) as caught:
        stub.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(), metadata=bearer(token))
    assert error_reason(caught.value) == "PERMISSION_DENIED"


def test_export_verifies_offline(server: RunningServer) -> None:
    world = World(server, server.create_tenant())
    for _ in range(3):
        world.login()
    stub = audit_pb2_grpc.AuditServiceStub(server.channel)
    chunks = list(stub.ExportAuditEvents(audit_pb2.ExportAuditEventsRequest(), metadata=bearer(world.token())))
    lines = [json.loads(line) for line in b"".join(c.content for c in chunks).decode().splitlines()]
    # The tenant's creation, three logins, the one for the export's token, and the export
    # itself (recorded first).
    assert [line["sequence"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert lines[-1]["action"] == "audit.export"
    stored = [
        StoredEntry(
            audit.AuditFields(
                tenant_id=e["tenant_id"],
                sequence=e["sequence"],
                occurred_at=dt.datetime.fromisoformat(e["time"]),
                actor=e["actor"],
                actor_type=e["actor_type"],
                action=e["action"],
                target=e["target"],
                outcome=e["outcome"],
                client_address=e["client_address"],
                request_id=e["request_id"],
                traceparent=e["traceparent"],
                details=e["details"],
            ),
            e["previous_hash"],
            e["hash"],
        )
        for e in lines
    ]
    assert verify_chain(world.tenant.id, stored, 6, lines[-1]["hash"]) is None
    csv_chunks = stub.ExportAuditEvents(
        audit_pb2.ExportAuditEventsRequest(format=audit_pb2.AUDIT_EXPORT_FORMAT_CSV), metadata=bearer(world.token())
    )
    text_csv = b"".join(c.content for c in csv_chunks).decode()
    assert text_csv.startswith("tenant_id,sequence,time") and text_csv.count("auth.login") >= 4


def test_verify_rpc_reports_the_first_break_of_the_callers_chain(server: RunningServer, pg_env: dict[str, str]) -> None:
    world = World(server, server.create_tenant())  # entry 1: the tenant's creation
    other = World(server, server.create_tenant())
    token = world.token()  # 2: the login
    stub = audit_pb2_grpc.AuditServiceStub(server.channel)
    verify = audit_pb2.VerifyAuditChainRequest
    intact = stub.VerifyAuditChain(verify(), metadata=bearer(token))
    assert (intact.tenant_id, intact.intact, intact.entries_checked) == (world.tenant.id, True, 2)
    assert not intact.HasField("first_problem")
    with pytest.raises(grpc.RpcError) as caught:  # another tenant's chain is not there for it
        stub.VerifyAuditChain(verify(tenant_id=world.tenant.id), metadata=bearer(other.token()))
    assert error_reason(caught.value) == "NOT_FOUND"
    _tamper(
        pg_env["TAHOE_DATABASE_URL"],
        f"UPDATE audit_events SET outcome = 'failure' WHERE sequence = 2 AND tenant_id = '{world.tenant.id}'",
    )
    broken = stub.VerifyAuditChain(verify(), metadata=bearer(token))
    assert not broken.intact and broken.entries_checked == 2
    assert (broken.first_problem.sequence, broken.first_problem.problem) == (2, "entry was modified")
    as_platform = stub.VerifyAuditChain(verify(tenant_id=world.tenant.id), metadata=bearer(server.platform_key))
    assert not as_platform.intact and as_platform.first_problem.sequence == 2
    assert stub.VerifyAuditChain(verify(tenant_id=other.tenant.id), metadata=bearer(server.platform_key)).intact
