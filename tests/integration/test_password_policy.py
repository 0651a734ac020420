"""The password policy through every method that sets a password, on a real server:
CreateUser, ChangePassword, ResetPassword, AcceptInvitation and `tahoe-auth bootstrap`.
Each rule is refused with INVALID_ARGUMENT, reason PASSWORD_REJECTED and the rule in the
ErrorInfo metadata, and nothing is written; Login never applies the policy."""

from __future__ import annotations

import io
import json
import secrets
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from tahoe_auth import cli
from tahoe_auth.app import build_app
from tahoe_auth.config import Settings
from tahoe_auth.domain import password_policy
from tahoe_auth.domain.errors import PasswordRejected
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.sessions import IssuedTokens
from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests.support import OWNER_PASSWORD, RunningServer, Tenant, bearer, call_error, status_detail

GOOD = "sixteen llamas at noon"


def weak(tenant: Tenant, email: str) -> dict[str, str]:
    """A password breaking each rule (and only that one) for `email` in `tenant`."""
    local = email.partition("@")[0]
    return {
        "min_length": "k3!pQ7z",
        "max_length": "k3!pQ7z " * 129,
        "common": "Password123",
        "contains_email": f"Hi {local.upper()} 2024!",
        "contains_tenant_name": f"we love {tenant.slug} a lot",
    }


def rejected_rule(error: grpc.RpcError, field: str) -> str:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    info = status_detail(error, error_details_pb2.ErrorInfo)
    assert info.reason == "PASSWORD_REJECTED"
    assert info.metadata["field"] == field
    assert error.details()  # a message a person can act on
    return info.metadata["rule"]


def new_tenant(server: RunningServer) -> Tenant:
    return server.create_tenant(f"heron{secrets.token_hex(3)}")


def login(server: RunningServer, tenant: Tenant, email: str, password: str) -> auth_pb2.LoginResponse:
    return server.auth.Login(auth_pb2.LoginRequest(tenant=tenant.slug, email=email, password=password))


def set_min_length(server: RunningServer, owner: str, tenant: Tenant, length: int) -> tenant_pb2.UpdateTenantResponse:
    """As the tenant's owner, through UpdateTenant's `settings.security`."""
    security = tenant_pb2.SecurityPolicy(password_min_length=length)
    return server.tenants.UpdateTenant(
        tenant_pb2.UpdateTenantRequest(
            tenant=tenant_pb2.Tenant(id=tenant.id, settings=tenant_pb2.TenantSettings(security=security)),
            update_mask=field_mask_pb2.FieldMask(paths=["settings.security"]),
        ),
        metadata=bearer(owner),
    )


def create_user(server: RunningServer, owner: str, email: str, password: str) -> tenant_pb2.User:
    return server.tenants.CreateUser(
        tenant_pb2.CreateUserRequest(user=tenant_pb2.User(email=email), password=password, roles=["member"]),
        metadata=bearer(owner),
    ).user


def change(server: RunningServer, token: str, new: str, current: str = OWNER_PASSWORD) -> None:
    server.tenants.ChangePassword(
        tenant_pb2.ChangePasswordRequest(current_password=current, new_password=new), metadata=bearer(token)
    )


def reset(server: RunningServer, owner: str, user_id: str, new: str = "") -> tenant_pb2.ResetPasswordResponse:
    return server.tenants.ResetPassword(
        tenant_pb2.ResetPasswordRequest(user_id=user_id, new_password=new), metadata=bearer(owner)
    )


def invite(server: RunningServer, owner: str, email: str) -> tenant_pb2.CreateInvitationResponse:
    return server.tenants.CreateInvitation(
        tenant_pb2.CreateInvitationRequest(email=email, role="member"), metadata=bearer(owner)
    )


def accept(server: RunningServer, token: str, password: str) -> tenant_pb2.AcceptInvitationResponse:
    return server.tenants.AcceptInvitation(
        tenant_pb2.AcceptInvitationRequest(token=token, password=password, display_name="Pat")
    )


def user_row_exists(server: RunningServer, tenant: Tenant, email: str) -> bool:
    with server.app.db.unit_of_work(tenant.id) as uow:
        return uow.users.by_email(email) is not None


def password_state(server: RunningServer, tenant: Tenant, user_id: str) -> tuple[str | None, object]:
    with server.app.db.unit_of_work(tenant.id) as uow:
        user = uow.users.get(user_id)
        return user.password_hash, user.password_changed_at


