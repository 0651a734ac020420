"""What a tenant's MFA policy makes of a login (policy x role x factor), what the
restricted enrollment token may do (enroll, nothing else: not the API, not Check),
and step-up: every sensitive method a tenant user can call refuses a password-only
session of a user with a factor (MFA_REQUIRED) and takes a stepped-up one, an MFA
verification older than the tenant's window counts for nothing, and ExplainDecision
says whether a token is MFA-verified."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from tahoe_auth import server as tahoe_server
from tahoe_auth.domain import tokens
from tahoe_auth.domain.principal import USER
from tahoe_auth.v1 import auth_pb2, decision_pb2, decision_pb2_grpc, mfa_pb2, tenant_pb2
from tests.integration.test_ext_authz import check, check_request, denial, upstream_headers
from tests.integration.test_ext_authz_http import ask
from tests.integration.test_mfa_authenticator_app import code, enroll, settle
from tests.integration.test_mfa_core import mfa_stub
from tests.support import (
    OWNER_PASSWORD,
    RunningServer,
    Tenant,
    bearer,
    call_error,
    error_reason,
    status_detail,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

OPTIONAL = tenant_pb2.MFA_REQUIREMENT_OPTIONAL
ADMINS = tenant_pb2.MFA_REQUIREMENT_ADMINS
ALL_USERS = tenant_pb2.MFA_REQUIREMENT_ALL_USERS
DEFAULT_STEP_UP_SECONDS = 15 * 60


def set_policy(server: RunningServer, tenant: Tenant, token: str, requirement: int, step_up_minutes: int = 0) -> None:
    server.tenants.UpdateTenant(
        tenant_pb2.UpdateTenantRequest(
            tenant=tenant_pb2.Tenant(
                id=tenant.id,
                settings=tenant_pb2.TenantSettings(
                    security=tenant_pb2.SecurityPolicy(mfa_requirement=requirement, step_up_minutes=step_up_minutes)
                ),
            ),
            update_mask={"paths": ["settings.security"]},
        ),
        metadata=bearer(token),
    )


def login(server: RunningServer, tenant: Tenant, email: str) -> auth_pb2.LoginResponse:
    response: auth_pb2.LoginResponse = server.auth.Login(
        auth_pb2.LoginRequest(tenant=tenant.slug, email=email, password=OWNER_PASSWORD)
    )
    return response


def principal_of(server: RunningServer, token: str) -> Any:
    return server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token)).principal


def step_up(server: RunningServer, token: str, totp_code: str) -> str:
    """A step-up of `token`'s session: the new access token (same session, no refresh token)."""
    started = mfa_stub(server).CreateStepUpChallenge(mfa_pb2.CreateStepUpChallengeRequest(), metadata=bearer(token))
    assert not started.challenge.enrollment_required
    verified = server.auth.VerifyMfa(
        auth_pb2.VerifyMfaRequest(challenge=started.challenge.challenge, totp_code=totp_code)
    )
    assert verified.tokens.refresh_token == ""
    stepped = verified.tokens.access_token
    assert principal_of(server, stepped).session_id == principal_of(server, token).session_id
    return stepped


# -- login answers -------------------------------------------------------------------


@pytest.mark.parametrize("has_factor", [False, True], ids=["no-factor", "factor"])
@pytest.mark.parametrize("role", ["member", "admin"])
@pytest.mark.parametrize(
    "requirement", [OPTIONAL, ADMINS, ALL_USERS], ids=["policy-optional", "policy-admins", "policy-all-users"]
)
def test_login_answer_by_policy_role_and_factor(
    server: RunningServer, requirement: int, role: str, has_factor: bool
) -> None:
    tenant = server.create_tenant()
    email = f"{role}@{tenant.slug}.test"
    _, password_token = server.add_user(tenant, [role], email=email)
    app = None
    if has_factor:
        settle()
        app, _, _ = enroll(server, password_token)
    if requirement != OPTIONAL:
        set_policy(server, tenant, server.owner_token(tenant), requirement)
    required = requirement == ALL_USERS or (requirement == ADMINS and role == "admin")

    answer = login(server, tenant, email)
    if app is not None:
        # A factor means a challenge, whatever the policy says.
        assert not answer.HasField("tokens")
        assert not answer.mfa_challenge.enrollment_required and not answer.mfa_challenge.enrollment_token
        assert list(answer.mfa_challenge.methods) == [mfa_pb2.MFA_METHOD_TOTP, mfa_pb2.MFA_METHOD_RECOVERY_CODE]
        settle()
        verified = server.auth.VerifyMfa(
            auth_pb2.VerifyMfaRequest(challenge=answer.mfa_challenge.challenge, totp_code=code(app, 1))
        )
        token = verified.tokens.access_token
        assert principal_of(server, token).mfa_verified
    elif required:
        # Covered by the policy, no factor: sent to enroll, with a token that can only do that.
        assert not answer.HasField("tokens")
        assert answer.mfa_challenge.challenge and answer.mfa_challenge.enrollment_required
        assert answer.mfa_challenge.enrollment_token and not answer.mfa_challenge.methods
        token = answer.mfa_challenge.enrollment_token
        # Not a credential an upstream may accept either.
        invalid = call_error(server.auth.ValidateToken, auth_pb2.ValidateTokenRequest(token=token))
        assert invalid.code() == grpc.StatusCode.UNAUTHENTICATED
    else:
        assert not answer.HasField("mfa_challenge")
        token = answer.tokens.access_token
        assert token and answer.tokens.refresh_token
        assert not principal_of(server, token).mfa_verified
    listed = mfa_stub(server).ListMfaFactors(mfa_pb2.ListMfaFactorsRequest(), metadata=bearer(token))
    assert listed.mfa_required is required
    assert len(listed.factors) == (1 if has_factor else 0)


