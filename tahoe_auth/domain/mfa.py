"""Second factors: the names, limits and rules the MFA use cases and the authorizer share.

`amr` values are RFC 8176's: `pwd` (password), `otp` (a one-time code: authenticator
app or recovery code), `hwk` (a passkey: proof of a hardware-bound key), `mfa` (more
than one factor, or a passkey with user verification, which is both possession and a
PIN or biometric).
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from tahoe_auth.domain import crypto
from tahoe_auth.domain.errors import MfaRequired

TOTP = "totp"
PASSKEY = "passkey"
FACTOR_KINDS = (TOTP, PASSKEY)

# The methods that can answer a challenge.
METHOD_TOTP = "totp"
METHOD_RECOVERY_CODE = "recovery_code"
METHOD_PASSKEY = "passkey"

AMR_PASSWORD = "pwd"
AMR_OTP = "otp"
AMR_HARDWARE_KEY = "hwk"
AMR_MFA = "mfa"

# What a challenge is for.
LOGIN = "login"
PASSKEY_SIGN_IN = "passkey_sign_in"
STEP_UP = "step_up"
PASSKEY_REGISTRATION = "passkey_registration"

# The only restriction a token can carry: it may enroll a factor and nothing else.
ENROLLMENT_RESTRICTION = "mfa_enrollment"

CHALLENGE_TTL_SECONDS = 300
ENROLLMENT_TTL_SECONDS = 600
MAX_FAILED_ANSWERS = 5
RECOVERY_CODE_COUNT = 10
CHALLENGE_PREFIX = "mc_"

_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def amr_after(first: tuple[str, ...], method: str) -> tuple[str, ...]:
    """The session's `amr` once `method` answered a challenge that followed `first`."""
    added = AMR_HARDWARE_KEY if method == METHOD_PASSKEY else AMR_OTP
    return tuple(dict.fromkeys((*first, added, AMR_MFA)))


def new_challenge_token() -> str:
    return CHALLENGE_PREFIX + crypto.random_token(32)


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """`xxxxx-xxxxx`: 50 random bits each, lowercase base32 (no 0/1/8/9 to misread)."""
    codes: set[str] = set()
    while len(codes) < count:
        raw = "".join(secrets.choice(_BASE32) for _ in range(10))
        codes.add(f"{raw[:5]}-{raw[5:]}")
    return sorted(codes)


def normalize_recovery_code(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch in _BASE32)


def recovery_code_hash(key: bytes, tenant_id: str, user_id: str, code: str) -> str:
    """Keyed (a stolen database alone cannot test guesses) and bound to its owner."""
    return crypto.hmac_sha256_hex(key, f"{tenant_id}:{user_id}:{normalize_recovery_code(code)}")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class MfaStanding:
    """What the authorizer knows of a user's second factors and their session."""

    enrolled: bool = False
    required: bool = False
    verified_at: int = 0
    step_up_seconds: int = 0

    @property
    def subject_to_step_up(self) -> bool:
        return self.enrolled or self.required

    def fresh(self, now: float) -> bool:
        return self.verified_at > 0 and now - self.verified_at <= self.step_up_seconds


def require_fresh(standing: MfaStanding, now: float) -> None:
    """Sensitive methods: a user who has (or must have) a second factor needs a session
    that passed it within the tenant's step-up window."""
    if standing.subject_to_step_up and not standing.fresh(now):
        raise MfaRequired(standing.step_up_seconds)
