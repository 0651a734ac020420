"""ext_authz Check over gRPC, without Envoy: the CheckResponse it builds, the warm path
without SQL, failing closed, hooks, and the one decision function."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2 as ext_authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_authz_grpc
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tahoe_auth.api import ext_authz as api
from tahoe_auth.authz.check import DECISION_TTL, CheckContext, CheckOutcome
from tahoe_auth.domain import decision
from tahoe_auth.identity import IdentityVerifier
from tahoe_auth.v1 import auth_pb2, decision_pb2, decision_pb2_grpc
from tests.scenarios import api_key, service_token, user_with_role
from tests.servers import OwnPostgres
from tests.support import RunningServer, bearer, request_sql, running_server

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def check_request(
    authorization: str = "",
    required_permission: str = "transcription:read",
    path: str = "/v1/jobs",
    headers: dict[str, str] | None = None,
    **extensions: str,
) -> ext_authz.CheckRequest:
    request = ext_authz.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", path
    http.headers.update({"x-request-id": "req-1", **(headers or {})})
    if authorization:
        http.headers["authorization"] = authorization
    request.attributes.context_extensions.update({"upstream": "transcription", **extensions})
    if required_permission:
        request.attributes.context_extensions["required_permission"] = required_permission
    return request


def check(server: RunningServer, request: ext_authz.CheckRequest) -> ext_authz.CheckResponse:
    response: ext_authz.CheckResponse = ext_authz_grpc.AuthorizationStub(server.channel).Check(request, timeout=10)
    return response


def upstream_headers(response: ext_authz.CheckResponse) -> dict[str, str]:
    assert response.status.code == code_pb2.OK, response
    for option in response.ok_response.headers:
        assert option.append_action == option.OVERWRITE_IF_EXISTS_OR_ADD
    return {o.header.key: o.header.value for o in response.ok_response.headers}


def denial(response: ext_authz.CheckResponse) -> tuple[int, dict[str, str], dict[str, Any]]:
    assert response.status.code != code_pb2.OK
    denied = response.denied_response
    return denied.status.code, {h.header.key: h.header.value for h in denied.headers}, json.loads(denied.body)


def test_allowed_sets_verified_headers_and_removes_client_ones(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = server.login(tenant).tokens.access_token
    forged = {"x-tahoe-tenant-id": "evil", "x-tahoe-role": "admin"}
    response = check(server, check_request(f"Bearer {token}", headers=forged))
    headers = upstream_headers(response)
    assert headers["x-tahoe-tenant-id"] == tenant.id
    assert headers["x-tahoe-subject"] == tenant.owner_id
    assert headers["x-tahoe-subject-type"] == "user"
    assert headers["x-tahoe-permissions"] == "*:*"
    # The credential goes, and the forged headers Check does not overwrite.
    assert list(response.ok_response.headers_to_remove) == ["authorization", "x-tahoe-role"]
    ring = server.app.keys.ring()
    verifier = IdentityVerifier("jwks", audience="transcription", fetch=lambda *_: json.dumps(ring.jwks()).encode())
    identity = verifier.verify_headers(headers)
    assert identity.tenant_id == tenant.id and identity.permissions == {"*:*"}


def test_a_warm_check_runs_no_sql(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = server.login(tenant).tokens.access_token
    request = check_request(f"Bearer {token}")
    with request_sql(server.app.db) as cold:
        upstream_headers(check(server, request))
    assert cold, "the first Check should have loaded the session and the user"
    time.sleep(DECISION_TTL)  # past the reuse of whole decisions: the caches below them
    with request_sql(server.app.db) as warm:
        for permission in ("transcription:read", "transcription:write", ""):
            upstream_headers(check(server, check_request(f"Bearer {token}", permission)))
    assert warm == []


def test_warm_checks_with_api_keys_and_service_tokens_run_no_sql(server: RunningServer) -> None:
    tenant = server.create_tenant()
    _, secret = api_key(server, tenant, ["transcription:read"])
    _, token = service_token(server, tenant, ["transcription:read"])
    for credential in (secret, token):
        upstream_headers(check(server, check_request(f"Bearer {credential}")))
    time.sleep(DECISION_TTL)  # past the reuse of whole decisions: the caches below them
    with request_sql(server.app.db) as warm:
        for credential in (secret, token):
            for permission in ("transcription:read", ""):
                upstream_headers(check(server, check_request(f"Bearer {credential}", permission)))
    assert warm == []


def test_identity_tokens_are_reused_per_caller_and_audience(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = server.login(tenant).tokens.access_token
    first = upstream_headers(check(server, check_request(f"Bearer {token}")))["x-tahoe-identity"]
    again = upstream_headers(check(server, check_request(f"Bearer {token}")))["x-tahoe-identity"]
    billing = upstream_headers(check(server, check_request(f"Bearer {token}", upstream="billing")))
    assert first == again
    assert billing["x-tahoe-identity"] != first


@pytest.mark.parametrize(
    ("authorization", "status", "error", "challenge"),
    [
        ("", 401, "missing_credential", 'Bearer realm="tahoe"'),
        ("Bearer nonsense", 401, "invalid_token", 'Bearer realm="tahoe", error="invalid_token"'),
        ("Basic Zm9vOmJhcg==", 401, "missing_credential", 'Bearer realm="tahoe"'),
    ],
)
def test_bad_credentials_are_401(
    server: RunningServer, authorization: str, status: int, error: str, challenge: str
) -> None:
    response = check(server, check_request(authorization))
    assert response.status.code == code_pb2.UNAUTHENTICATED
    code, headers, body = denial(response)
    assert (code, body["error"], headers["www-authenticate"]) == (status, error, challenge)
    assert headers["content-type"] == "application/json"


def test_another_tenants_resource_is_404(server: RunningServer) -> None:
    mine, theirs = server.create_tenant(), server.create_tenant()
    token = server.login(mine).tokens.access_token
    prefix = {"tenant_path_prefix": "/v1/tenants/"}
    allowed = check(server, check_request(f"Bearer {token}", path=f"/v1/tenants/{mine.id}/jobs", **prefix))
    assert upstream_headers(allowed)["x-tahoe-tenant-id"] == mine.id
    denied = check(server, check_request(f"Bearer {token}", path=f"/v1/tenants/{theirs.id}/jobs", **prefix))
    assert denial(denied)[0] == 404 and denial(denied)[2]["error"] == "not_found"


def test_another_tenant_and_no_tenant_at_all_get_the_same_404(server: RunningServer) -> None:
    """No existence oracle: naming a tenant that exists and one that does not read the
    same, and neither claims the resource belongs to anyone."""
    mine, theirs = server.create_tenant(), server.create_tenant()
    token = server.login(mine).tokens.access_token

    def answer(tenant_id: str) -> tuple[int, int, str, dict[str, Any], list[str]]:
        path = f"/v1/tenants/{tenant_id}/jobs"
        response = check(server, check_request(f"Bearer {token}", path=path, tenant_path_prefix="/v1/tenants/"))
        code, headers, body = denial(response)
        # Header values such as ratelimit-remaining move with every request; names must not.
        return code, response.status.code, response.status.message, body, sorted(headers)

    existing, missing = answer(theirs.id), answer(str(uuid.uuid4()))
    assert existing == missing
    assert existing[0] == 404 and existing[3] == {"error": "not_found", "message": "resource not found"}


def test_platform_keys_act_only_in_the_tenant_a_route_names(server: RunningServer) -> None:
    tenant = server.create_tenant()
    key = f"Bearer {server.platform_key}"
    code, _, body = denial(check(server, check_request(key)))
    assert (code, body["error"]) == (403, "tenant_required")
    named = check(server, check_request(key, path=f"/v1/tenants/{tenant.id}/jobs", tenant_path_prefix="/v1/tenants/"))
    headers = upstream_headers(named)
    assert (headers["x-tahoe-tenant-id"], headers["x-tahoe-permissions"]) == (tenant.id, "transcription:read")


def test_a_post_decision_hook_can_deny_and_add_headers(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = server.login(tenant).tokens.access_token
    seen: list[CheckContext] = []

    def limiter(context: CheckContext, outcome: CheckOutcome) -> CheckOutcome:
        seen.append(context)
        if len(seen) == 1:
            return dataclasses.replace(outcome, response_headers={"ratelimit-limit": "1"})
        refused = decision.Decision(False, "rate_limited", "too many requests", outcome.decision.principal)
        return dataclasses.replace(
            outcome, decision=refused, response_headers={"ratelimit-limit": "1", "retry-after": "1"}
        )

    installed = server.app.gatekeeper.hooks
    server.app.gatekeeper.hooks = [limiter]  # alone: the admission hook adds headers of its own
    try:
        first = check(server, check_request(f"Bearer {token}"))
        second = check(server, check_request(f"Bearer {token}"))
    finally:
        server.app.gatekeeper.hooks = installed
    assert {h.header.key: h.header.value for h in first.ok_response.response_headers_to_add} == {"ratelimit-limit": "1"}
    code, headers, body = denial(second)
    assert second.status.code == code_pb2.RESOURCE_EXHAUSTED
    assert (code, body["error"], headers["retry-after"], headers["ratelimit-limit"]) == (429, "rate_limited", "1", "1")
    assert seen[0].request_id == "req-1" and seen[0].access.required_permission == "transcription:read"


def test_an_unexpected_error_denies_with_503_and_a_log_line(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(self: object, context: CheckContext) -> CheckOutcome:
        raise RuntimeError("boom")

    monkeypatch.setattr(type(server.app.gatekeeper), "check", explode)
    with caplog.at_level(logging.ERROR, "tahoe_auth.ext_authz"):
        response = check(server, check_request("Bearer x"))
    assert response.status.code == code_pb2.UNAVAILABLE
    assert denial(response)[0] == 503
    assert "Check failed unexpectedly" in caplog.text and "boom" in caplog.text


def test_denials_are_logged_with_the_request_id_but_sampled(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "tahoe_auth.ext_authz"):
        for _ in range(50):
            check(server, check_request("Bearer junk"))
    lines = [r for r in caplog.records if r.name == "tahoe_auth.ext_authz"]
    assert 1 <= len(lines) <= 10
    assert "invalid_token" in lines[0].getMessage()
    assert lines[0].detail  # type: ignore[attr-defined]


def test_one_decision_function_for_check_explain_and_the_grpc_api(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = server.create_tenant()
    token = server.login(tenant).tokens.access_token
    calls: list[str] = []
    original = decision.decide

    def spy(principal: Any, required_permission: str = "", *args: Any, **kwargs: Any) -> decision.Decision:
        calls.append(required_permission)
        return original(principal, required_permission, *args, **kwargs)

    monkeypatch.setattr(decision, "decide", spy)
    upstream_headers(check(server, check_request(f"Bearer {token}", "transcription:write")))
    decision_pb2_grpc.DecisionServiceStub(server.channel).ExplainDecision(
        decision_pb2.ExplainDecisionRequest(required_permission="transcription:delete"), metadata=bearer(token)
    )
    server.auth.ListSessions(auth_pb2.ListSessionsRequest(), metadata=bearer(token))
    assert "transcription:write" in calls and "transcription:delete" in calls
    assert "" in calls  # the interceptor's Authorize step (ListSessions needs a credential only)


# -- failing closed ------------------------------------------------------------------


@pytest.mark.slow
def test_database_down_warm_credentials_pass_cold_ones_fail_closed(
    own_postgres: OwnPostgres, clean_redis: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {
        "TAHOE_DATABASE_URL": own_postgres.url,
        "TAHOE_REDIS_URL": clean_redis,
        "TAHOE_MASTER_KEY": "B" * 43,
        "TAHOE_VAR_DIR": str(tmp_path),
    }
    with running_server(env) as server:
        assert server.app.store.subscribed.wait(5)  # type: ignore[attr-defined]
        warm_tenant, cold_tenant = server.create_tenant(), server.create_tenant()
        warm = server.login(warm_tenant).tokens.access_token
        cold = server.login(cold_tenant).tokens.access_token
        upstream_headers(check(server, check_request(f"Bearer {warm}")))
        own_postgres.stop()
        # The warm credential needs nothing from the database.
        assert upstream_headers(check(server, check_request(f"Bearer {warm}")))["x-tahoe-tenant-id"] == warm_tenant.id
        with caplog.at_level(logging.ERROR, "tahoe_auth.ext_authz"):
            response = check(server, check_request(f"Bearer {cold}"))
        code, headers, body = denial(response)
        assert response.status.code == code_pb2.UNAVAILABLE
        assert (code, body["error"], headers["retry-after"]) == (503, "unavailable", "1")
        assert "unavailable" in caplog.text
        assert any("database" in str(getattr(r, "detail", "")) for r in caplog.records)


def test_check_is_reported_to_health_checks_and_listed_by_reflection(server: RunningServer) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    for service in (api.SERVICE_NAME, "tahoe_auth.v1.DecisionService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {api.SERVICE_NAME, "tahoe_auth.v1.DecisionService"} <= names


def test_decisions_are_counted_and_denials_audited_in_aggregate(server: RunningServer) -> None:
    from prometheus_client import REGISTRY

    def count(outcome: str, reason: str) -> float:
        value = REGISTRY.get_sample_value("tahoe_check_decisions_total", {"outcome": outcome, "reason": reason})
        return value or 0.0

    tenant = server.create_tenant()
    token = server.login(tenant).tokens.access_token
    viewer = user_with_role(server, tenant, "viewer")
    before = count("allowed", "allowed"), count("denied", "permission_denied"), server.app.denials.pending()
    upstream_headers(check(server, check_request(f"Bearer {token}")))
    for _ in range(3):
        denial(check(server, check_request(f"Bearer {viewer}", "transcription:write", route="jobs.create")))
    assert count("allowed", "allowed") == before[0] + 1
    assert count("denied", "permission_denied") == before[1] + 3
    assert server.app.denials.pending() == before[2] + 3
    assert REGISTRY.get_sample_value("tahoe_cache_entries", {"cache": "check_decisions"}) is not None