# -- the enrollment token ------------------------------------------------------------

ENROLLMENT_METHODS = {
    tahoe_server.MFA + name
    for name in (
        "ListMfaFactors",
        "BeginTotpEnrollment",
        "ConfirmTotpEnrollment",
        "BeginPasskeyRegistration",
        "FinishPasskeyRegistration",
    )
}


def governed_methods() -> list[tuple[str, Any]]:
    return [
        (f"/{service.full_name}/{method.name}", method)
        for service in tahoe_server.GOVERNED_SERVICES
        for method in service.methods
    ]


def call_any(server: RunningServer, path: str, method: Any, request: Message, token: str) -> Any:
    """Any method by its descriptor (every kind of streaming), with `token` as bearer."""
    response_class = message_factory.GetMessageClass(method.output_type)
    kwargs: dict[str, Any] = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": response_class.FromString,
    }
    metadata = bearer(token)
    if method.client_streaming and method.server_streaming:
        return list(server.channel.stream_stream(path, **kwargs)(iter([request]), metadata=metadata, timeout=10))
    if method.client_streaming:
        return server.channel.stream_unary(path, **kwargs)(iter([request]), metadata=metadata, timeout=10)
    if method.server_streaming:
        return list(server.channel.unary_stream(path, **kwargs)(request, metadata=metadata, timeout=10))
    return server.channel.unary_unary(path, **kwargs)(request, metadata=metadata, timeout=10)


def enrollment_required(server: RunningServer) -> tuple[Tenant, str, str]:
    """A tenant requiring MFA of everyone, and its member's login: (tenant, challenge, enrollment token)."""
    tenant = server.create_tenant()
    email = f"member@{tenant.slug}.test"
    server.add_user(tenant, ["member"], email=email)
    set_policy(server, tenant, server.owner_token(tenant), ALL_USERS)
    answer = login(server, tenant, email)
    assert answer.mfa_challenge.enrollment_required and answer.mfa_challenge.enrollment_token
    return tenant, answer.mfa_challenge.challenge, answer.mfa_challenge.enrollment_token


