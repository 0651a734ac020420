"""Authenticator apps and recovery codes, with pyotp as the app (an independent
implementation of RFC 6238; the server's own TOTP code is never used here): each code
works once, the drift window is one step either side, recovery codes are single-use
and replaced as a set, challenges die after five wrong answers, a user is throttled
across challenges after ten, every failure looks the same, and removing a factor
wants a fresh code."""

from __future__ import annotations

import secrets
import time

import grpc
import pyotp
import pytest
from sqlalchemy import create_engine, pool, text

from tahoe_auth.domain.crypto import sha256_hex
from tahoe_auth.v1 import auth_pb2, mfa_pb2
from tests.integration.test_mfa_core import mfa_stub
from tests.support import (
    RunningServer,
    Tenant,
    bearer,
    call_error,
    error_reason,
    retry_delay,
    status_detail,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PERIOD = 30
# domain/mfa.py MAX_FAILED_ANSWERS and domain/throttle.py MFA_POLICY, as documented in docs/mfa.md.
CHALLENGE_DIES_AFTER = 5
USER_THROTTLED_AFTER = 10
USER_LOCK_SECONDS = 60


def step(at: float | None = None) -> int:
    return int((time.time() if at is None else at) // PERIOD)


def settle(margin: float = 3.0) -> None:
    """Wait, only when a step boundary is less than `margin` seconds away, for the next
    step to begin: a code computed now is then still judged in the same step."""
    wait_until(lambda: time.time() % PERIOD < PERIOD - margin, limit=margin + 1, step=0.05)


def code(app: pyotp.TOTP, steps: int = 0) -> str:
    """The app's code `steps` steps from now (pyotp's own clock arithmetic)."""
    return app.at(time.time() + PERIOD * steps)


def wrong_code(app: pyotp.TOTP) -> str:
    """Six digits that are no code of the app around now."""
    near = {code(app, k) for k in range(-3, 4)}
    return next(c for c in (f"{d}" * 6 for d in range(10)) if c not in near)


def enroll(server: RunningServer, token: str, steps: int = 0) -> tuple[pyotp.TOTP, list[str], str]:
    """An authenticator app confirmed with its code `steps` steps from now: (app, recovery codes, factor id)."""
    started = mfa_stub(server).BeginTotpEnrollment(
        mfa_pb2.BeginTotpEnrollmentRequest(name="Phone"), metadata=bearer(token)
    )
    app = pyotp.parse_uri(started.otpauth_uri)
    assert isinstance(app, pyotp.TOTP)
    assert app.secret == started.secret and app.digits == 6 and app.interval == PERIOD
    confirmed = mfa_stub(server).ConfirmTotpEnrollment(
        mfa_pb2.ConfirmTotpEnrollmentRequest(factor_id=started.factor_id, code=code(app, steps)),
        metadata=bearer(token),
    )
    assert confirmed.factor.id == started.factor_id
    return app, list(confirmed.recovery_codes), started.factor_id


def challenge(server: RunningServer, tenant: Tenant) -> str:
    """A fresh login challenge for the owner (a password login of a user with a factor)."""
    answer = server.login(tenant)
    assert not answer.HasField("tokens") and answer.mfa_challenge.challenge
    assert not answer.mfa_challenge.enrollment_required
    return answer.mfa_challenge.challenge


def verify(server: RunningServer, challenge_token: str, **answer: str) -> auth_pb2.VerifyMfaResponse:
    response: auth_pb2.VerifyMfaResponse = server.auth.VerifyMfa(
        auth_pb2.VerifyMfaRequest(challenge=challenge_token, **answer)
    )
    return response


def refusal(server: RunningServer, challenge_token: str, **answer: str) -> grpc.RpcError:
    """The error VerifyMfa answers; it must be the one every failed answer gets."""
    error = call_error(server.auth.VerifyMfa, auth_pb2.VerifyMfaRequest(challenge=challenge_token, **answer))
    assert (error.code(), error_reason(error)) == (grpc.StatusCode.UNAUTHENTICATED, "MFA_CODE_INVALID"), error
    return error


def signed_in_with(server: RunningServer, response: auth_pb2.VerifyMfaResponse) -> list[str]:
    """The `amr` of the session a VerifyMfa answer started (which must be MFA-verified)."""
    assert response.tokens.access_token and response.tokens.refresh_token
    principal = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=response.tokens.access_token)).principal
    assert principal.mfa_verified
    return list(principal.amr)


