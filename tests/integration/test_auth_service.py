"""AuthService against a real server on port 0, real PostgreSQL and real Redis."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tahoe_auth.v1 import auth_pb2
from tests.support import RunningServer, bearer, error_reason


def call_error(fn, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return info.value


def test_login_returns_tokens_that_validate(server: RunningServer) -> None:
    tenant = server.create_tenant()
    response = server.login(tenant)
    assert response.tokens.token_type == "Bearer"
    assert 895 <= response.tokens.expires_in <= 900  # seconds left: 900 less the call
    assert response.tokens.refresh_token.startswith("rt_")
    principal = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=response.tokens.access_token)).principal
    assert principal.tenant_id == tenant.id
    assert principal.subject == tenant.owner_id
    assert principal.session_id == response.tokens.session_id
    assert "*:*" in principal.permissions


@pytest.mark.parametrize("case", ["unknown_tenant", "unknown_user", "wrong_password", "disabled_user"])
def test_login_failures_are_indistinguishable(server: RunningServer, case: str) -> None:
    tenant = server.create_tenant()
    request = auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password=tenant.owner_password)
    if case == "unknown_tenant":
        request.tenant = "no-such-tenant"
    elif case == "unknown_user":
        request.email = "nobody@example.test"
    elif case == "wrong_password":
        request.password = "not the password"
    else:
        with server.app.db.unit_of_work(tenant.id) as uow:
            uow.users.get(tenant.owner_id).status = "disabled"
            uow.commit()
    error = call_error(server.auth.Login, request)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "invalid tenant, email or password"
    assert error_reason(error) == "INVALID_CREDENTIALS"


def test_login_timing_is_comparable_for_unknown_and_known_users(server: RunningServer) -> None:
    known = [server.create_tenant() for _ in range(9)]

    def seconds(tenant: str, email: str) -> float:
        started = time.perf_counter()
        call_error(server.auth.Login, auth_pb2.LoginRequest(tenant=tenant, email=email, password="x" * 12))
        return time.perf_counter() - started

    # Interleaved, one failure per account (so no throttling), so that machine load
    # weighs on both sides alike.
    unknown_times, known_times = [], []
    for i, tenant in enumerate(known):
        unknown_times.append(seconds(tenant.slug, f"ghost{i}@example.test"))
        known_times.append(seconds(tenant.slug, tenant.owner_email))
    unknown, known_median = sorted(unknown_times)[4], sorted(known_times)[4]
    # Both run exactly one argon2 verification (~17 ms); without the dummy hash the
    # unknown user would answer in well under a millisecond.
    assert unknown > 0.008
    assert 0.5 < unknown / known_median < 2.0


def test_password_length_limits_have_no_truncation(server: RunningServer) -> None:
    long_password = "a" * 1000 + "Z" * 24
    tenant = server.create_tenant(password=long_password)
    assert server.login(tenant).tokens.access_token
    wrong = auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password="a" * 1000 + "Z" * 23 + "Y")
    assert call_error(server.auth.Login, wrong).code() == grpc.StatusCode.UNAUTHENTICATED


def test_refresh_rotates_and_reuse_revokes_session(server: RunningServer) -> None:
    tenant = server.create_tenant()
    first = server.login(tenant).tokens
    second = server.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token)).tokens
    assert second.refresh_token != first.refresh_token
    assert second.session_id == first.session_id
    server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=second.access_token))

    reuse = call_error(server.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
    assert reuse.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(reuse) == "REFRESH_TOKEN_REUSED"

    # The revocation committed although the call failed: the session is over.
    with server.app.db.unit_of_work(tenant.id) as uow:
        assert uow.sessions.get(first.session_id).revoke_reason == "refresh_token_reused"
    for token in (first.access_token, second.access_token):
        error = call_error(server.auth.ValidateToken, auth_pb2.ValidateTokenRequest(token=token))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = call_error(server.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=second.refresh_token))
    assert error_reason(error) == "REFRESH_TOKEN_INVALID"


def test_fifty_concurrent_refreshes_exactly_one_succeeds(server: RunningServer) -> None:
    tenant = server.create_tenant()
    refresh_token = server.login(tenant).tokens.refresh_token
    barrier = threading.Barrier(50)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            server.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=refresh_token), timeout=60)
            return "ok"
        except grpc.RpcError as error:
            return error_reason(error)

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(attempt, range(50)))
    assert outcomes.count("ok") == 1, outcomes
    assert set(outcomes) - {"ok"} <= {"REFRESH_TOKEN_REUSED", "REFRESH_TOKEN_INVALID"}


def test_unknown_refresh_token(server: RunningServer) -> None:
    for token in ("rt_doesnotexist", "garbage"):
        error = call_error(server.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=token))
        assert error_reason(error) == "REFRESH_TOKEN_INVALID"
    error = call_error(server.auth.Refresh, auth_pb2.RefreshRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_logout_revokes_current_session_only(server: RunningServer) -> None:
    tenant = server.create_tenant()
    a = server.login(tenant).tokens
    b = server.login(tenant).tokens
    server.auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(a.access_token))
    assert call_error(server.auth.ValidateToken, auth_pb2.ValidateTokenRequest(token=a.access_token))
    server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=b.access_token))
    refresh = call_error(server.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=a.refresh_token))
    assert error_reason(refresh) == "REFRESH_TOKEN_INVALID"


def test_logout_all_and_list_sessions(server: RunningServer) -> None:
    tenant = server.create_tenant()
    tokens = [server.login(tenant).tokens for _ in range(3)]
    listing = server.auth.ListSessions(
        auth_pb2.ListSessionsRequest(page_size=2), metadata=bearer(tokens[0].access_token)
    )
    assert len(listing.sessions) == 2 and listing.next_page_token
    rest = server.auth.ListSessions(
        auth_pb2.ListSessionsRequest(page_size=2, page_token=listing.next_page_token),
        metadata=bearer(tokens[0].access_token),
    )
    ids = {s.id for s in listing.sessions} | {s.id for s in rest.sessions}
    assert ids == {t.session_id for t in tokens}
    assert not rest.next_page_token
    assert [s.current for s in [*listing.sessions, *rest.sessions] if s.id == tokens[0].session_id] == [True]

    revoked = server.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=bearer(tokens[1].access_token))
    assert revoked.revoked_count == 3
    for t in tokens:
        assert call_error(server.auth.ValidateToken, auth_pb2.ValidateTokenRequest(token=t.access_token))


def test_revoke_session_and_not_found_across_tenants(server: RunningServer) -> None:
    a, b = server.create_tenant(), server.create_tenant()
    a_tokens, b_tokens = server.login(a).tokens, server.login(b).tokens
    # Tenant A's owner cannot see or revoke tenant B's session: NOT_FOUND, not a hint.
    error = call_error(
        server.auth.RevokeSession,
        auth_pb2.RevokeSessionRequest(session_id=b_tokens.session_id),
        metadata=bearer(a_tokens.access_token),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = call_error(
        server.auth.RevokeSession,
        auth_pb2.RevokeSessionRequest(session_id=b_tokens.session_id, tenant_id=b.id),
        metadata=bearer(a_tokens.access_token),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=b_tokens.access_token))

    revoked = server.auth.RevokeSession(
        auth_pb2.RevokeSessionRequest(session_id=a_tokens.session_id), metadata=bearer(a_tokens.access_token)
    ).session
    assert revoked.revoke_reason == "revoked" and revoked.HasField("revoke_time")


def test_methods_need_a_credential(server: RunningServer) -> None:
    for method, request in [
        (server.auth.Logout, auth_pb2.LogoutRequest()),
        (server.auth.ListSessions, auth_pb2.ListSessionsRequest()),
    ]:
        error = call_error(method, request)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(error) == "UNAUTHENTICATED"
        error = call_error(method, request, metadata=bearer("not-a-token"))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_request_id_is_honoured_and_returned(server: RunningServer) -> None:
    tenant = server.create_tenant()
    _, call = server.auth.Login.with_call(
        auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password=tenant.owner_password),
        metadata=(("x-request-id", "req-abc-123"),),
    )
    assert ("x-request-id", "req-abc-123") in call.trailing_metadata()


def test_login_throttles_an_account_after_repeated_failures(server: RunningServer) -> None:
    tenant = server.create_tenant()
    bad = auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password="wrong password")
    for _ in range(5):
        assert error_reason(call_error(server.auth.Login, bad)) == "INVALID_CREDENTIALS"
    throttled = call_error(server.auth.Login, bad)
    assert throttled.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(throttled) == "LOGIN_THROTTLED"
    # Even the right password waits: that is the delay, not a lockout; it ends by itself.
    good = auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password=tenant.owner_password)
    assert error_reason(call_error(server.auth.Login, good)) == "LOGIN_THROTTLED"
    time.sleep(1.2)
    assert server.auth.Login(good).tokens.access_token
