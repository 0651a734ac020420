"""Browser sessions through Envoy with the committed config: the refresh token only in
an HttpOnly, SameSite=Strict cookie (Set-Cookie passed through by the transcoder), the
CSRF header required, and the client address the gRPC server limits and records by is
the one Envoy saw (it trusts Envoy's header because TAHOE_TRUSTED_PROXIES names it)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from typing import Any

import pytest

from tahoe_auth.v1 import auth_pb2
from tests.e2e import stack as e2e
from tests.support import bearer

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]

CSRF = {"x-csrf-protection": "1"}


@pytest.fixture(scope="module")
def transport() -> str:
    """Check's transport does not matter here: the JSON API bypasses Check."""
    return "http"


@pytest.fixture(scope="module")
def module_env(module_env: dict[str, str]) -> dict[str, str]:
    return {**module_env, "TAHOE_TRUSTED_PROXIES": "127.0.0.1/32,::1"}


class _BoundConnection(http.client.HTTPConnection):
    """A connection from a chosen loopback source address (127.0.0.2 is loopback too)."""

    def __init__(self, host: str, port: int, source: str) -> None:
        super().__init__(host, port, timeout=10, source_address=(source, 0))


def call(
    live: e2e.Stack,
    path: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    source: str = "127.0.0.1",
) -> tuple[int, list[tuple[str, str]], dict[str, Any]]:
    """POST `path`; (status, every header in order, JSON body)."""
    conn = _BoundConnection("127.0.0.1", live.port, source)
    try:
        payload = json.dumps(body if body is not None else {}).encode()
        conn.request("POST", path, body=payload, headers={"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:  # the transcoder's own refusals are plain text
            parsed = {"raw": raw.decode(errors="replace")}
        return response.status, [(k.lower(), v) for k, v in response.getheaders()], parsed
    finally:
        conn.close()


def cookies_of(headers: list[tuple[str, str]]) -> list[str]:
    return [v for k, v in headers if k == "set-cookie"]


def attributes(cookie: str) -> list[str]:
    return [part.strip() for part in cookie.split(";")]


def credentials(tenant: Any) -> dict[str, str]:
    return {"tenant": tenant.slug, "email": tenant.owner_email, "password": tenant.owner_password}


def browser_login(live: e2e.Stack, tenant: Any, **kwargs: Any) -> tuple[dict[str, Any], str]:
    """(JSON body, the `name=value` of the refresh cookie)."""
    status, headers, body = call(live, "/auth/v1/browser/login", credentials(tenant), CSRF, **kwargs)
    assert status == 200, body
    (cookie,) = cookies_of(headers)
    return body, attributes(cookie)[0]


def test_login_sets_an_httponly_strict_cookie_and_returns_only_the_access_token(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    status, headers, body = call(live, "/auth/v1/browser/login", credentials(tenant), CSRF)
    assert status == 200, body
    (cookie,) = cookies_of(headers)
    flags = attributes(cookie)
    name, _, token = flags[0].partition("=")
    assert name == "tahoe_refresh" and token.startswith("rt_")
    assert {"HttpOnly", "SameSite=Strict", "Path=/auth/v1/browser"} <= set(flags)
    # Envoy listens on 127.0.0.1: a loopback host, so `auto` leaves Secure off.
    assert "Secure" not in flags
    assert any(f.startswith("Max-Age=") and int(f.removeprefix("Max-Age=")) > 29 * 86400 for f in flags)
    assert set(body) == {"accessToken", "tokenType", "expiresIn", "accessTokenExpireTime", "tenantId", "userId"}
    assert body["tenantId"] == tenant.id and token not in json.dumps(body)
    assert live.call("GET", "/v1/jobs", token=body["accessToken"]).status == 200


def test_a_non_loopback_host_gets_a_secure_cookie(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    status, headers, body = call(
        live, "/auth/v1/browser/login", credentials(tenant), {**CSRF, "host": "app.example.test"}
    )
    assert status == 200, body
    assert "Secure" in attributes(cookies_of(headers)[0])


def test_refresh_by_cookie_rotates_it_and_logout_clears_it(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    _, first = browser_login(live, tenant)
    status, headers, body = call(live, "/auth/v1/browser/refresh", None, {**CSRF, "cookie": first})
    assert status == 200, body
    (rotated,) = cookies_of(headers)
    second = attributes(rotated)[0]
    assert second != first and "HttpOnly" in attributes(rotated)
    assert live.call("GET", "/v1/jobs", token=body["accessToken"]).status == 200
    assert set(body) == {"accessToken", "tokenType", "expiresIn", "accessTokenExpireTime", "tenantId", "userId"}

    status, headers, body = call(live, "/auth/v1/browser/logout", None, {**CSRF, "cookie": second})
    assert status == 200, body
    (cleared,) = cookies_of(headers)
    assert attributes(cleared)[0] == "tahoe_refresh=" and "Max-Age=0" in attributes(cleared)
    status, _, body = call(live, "/auth/v1/browser/refresh", None, {**CSRF, "cookie": second})
    assert status == 401 and _reason(body) == "REFRESH_TOKEN_INVALID"


def test_a_reused_cookie_revokes_the_session(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    _, first = browser_login(live, tenant)
    assert call(live, "/auth/v1/browser/refresh", None, {**CSRF, "cookie": first})[0] == 200
    status, headers, body = call(live, "/auth/v1/browser/refresh", None, {**CSRF, "cookie": first})
    assert status == 401 and _reason(body) == "REFRESH_TOKEN_REUSED"
    # The refusal also clears the dead cookie.
    (cleared,) = cookies_of(headers)
    assert attributes(cleared)[0] == "tahoe_refresh=" and "Max-Age=0" in attributes(cleared)


@pytest.mark.parametrize("path", ["login", "refresh", "logout"])
def test_without_the_csrf_header_it_is_403_with_its_reason(live: e2e.Stack, path: str) -> None:
    tenant = live.auth.create_tenant()
    _, cookie = browser_login(live, tenant)
    status, headers, body = call(live, f"/auth/v1/browser/{path}", credentials(tenant), {"cookie": cookie})
    assert status == 403, body
    assert _reason(body) == "CSRF_HEADER_MISSING" and "x-csrf-protection" in body["message"]
    assert cookies_of(headers) == []
    # Nothing was spent: the cookie still refreshes.
    assert call(live, "/auth/v1/browser/refresh", None, {**CSRF, "cookie": cookie})[0] == 200


def test_the_client_address_is_the_one_envoy_saw(live: e2e.Stack) -> None:
    """Sessions record, and Login's limits count, per address Envoy saw: 127.0.0.2 and
    127.0.0.1 are two buckets, although both reach the gRPC server from Envoy's
    127.0.0.1; an x-tahoe-client-address a client sends is removed by Envoy."""
    import redis

    store = redis.Redis.from_url(live.auth.app.settings.redis_url or "")
    tenant = live.auth.create_tenant()
    browser_login(live, tenant, source="127.0.0.2")
    forged = {**CSRF, "x-tahoe-client-address": "203.0.113.9"}
    status, _, body = call(live, "/auth/v1/browser/login", credentials(tenant), forged, source="127.0.0.1")
    assert status == 200, body
    sessions = live.auth.auth.ListSessions(
        auth_pb2.ListSessionsRequest(), metadata=bearer(body["accessToken"])
    ).sessions
    assert {s.client_address for s in sessions} == {"127.0.0.2", "127.0.0.1"}
    keys = {k.decode() for k in store.scan_iter("rl:{global}:login_per_address:*")}
    assert {"rl:{global}:login_per_address:127.0.0.2", "rl:{global}:login_per_address:127.0.0.1"} <= keys
    assert not any("203.0.113.9" in k for k in keys)


def test_no_token_travels_in_a_url(live: e2e.Stack) -> None:
    """The refresh cookie is refused as a query parameter (the transcoder rejects
    unknown ones), so it cannot be moved into a URL by mistake."""
    tenant = live.auth.create_tenant()
    _, cookie = browser_login(live, tenant)
    token = cookie.partition("=")[2]
    status, _, body = call(live, f"/auth/v1/browser/refresh?refreshToken={token}", None, CSRF)
    assert status == 400 and "refreshToken" in json.dumps(body), body


def _reason(body: dict[str, Any]) -> str:
    (info,) = [d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    reason: str = info["reason"]
    return reason