def test_create_user_refuses_each_rule_and_creates_no_one(server: RunningServer) -> None:
    tenant = new_tenant(server)
    owner = server.owner_token(tenant)
    email = f"pat.lee{secrets.token_hex(2)}@example.test"
    for rule, password in weak(tenant, email).items():
        error = call_error(create_user, server, owner, email, password)
        assert rejected_rule(error, "password") == rule
        assert not user_row_exists(server, tenant, email)
    with server.app.db.unit_of_work(tenant.id) as uow:
        assert uow.outbox.of_type("user.created") == []
    user = create_user(server, owner, email, GOOD)
    assert login(server, tenant, email, GOOD).user_id == user.id


def test_the_common_rule_ignores_case_and_unicode_width(server: RunningServer) -> None:
    tenant = new_tenant(server)
    owner = server.owner_token(tenant)
    for password in ("PASSWORD123", "pAsSwOrD123", "".join(chr(ord(c) + 0xFEE0) for c in "password123")):
        error = call_error(create_user, server, owner, f"u{secrets.token_hex(3)}@x.test", password)
        assert rejected_rule(error, "password") == "common"
        assert "too common" in (error.details() or "")


def test_change_password_refuses_each_rule_and_keeps_the_old_password(server: RunningServer) -> None:
    tenant = new_tenant(server)
    email = f"pat.lee{secrets.token_hex(2)}@example.test"
    user_id, token = server.add_user(tenant, ["member"], email=email)
    before = password_state(server, tenant, user_id)
    for rule, password in weak(tenant, email).items():
        assert rejected_rule(call_error(change, server, token, password), "new_password") == rule
    assert password_state(server, tenant, user_id) == before
    assert login(server, tenant, email, OWNER_PASSWORD).user_id == user_id
    # No session was ended by a refused change.
    assert server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token)).principal.subject == user_id
    change(server, token, GOOD)
    assert login(server, tenant, email, GOOD).user_id == user_id


def test_reset_password_refuses_each_rule_and_generated_passwords_pass(server: RunningServer) -> None:
    tenant = new_tenant(server)
    owner = server.owner_token(tenant)
    email = f"pat.lee{secrets.token_hex(2)}@example.test"
    user_id, _ = server.add_user(tenant, ["member"], email=email)
    before = password_state(server, tenant, user_id)
    for rule, password in weak(tenant, email).items():
        assert rejected_rule(call_error(reset, server, owner, user_id, password), "new_password") == rule
    assert password_state(server, tenant, user_id) == before
    assert login(server, tenant, email, OWNER_PASSWORD).user_id == user_id

    reset(server, owner, user_id, GOOD)
    assert login(server, tenant, email, GOOD).user_id == user_id
    generated = reset(server, owner, user_id).generated_password
    context = password_policy.PasswordContext.of(8, email, (tenant.slug, tenant.slug.title()))
    assert password_policy.violation(generated, context) is None
    assert login(server, tenant, email, generated).user_id == user_id


def test_accept_invitation_refuses_each_rule_and_leaves_the_invitation_pending(server: RunningServer) -> None:
    tenant = new_tenant(server)
    owner = server.owner_token(tenant)
    email = f"pat.lee{secrets.token_hex(2)}@example.test"
    invited = invite(server, owner, email)
    for rule, password in weak(tenant, email).items():
        assert rejected_rule(call_error(accept, server, invited.token, password), "password") == rule
        assert not user_row_exists(server, tenant, email)
    with server.app.db.unit_of_work(tenant.id) as uow:
        row = uow.invitations.get(invited.invitation.id)
        assert row.accepted_at is None and row.user_id is None
    pending = server.tenants.ListInvitations(
        tenant_pb2.ListInvitationsRequest(state=tenant_pb2.INVITATION_STATE_PENDING),
        metadata=bearer(owner),
    ).invitations
    assert [i.id for i in pending] == [invited.invitation.id]
    joined = accept(server, invited.token, GOOD)
    assert joined.invitation.state == tenant_pb2.INVITATION_STATE_ACCEPTED
    assert login(server, tenant, email, GOOD).user_id == joined.user_id


