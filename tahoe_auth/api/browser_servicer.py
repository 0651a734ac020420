"""BrowserSessionService: Login, Refresh and Logout for browser applications, the
refresh token in an HttpOnly cookie (api/browser.py) instead of the response body.

The cookie travels as gRPC metadata: `cookie` in, `set-cookie` out in the initial
metadata, which Envoy's JSON transcoder turns into HTTP headers. The CSRF header and
the rate limits are the interceptor chain's (MethodPolicy.browser, api/rate_limit.py).
"""

from __future__ import annotations

from typing import TypeVar

import grpc

from tahoe_auth.api import browser, convert, convert_mfa
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.domain.errors import InvalidArgument, RefreshTokenInvalid, Unauthenticated
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services.mfa import IssuedChallenge
from tahoe_auth.services.sessions import IssuedTokens, SessionService
from tahoe_auth.v1 import session_pb2, session_pb2_grpc

Response = TypeVar(
    "Response",
    session_pb2.BrowserLoginResponse,
    session_pb2.BrowserRefreshResponse,
    session_pb2.BrowserVerifyMfaResponse,
)


class BrowserSessionServicer(session_pb2_grpc.BrowserSessionServiceServicer):
    def __init__(self, sessions: SessionService, clock: Clock, cookie_secure: str) -> None:
        self._sessions = sessions
        self._clock = clock
        self._cookie_secure = cookie_secure

    def BrowserLogin(
        self, request: session_pb2.BrowserLoginRequest, context: grpc.ServicerContext
    ) -> session_pb2.BrowserLoginResponse:
        issued = self._sessions.login(request.tenant, request.email, request.password, current_call())
        if isinstance(issued, IssuedChallenge):
            return session_pb2.BrowserLoginResponse(
                tenant_id=issued.tenant_id, user_id=issued.user_id, mfa_challenge=convert_mfa.challenge(issued)
            )
        self._set_cookie(context, issued)
        return self._access(session_pb2.BrowserLoginResponse(), issued)

    def BrowserVerifyMfa(
        self, request: session_pb2.BrowserVerifyMfaRequest, context: grpc.ServicerContext
    ) -> session_pb2.BrowserVerifyMfaResponse:
        if not request.challenge:
            raise InvalidArgument("challenge", "challenge is required")
        answer = convert_mfa.answer(request.totp_code, request.recovery_code, request.passkey_credential_json)
        issued = self._sessions.verify_mfa(request.challenge, answer, current_call())
        if issued.refresh_token:  # a new session; a step-up keeps the cookie's
            self._set_cookie(context, issued)
        return self._access(session_pb2.BrowserVerifyMfaResponse(), issued)

    def BrowserRefresh(
        self, request: session_pb2.BrowserRefreshRequest, context: grpc.ServicerContext
    ) -> session_pb2.BrowserRefreshResponse:
        token = browser.refresh_token_from(_cookies(context))
        try:
            if not token:
                raise RefreshTokenInvalid()
            issued = self._sessions.refresh(token, current_call())
        except Unauthenticated:
            # A dead cookie (unknown, expired, revoked or reused token) is dropped by
            # the browser with the refusal, rather than sent again and again.
            context.send_initial_metadata((("set-cookie", browser.clear_cookie(self._secure(context))),))
            raise
        self._set_cookie(context, issued)
        return self._access(session_pb2.BrowserRefreshResponse(), issued)

    def BrowserLogout(
        self, request: session_pb2.BrowserLogoutRequest, context: grpc.ServicerContext
    ) -> session_pb2.BrowserLogoutResponse:
        token = browser.refresh_token_from(_cookies(context))
        if token:
            self._sessions.logout_by_refresh_token(token, current_call())
        context.send_initial_metadata((("set-cookie", browser.clear_cookie(self._secure(context))),))
        return session_pb2.BrowserLogoutResponse()

    def _set_cookie(self, context: grpc.ServicerContext, issued: IssuedTokens) -> None:
        max_age = issued.session_expires_at - int(self._clock.timestamp())
        cookie = browser.set_cookie(issued.refresh_token, max_age, self._secure(context))
        context.send_initial_metadata((("set-cookie", cookie),))

    def _secure(self, context: grpc.ServicerContext) -> bool:
        return browser.secure_flag(self._cookie_secure, _authority(context))

    def _access(self, response: Response, issued: IssuedTokens) -> Response:
        """The TokenPair without the refresh token (and without the session id, which
        only the server needs)."""
        pair = convert.token_pair(issued, int(self._clock.timestamp()))
        response.access_token = pair.access_token
        response.token_type = pair.token_type
        response.expires_in = pair.expires_in
        response.access_token_expire_time.CopyFrom(pair.access_token_expire_time)
        response.tenant_id = issued.tenant_id
        response.user_id = issued.user_id
        return response


def _cookies(context: grpc.ServicerContext) -> list[str]:
    return [str(value) for key, value in context.invocation_metadata() if key == "cookie"]


def _authority(context: grpc.ServicerContext) -> str:
    """The host the browser asked for. gRPC keeps `:authority` to itself; the
    transcoded HTTP/1.1 request's `host` may still be there, and Envoy forwards it as
    `x-forwarded-host` on the JSON API routes. Unknown: "" (not loopback: Secure)."""
    metadata = dict(context.invocation_metadata())
    return str(metadata.get("x-forwarded-host") or metadata.get("host") or "")
