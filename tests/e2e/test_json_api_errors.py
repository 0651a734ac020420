"""Errors over the JSON API, through the committed envoy/envoy.yaml: each a JSON
google.rpc.Status ({"code", "message", "details": [ErrorInfo]}) with its HTTP status:
the gRPC server's (400, 401, 403, 404, 409, 429, 503) as the transcoder converts them,
and Envoy's own replies under /auth/v1/ (a refused body or query, a path no method
has, no reachable gRPC upstream) in the same shape, via local_reply_config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tahoe_auth.domain import errors
from tests import harness
from tests.e2e import stack as e2e

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]

# The google.rpc.Code of each status, as the API's errors carry it.
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 429: 8, 503: 14}


@pytest.fixture(scope="module")
def transport() -> str:
    """Check's transport does not matter here: the JSON API bypasses Check."""
    return "http"


def assert_error(response: e2e.Response, status: int, reason: str) -> dict[str, Any]:
    """The status, the JSON content type, and the google.rpc.Status body with its reason."""
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    body = response.body
    assert body["code"] == GRPC_CODES[status] and isinstance(body["message"], str) and body["message"]
    assert e2e.error_reason(body) == reason
    (info,) = [d for d in body["details"] if d["@type"] == e2e.ERROR_INFO]
    assert info["domain"] == "tahoe.auth" and info["metadata"]["request_id"] == response.headers["x-request-id"]
    return body


# -- the gRPC server's errors, converted by the transcoder ---------------------------


def test_400_a_request_the_server_refuses(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    response = live.call("POST", f"/auth/v1/tenants/{tenant.id}/users", token=live.auth.owner_token(tenant), body={})
    assert "email" in assert_error(response, 400, "INVALID_ARGUMENT")["message"]


def test_401_a_refused_login_and_a_missing_credential(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    body = {"tenant": tenant.slug, "email": tenant.owner_email, "password": "not the password"}
    refused = assert_error(live.call("POST", "/auth/v1/login", body=body), 401, "INVALID_CREDENTIALS")
    assert refused["message"] == "invalid tenant, email or password"
    assert_error(live.call("GET", f"/auth/v1/tenants/{tenant.id}"), 401, "UNAUTHENTICATED")
    assert_error(live.call("GET", f"/auth/v1/tenants/{tenant.id}", token="not-a-token"), 401, "UNAUTHENTICATED")


def test_403_a_permission_the_caller_lacks(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    _, viewer = live.auth.add_user(tenant, ["viewer"])
    body = {"user": {"email": f"x@{tenant.slug}.test"}}
    response = live.call("POST", f"/auth/v1/tenants/{tenant.id}/users", token=viewer, body=body)
    assert_error(response, 403, "PERMISSION_DENIED")


def test_404_an_unknown_resource(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    path = f"/auth/v1/tenants/{tenant.id}/users/00000000-0000-4000-8000-000000000000"
    assert_error(live.call("GET", path, token=live.auth.owner_token(tenant)), 404, "NOT_FOUND")


def test_409_a_duplicate(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    body = {"user": {"email": tenant.owner_email}}
    response = live.call("POST", f"/auth/v1/tenants/{tenant.id}/users", token=live.auth.owner_token(tenant), body=body)
    assert_error(response, 409, "ALREADY_EXISTS")


def test_429_logins_throttled_after_repeated_failures(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    body = {"tenant": tenant.slug, "email": tenant.owner_email, "password": "not the password"}
    statuses = []
    for _ in range(10):
        response = live.call("POST", "/auth/v1/login", body=body)
        statuses.append(response.status)
        if response.status == 429:
            break
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    throttled = assert_error(response, 429, "LOGIN_THROTTLED")
    retry = [d for d in throttled["details"] if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
    assert retry and retry[0]["retryDelay"].endswith("s")


def test_503_a_dependency_of_the_server_is_down(live: e2e.Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.owner_token(tenant)

    def database_down(*args: object, **kwargs: object) -> None:
        raise errors.Unavailable("the database is unreachable; retry later")

    monkeypatch.setattr(live.auth.app.tenants, "get", database_down)
    body = assert_error(live.call("GET", f"/auth/v1/tenants/{tenant.id}", token=token), 503, "UNAVAILABLE")
    assert body["message"] == "the database is unreachable; retry later"


# -- Envoy's own replies under /auth/v1/ ------------------------------------------


def envoy_reply(response: e2e.Response, status: int, reason: str, details: str) -> str:
    """An Envoy local reply in the API's shape; `details` is what Envoy saw."""
    body = assert_error(response, status, reason)
    (info,) = body["details"]
    assert details in info["metadata"]["envoy_details"], info
    message: str = body["message"]
    return message


def test_a_path_that_names_no_method_is_a_json_404(live: e2e.Stack) -> None:
    message = envoy_reply(live.call("GET", "/auth/v1/no-such-thing"), 404, "NOT_FOUND", "grpc_json_transcode")
    assert "/auth/v1/no-such-thing" in message


def test_an_unknown_query_parameter_is_a_json_400(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    path = f"/auth/v1/tenants/{tenant.id}/users?no_such_field=1"
    response = live.call("GET", path, token=live.auth.owner_token(tenant))
    assert "no_such_field" in envoy_reply(response, 400, "INVALID_ARGUMENT", "grpc_json_transcode")


def test_a_body_that_is_not_the_message_is_a_json_400(live: e2e.Stack) -> None:
    """Refused once the transcoder has rewritten the path to the gRPC method's."""
    response = live.call("POST", "/auth/v1/login", body=["not", "an", "object"])
    envoy_reply(response, 400, "INVALID_ARGUMENT", "grpc_json_transcode_failure")


def test_checks_denials_elsewhere_keep_the_body_check_wrote(live: e2e.Stack) -> None:
    """Only /auth/v1/ answers are rewritten, also when a client claims that path."""
    response = live.call("GET", "/v1/jobs", token="not-a-token", headers={"x-envoy-original-path": "/auth/v1/x"})
    assert response.status == 401 and response.body["error"] == "invalid_token", response.body


@pytest.fixture
def unreachable_api(live: e2e.Stack, tmp_path: Path) -> Iterator[int]:
    """The committed config with the JSON API's gRPC upstream on a port nothing serves:
    Envoy's port."""
    config = e2e.envoy_config(
        [e2e.port_of(live.auth.address)],
        live.demo.port,
        authz_http_ports=[live.auth.authz_http_port],
        side_ports=[e2e.port_of(live.side_address)],
        api_ports=[harness.free_port()],
    )
    with harness.run_envoy(config, tmp_path) as envoy:
        yield envoy.listener_port


def test_503_the_grpc_upstream_unreachable(live: e2e.Stack, unreachable_api: int) -> None:
    tenant = live.auth.create_tenant()
    response = e2e.request(unreachable_api, "GET", f"/auth/v1/tenants/{tenant.id}")
    envoy_reply(response, 503, "UNAVAILABLE", "upstream")
    body = {"tenant": tenant.slug, "email": tenant.owner_email, "password": tenant.owner_password}
    envoy_reply(e2e.request(unreachable_api, "POST", "/auth/v1/login", body=body), 503, "UNAVAILABLE", "upstream")
