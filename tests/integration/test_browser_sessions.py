"""BrowserSessionService over gRPC: the refresh token travels only in cookie metadata
(`set-cookie` out, `cookie` in), rotates, is detected when reused, and logout ends
the session; every method needs the CSRF header."""

from __future__ import annotations

import grpc
import pytest

from tahoe_auth.api import browser
from tahoe_auth.v1 import auth_pb2, session_pb2, session_pb2_grpc
from tests.support import RunningServer, Tenant, bearer, call_error, error_reason

CSRF = ("x-csrf-protection", "1")


def stub(server: RunningServer) -> session_pb2_grpc.BrowserSessionServiceStub:
    return session_pb2_grpc.BrowserSessionServiceStub(server.channel)


def set_cookie(call: grpc.Call) -> str:
    (value,) = [v for k, v in call.initial_metadata() if k == "set-cookie"]
    return str(value)


def token_of(cookie: str) -> str:
    return browser.refresh_token_from([cookie.partition(";")[0]])


def login(server: RunningServer, tenant: Tenant, host: str = "app.example.test") -> tuple[str, str]:
    """(access token, refresh token from the cookie)."""
    request = session_pb2.BrowserLoginRequest(
        tenant=tenant.slug, email=tenant.owner_email, password=tenant.owner_password
    )
    response, call = stub(server).BrowserLogin.with_call(request, metadata=(CSRF, ("x-forwarded-host", host)))
    return response.access_token, token_of(set_cookie(call))


def refresh(server: RunningServer, token: str) -> tuple[session_pb2.BrowserRefreshResponse, str]:
    cookie = ("cookie", f"other=1; {browser.COOKIE_NAME}={token}")
    response, call = stub(server).BrowserRefresh.with_call(session_pb2.BrowserRefreshRequest(), metadata=(CSRF, cookie))
    return response, set_cookie(call)


def test_login_sets_the_refresh_cookie_and_returns_only_the_access_token(server: RunningServer) -> None:
    tenant = server.create_tenant()
    request = session_pb2.BrowserLoginRequest(
        tenant=tenant.slug, email=tenant.owner_email, password=tenant.owner_password
    )
    response, call = stub(server).BrowserLogin.with_call(
        request, metadata=(CSRF, ("x-forwarded-host", "app.example.test"))
    )
    cookie = set_cookie(call)
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0].startswith("tahoe_refresh=rt_")
    assert {"HttpOnly", "Secure", "SameSite=Strict", "Path=/auth/v1/browser"} <= set(attributes)
    max_age = int(next(a for a in attributes if a.startswith("Max-Age=")).removeprefix("Max-Age="))
    assert 30 * 86400 - 5 <= max_age <= 30 * 86400
    assert response.tenant_id == tenant.id and response.user_id == tenant.owner_id
    assert response.token_type == "Bearer" and 895 <= response.expires_in <= 900  # seconds left: 900 less the call
    assert token_of(cookie) not in str(response)
    principal = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=response.access_token)).principal
    assert principal.subject == tenant.owner_id


def test_loopback_hosts_get_a_cookie_without_secure(server: RunningServer) -> None:
    tenant = server.create_tenant()
    request = session_pb2.BrowserLoginRequest(
        tenant=tenant.slug, email=tenant.owner_email, password=tenant.owner_password
    )
    _, call = stub(server).BrowserLogin.with_call(request, metadata=(CSRF, ("x-forwarded-host", "localhost:8080")))
    assert "Secure" not in [part.strip() for part in set_cookie(call).split(";")]


def test_refresh_by_cookie_rotates_and_reuse_revokes_the_session(server: RunningServer) -> None:
    tenant = server.create_tenant()
    _, first = login(server, tenant)
    response, cookie = refresh(server, first)
    second = token_of(cookie)
    assert second and second != first
    assert server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=response.access_token)).principal
    error = call_error(refresh, server, first)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and error_reason(error) == "REFRESH_TOKEN_REUSED"
    # The reuse ended the session: the rotated token is refused too.
    error = call_error(refresh, server, second)
    assert error_reason(error) == "REFRESH_TOKEN_INVALID"


def test_refresh_without_a_cookie_is_refused_and_clears_it(server: RunningServer) -> None:
    error = call_error(stub(server).BrowserRefresh, session_pb2.BrowserRefreshRequest(), metadata=(CSRF,))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and error_reason(error) == "REFRESH_TOKEN_INVALID"
    assert "Max-Age=0" in set_cookie(error)  # type: ignore[arg-type]


def test_logout_ends_the_session_and_clears_the_cookie(server: RunningServer) -> None:
    tenant = server.create_tenant()
    access, token = login(server, tenant)
    cookie = ("cookie", f"{browser.COOKIE_NAME}={token}")
    _, call = stub(server).BrowserLogout.with_call(session_pb2.BrowserLogoutRequest(), metadata=(CSRF, cookie))
    cleared = [part.strip() for part in set_cookie(call).split(";")]
    assert cleared[0] == "tahoe_refresh=" and "Max-Age=0" in cleared
    assert error_reason(call_error(refresh, server, token)) == "REFRESH_TOKEN_INVALID"
    sessions = server.auth.ListSessions(
        auth_pb2.ListSessionsRequest(show_ended=True), metadata=bearer(server.owner_token(tenant))
    ).sessions
    assert [s.revoke_reason for s in sessions if s.revoke_reason] == ["logout"]
    # Again, or without a cookie: still cleared, not an error.
    _, call = stub(server).BrowserLogout.with_call(session_pb2.BrowserLogoutRequest(), metadata=(CSRF,))
    assert "Max-Age=0" in set_cookie(call)
    del access


@pytest.mark.parametrize("method", ["BrowserLogin", "BrowserRefresh", "BrowserLogout"])
def test_every_method_needs_the_csrf_header(server: RunningServer, method: str) -> None:
    tenant = server.create_tenant()
    _, token = login(server, tenant)
    requests = {
        "BrowserLogin": session_pb2.BrowserLoginRequest(
            tenant=tenant.slug, email=tenant.owner_email, password=tenant.owner_password
        ),
        "BrowserRefresh": session_pb2.BrowserRefreshRequest(),
        "BrowserLogout": session_pb2.BrowserLogoutRequest(),
    }
    cookie = ("cookie", f"{browser.COOKIE_NAME}={token}")
    error = call_error(getattr(stub(server), method), requests[method], metadata=(cookie,))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_reason(error) == "CSRF_HEADER_MISSING"
    # Refused before anything was spent: the cookie still refreshes.
    assert refresh(server, token)[0].access_token


def test_browser_logins_count_in_logins_rate_limit_buckets(server: RunningServer) -> None:
    from tahoe_auth.api.rate_limit import METHOD_LIMITS

    login_limits = METHOD_LIMITS["/tahoe_auth.v1.AuthService/Login"]
    assert METHOD_LIMITS["/tahoe_auth.v1.BrowserSessionService/BrowserLogin"] == login_limits
