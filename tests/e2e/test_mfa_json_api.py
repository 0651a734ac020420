"""Second factors over the JSON API through the committed Envoy config (pyotp as the
authenticator app): enroll, log in to a challenge, answer it at /auth/v1/mfa:verify,
step up; a sensitive call without step-up is a 403 google.rpc.Status with reason
MFA_REQUIRED; and an enrollment token is refused by Envoy's Check (both of its
transports) as by the API, except for enrolling."""

from __future__ import annotations

from typing import Any

import pyotp
import pytest

from tahoe_auth.v1 import tenant_pb2
from tests.e2e import stack as e2e
from tests.integration.test_mfa_authenticator_app import code, settle, wrong_code
from tests.support import Tenant, bearer

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]

RPC_CODES = {401: 16, 403: 7}


def ok(response: e2e.Response) -> dict[str, Any]:
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/json"
    return response.body


def rpc_error(response: e2e.Response, status: int, reason: str) -> dict[str, Any]:
    """A JSON google.rpc.Status with `status` and the ErrorInfo `reason`: its metadata."""
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.body["code"] == RPC_CODES[status] and response.body["message"]
    assert e2e.error_reason(response.body) == reason
    (info,) = [d for d in response.body["details"] if d["@type"] == e2e.ERROR_INFO]
    metadata: dict[str, Any] = info["metadata"]
    return metadata


def login(live: e2e.Stack, tenant: Tenant, email: str | None = None) -> dict[str, Any]:
    body = {"tenant": tenant.slug, "email": email or tenant.owner_email, "password": tenant.owner_password}
    return ok(live.call("POST", "/auth/v1/login", body=body))


def enroll(live: e2e.Stack, token: str) -> tuple[pyotp.TOTP, list[str]]:
    settle()
    started = ok(live.call("POST", "/auth/v1/mfa/totp:begin", token=token, body={"name": "Phone"}))
    app = pyotp.parse_uri(started["otpauthUri"])
    assert isinstance(app, pyotp.TOTP) and app.secret == started["secret"]
    confirmed = ok(
        live.call(
            "POST", "/auth/v1/mfa/totp:confirm", token=token, body={"factorId": started["factorId"], "code": app.now()}
        )
    )
    assert confirmed["factor"]["type"] == "MFA_FACTOR_TYPE_TOTP"
    return app, list(confirmed["recoveryCodes"])


def test_login_answered_over_json_and_step_up_for_a_sensitive_call(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    password_only = login(live, tenant)["tokens"]["accessToken"]
    app, codes = enroll(live, password_only)
    assert len(codes) == 10

    first = login(live, tenant)
    assert "tokens" not in first
    challenge = first["mfaChallenge"]
    assert challenge["challenge"].startswith("mc_") and challenge["expireTime"]
    assert challenge["methods"] == ["MFA_METHOD_TOTP", "MFA_METHOD_RECOVERY_CODE"]
    wrong = {"challenge": challenge["challenge"], "totpCode": wrong_code(app)}
    rpc_error(live.call("POST", "/auth/v1/mfa:verify", body=wrong), 401, "MFA_CODE_INVALID")
    settle()
    right = {"challenge": challenge["challenge"], "totpCode": code(app, 1)}
    verified = ok(live.call("POST", "/auth/v1/mfa:verify", body=right))
    assert verified["userId"] == tenant.owner_id and verified["tokens"]["refreshToken"]
    token = verified["tokens"]["accessToken"]
    assert live.call("GET", "/v1/jobs", token=token).status == 200  # Check takes it
    principal = ok(live.call("POST", "/auth/v1/tokens:validate", body={"token": token}))["principal"]
    assert principal["mfaVerified"] is True and {"pwd", "otp", "mfa"} <= set(principal["amr"])

    # A sensitive call from the password-only session: 403, MFA_REQUIRED, with the window.
    api_keys = f"/auth/v1/tenants/{tenant.id}/apiKeys"
    key = {"name": "ci", "scopes": ["usage:read"]}
    refused = live.call("POST", api_keys, token=password_only, body=key)
    assert rpc_error(refused, 403, "MFA_REQUIRED")["max_age_seconds"] == "900"
    assert live.call("GET", "/v1/jobs", token=password_only).status == 200  # ordinary routes are fine

    # Step up the same session over JSON (a recovery code this time), then it passes.
    step = ok(live.call("POST", "/auth/v1/mfa/challenges", token=password_only, body={}))["challenge"]
    stepped = ok(
        live.call("POST", "/auth/v1/mfa:verify", body={"challenge": step["challenge"], "recoveryCode": codes[0]})
    )
    assert not stepped["tokens"].get("refreshToken")
    assert stepped["tokens"]["sessionId"] == first_session(live, password_only)
    created = ok(live.call("POST", api_keys, token=stepped["tokens"]["accessToken"], body=key))
    assert created["secret"]
    # The spent recovery code does not answer a second step-up.
    again = ok(live.call("POST", "/auth/v1/mfa/challenges", token=password_only, body={}))["challenge"]
    reused = live.call("POST", "/auth/v1/mfa:verify", body={"challenge": again["challenge"], "recoveryCode": codes[0]})
    rpc_error(reused, 401, "MFA_CODE_INVALID")


def first_session(live: e2e.Stack, token: str) -> str:
    principal = ok(live.call("POST", "/auth/v1/tokens:validate", body={"token": token}))["principal"]
    session: str = principal["sessionId"]
    return session


def test_an_enrollment_token_is_refused_by_check_and_the_api_but_enrolls(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    owner = live.auth.owner_token(tenant)
    live.auth.tenants.UpdateTenant(
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
    answer = login(live, tenant)
    assert "tokens" not in answer and answer["mfaChallenge"]["enrollmentRequired"] is True
    restricted = answer["mfaChallenge"]["enrollmentToken"]

    mark = live.journal.mark()
    through_check = live.call("GET", "/v1/jobs", token=restricted)
    assert through_check.status == 403, through_check.body
    assert through_check.body["error"] == "mfa_enrollment_required"
    assert live.journal.since(mark) == [], "the upstream was reached"
    rpc_error(live.call("GET", f"/auth/v1/tenants/{tenant.id}", token=restricted), 403, "MFA_ENROLLMENT_REQUIRED")

    listed = ok(live.call("GET", "/auth/v1/mfa/factors", token=restricted))
    assert listed["mfaRequired"] is True and not listed.get("factors")
    enroll(live, restricted)
    verified = ok(live.call("POST", "/auth/v1/mfa:verify", body={"challenge": answer["mfaChallenge"]["challenge"]}))
    assert live.call("GET", "/v1/jobs", token=verified["tokens"]["accessToken"]).status == 200
    assert live.call("GET", "/v1/jobs", token=restricted).status == 403
