"""The pure parts of second factors: RFC 6238 codes (its own test vectors), drift and
replay, recovery codes, amr, the step-up rule and the tenant security policy."""

from __future__ import annotations

import pytest

from tahoe_auth.domain import mfa, security_policy, totp
from tahoe_auth.domain.errors import InvalidArgument, MfaRequired

RFC_SECRET = b"12345678901234567890"  # RFC 6238 appendix B, SHA-1


@pytest.mark.parametrize(
    ("unix_time", "eight_digits"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_codes_are_rfc_6238s_test_vectors_in_six_digits(unix_time: int, eight_digits: str) -> None:
    assert totp.code_at_step(RFC_SECRET, totp.step_at(unix_time)) == eight_digits[-6:]


def test_one_step_of_drift_either_side_and_no_more() -> None:
    now = 1_800_000_015.0
    step = totp.step_at(now)
    for offset in (-1, 0, 1):
        code = totp.code_at_step(RFC_SECRET, step + offset)
        assert totp.matching_step(RFC_SECRET, code, now, after_step=0) == step + offset
    for offset in (-2, 2):
        assert totp.matching_step(RFC_SECRET, totp.code_at_step(RFC_SECRET, step + offset), now, 0) is None


def test_a_step_at_or_before_the_last_accepted_one_is_refused() -> None:
    now = 1_800_000_015.0
    step = totp.step_at(now)
    code = totp.code_at_step(RFC_SECRET, step)
    assert totp.matching_step(RFC_SECRET, code, now, after_step=step) is None
    assert totp.matching_step(RFC_SECRET, code, now, after_step=step + 1) is None
    previous = totp.code_at_step(RFC_SECRET, step - 1)
    assert totp.matching_step(RFC_SECRET, previous, now, after_step=step - 1) is None


@pytest.mark.parametrize("typed", ["", "12345", "1234567", "abcdef", "12 34 5x"])
def test_malformed_codes_match_nothing(typed: str) -> None:
    assert totp.matching_step(RFC_SECRET, typed, 1_800_000_015.0, 0) is None


def test_spaces_and_dashes_in_a_typed_code_are_ignored() -> None:
    now = 1_800_000_015.0
    code = totp.code_at_step(RFC_SECRET, totp.step_at(now))
    assert totp.matching_step(RFC_SECRET, f"{code[:3]} {code[3:]}", now, 0) is not None
    assert totp.matching_step(RFC_SECRET, f"{code[:3]}-{code[3:]}", now, 0) is not None


def test_secrets_are_160_bits_and_base32_without_padding() -> None:
    secret = totp.new_secret()
    assert len(secret) == 20 and totp.new_secret() != secret
    assert "=" not in totp.to_base32(secret) and len(totp.to_base32(secret)) == 32


def test_recovery_codes_are_ten_distinct_and_hashed_per_owner() -> None:
    codes = mfa.new_recovery_codes()
    assert len(codes) == 10 == len(set(codes))
    assert all(len(c) == 11 and c[5] == "-" for c in codes)
    key = b"k" * 32
    digest = mfa.recovery_code_hash(key, "t1", "u1", codes[0])
    assert digest == mfa.recovery_code_hash(key, "t1", "u1", codes[0].upper().replace("-", " "))
    assert digest != mfa.recovery_code_hash(key, "t1", "u2", codes[0])
    assert digest != mfa.recovery_code_hash(b"x" * 32, "t1", "u1", codes[0])
    assert codes[0] not in digest


def test_amr_names_every_factor_once() -> None:
    assert mfa.amr_after(("pwd",), mfa.METHOD_TOTP) == ("pwd", "otp", "mfa")
    assert mfa.amr_after(("pwd",), mfa.METHOD_PASSKEY) == ("pwd", "hwk", "mfa")
    assert mfa.amr_after((), mfa.METHOD_PASSKEY) == ("hwk", "mfa")
    assert mfa.amr_after(("pwd", "otp", "mfa"), mfa.METHOD_RECOVERY_CODE) == ("pwd", "otp", "mfa")


def test_step_up_asks_only_users_with_or_owing_a_factor_and_only_when_stale() -> None:
    now = 10_000.0
    mfa.require_fresh(mfa.MfaStanding(), now)  # no factor, not required: never asked
    fresh = mfa.MfaStanding(enrolled=True, verified_at=int(now) - 899, step_up_seconds=900)
    mfa.require_fresh(fresh, now)
    for stale in (
        mfa.MfaStanding(enrolled=True, verified_at=int(now) - 901, step_up_seconds=900),
        mfa.MfaStanding(enrolled=True, verified_at=0, step_up_seconds=900),
        mfa.MfaStanding(required=True, verified_at=0, step_up_seconds=900),
    ):
        with pytest.raises(MfaRequired) as refused:
            mfa.require_fresh(stale, now)
        assert refused.value.metadata["max_age_seconds"] == "900"


def test_the_security_policy_parses_defaults_and_refuses_nonsense() -> None:
    assert security_policy.parse_security(None) == security_policy.DEFAULT_POLICY
    policy = security_policy.parse_security(
        {"mfa_requirement": "admins", "step_up_minutes": 5, "password_min_length": 12}
    )
    assert policy.step_up_seconds == 300 and policy.password_min_length == 12
    assert policy.mfa_required_for(["admin"]) and policy.mfa_required_for(["owner", "member"])
    assert not policy.mfa_required_for(["member"])
    assert security_policy.parse_security({"mfa_requirement": "all_users"}).mfa_required_for([])
    for bad, field in (
        ({"mfa_requirement": "sometimes"}, "settings.security.mfa_requirement"),
        ({"step_up_minutes": 1441}, "settings.security.step_up_minutes"),
        ({"step_up_minutes": True}, "settings.security.step_up_minutes"),
        ({"password_min_length": 7}, "settings.security.password_min_length"),
        ({"password_min_length": 129}, "settings.security.password_min_length"),
        ({"lockout": 3}, "settings.security.lockout"),
    ):
        with pytest.raises(InvalidArgument) as refused:
            security_policy.parse_security(bad)
        assert refused.value.field == field