def test_an_owner_raises_the_minimum_length_for_every_method_that_sets_one(server: RunningServer) -> None:
    tenant = new_tenant(server)
    owner = server.owner_token(tenant)
    old_email = f"early{secrets.token_hex(2)}@x.test"
    early = create_user(server, owner, old_email, "nine quiet owls")  # 15 characters, before the change
    updated = set_min_length(server, owner, tenant, 16)
    assert updated.tenant.settings.security.password_min_length == 16
    assert (
        server.tenants.GetTenant(
            tenant_pb2.GetTenantRequest(), metadata=bearer(owner)
        ).tenant.settings.security.password_min_length
        == 16
    )
    fifteen, sixteen = "k3!pQ7z k3!pQ7z", "k3!pQ7z k3!pQ7z!"

    email = f"pat.lee{secrets.token_hex(2)}@x.test"
    error = call_error(create_user, server, owner, email, fifteen)
    assert rejected_rule(error, "password") == "min_length"
    assert "16" in (error.details() or "")
    user = create_user(server, owner, email, sixteen)

    _, token = server.add_user(tenant, ["member"])
    assert rejected_rule(call_error(change, server, token, fifteen), "new_password") == "min_length"
    change(server, token, sixteen)

    assert rejected_rule(call_error(reset, server, owner, user.id, fifteen), "new_password") == "min_length"
    reset(server, owner, user.id, sixteen + "x")

    invited = invite(server, owner, f"late{secrets.token_hex(2)}@x.test")
    assert rejected_rule(call_error(accept, server, invited.token, fifteen), "password") == "min_length"
    accept(server, invited.token, sixteen)

    # The owner's own 28-character password and the earlier 15-character one still log in.
    assert login(server, tenant, old_email, "nine quiet owls").user_id == early.id
    assert server.login(tenant).user_id == tenant.owner_id

    set_min_length(server, owner, tenant, 40)
    generated = reset(server, owner, user.id).generated_password
    assert len(generated) >= 40 and login(server, tenant, email, generated).user_id == user.id


def test_the_tenants_display_name_counts_as_its_name(server: RunningServer) -> None:
    tenant = new_tenant(server)
    owner = server.owner_token(tenant)
    server.tenants.UpdateTenant(
        tenant_pb2.UpdateTenantRequest(
            tenant=tenant_pb2.Tenant(id=tenant.id, display_name="Blue Heron Labs"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=bearer(owner),
    )
    error = call_error(create_user, server, owner, "pat@x.test", "I work at BLUE HERON LABS")
    assert rejected_rule(error, "password") == "contains_tenant_name"
    create_user(server, owner, "pat@x.test", "I work at blue herons")  # not the whole name


def test_existing_users_keep_passwords_the_policy_now_refuses(server: RunningServer) -> None:
    tenant = new_tenant(server)
    owner = server.owner_token(tenant)
    email = f"old.timer{secrets.token_hex(2)}@x.test"
    user_id, _ = server.add_user(tenant, ["member"], email=email)
    # Set before the policy existed: a common password, stored as any other.
    with server.app.db.unit_of_work(tenant.id) as uow:
        uow.users.get(user_id).password_hash = server.app.hasher.hash("password123")
        uow.commit()
    set_min_length(server, owner, tenant, 30)

    logged_in = login(server, tenant, email, "password123")
    assert logged_in.user_id == user_id and logged_in.tokens.access_token
    assert server.login(tenant).user_id == tenant.owner_id  # 28 characters, under the new minimum

    # An invitation to an existing user takes their current password as proof, not as a new one.
    invited = invite(server, owner, email)
    assert accept(server, invited.token, "password123").user_id == user_id

    # Changing it is where the policy applies: the current one is only verified.
    token = logged_in.tokens.access_token
    assert (
        rejected_rule(call_error(change, server, token, "Password123!", "password123"), "new_password") == "min_length"
    )
    change(server, token, "thirty one characters of llamas", "password123")
    assert login(server, tenant, email, "thirty one characters of llamas").user_id == user_id


def test_bootstrap_refuses_a_weak_owner_password_and_generates_a_passing_one(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAHOE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("TAHOE_VAR_DIR", str(tmp_path / "var"))
    for password in ("password123", "my demo password!", "owner@demo.test's", "short"):
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        assert cli.main(["bootstrap", "--tenant", "demo", "--owner-email", "owner@demo.test", "--password-stdin"]) == 1
        assert "password" in capsys.readouterr().err

    # What `make run` does for its demo tenants: a generated password, printed once.
    assert cli.main(["bootstrap", "--tenant", "demo", "--owner-email", "owner@demo.test"]) == 0
    created = json.loads(capsys.readouterr().out)
    context = password_policy.PasswordContext.of(8, "owner@demo.test", ("demo",))
    assert password_policy.violation(created["owner_password"], context) is None

    app = build_app(Settings.from_env())
    try:
        app.keys.ensure_active_key()
        tokens = app.sessions.login("demo", "owner@demo.test", created["owner_password"], CallContext())
        assert isinstance(tokens, IssuedTokens) and tokens.access_token
        with pytest.raises(PasswordRejected) as raised:
            app.tenants.create_tenant_with_owner("acme", "Acme Rockets", "boss@acme.test", "acme rockets rule")
        assert raised.value.rule == "contains_tenant_name"
    finally:
        app.close()