def test_the_enrollment_token_only_enrolls(server: RunningServer) -> None:
    tenant, challenge, restricted = enrollment_required(server)

    refused: list[str] = []
    for path, method in governed_methods():
        policy = tahoe_server.POLICIES[path]
        if policy.public or policy.enrollment:
            continue
        request = message_factory.GetMessageClass(method.input_type)()
        error = call_error(call_any, server, path, method, request, restricted)
        assert (error.code(), error_reason(error)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "MFA_ENROLLMENT_REQUIRED",
        ), path
        refused.append(path)
    # The ordinary and the sensitive methods, MFA's own others, the decision service.
    for expected in ("TenantService/GetTenant", "AuthService/CreateApiKey", "MfaService/CreateStepUpChallenge"):
        assert any(path.endswith(expected) for path in refused)
    assert {path for path, policy in tahoe_server.POLICIES.items() if policy.enrollment} == ENROLLMENT_METHODS

    # What it may do: enroll.
    listed = mfa_stub(server).ListMfaFactors(mfa_pb2.ListMfaFactorsRequest(), metadata=bearer(restricted))
    assert listed.mfa_required and not listed.factors
    # Its own user's factors only (a member could list the owner's with a full session).
    others = call_error(
        mfa_stub(server).ListMfaFactors,
        mfa_pb2.ListMfaFactorsRequest(user_id=tenant.owner_id),
        metadata=bearer(restricted),
    )
    assert error_reason(others) == "MFA_ENROLLMENT_REQUIRED"
    started = mfa_stub(server).BeginPasskeyRegistration(
        mfa_pb2.BeginPasskeyRegistrationRequest(name="Laptop"), metadata=bearer(restricted)
    )
    assert json.loads(started.creation_options_json)["challenge"]
    premature = call_error(server.auth.VerifyMfa, auth_pb2.VerifyMfaRequest(challenge=challenge))
    assert premature.code() == grpc.StatusCode.INVALID_ARGUMENT  # nothing enrolled yet to answer it
    settle()
    _, codes, _ = enroll(server, restricted)
    assert len(codes) == 10
    # Enrolling answered the login: the challenge alone now yields the session.
    verified = server.auth.VerifyMfa(auth_pb2.VerifyMfaRequest(challenge=challenge))
    principal = principal_of(server, verified.tokens.access_token)
    assert principal.mfa_verified and not principal.restriction and {"pwd", "otp", "mfa"} <= set(principal.amr)
    server.tenants.GetTenant(
        tenant_pb2.GetTenantRequest(tenant_id=principal.tenant_id), metadata=bearer(verified.tokens.access_token)
    )


def test_the_enrollment_token_is_refused_by_check(server: RunningServer) -> None:
    _, challenge, restricted = enrollment_required(server)

    status, _, body = denial(check(server, check_request(f"Bearer {restricted}")))
    assert (status, body["error"]) == (403, "mfa_enrollment_required")
    http_status, _, http_body = ask(server, restricted)
    assert (http_status, json.loads(http_body)["error"]) == (403, "mfa_enrollment_required")
    # Not even a route that needs no permission.
    status, _, body = denial(check(server, check_request(f"Bearer {restricted}", required_permission="")))
    assert (status, body["error"]) == (403, "mfa_enrollment_required")

    settle()
    enroll(server, restricted)
    full = server.auth.VerifyMfa(auth_pb2.VerifyMfaRequest(challenge=challenge)).tokens.access_token
    assert upstream_headers(check(server, check_request(f"Bearer {full}")))
    assert ask(server, full)[0] == 200
    # The restricted token stays restricted after it enrolled.
    status, _, body = denial(check(server, check_request(f"Bearer {restricted}")))
    assert (status, body["error"]) == (403, "mfa_enrollment_required")


# -- step-up -------------------------------------------------------------------------

AUTH, TENANT = tahoe_server.AUTH, tahoe_server.TENANT


def missing() -> str:
    return str(uuid.uuid4())


def sensitive_requests(server: RunningServer, tenant: Tenant) -> dict[str, tuple[Callable[..., Any], Message]]:
    """Every sensitive method a tenant user can call, with a request that passes validation."""
    auth, tenants, tid = server.auth, server.tenants, tenant.id
    return {
        AUTH + "CreateApiKey": (auth.CreateApiKey, auth_pb2.CreateApiKeyRequest(name="k", scopes=["usage:read"])),
        AUTH + "RotateApiKey": (auth.RotateApiKey, auth_pb2.RotateApiKeyRequest(api_key_id=missing())),
        TENANT + "UpdateTenant": (
            tenants.UpdateTenant,
            tenant_pb2.UpdateTenantRequest(
                tenant=tenant_pb2.Tenant(id=tid, display_name="Renamed"), update_mask={"paths": ["display_name"]}
            ),
        ),
        TENANT + "DeleteUser": (tenants.DeleteUser, tenant_pb2.DeleteUserRequest(tenant_id=tid, user_id=missing())),
        TENANT + "CreateRole": (
            tenants.CreateRole,
            tenant_pb2.CreateRoleRequest(
                tenant_id=tid, role=tenant_pb2.Role(name="auditor", permissions=["audit:read"])
            ),
        ),
        TENANT + "UpdateRole": (
            tenants.UpdateRole,
            tenant_pb2.UpdateRoleRequest(
                tenant_id=tid,
                role=tenant_pb2.Role(name="nosuchrole", description="d"),
                update_mask={"paths": ["description"]},
            ),
        ),
        TENANT + "DeleteRole": (tenants.DeleteRole, tenant_pb2.DeleteRoleRequest(tenant_id=tid, name="nosuchrole")),
        TENANT + "AssignRole": (
            tenants.AssignRole,
            tenant_pb2.AssignRoleRequest(tenant_id=tid, user_id=missing(), role="viewer"),
        ),
        TENANT + "RemoveRole": (
            tenants.RemoveRole,
            tenant_pb2.RemoveRoleRequest(tenant_id=tid, user_id=missing(), role="viewer"),
        ),
        TENANT + "CreateServiceAccount": (
            tenants.CreateServiceAccount,
            tenant_pb2.CreateServiceAccountRequest(
                tenant_id=tid, service_account=tenant_pb2.ServiceAccount(name="robot", permissions=["usage:read"])
            ),
        ),
        TENANT + "RotateServiceAccountSecret": (
            tenants.RotateServiceAccountSecret,
            tenant_pb2.RotateServiceAccountSecretRequest(tenant_id=tid, service_account_id=missing()),
        ),
    }


