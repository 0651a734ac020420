"""AuthService: validate, convert, call one use case, convert back."""

from __future__ import annotations

import grpc

from tahoe_auth.api import convert
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.authz.authenticator import Authenticator
from tahoe_auth.clock import Clock
from tahoe_auth.domain import decision
from tahoe_auth.domain.errors import InvalidArgument, Unauthenticated
from tahoe_auth.services.sessions import SessionService
from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, sessions: SessionService, authenticator: Authenticator, clock: Clock) -> None:
        self._sessions = sessions
        self._authenticator = authenticator
        self._clock = clock

    def Login(self, request: auth_pb2.LoginRequest, context: grpc.ServicerContext) -> auth_pb2.LoginResponse:
        issued = self._sessions.login(request.tenant, request.email, request.password, current_call())
        return auth_pb2.LoginResponse(
            tokens=convert.token_pair(issued, int(self._clock.timestamp())),
            tenant_id=issued.tenant_id,
            user_id=issued.user_id,
        )

    def Refresh(self, request: auth_pb2.RefreshRequest, context: grpc.ServicerContext) -> auth_pb2.RefreshResponse:
        if not request.refresh_token:
            raise InvalidArgument("refresh_token", "refresh_token is required")
        issued = self._sessions.refresh(request.refresh_token, current_call())
        return auth_pb2.RefreshResponse(tokens=convert.token_pair(issued, int(self._clock.timestamp())))

    def Logout(self, request: auth_pb2.LogoutRequest, context: grpc.ServicerContext) -> auth_pb2.LogoutResponse:
        self._sessions.logout(current_call())
        return auth_pb2.LogoutResponse()

    def LogoutAll(
        self, request: auth_pb2.LogoutAllRequest, context: grpc.ServicerContext
    ) -> auth_pb2.LogoutAllResponse:
        count = self._sessions.logout_all(current_call(), request.tenant_id, request.user_id)
        return auth_pb2.LogoutAllResponse(revoked_count=count)

    def ListSessions(
        self, request: auth_pb2.ListSessionsRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ListSessionsResponse:
        ctx = current_call()
        rows, next_token = self._sessions.list_sessions(
            ctx, request.tenant_id, request.user_id, request.page_size, request.page_token, request.show_ended
        )
        current = ctx.principal.session_id if ctx.principal else ""
        return auth_pb2.ListSessionsResponse(
            sessions=[convert.session(row, current) for row in rows], next_page_token=next_token
        )

    def RevokeSession(
        self, request: auth_pb2.RevokeSessionRequest, context: grpc.ServicerContext
    ) -> auth_pb2.RevokeSessionResponse:
        if not request.session_id:
            raise InvalidArgument("session_id", "session_id is required")
        row = self._sessions.revoke_session(current_call(), request.tenant_id, request.session_id)
        return auth_pb2.RevokeSessionResponse(session=convert.session(row))

    def ValidateToken(
        self, request: auth_pb2.ValidateTokenRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ValidateTokenResponse:
        if not request.token:
            raise InvalidArgument("token", "token is required")
        principal = self._authenticator.authenticate(request.token)
        outcome = decision.decide(principal)
        if not outcome.allowed:
            raise Unauthenticated(outcome.message)
        return auth_pb2.ValidateTokenResponse(principal=convert.principal(principal))