def remaining_codes(server: RunningServer, token: str) -> int:
    listed = mfa_stub(server).ListMfaFactors(mfa_pb2.ListMfaFactorsRequest(), metadata=bearer(token))
    return int(listed.recovery_codes_remaining)


def test_a_code_is_accepted_once(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    settle()
    app, _, _ = enroll(server, owner)
    enrolled_with = code(app)  # the step that confirmed the app is spent already

    current = challenge(server, tenant)
    refusal(server, current, totp_code=enrolled_with)
    next_code = code(app, 1)
    assert set(signed_in_with(server, verify(server, current, totp_code=next_code))) == {"pwd", "otp", "mfa"}

    # The same code again, on a new challenge (a replay seen on the wire), is refused...
    replayed = challenge(server, tenant)
    refusal(server, replayed, totp_code=next_code)
    # ...and so is it written the way people type it.
    refusal(server, replayed, totp_code=f"{next_code[:3]} {next_code[3:]}")
    # Nor does a step-up challenge take it.
    step_up = mfa_stub(server).CreateStepUpChallenge(mfa_pb2.CreateStepUpChallengeRequest(), metadata=bearer(owner))
    refusal(server, step_up.challenge.challenge, totp_code=next_code)


def test_drift_of_one_step_either_side_is_accepted_and_no_more(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    settle(margin=1.0)  # (the closer to the step's end, the shorter the wait below)
    enrolled_at = step()
    app, _, _ = enroll(server, owner, steps=-1)  # a phone 30 s behind confirms it: the last step used is t-30

    # 90 s off either way is too far, on a challenge that stays live (two misses).
    first = challenge(server, tenant)
    refusal(server, first, totp_code=code(app, -3))
    refusal(server, first, totp_code=code(app, 3))

    # t-30 is a step after the one the enrollment used only once the clock has moved on.
    wait_until(lambda: step() > enrolled_at, limit=PERIOD + 2, step=0.1)
    settle()
    assert signed_in_with(server, verify(server, challenge(server, tenant), totp_code=code(app, -1)))
    assert signed_in_with(server, verify(server, challenge(server, tenant), totp_code=code(app, 1)))
    # The last step used is now t+30: the current step and t-30 are at or before it.
    later = challenge(server, tenant)
    refusal(server, later, totp_code=code(app))
    refusal(server, later, totp_code=code(app, -1))
    refusal(server, first, totp_code=code(app, 2))  # and t+60 is beyond the window


def test_recovery_codes_are_single_use_and_replaced_as_a_set(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    settle()
    app, codes, _ = enroll(server, owner)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert remaining_codes(server, owner) == 10

    first = verify(server, challenge(server, tenant), recovery_code=codes[0])
    assert set(signed_in_with(server, first)) == {"pwd", "otp", "mfa"}
    assert remaining_codes(server, owner) == 9

    again = challenge(server, tenant)
    refusal(server, again, recovery_code=codes[0])
    assert remaining_codes(server, owner) == 9
    # Typed without its dash and in capitals, an unused code is still itself.
    assert signed_in_with(server, verify(server, again, recovery_code=codes[1].replace("-", "").upper()))
    assert remaining_codes(server, owner) == 8

    # A password-only session must prove presence: a current code in the request.
    denied = call_error(
        mfa_stub(server).RegenerateRecoveryCodes, mfa_pb2.RegenerateRecoveryCodesRequest(), metadata=bearer(owner)
    )
    assert error_reason(denied) == "MFA_REQUIRED"
    settle()
    fresh = list(
        mfa_stub(server)
        .RegenerateRecoveryCodes(mfa_pb2.RegenerateRecoveryCodesRequest(totp_code=code(app, 1)), metadata=bearer(owner))
        .recovery_codes
    )
    assert len(fresh) == 10 and not set(fresh) & set(codes)
    assert remaining_codes(server, owner) == 10

    # None of the eight old codes left unused works any more (four misses a challenge).
    for old_codes, new_code in ((codes[2:6], fresh[0]), (codes[6:], fresh[1])):
        after = challenge(server, tenant)
        for old in old_codes:
            refusal(server, after, recovery_code=old)
        assert signed_in_with(server, verify(server, after, recovery_code=new_code))
    assert remaining_codes(server, owner) == 8


def test_a_challenge_dies_after_five_wrong_answers(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    settle()
    app, codes, _ = enroll(server, owner)

    # Four misses leave a challenge alive (a right answer then works and clears the count)...
    survivor = challenge(server, tenant)
    for _ in range(CHALLENGE_DIES_AFTER - 1):
        refusal(server, survivor, totp_code=wrong_code(app))
    assert signed_in_with(server, verify(server, survivor, recovery_code=codes[0]))

    # ...the fifth kills it: the right code is refused afterwards.
    doomed = challenge(server, tenant)
    for _ in range(CHALLENGE_DIES_AFTER):
        refusal(server, doomed, totp_code=wrong_code(app))
    settle()
    right = code(app, 1)
    refusal(server, doomed, totp_code=right)
    refusal(server, doomed, recovery_code=codes[1])
    # The user is not locked out, and the dead challenge did not spend the code.
    assert signed_in_with(server, verify(server, challenge(server, tenant), totp_code=right))
    assert remaining_codes(server, owner) == 9


def test_a_user_is_throttled_across_challenges_after_ten_failures(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    settle()
    app, codes, factor_id = enroll(server, owner)

    first, second = challenge(server, tenant), challenge(server, tenant)
    for _ in range(CHALLENGE_DIES_AFTER):
        refusal(server, first, totp_code=wrong_code(app))
    # Nine failures in, and the tenth is still judged (and refused like any other).
    for _ in range(USER_THROTTLED_AFTER - CHALLENGE_DIES_AFTER):
        refusal(server, second, totp_code=wrong_code(app))

    settle()
    right = code(app, 1)
    third = challenge(server, tenant)  # the password still works: Login is throttled apart
    throttled = call_error(server.auth.VerifyMfa, auth_pb2.VerifyMfaRequest(challenge=third, totp_code=right))
    assert throttled.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(throttled) == "LOGIN_THROTTLED"
    assert 0 < retry_delay(throttled) <= USER_LOCK_SECONDS
    again = call_error(server.auth.VerifyMfa, auth_pb2.VerifyMfaRequest(challenge=third, recovery_code=codes[0]))
    assert error_reason(again) == "LOGIN_THROTTLED"
    # Every way of answering for this user waits, a step-up and a code given to remove a factor too.
    step_up = mfa_stub(server).CreateStepUpChallenge(mfa_pb2.CreateStepUpChallengeRequest(), metadata=bearer(owner))
    stepped = call_error(
        server.auth.VerifyMfa, auth_pb2.VerifyMfaRequest(challenge=step_up.challenge.challenge, totp_code=right)
    )
    assert error_reason(stepped) == "LOGIN_THROTTLED"
    removing = call_error(
        mfa_stub(server).DeleteMfaFactor,
        mfa_pb2.DeleteMfaFactorRequest(factor_id=factor_id, totp_code=right),
        metadata=bearer(owner),
    )
    assert error_reason(removing) == "LOGIN_THROTTLED"
    # Nothing was spent while throttled: the code and the recovery codes are all there.
    assert remaining_codes(server, owner) == 10


def expire(database_url: str, challenge_token: str) -> None:
    """Move a challenge's expiry into the past (its five minutes, without waiting them)."""
    engine = create_engine(database_url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        changed = conn.execute(
            text("UPDATE mfa_challenges SET expires_at = expires_at - interval '1 hour' WHERE token_hash = :h"),
            {"h": sha256_hex(challenge_token)},
        ).rowcount
    engine.dispose()
    assert changed == 1


def answer_shape(error: grpc.RpcError) -> tuple[object, ...]:
    """Everything a caller learns from a refusal, but the request id."""
    from google.rpc import error_details_pb2

    info = status_detail(error, error_details_pb2.ErrorInfo)
    metadata = {k: v for k, v in info.metadata.items() if k != "request_id"}
    return (error.code(), error.details(), info.reason, info.domain, tuple(sorted(metadata.items())))


def test_every_failed_answer_looks_the_same(server: RunningServer, pg_env: dict[str, str]) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    settle()
    app, codes, _ = enroll(server, owner)
    right = code(app, 1)
    answered = challenge(server, tenant)
    verify(server, answered, totp_code=right)
    verify(server, challenge(server, tenant), recovery_code=codes[0])

    # Four misses on one live challenge (a fifth would kill it; nine in all stay under
    # the user's throttle, which the right answer at the end clears).
    failures: dict[str, grpc.RpcError] = {}
    live = challenge(server, tenant)
    failures["wrong code"] = refusal(server, live, totp_code=wrong_code(app))
    failures["malformed code"] = refusal(server, live, totp_code="12345x")
    failures["replayed code"] = refusal(server, live, totp_code=right)
    failures["used recovery code"] = refusal(server, live, recovery_code=codes[0])
    failures["unknown challenge"] = refusal(server, "mc_" + secrets.token_urlsafe(32), totp_code=code(app, 1))
    failures["not a challenge"] = refusal(server, "nonsense", totp_code=code(app, 1))
    failures["answered challenge"] = refusal(server, answered, recovery_code=codes[1])
    dead = challenge(server, tenant)
    for _ in range(CHALLENGE_DIES_AFTER):
        refusal(server, dead, totp_code=wrong_code(app))
    failures["dead challenge"] = refusal(server, dead, recovery_code=codes[1])
    expired = challenge(server, tenant)
    expire(pg_env["TAHOE_DATABASE_URL"], expired)
    failures["expired challenge"] = refusal(server, expired, recovery_code=codes[1])

    # The right answer refused on the dead and expired challenges is still good.
    assert signed_in_with(server, verify(server, live, recovery_code=codes[1]))
    failures["unknown recovery code"] = refusal(server, challenge(server, tenant), recovery_code="aaaaa-aaaaa")

    shapes = {kind: answer_shape(error) for kind, error in failures.items()}
    assert len(set(shapes.values())) == 1, shapes


def test_removing_an_authenticator_app_wants_a_fresh_code(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)  # password only, from before the factor
    settle()
    app, codes, factor_id = enroll(server, owner)
    enrolled_with = code(app)

    def delete(**answer: str) -> None:
        mfa_stub(server).DeleteMfaFactor(
            mfa_pb2.DeleteMfaFactorRequest(factor_id=factor_id, **answer), metadata=bearer(owner)
        )

    no_code = call_error(delete)
    assert (no_code.code(), error_reason(no_code)) == (grpc.StatusCode.PERMISSION_DENIED, "MFA_REQUIRED")
    for stale in (enrolled_with, code(app, -3), code(app, 3), wrong_code(app)):
        refused = call_error(delete, totp_code=stale)
        assert (refused.code(), error_reason(refused)) == (grpc.StatusCode.UNAUTHENTICATED, "MFA_CODE_INVALID")
    listed = mfa_stub(server).ListMfaFactors(mfa_pb2.ListMfaFactorsRequest(), metadata=bearer(owner))
    assert [f.id for f in listed.factors] == [factor_id] and listed.recovery_codes_remaining == 10

    settle()
    delete(totp_code=code(app, 1))
    listed = mfa_stub(server).ListMfaFactors(mfa_pb2.ListMfaFactorsRequest(), metadata=bearer(owner))
    assert not listed.factors and listed.recovery_codes_remaining == 0  # the last factor takes the codes along
    assert server.login(tenant).HasField("tokens")  # no second step any more

    # Enrolled again: a recovery code in the request removes it as well, once.
    settle()
    _, new_codes, factor_id = enroll(server, owner)
    assert not set(new_codes) & set(codes)
    delete(recovery_code=new_codes[0])
    assert not mfa_stub(server).ListMfaFactors(mfa_pb2.ListMfaFactorsRequest(), metadata=bearer(owner)).factors