def mfa_required(error: grpc.RpcError) -> bool:
    return error.code() == grpc.StatusCode.PERMISSION_DENIED and error_reason(error) == "MFA_REQUIRED"


def max_age(error: grpc.RpcError) -> str:
    return status_detail(error, error_details_pb2.ErrorInfo).metadata["max_age_seconds"]


def outcome(fn: Callable[..., Any], request: Message, token: str) -> grpc.RpcError | None:
    try:
        fn(request, metadata=bearer(token))
    except grpc.RpcError as error:
        return error
    return None


def test_every_sensitive_method_wants_a_step_up(server: RunningServer) -> None:
    tenant = server.create_tenant()
    password_only = server.owner_token(tenant)
    settle()
    app, _, _ = enroll(server, password_only)
    calls = sensitive_requests(server, tenant)
    marked = {path for path, p in tahoe_server.POLICIES.items() if p.step_up and not p.platform_only}
    assert set(calls) == marked, "a sensitive method without a case here (or one no longer sensitive)"

    for path, (fn, request) in calls.items():
        error = outcome(fn, request, password_only)
        assert error is not None and mfa_required(error), (path, error)
        assert max_age(error) == str(DEFAULT_STEP_UP_SECONDS)

    stepped = step_up(server, password_only, code(app, 1))
    assert principal_of(server, stepped).mfa_verified
    for path, (fn, request) in calls.items():
        error = outcome(fn, request, stepped)
        # Past the step-up check: done, or not found (the dummy ids the requests name).
        assert error is None or error.code() == grpc.StatusCode.NOT_FOUND, (path, error)
    # The password-only token of the same session is still refused.
    fn, request = calls[AUTH + "CreateApiKey"]
    again = outcome(fn, request, password_only)
    assert again is not None and mfa_required(again)


def test_step_up_is_asked_of_users_with_a_factor_or_whom_the_policy_covers(server: RunningServer) -> None:
    tenant = server.create_tenant()
    _, member = server.add_user(tenant, ["member"])
    owner = server.owner_token(tenant)
    create_key = auth_pb2.CreateApiKeyRequest(name="k", scopes=["usage:read"])
    # No factor and no policy: a password session is enough.
    assert server.auth.CreateApiKey(create_key, metadata=bearer(member)).secret

    set_policy(server, tenant, owner, ALL_USERS)
    # The member's session from before the policy: covered now, so asked (and cannot step up).
    wait_until(lambda: (e := outcome(server.auth.CreateApiKey, create_key, member)) is not None and mfa_required(e))
    cannot = call_error(
        mfa_stub(server).CreateStepUpChallenge, mfa_pb2.CreateStepUpChallengeRequest(), metadata=bearer(member)
    )
    assert cannot.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Non-interactive credentials are never asked: the platform key, an API key.
    server.tenants.UpdateTenant(
        tenant_pb2.UpdateTenantRequest(
            tenant=tenant_pb2.Tenant(id=tenant.id, display_name="By Platform"), update_mask={"paths": ["display_name"]}
        ),
        metadata=bearer(server.platform_key),
    )
    set_policy(server, tenant, server.platform_key, OPTIONAL)
    wait_until(lambda: outcome(server.auth.CreateApiKey, create_key, member) is None)
    key = server.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(name="roles", scopes=["roles:create", "roles:read"]), metadata=bearer(owner)
    ).secret
    set_policy(server, tenant, server.platform_key, ALL_USERS)
    wait_until(lambda: outcome(server.auth.CreateApiKey, create_key, member) is not None)
    created = server.tenants.CreateRole(
        tenant_pb2.CreateRoleRequest(
            tenant_id=tenant.id, role=tenant_pb2.Role(name="reader", permissions=["roles:read"])
        ),
        metadata=bearer(key),
    )
    assert created.role.name == "reader"


