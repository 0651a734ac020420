"""The gRPC API as JSON over HTTP through Envoy's gRPC-JSON transcoder, with the
committed envoy/envoy.yaml: one round trip per service, the same calls and answers as
over gRPC, WatchUsage as newline-delimited JSON, and no gRPC headers in the answers.
Errors: test_json_api_errors.py; the isolation matrix: test_json_api_isolation.py."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from tahoe_auth.v1 import usage_pb2, usage_pb2_grpc
from tests.e2e import stack as e2e
from tests.support import bearer

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def transport() -> str:
    """Check's transport does not matter here: the JSON API bypasses Check."""
    return "http"


def ok(response: e2e.Response) -> e2e.Response:
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/json"
    return response


def test_login_over_json_returns_tokens_that_work_through_envoy(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    body = {"tenant": tenant.slug, "email": tenant.owner_email, "password": tenant.owner_password}
    response = ok(live.call("POST", "/auth/v1/login", body=body))
    assert response.body["tenantId"] == tenant.id and response.body["tokens"]["tokenType"] == "Bearer"
    token = response.body["tokens"]["accessToken"]
    assert live.call("GET", "/v1/jobs", token=token).status == 200


def test_auth_service_refresh_validate_and_sessions(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    login = live.auth.login(tenant)
    refreshed = ok(live.call("POST", "/auth/v1/refresh", body={"refreshToken": login.tokens.refresh_token}))
    token = refreshed.body["tokens"]["accessToken"]
    assert refreshed.body["tokens"]["sessionId"] == login.tokens.session_id
    principal = ok(live.call("POST", "/auth/v1/tokens:validate", body={"token": token})).body["principal"]
    assert (principal["tenantId"], principal["subjectType"]) == (tenant.id, "SUBJECT_TYPE_USER")
    sessions = ok(live.call("GET", "/auth/v1/sessions?pageSize=10", token=token)).body["sessions"]
    assert [s["id"] for s in sessions if s["current"]] == [login.tokens.session_id]
    # The spent refresh token, presented again, revokes the session.
    again = live.call("POST", "/auth/v1/refresh", body={"refreshToken": login.tokens.refresh_token})
    assert (again.status, e2e.error_reason(again.body)) == (401, "REFRESH_TOKEN_REUSED")


def test_tenant_service_user_lifecycle(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.owner_token(tenant)
    users = f"/auth/v1/tenants/{tenant.id}/users"
    body = {"user": {"email": f"new@{tenant.slug}.test"}, "password": "a long enough password", "roles": ["viewer"]}
    created = ok(live.call("POST", users, token=token, body=body)).body["user"]
    assert (created["email"], created["roles"], created["state"]) == (
        body["user"]["email"],
        ["viewer"],
        "USER_STATE_ACTIVE",
    )
    user = f"{users}/{created['id']}"
    assert ok(live.call("GET", user, token=token)).body["user"]["id"] == created["id"]
    renamed = ok(live.call("PATCH", f"{user}?updateMask=displayName", token=token, body={"displayName": "New Name"}))
    assert renamed.body["user"]["displayName"] == "New Name"
    listed = ok(live.call("GET", f"{users}?role=viewer&state=USER_STATE_ACTIVE", token=token)).body["users"]
    assert [u["id"] for u in listed] == [created["id"]]
    assert ok(live.call("POST", f"{user}:disable", token=token, body={})).body["user"]["state"] == "USER_STATE_DISABLED"
    assert ok(live.call("DELETE", user, token=token)).body == {}
    assert live.call("GET", user, token=token).status == 404


def test_usage_service_record_then_summary(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.owner_token(tenant)
    usage = f"/auth/v1/tenants/{tenant.id}/usage"
    event = {"metric": "api.requests", "quantity": 3, "dimensions": {"route": "jobs"}, "idempotencyKey": "k1"}
    assert ok(live.call("POST", f"{usage}:record", token=token, body={"event": event})).body == {"duplicate": False}
    assert ok(live.call("POST", f"{usage}:record", token=token, body={"event": event})).body == {"duplicate": True}
    summary = ok(live.call("GET", f"{usage}:summary", token=token)).body
    assert summary["tenantId"] == tenant.id
    assert {m["metric"]: m["quantity"] for m in summary["metrics"]}["api.requests"] == 3


def test_audit_service_lists_the_tenants_events(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.owner_token(tenant)
    query = urllib.parse.urlencode({"action": "auth.*", "outcome": "AUDIT_OUTCOME_SUCCESS", "pageSize": 5})
    events = ok(live.call("GET", f"/auth/v1/tenants/{tenant.id}/auditEvents?{query}", token=token)).body["events"]
    assert events and {e["action"] for e in events} == {"auth.login"}
    assert {e["tenantId"] for e in events} == {tenant.id}


def test_webhook_service_lists_event_types_and_endpoints(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.owner_token(tenant)
    types = ok(live.call("GET", "/auth/v1/webhookEventTypes", token=token)).body["eventTypes"]
    assert "user.created" in types
    endpoints = ok(live.call("GET", f"/auth/v1/tenants/{tenant.id}/webhookEndpoints", token=token))
    assert endpoints.body == {"endpoints": [], "nextPageToken": ""}


def test_key_service_lists_signing_keys_for_platform_administrators(live: e2e.Stack) -> None:
    keys = ok(live.call("GET", "/auth/v1/signingKeys", token=live.auth.platform_key)).body
    assert keys["activeKid"] in [k["kid"] for k in keys["keys"] if k["state"] == "SIGNING_KEY_STATE_ACTIVE"]


def test_decision_service_explains_the_callers_credential(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.owner_token(tenant)
    body = {"requiredPermission": "transcription:read", "upstream": "transcription"}
    explained = ok(live.call("POST", "/auth/v1/decisions:explain", token=token, body=body)).body
    assert (explained["allowed"], explained["reason"], explained["httpStatus"]) == (True, "allowed", 200)
    assert explained["principal"]["tenantId"] == tenant.id


def test_answers_carry_no_grpc_headers(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.owner_token(tenant)
    answers = [
        live.call("GET", f"/auth/v1/tenants/{tenant.id}", token=token),  # success
        live.call("GET", f"/auth/v1/tenants/{tenant.id}/users/{tenant.id}", token=token),  # a gRPC error
        live.call("GET", "/auth/v1/no-such-thing"),  # Envoy's own reply
    ]
    assert [a.status for a in answers] == [200, 404, 404]
    for answer in answers:
        assert [h for h in answer.headers if h.startswith("grpc-")] == [], answer.headers
        assert answer.headers["content-type"] == "application/json"
    with e2e.open_stream(live.port, f"/auth/v1/tenants/{tenant.id}/usage:watch", token) as stream:
        assert stream.status == 200 and [h for h in stream.headers if h.startswith("grpc-")] == []


def test_watch_usage_streams_newline_delimited_json(live: e2e.Stack) -> None:
    """The first message at once; after a RecordUsage (over gRPC here), the next within 2 s."""
    tenant = live.auth.create_tenant()
    token = live.auth.owner_token(tenant)
    watch = f"/auth/v1/tenants/{tenant.id}/usage:watch?metrics=api.requests"
    with e2e.open_stream(live.port, watch, token, timeout=2.0) as stream:
        assert stream.status == 200, stream.error_body()
        assert stream.headers["content-type"] == "application/json"
        first = stream.next_message()
        assert first["tenantId"] == tenant.id and first["totals"] == {}
        recorded = time.monotonic()
        usage_pb2_grpc.UsageServiceStub(live.auth.channel).RecordUsage(
            usage_pb2.RecordUsageRequest(event=usage_pb2.UsageEvent(metric="api.requests", quantity=2)),
            metadata=bearer(token),
        )
        update = stream.next_message()  # the socket's 2 s timeout bounds the wait
        assert update["totals"] == {"api.requests": 2}
        assert time.monotonic() - recorded < 2.0


def test_export_audit_events_streams_past_the_unary_timeout_route(live: e2e.Stack) -> None:
    """ExportAuditEvents is a server stream: it takes the route without an overall timeout."""
    tenant = live.auth.create_tenant()
    token = live.auth.owner_token(tenant)
    with e2e.open_stream(live.port, f"/auth/v1/tenants/{tenant.id}/auditEvents:export", token) as stream:
        assert stream.status == 200, stream.error_body()
        chunk = stream.next_message()
    assert chunk["contentType"] == "application/x-ndjson" and chunk["content"]


def test_a_path_that_names_no_method_is_404(live: e2e.Stack) -> None:
    assert live.call("GET", "/auth/v1/no-such-thing").status == 404


def test_envoy_serves_the_committed_openapi_document_without_a_credential(live: e2e.Stack) -> None:
    response = live.call("GET", "/auth/v1/openapi.json")
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.body == json.loads((e2e.ENVOY_DIR / "openapi.json").read_text())
    assert "/auth/v1/login" in response.body["paths"]
    # What it describes answers: an operation it says needs a bearer refuses a call without one.
    assert response.body["paths"]["/auth/v1/tenants/{tenant_id}/users"]["get"].get("security") is None
    refused = live.call("GET", "/auth/v1/tenants/any/users")
    assert refused.status == 401 and e2e.error_reason(refused.body) == "UNAUTHENTICATED"
