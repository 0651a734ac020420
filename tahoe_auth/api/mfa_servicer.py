"""MfaService: validate, convert, call one use case, convert back."""

from __future__ import annotations

import grpc

from tahoe_auth.api import convert, convert_mfa
from tahoe_auth.api.convert import required
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.services.mfa import SecondFactors
from tahoe_auth.v1 import mfa_pb2, mfa_pb2_grpc


class MfaServicer(mfa_pb2_grpc.MfaServiceServicer):
    def __init__(self, factors: SecondFactors) -> None:
        self._factors = factors

    def ListMfaFactors(
        self, request: mfa_pb2.ListMfaFactorsRequest, context: grpc.ServicerContext
    ) -> mfa_pb2.ListMfaFactorsResponse:
        found = self._factors.list_factors(current_call(), request.tenant_id, request.user_id)
        return mfa_pb2.ListMfaFactorsResponse(
            factors=[convert_mfa.factor(row) for row in found.factors],
            recovery_codes_remaining=found.recovery_codes_remaining,
            mfa_required=found.mfa_required,
        )

    def BeginTotpEnrollment(
        self, request: mfa_pb2.BeginTotpEnrollmentRequest, context: grpc.ServicerContext
    ) -> mfa_pb2.BeginTotpEnrollmentResponse:
        started = self._factors.begin_totp(current_call(), request.name)
        return mfa_pb2.BeginTotpEnrollmentResponse(
            factor_id=started.factor.id,
            secret=started.secret,
            otpauth_uri=started.uri,
            expire_time=convert.timestamp(started.expires_at),
        )

    def ConfirmTotpEnrollment(
        self, request: mfa_pb2.ConfirmTotpEnrollmentRequest, context: grpc.ServicerContext
    ) -> mfa_pb2.ConfirmTotpEnrollmentResponse:
        added = self._factors.confirm_totp(
            current_call(), required(request.factor_id, "factor_id"), required(request.code, "code")
        )
        return mfa_pb2.ConfirmTotpEnrollmentResponse(
            factor=convert_mfa.factor(added.factor), recovery_codes=added.recovery_codes
        )

    def BeginPasskeyRegistration(
        self, request: mfa_pb2.BeginPasskeyRegistrationRequest, context: grpc.ServicerContext
    ) -> mfa_pb2.BeginPasskeyRegistrationResponse:
        started = self._factors.begin_passkey_registration(current_call(), request.name)
        return mfa_pb2.BeginPasskeyRegistrationResponse(
            registration_id=started.token,
            creation_options_json=started.options,
            expire_time=convert.timestamp(started.expires_at),
        )

    def FinishPasskeyRegistration(
        self, request: mfa_pb2.FinishPasskeyRegistrationRequest, context: grpc.ServicerContext
    ) -> mfa_pb2.FinishPasskeyRegistrationResponse:
        added = self._factors.finish_passkey_registration(
            current_call(),
            required(request.registration_id, "registration_id"),
            required(request.credential_json, "credential_json"),
            request.name,
        )
        return mfa_pb2.FinishPasskeyRegistrationResponse(
            factor=convert_mfa.factor(added.factor), recovery_codes=added.recovery_codes
        )

    def DeleteMfaFactor(
        self, request: mfa_pb2.DeleteMfaFactorRequest, context: grpc.ServicerContext
    ) -> mfa_pb2.DeleteMfaFactorResponse:
        self._factors.delete_factor(
            current_call(),
            required(request.factor_id, "factor_id"),
            request.tenant_id,
            request.user_id,
            convert_mfa.answer(request.totp_code, request.recovery_code, ""),
        )
        return mfa_pb2.DeleteMfaFactorResponse()

    def RegenerateRecoveryCodes(
        self, request: mfa_pb2.RegenerateRecoveryCodesRequest, context: grpc.ServicerContext
    ) -> mfa_pb2.RegenerateRecoveryCodesResponse:
        codes = self._factors.regenerate_codes(
            current_call(), convert_mfa.answer(request.totp_code, request.recovery_code, "")
        )
        return mfa_pb2.RegenerateRecoveryCodesResponse(recovery_codes=codes)

    def CreateStepUpChallenge(
        self, request: mfa_pb2.CreateStepUpChallengeRequest, context: grpc.ServicerContext
    ) -> mfa_pb2.CreateStepUpChallengeResponse:
        issued = self._factors.step_up_challenge(current_call())
        return mfa_pb2.CreateStepUpChallengeResponse(challenge=convert_mfa.challenge(issued))
