"""Second factors and MFA challenges, domain <-> proto."""

from __future__ import annotations

from typing import Any

from tahoe_auth.api.convert import timestamp
from tahoe_auth.domain import mfa
from tahoe_auth.services.mfa import Answer, IssuedChallenge
from tahoe_auth.v1 import mfa_pb2

METHODS = {
    mfa.METHOD_TOTP: mfa_pb2.MFA_METHOD_TOTP,
    mfa.METHOD_RECOVERY_CODE: mfa_pb2.MFA_METHOD_RECOVERY_CODE,
    mfa.METHOD_PASSKEY: mfa_pb2.MFA_METHOD_PASSKEY,
}
FACTOR_TYPES = {mfa.TOTP: mfa_pb2.MFA_FACTOR_TYPE_TOTP, mfa.PASSKEY: mfa_pb2.MFA_FACTOR_TYPE_PASSKEY}


def challenge(issued: IssuedChallenge) -> mfa_pb2.MfaChallenge:
    return mfa_pb2.MfaChallenge(
        challenge=issued.token,
        expire_time=timestamp(issued.expires_at),
        methods=[METHODS[method] for method in issued.methods],
        enrollment_required=issued.enrollment_required,
        enrollment_token=issued.enrollment_token,
        passkey_request_options_json=issued.passkey_options,
    )


def factor(row: Any) -> mfa_pb2.MfaFactor:
    return mfa_pb2.MfaFactor(
        id=row.id,
        type=FACTOR_TYPES.get(row.kind, mfa_pb2.MFA_FACTOR_TYPE_UNSPECIFIED),
        name=row.name,
        create_time=timestamp(row.confirmed_at or row.created_at),
        last_used_time=timestamp(row.last_used_at),
    )


def answer(totp_code: str, recovery_code: str, passkey_credential_json: str) -> Answer:
    return Answer(totp_code=totp_code, recovery_code=recovery_code, passkey_credential=passkey_credential_json)
