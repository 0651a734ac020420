"""The HTTP ext_authz transport spoken directly (as Envoy's http_service would): the
same decisions, statuses, bodies and headers as the gRPC Check, route requirements
from the x-tahoe-route-* headers, and nothing but an allowed Check answers 200."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from tahoe_auth.api.ext_authz_http import HEADERS_TO_REMOVE
from tests.integration.test_ext_authz import check, check_request, denial, upstream_headers
from tests.support import RunningServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def ask(
    server: RunningServer, token: str = "", permission: str = "transcription:read", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.authz_http_port, timeout=10)
    sent = {"x-request-id": "req-1", "x-tahoe-route-upstream": "transcription", **headers}
    if permission:
        sent["x-tahoe-route-permission"] = permission
    if token:
        sent["authorization"] = f"Bearer {token}"
    connection.request("GET", "/v1/jobs", headers=sent)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def test_an_allowed_check_gives_the_upstream_headers_and_removes_the_credential(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = server.login(tenant).tokens.access_token
    status, headers, body = ask(server, token, **{"x-tahoe-tenant-id": "spoofed", "x-tahoe-extra": "1"})
    assert status == 200 and body == b""
    grpc_headers = upstream_headers(check(server, check_request(f"Bearer {token}")))
    for name in ("x-tahoe-tenant-id", "x-tahoe-subject", "x-tahoe-subject-type", "x-tahoe-permissions"):
        assert headers[name] == grpc_headers[name]
    assert headers["x-tahoe-tenant-id"] == tenant.id
    removed = set(headers[HEADERS_TO_REMOVE].split(","))
    assert {"authorization", "x-tahoe-extra", "x-tahoe-route-permission", "x-tahoe-route-upstream"} <= removed
    assert "x-tahoe-tenant-id" not in removed  # overwritten instead
    assert any(name.startswith("ratelimit-") for name in headers)


@pytest.mark.parametrize(
    ("credential", "permission", "status", "error"),
    [
        ("", "transcription:read", 401, "missing_credential"),
        ("not-a-token", "transcription:read", 401, "invalid_token"),
        ("VIEWER", "users:write", 403, "permission_denied"),
    ],
)
def test_denials_match_the_grpc_transport(
    server: RunningServer, credential: str, permission: str, status: int, error: str
) -> None:
    tenant = server.create_tenant()
    if credential == "VIEWER":
        _, credential = server.add_user(tenant, ["viewer"])
    got_status, headers, body = ask(server, credential, permission)
    grpc_status, grpc_headers, grpc_body = denial(
        check(server, check_request(f"Bearer {credential}" if credential else "", permission))
    )
    assert (got_status, json.loads(body)["error"]) == (status, error)
    assert (got_status, json.loads(body)) == (grpc_status, grpc_body)
    assert headers.get("www-authenticate") == grpc_headers.get("www-authenticate")
    assert headers["content-type"] == "application/json"


def test_garbage_gets_a_400_and_never_a_200(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.authz_http_port), timeout=5) as sock:
        sock.sendall(b"\x00\x01 not http\r\n\r\n")
        answer = sock.recv(1024)
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_keep_alive_serves_many_checks_on_one_connection(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = server.login(tenant).tokens.access_token
    connection = http.client.HTTPConnection("127.0.0.1", server.authz_http_port, timeout=10)
    statuses = []
    for _ in range(20):
        connection.request(
            "GET",
            "/v1/jobs",
            headers={"authorization": f"Bearer {token}", "x-tahoe-route-permission": "transcription:read"},
        )
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
    connection.close()
    assert statuses == [200] * 20