def minted(server: RunningServer, like: str, mfa_age: int) -> str:
    """An access token for `like`'s session, signed by the server's current key, whose
    MFA verification is `mfa_age` seconds old: what that session's token would be after
    waiting that long, without waiting (no clock to move exists in the test server)."""
    principal = principal_of(server, like)
    now = int(time.time())
    settings = server.app.settings
    token, _ = tokens.issue_access_token(
        server.app.keys.ring(),
        issuer=settings.issuer,
        audience=settings.audience,
        subject=principal.subject,
        tenant_id=principal.tenant_id,
        subject_type=USER,
        session_id=principal.session_id,
        now=now,
        ttl=300,
        amr=("pwd", "otp", "mfa"),
        mfa_at=now - mfa_age,
    )
    return token


def test_a_verification_older_than_the_step_up_window_is_refused(server: RunningServer) -> None:
    tenant = server.create_tenant()
    password_only = server.owner_token(tenant)
    settle()
    app, _, _ = enroll(server, password_only)
    stepped = step_up(server, password_only, code(app, 1))
    create_key = auth_pb2.CreateApiKeyRequest(name="k", scopes=["usage:read"])

    stale = minted(server, stepped, DEFAULT_STEP_UP_SECONDS + 30)
    within = minted(server, stepped, DEFAULT_STEP_UP_SECONDS - 60)
    assert principal_of(server, stale).mfa_verified  # a valid token, MFA-verified, only too long ago
    error = outcome(server.auth.CreateApiKey, create_key, stale)
    assert error is not None and mfa_required(error) and max_age(error) == str(DEFAULT_STEP_UP_SECONDS)
    assert outcome(server.auth.CreateApiKey, create_key, within) is None
    server.tenants.GetTenant(tenant_pb2.GetTenantRequest(tenant_id=tenant.id), metadata=bearer(stale))

    # The window is the tenant's: one minute, and a verification 14 minutes old is too old.
    set_policy(server, tenant, stepped, OPTIONAL, step_up_minutes=1)
    wait_until(lambda: (e := outcome(server.auth.CreateApiKey, create_key, within)) is not None and mfa_required(e))
    error = outcome(server.auth.CreateApiKey, create_key, within)
    assert error is not None and max_age(error) == "60"
    assert outcome(server.auth.CreateApiKey, create_key, stepped) is None  # seconds old
    assert outcome(server.auth.CreateApiKey, create_key, minted(server, stepped, 50)) is None
    # Removing one's own factor from the session (no code) follows the same window.
    factor_id = mfa_stub(server).ListMfaFactors(mfa_pb2.ListMfaFactorsRequest(), metadata=bearer(stepped)).factors[0].id
    removing = call_error(
        mfa_stub(server).DeleteMfaFactor, mfa_pb2.DeleteMfaFactorRequest(factor_id=factor_id), metadata=bearer(within)
    )
    assert mfa_required(removing)


def test_explain_decision_says_whether_the_token_is_mfa_verified(server: RunningServer) -> None:
    tenant = server.create_tenant()
    password_only = server.owner_token(tenant)
    settle()
    app, _, _ = enroll(server, password_only)
    explain = decision_pb2_grpc.DecisionServiceStub(server.channel).ExplainDecision

    plain = explain(decision_pb2.ExplainDecisionRequest(), metadata=bearer(password_only))
    assert plain.allowed and not plain.principal.mfa_verified
    assert not plain.principal.HasField("mfa_verify_time") and list(plain.principal.amr) == ["pwd"]

    before = int(time.time())
    challenge = server.login(tenant).mfa_challenge.challenge
    verified = server.auth.VerifyMfa(auth_pb2.VerifyMfaRequest(challenge=challenge, totp_code=code(app, 1)))
    token = verified.tokens.access_token
    mine = explain(decision_pb2.ExplainDecisionRequest(), metadata=bearer(token))
    assert mine.allowed and mine.principal.mfa_verified
    assert before <= mine.principal.mfa_verify_time.seconds <= int(time.time())
    assert {"pwd", "otp", "mfa"} <= set(mine.principal.amr)
    # Explaining the other credential (the owner holds audit:read) says the same of each.
    other = explain(decision_pb2.ExplainDecisionRequest(credential=password_only), metadata=bearer(token))
    assert other.principal.subject == tenant.owner_id and not other.principal.mfa_verified
    other = explain(decision_pb2.ExplainDecisionRequest(credential=token), metadata=bearer(password_only))
    assert other.principal.mfa_verified
