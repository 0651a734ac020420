"""AuthService: validate, convert, call one use case, convert back."""

from __future__ import annotations

import grpc

from tahoe_auth.api import convert, convert_mfa
from tahoe_auth.api import convert_tenants as c
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.authz.authenticator import Authenticator
from tahoe_auth.domain import decision
from tahoe_auth.domain.errors import InvalidArgument, Unauthenticated
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services.api_keys import ApiKeys
from tahoe_auth.services.mfa import IssuedChallenge
from tahoe_auth.services.service_accounts import ServiceAccounts
from tahoe_auth.services.sessions import SessionService
from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        sessions: SessionService,
        authenticator: Authenticator,
        clock: Clock,
        api_keys: ApiKeys,
        service_accounts: ServiceAccounts,
    ) -> None:
        self._sessions = sessions
        self._authenticator = authenticator
        self._clock = clock
        self._api_keys = api_keys
        self._service_accounts = service_accounts

    def Login(self, request: auth_pb2.LoginRequest, context: grpc.ServicerContext) -> auth_pb2.LoginResponse:
        issued = self._sessions.login(request.tenant, request.email, request.password, current_call())
        if isinstance(issued, IssuedChallenge):
            return auth_pb2.LoginResponse(
                tenant_id=issued.tenant_id, user_id=issued.user_id, mfa_challenge=convert_mfa.challenge(issued)
            )
        return auth_pb2.LoginResponse(
            tokens=convert.token_pair(issued, int(self._clock.timestamp())),
            tenant_id=issued.tenant_id,
            user_id=issued.user_id,
        )

    def VerifyMfa(
        self, request: auth_pb2.VerifyMfaRequest, context: grpc.ServicerContext
    ) -> auth_pb2.VerifyMfaResponse:
        if not request.challenge:
            raise InvalidArgument("challenge", "challenge is required")
        answer = convert_mfa.answer(request.totp_code, request.recovery_code, request.passkey_credential_json)
        issued = self._sessions.verify_mfa(request.challenge, answer, current_call())
        return auth_pb2.VerifyMfaResponse(
            tokens=convert.token_pair(issued, int(self._clock.timestamp())),
            tenant_id=issued.tenant_id,
            user_id=issued.user_id,
        )

    def BeginPasskeySignIn(
        self, request: auth_pb2.BeginPasskeySignInRequest, context: grpc.ServicerContext
    ) -> auth_pb2.BeginPasskeySignInResponse:
        issued = self._sessions.begin_passkey_sign_in(request.tenant, current_call())
        return auth_pb2.BeginPasskeySignInResponse(challenge=convert_mfa.challenge(issued))

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

    # -- API keys --------------------------------------------------------------

    def CreateApiKey(
        self, request: auth_pb2.CreateApiKeyRequest, context: grpc.ServicerContext
    ) -> auth_pb2.CreateApiKeyResponse:
        expires = convert.from_timestamp(request.expire_time) if request.HasField("expire_time") else None
        row, secret = self._api_keys.create(
            current_call(), request.tenant_id, request.user_id, request.name, list(request.scopes), expires
        )
        return auth_pb2.CreateApiKeyResponse(api_key=c.api_key(row), secret=secret)

    def GetApiKey(
        self, request: auth_pb2.GetApiKeyRequest, context: grpc.ServicerContext
    ) -> auth_pb2.GetApiKeyResponse:
        if not request.api_key_id:
            raise InvalidArgument("api_key_id", "api_key_id is required")
        row = self._api_keys.get(current_call(), request.tenant_id, request.api_key_id)
        return auth_pb2.GetApiKeyResponse(api_key=c.api_key(row))

    def ListApiKeys(
        self, request: auth_pb2.ListApiKeysRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ListApiKeysResponse:
        rows, token = self._api_keys.page(
            current_call(),
            request.tenant_id,
            request.user_id,
            request.show_ended,
            request.page_size,
            request.page_token,
        )
        return auth_pb2.ListApiKeysResponse(api_keys=[c.api_key(r) for r in rows], next_page_token=token)

    def RevokeApiKey(
        self, request: auth_pb2.RevokeApiKeyRequest, context: grpc.ServicerContext
    ) -> auth_pb2.RevokeApiKeyResponse:
        if not request.api_key_id:
            raise InvalidArgument("api_key_id", "api_key_id is required")
        row = self._api_keys.revoke(current_call(), request.tenant_id, request.api_key_id)
        return auth_pb2.RevokeApiKeyResponse(api_key=c.api_key(row))

    def RotateApiKey(
        self, request: auth_pb2.RotateApiKeyRequest, context: grpc.ServicerContext
    ) -> auth_pb2.RotateApiKeyResponse:
        if not request.api_key_id:
            raise InvalidArgument("api_key_id", "api_key_id is required")
        grace = c.duration(request.grace_period, request.HasField("grace_period"))
        row, secret = self._api_keys.rotate(current_call(), request.tenant_id, request.api_key_id, grace)
        return auth_pb2.RotateApiKeyResponse(api_key=c.api_key(row), secret=secret)

    def IssueServiceToken(
        self, request: auth_pb2.IssueServiceTokenRequest, context: grpc.ServicerContext
    ) -> auth_pb2.IssueServiceTokenResponse:
        token, expires_at = self._service_accounts.issue_token(request.client_id, request.client_secret)
        return auth_pb2.IssueServiceTokenResponse(
            access_token=token,
            token_type="Bearer",
            expires_in=max(0, expires_at - int(self._clock.timestamp())),
            expire_time=convert.timestamp(expires_at),
        )
