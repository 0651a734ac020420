"""The second step of a login end to end with an authenticator app (pyotp as the app):
enroll, log in, answer, step up; the shapes the rest of the MFA tests build on."""

from __future__ import annotations

import time

import grpc
import pyotp
import pytest

from tahoe_auth.v1 import auth_pb2, mfa_pb2, mfa_pb2_grpc, tenant_pb2
from tests.soft_authenticator import SoftAuthenticator
from tests.support import RunningServer, Tenant, bearer, error_reason


def mfa_stub(server: RunningServer) -> mfa_pb2_grpc.MfaServiceStub:
    return mfa_pb2_grpc.MfaServiceStub(server.channel)


def enroll_totp(server: RunningServer, token: str) -> tuple[pyotp.TOTP, list[str]]:
    started = mfa_stub(server).BeginTotpEnrollment(
        mfa_pb2.BeginTotpEnrollmentRequest(name="Phone"), metadata=bearer(token)
    )
    app = pyotp.parse_uri(started.otpauth_uri)
    assert isinstance(app, pyotp.TOTP)
    confirmed = mfa_stub(server).ConfirmTotpEnrollment(
        mfa_pb2.ConfirmTotpEnrollmentRequest(factor_id=started.factor_id, code=app.now()), metadata=bearer(token)
    )
    return app, list(confirmed.recovery_codes)


def login(server: RunningServer, tenant: Tenant) -> auth_pb2.LoginResponse:
    return server.login(tenant)


def test_login_with_an_authenticator_app_then_step_up(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    app, codes = enroll_totp(server, owner)
    assert len(codes) == 10 and len(set(codes)) == 10

    first = login(server, tenant)
    assert not first.HasField("tokens") and first.mfa_challenge.challenge
    assert list(first.mfa_challenge.methods) == [mfa_pb2.MFA_METHOD_TOTP, mfa_pb2.MFA_METHOD_RECOVERY_CODE]
    # The code that confirmed the enrollment is spent; the next step's is within drift.
    verified = server.auth.VerifyMfa(
        auth_pb2.VerifyMfaRequest(challenge=first.mfa_challenge.challenge, totp_code=app.at(time.time() + 30))
    )
    token = verified.tokens.access_token
    principal = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token)).principal
    assert principal.mfa_verified and {"pwd", "otp", "mfa"} <= set(principal.amr)

    # The session that enrolled was password-only: sensitive methods want a step-up.
    with pytest.raises(grpc.RpcError) as refused:
        server.auth.CreateApiKey(auth_pb2.CreateApiKeyRequest(name="k", scopes=["usage:read"]), metadata=bearer(owner))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and error_reason(refused.value) == "MFA_REQUIRED"
    created = server.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(name="k", scopes=["usage:read"]), metadata=bearer(token)
    )
    assert created.secret

    step = mfa_stub(server).CreateStepUpChallenge(mfa_pb2.CreateStepUpChallengeRequest(), metadata=bearer(owner))
    stepped = server.auth.VerifyMfa(
        auth_pb2.VerifyMfaRequest(challenge=step.challenge.challenge, recovery_code=codes[0])
    )
    assert stepped.tokens.refresh_token == "" and stepped.tokens.access_token
    server.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(name="k2", scopes=["usage:read"]), metadata=bearer(stepped.tokens.access_token)
    )


def test_enrollment_required_by_policy(server: RunningServer) -> None:
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
    first = login(server, tenant)
    assert first.mfa_challenge.enrollment_required and first.mfa_challenge.enrollment_token
    restricted = first.mfa_challenge.enrollment_token
    with pytest.raises(grpc.RpcError) as refused:
        server.tenants.GetTenant(tenant_pb2.GetTenantRequest(tenant_id=tenant.id), metadata=bearer(restricted))
    assert error_reason(refused.value) == "MFA_ENROLLMENT_REQUIRED"
    enroll_totp(server, restricted)
    verified = server.auth.VerifyMfa(auth_pb2.VerifyMfaRequest(challenge=first.mfa_challenge.challenge))
    principal = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=verified.tokens.access_token)).principal
    assert principal.mfa_verified
    with pytest.raises(grpc.RpcError) as again:
        server.auth.VerifyMfa(auth_pb2.VerifyMfaRequest(challenge=first.mfa_challenge.challenge))
    assert error_reason(again.value) == "MFA_CODE_INVALID"


def test_passkey_as_second_factor_and_for_passwordless_sign_in(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    device = SoftAuthenticator("localhost", "http://localhost:8080")
    started = mfa_stub(server).BeginPasskeyRegistration(
        mfa_pb2.BeginPasskeyRegistrationRequest(name="Laptop"), metadata=bearer(owner)
    )
    finished = mfa_stub(server).FinishPasskeyRegistration(
        mfa_pb2.FinishPasskeyRegistrationRequest(
            registration_id=started.registration_id,
            credential_json=device.register(started.creation_options_json),
            name="Laptop",
        ),
        metadata=bearer(owner),
    )
    assert finished.factor.type == mfa_pb2.MFA_FACTOR_TYPE_PASSKEY and len(finished.recovery_codes) == 10

    first = login(server, tenant)
    assert mfa_pb2.MFA_METHOD_PASSKEY in first.mfa_challenge.methods
    options = first.mfa_challenge.passkey_request_options_json
    verified = server.auth.VerifyMfa(
        auth_pb2.VerifyMfaRequest(
            challenge=first.mfa_challenge.challenge, passkey_credential_json=device.assert_(options)
        )
    )
    principal = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=verified.tokens.access_token)).principal
    assert principal.mfa_verified and "hwk" in principal.amr and "pwd" in principal.amr

    passwordless = server.auth.BeginPasskeySignIn(auth_pb2.BeginPasskeySignInRequest(tenant=tenant.slug)).challenge
    signed_in = server.auth.VerifyMfa(
        auth_pb2.VerifyMfaRequest(
            challenge=passwordless.challenge,
            passkey_credential_json=device.assert_(passwordless.passkey_request_options_json),
        )
    )
    assert signed_in.user_id == tenant.owner_id
    principal = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=signed_in.tokens.access_token)).principal
    assert principal.mfa_verified and "pwd" not in principal.amr

    # An assertion for another challenge (replayed) is refused like a wrong code.
    again = server.auth.BeginPasskeySignIn(auth_pb2.BeginPasskeySignInRequest(tenant=tenant.slug)).challenge
    stale = device.assert_(passwordless.passkey_request_options_json)
    with pytest.raises(grpc.RpcError) as refused:
        server.auth.VerifyMfa(auth_pb2.VerifyMfaRequest(challenge=again.challenge, passkey_credential_json=stale))
    assert error_reason(refused.value) == "MFA_CODE_INVALID"
