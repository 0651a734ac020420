"""Second factors on the other ways into a session than Login: accepting an invitation
(an existing account with a factor, a tenant that requires one) answers a challenge
first, and adding a factor to an account that has one is a sensitive change."""

from __future__ import annotations

import time

import grpc
import pyotp
import pytest

from tahoe_auth.v1 import auth_pb2, mfa_pb2, mfa_pb2_grpc, tenant_pb2
from tests.support import OWNER_PASSWORD, RunningServer, bearer, error_reason


def enroll_totp(server: RunningServer, token: str) -> pyotp.TOTP:
    stub = mfa_pb2_grpc.MfaServiceStub(server.channel)
    started = stub.BeginTotpEnrollment(mfa_pb2.BeginTotpEnrollmentRequest(name="Phone"), metadata=bearer(token))
    app = pyotp.parse_uri(started.otpauth_uri)
    assert isinstance(app, pyotp.TOTP)
    stub.ConfirmTotpEnrollment(
        mfa_pb2.ConfirmTotpEnrollmentRequest(factor_id=started.factor_id, code=app.now()), metadata=bearer(token)
    )
    return app


def invite(server: RunningServer, owner: str, email: str, role: str) -> str:
    created = server.tenants.CreateInvitation(
        tenant_pb2.CreateInvitationRequest(email=email, role=role), metadata=bearer(owner)
    )
    return created.token


def test_an_existing_account_with_a_factor_answers_it_before_an_accepted_invitation_signs_in(
    server: RunningServer,
) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    email = f"member@{tenant.slug}.test"
    member_id, member = server.add_user(tenant, ["member"], email=email)
    app = enroll_totp(server, member)

    accepted = server.tenants.AcceptInvitation(
        tenant_pb2.AcceptInvitationRequest(token=invite(server, owner, email, "admin"), password=OWNER_PASSWORD)
    )
    assert accepted.user_id == member_id and not accepted.HasField("tokens")
    assert mfa_pb2.MFA_METHOD_TOTP in accepted.mfa_challenge.methods
    # The role is granted by the acceptance itself; only the session waits for the factor.
    roles = server.tenants.GetUser(tenant_pb2.GetUserRequest(user_id=member_id), metadata=bearer(owner)).user.roles
    assert set(roles) == {"member", "admin"}
    with pytest.raises(grpc.RpcError) as wrong:
        server.auth.VerifyMfa(auth_pb2.VerifyMfaRequest(challenge=accepted.mfa_challenge.challenge, totp_code="000000"))
    assert error_reason(wrong.value) == "MFA_CODE_INVALID"
    verified = server.auth.VerifyMfa(
        auth_pb2.VerifyMfaRequest(challenge=accepted.mfa_challenge.challenge, totp_code=app.at(time.time() + 30))
    )
    principal = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=verified.tokens.access_token)).principal
    assert principal.subject == member_id and principal.mfa_verified


def test_a_new_member_of_a_tenant_that_requires_a_factor_gets_only_an_enrollment_token(
    server: RunningServer,
) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    server.tenants.UpdateTenant(
        tenant_pb2.UpdateTenantRequest(
            tenant=tenant_pb2.Tenant(
                id=tenant.id,
                settings=tenant_pb2.TenantSettings(
                    security=tenant_pb2.SecurityPolicy(mfa_requirement=tenant_pb2.MFA_REQUIREMENT_ALL_USERS)
                ),
            ),
            update_mask={"paths": ["settings.security"]},
        ),
        metadata=bearer(owner),
    )
    accepted = server.tenants.AcceptInvitation(
        tenant_pb2.AcceptInvitationRequest(
            token=invite(server, owner, f"new@{tenant.slug}.test", "member"), password="a fresh pass phrase"
        )
    )
    assert not accepted.HasField("tokens") and accepted.mfa_challenge.enrollment_required
    restricted = accepted.mfa_challenge.enrollment_token
    with pytest.raises(grpc.RpcError) as refused:
        server.tenants.GetTenant(tenant_pb2.GetTenantRequest(tenant_id=tenant.id), metadata=bearer(restricted))
    assert error_reason(refused.value) == "MFA_ENROLLMENT_REQUIRED"
    enroll_totp(server, restricted)
    verified = server.auth.VerifyMfa(auth_pb2.VerifyMfaRequest(challenge=accepted.mfa_challenge.challenge))
    assert verified.user_id == accepted.user_id and verified.tokens.refresh_token


def test_adding_another_factor_needs_a_recent_second_factor(server: RunningServer) -> None:
    tenant = server.create_tenant()
    stale = server.owner_token(tenant)  # password only, from before the first factor
    app = enroll_totp(server, stale)
    stub = mfa_pb2_grpc.MfaServiceStub(server.channel)
    for begin in (
        lambda token: stub.BeginTotpEnrollment(
            mfa_pb2.BeginTotpEnrollmentRequest(name="Other"), metadata=bearer(token)
        ),
        lambda token: stub.BeginPasskeyRegistration(
            mfa_pb2.BeginPasskeyRegistrationRequest(name="Key"), metadata=bearer(token)
        ),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            begin(stale)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(refused.value) == "MFA_REQUIRED"

    challenge = stub.CreateStepUpChallenge(mfa_pb2.CreateStepUpChallengeRequest(), metadata=bearer(stale)).challenge
    fresh = server.auth.VerifyMfa(
        auth_pb2.VerifyMfaRequest(challenge=challenge.challenge, totp_code=app.at(time.time() + 30))
    ).tokens.access_token
    started = stub.BeginTotpEnrollment(mfa_pb2.BeginTotpEnrollmentRequest(name="Other"), metadata=bearer(fresh))
    assert started.otpauth_uri.startswith("otpauth://totp/")
    assert stub.BeginPasskeyRegistration(
        mfa_pb2.BeginPasskeyRegistrationRequest(name="Key"), metadata=bearer(fresh)
    ).creation_options_json
