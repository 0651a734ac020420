"""Through a real Envoy (envoy/envoy.yaml) to the real demo upstream: every denial
stops at Envoy, every allowed request arrives with verified headers only."""

from __future__ import annotations

import pytest

from tahoe_auth.authz.check import CheckContext, CheckOutcome
from tahoe_auth.identity import IdentityError, IdentityVerifier
from tahoe_auth.v1 import auth_pb2, usage_pb2, usage_pb2_grpc
from tests.e2e import stack as e2e
from tests.scenarios import (
    api_key,
    expired_token,
    revoke_api_key,
    service_token,
    suspend,
    unsigned_token,
    user_with_role,
)
from tests.support import bearer, wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]


def denied_before_upstream(live: e2e.Stack, status: int, method: str, path: str, **kwargs: object) -> e2e.Response:
    mark = live.journal.mark()
    response = live.call(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    assert set(response.body) == {"error", "message"}
    assert live.journal.since(mark) == [], "the upstream was reached"
    return response


def eventually(live: e2e.Stack, status: int, method: str, path: str, token: str, limit: float = 1.0) -> float:
    """Seconds until Envoy answers `status` (changes reach every instance's caches
    through Redis pub/sub, within a second)."""
    return wait_until(lambda: live.call(method, path, token=token).status == status, limit=limit)


def test_no_credential_is_401_with_a_bearer_challenge(live: e2e.Stack) -> None:
    response = denied_before_upstream(live, 401, "GET", "/v1/jobs")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.body["error"] == "missing_credential"
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    "authorization", ["Bearer garbage", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer tahoe_sk_notakey", "Bearer a.b.c"]
)
def test_garbage_is_401(live: e2e.Stack, authorization: str) -> None:
    response = denied_before_upstream(live, 401, "GET", "/v1/jobs", headers={"authorization": authorization})
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_alg_none_is_401_invalid_token(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    response = denied_before_upstream(live, 401, "GET", "/v1/jobs", token=unsigned_token(live.auth, tenant))
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.body["error"] == "invalid_token"


def test_expired_token_is_401(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    session_id = live.auth.login(tenant).tokens.session_id
    response = denied_before_upstream(live, 401, "GET", "/v1/jobs", token=expired_token(live.auth, tenant, session_id))
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_revoked_session_is_401(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.login(tenant).tokens.access_token
    assert live.call("GET", "/v1/jobs", token=token).status == 200  # warm every cache
    live.auth.auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(token))
    eventually(live, 401, "GET", "/v1/jobs", token)
    denied_before_upstream(live, 401, "GET", "/v1/jobs", token=token)


def test_missing_permission_is_403(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    viewer = user_with_role(live.auth, tenant, "viewer")
    assert live.call("GET", "/v1/jobs", token=viewer).status == 200
    response = denied_before_upstream(
        live, 403, "POST", "/v1/jobs", token=viewer, body={"audio_url": "s3://a.wav", "audio_seconds": 3}
    )
    assert response.body["error"] == "permission_denied"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_suspended_tenant_is_403(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.login(tenant).tokens.access_token
    assert live.call("GET", "/v1/jobs", token=token).status == 200
    suspend(live.auth, tenant)
    eventually(live, 403, "GET", "/v1/jobs", token)
    response = denied_before_upstream(live, 403, "GET", "/v1/jobs", token=token)
    assert response.body["error"] == "tenant_suspended"


def test_another_tenants_resource_is_404_and_never_reaches_the_upstream(live: e2e.Stack) -> None:
    mine, theirs = live.auth.create_tenant(), live.auth.create_tenant()
    token = live.auth.login(mine).tokens.access_token
    assert live.call("GET", f"/v1/tenants/{mine.id}/jobs", token=token).status == 200
    response = denied_before_upstream(live, 404, "GET", f"/v1/tenants/{theirs.id}/jobs", token=token)
    assert response.body["error"] == "not_found"


def test_client_sent_tahoe_headers_never_reach_the_upstream(live: e2e.Stack) -> None:
    tenant, other = live.auth.create_tenant(), live.auth.create_tenant()
    token = live.auth.login(tenant).tokens.access_token
    forged = {
        "x-tahoe-tenant-id": other.id,
        "x-tahoe-subject": "admin",
        "x-tahoe-subject-type": "service",
        "x-tahoe-permissions": "*:*",
        "x-tahoe-identity": "forged",
        "x-tahoe-anything": "1",
    }
    # Unauthenticated: denied, nothing reaches the upstream.
    denied_before_upstream(live, 401, "GET", "/v1/jobs", headers=forged)
    # Routes without ext_authz: stripped all the same.
    mark = live.journal.mark()
    assert live.call("GET", "/healthz", headers=forged).status == 200
    (seen,) = live.journal.since(mark)
    assert not [h for h in seen["headers"] if h.startswith("x-tahoe-")]
    # Authenticated: the upstream sees the verified values only.
    mark = live.journal.mark()
    response = live.call("GET", "/v1/whoami", token=token, headers=forged)
    assert response.status == 200, response.body
    (seen,) = live.journal.since(mark)
    assert seen["headers"]["x-tahoe-tenant-id"] == tenant.id
    assert seen["headers"]["x-tahoe-subject"] == tenant.owner_id
    assert "x-tahoe-anything" not in seen["headers"]
    assert response.body["identity"]["tenant_id"] == tenant.id


def test_spoofed_route_requirements_are_ignored(live: e2e.Stack) -> None:
    """What a route requires is Envoy's to say: client-sent copies of the HTTP
    transport's route headers (and of the client address) change nothing."""
    mine, theirs = live.auth.create_tenant(), live.auth.create_tenant()
    viewer = user_with_role(live.auth, mine, "viewer")
    spoofed = {
        "x-tahoe-route-permission": "transcription:read",
        "x-tahoe-route-tenant-prefix": "/nowhere/",
        "x-tahoe-route-upstream": "billing",
        "x-tahoe-route-name": "healthz",
        "x-tahoe-client-address": "10.0.0.1",
        "x-forwarded-for": "10.0.0.2",
    }
    body = {"audio_url": "s3://a.wav", "audio_seconds": 3}
    response = denied_before_upstream(live, 403, "POST", "/v1/jobs", token=viewer, headers=spoofed, body=body)
    assert response.body["error"] == "permission_denied"
    owner = live.auth.login(mine).tokens.access_token
    denied_before_upstream(live, 404, "GET", f"/v1/tenants/{theirs.id}/jobs", token=owner, headers=spoofed)
    contexts: list[CheckContext] = []

    def record(context: CheckContext, outcome: CheckOutcome) -> CheckOutcome:
        contexts.append(context)
        return outcome

    live.auth.app.gatekeeper.hooks.append(record)
    try:
        mark = live.journal.mark()
        assert live.call("GET", "/v1/whoami", token=owner, headers=spoofed).status == 200
    finally:
        live.auth.app.gatekeeper.hooks.remove(record)
    (seen,) = live.journal.since(mark)
    assert not [h for h in seen["headers"] if h.startswith("x-tahoe-route-") or h == "x-tahoe-client-address"]
    # Limits by address count the peer Envoy saw, whatever the client wrote.
    assert [(c.route, c.client_address, c.client_tahoe_headers) for c in contexts] == [("whoami", "127.0.0.1", ())]


def test_a_user_token_reaches_the_upstream_with_verified_headers(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.login(tenant).tokens.access_token
    mark = live.journal.mark()
    response = live.call("GET", "/v1/jobs", token=token, headers={"x-request-id": "trace-me-123"})
    assert response.status == 200, response.body
    assert response.headers["x-request-id"] == "trace-me-123"
    (seen,) = live.journal.since(mark)
    headers = seen["headers"]
    assert headers["x-tahoe-tenant-id"] == tenant.id
    assert headers["x-tahoe-subject"] == tenant.owner_id
    assert headers["x-tahoe-subject-type"] == "user"
    assert headers["x-tahoe-permissions"] == "*:*"  # the owner's grant covering transcription:read
    assert headers["x-request-id"] == "trace-me-123"
    assert seen["authorization"] is False, "the raw credential reached the upstream"
    verifier = IdentityVerifier(f"http://{live.side_address}/.well-known/jwks.json", audience="transcription")
    identity = verifier.verify_headers(headers)
    assert (identity.tenant_id, identity.subject, identity.subject_type) == (tenant.id, tenant.owner_id, "user")
    with pytest.raises(IdentityError, match=r"(?i)audience"):
        IdentityVerifier(f"http://{live.side_address}/.well-known/jwks.json", audience="billing").verify(
            headers["x-tahoe-identity"]
        )


def test_jobs_are_scoped_by_tenant(live: e2e.Stack) -> None:
    a, b = live.auth.create_tenant(), live.auth.create_tenant()
    token_a, token_b = live.auth.login(a).tokens.access_token, live.auth.login(b).tokens.access_token
    created = live.call("POST", "/v1/jobs", token=token_a, body={"audio_url": "s3://a.wav", "audio_seconds": 12})
    assert created.status == 201, created.body
    job = created.body["job"]
    assert job["tenant_id"] == a.id and job["created_by"] == f"user:{a.owner_id}"
    assert [j["id"] for j in live.call("GET", "/v1/jobs", token=token_a).body["jobs"]] == [job["id"]]
    assert live.call("GET", "/v1/jobs", token=token_b).body["jobs"] == []
    assert live.call("GET", f"/v1/jobs/{job['id']}", token=token_a).status == 200
    assert live.call("GET", f"/v1/jobs/{job['id']}", token=token_b).status == 404  # the upstream's own wall


def test_a_route_without_a_permission_needs_only_a_valid_credential(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    viewer = user_with_role(live.auth, tenant, "viewer")
    response = live.call("GET", "/v1/whoami", token=viewer)
    assert response.status == 200
    assert set(response.body["identity"]["permissions"]) == {
        "transcription:read",
        "usage:read",
        "users:read",
        "roles:read",
        "tenant:read",
    }


def test_the_request_id_is_kept_or_made_and_reaches_check_and_the_upstream(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.login(tenant).tokens.access_token
    seen: list[str] = []
    contexts: list[CheckContext] = []

    def record(context: CheckContext, outcome: CheckOutcome) -> CheckOutcome:
        seen.append(context.request_id)
        contexts.append(context)
        return outcome

    live.auth.app.gatekeeper.hooks.append(record)
    try:
        mark = live.journal.mark()
        kept = live.call("GET", "/v1/jobs", token=token, headers={"x-request-id": "caller-chosen-1"})
        made = live.call("GET", "/v1/jobs", token=token)
        denied = live.call("GET", "/v1/jobs")
    finally:
        live.auth.app.gatekeeper.hooks.remove(record)
    assert kept.headers["x-request-id"] == "caller-chosen-1"
    generated = made.headers["x-request-id"]
    assert generated and generated != "caller-chosen-1"
    assert seen == ["caller-chosen-1", generated, denied.headers["x-request-id"]]
    assert [e["headers"]["x-request-id"] for e in live.journal.since(mark)] == ["caller-chosen-1", generated]
    assert {(c.route, c.client_address) for c in contexts} == {("jobs.read", "127.0.0.1")}


def test_an_api_key_reaches_the_upstream_within_its_scopes(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    key_id, secret = api_key(live.auth, tenant, ["transcription:read"])
    mark = live.journal.mark()
    response = live.call("GET", "/v1/jobs", token=secret)
    assert response.status == 200, response.body
    (seen,) = live.journal.since(mark)
    headers = seen["headers"]
    assert (headers["x-tahoe-tenant-id"], headers["x-tahoe-subject"]) == (tenant.id, key_id)
    assert (headers["x-tahoe-subject-type"], headers["x-tahoe-permissions"]) == ("api_key", "transcription:read")
    assert seen["authorization"] is False
    identity = live.call("GET", "/v1/whoami", token=secret).body["identity"]
    assert (identity["subject_type"], identity["permissions"]) == ("api_key", ["transcription:read"])
    # Its owner may write; the key may not.
    denied_before_upstream(live, 403, "POST", "/v1/jobs", token=secret, body={"audio_url": "s3://a.wav"})


def test_a_revoked_api_key_is_401(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    key_id, secret = api_key(live.auth, tenant, ["transcription:*"])
    assert live.call("GET", "/v1/jobs", token=secret).status == 200  # warm every cache
    revoke_api_key(live.auth, tenant, key_id)
    eventually(live, 401, "GET", "/v1/jobs", secret)
    response = denied_before_upstream(live, 401, "GET", "/v1/jobs", token=secret)
    assert response.body["error"] == "invalid_token"


def test_a_service_token_reaches_the_upstream(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    account_id, token = service_token(live.auth, tenant, ["transcription:write", "transcription:read"])
    mark = live.journal.mark()
    created = live.call("POST", "/v1/jobs", token=token, body={"audio_url": "s3://svc.wav", "audio_seconds": 5})
    assert created.status == 201, created.body
    assert created.body["job"]["created_by"] == f"service:{account_id}"
    (seen,) = live.journal.since(mark)
    headers = seen["headers"]
    assert (headers["x-tahoe-tenant-id"], headers["x-tahoe-subject"]) == (tenant.id, account_id)
    assert (headers["x-tahoe-subject-type"], headers["x-tahoe-permissions"]) == ("service", "transcription:write")


def test_each_job_is_metered_through_the_usage_service(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.login(tenant).tokens.access_token
    for seconds in (12, 30):
        body = {"audio_url": "s3://metered.wav", "audio_seconds": seconds}
        assert live.call("POST", "/v1/jobs", token=token, body=body).status == 201

    def metered() -> float:
        summary = usage_pb2_grpc.UsageServiceStub(live.auth.channel).GetUsageSummary(
            usage_pb2.GetUsageSummaryRequest(tenant_id=tenant.id), metadata=bearer(token)
        )
        return sum(m.quantity for m in summary.metrics if m.metric == "transcription.seconds")

    wait_until(lambda: metered() == 42, limit=10)
