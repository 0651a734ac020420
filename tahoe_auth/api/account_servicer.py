"""AccountService: validate, convert, call one use case, convert back."""

from __future__ import annotations

import grpc

from tahoe_auth.api import convert
from tahoe_auth.api.convert import required
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.services.self_service import SelfService
from tahoe_auth.v1 import account_pb2, account_pb2_grpc


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, self_service: SelfService) -> None:
        self._self_service = self_service

    def RequestPasswordReset(
        self, request: account_pb2.RequestPasswordResetRequest, context: grpc.ServicerContext
    ) -> account_pb2.RequestPasswordResetResponse:
        self._self_service.request_password_reset(
            required(request.tenant, "tenant"), required(request.email, "email"), current_call()
        )
        return account_pb2.RequestPasswordResetResponse()

    def ResetPasswordWithToken(
        self, request: account_pb2.ResetPasswordWithTokenRequest, context: grpc.ServicerContext
    ) -> account_pb2.ResetPasswordWithTokenResponse:
        user, ended = self._self_service.reset_with_token(
            required(request.token, "token"), required(request.new_password, "new_password"), current_call()
        )
        return account_pb2.ResetPasswordWithTokenResponse(
            tenant_id=user.tenant_id, user_id=user.id, email=user.email, sessions_ended=ended
        )

    def VerifyEmail(
        self, request: account_pb2.VerifyEmailRequest, context: grpc.ServicerContext
    ) -> account_pb2.VerifyEmailResponse:
        user = self._self_service.verify_email(required(request.token, "token"), current_call())
        return account_pb2.VerifyEmailResponse(
            tenant_id=user.tenant_id,
            user_id=user.id,
            email=user.email,
            email_verify_time=convert.timestamp(user.email_verified_at),
        )

    def SendVerificationEmail(
        self, request: account_pb2.SendVerificationEmailRequest, context: grpc.ServicerContext
    ) -> account_pb2.SendVerificationEmailResponse:
        self._self_service.send_verification(current_call(), request.tenant_id, request.user_id)
        return account_pb2.SendVerificationEmailResponse()
