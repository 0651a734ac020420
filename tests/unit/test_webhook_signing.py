"""Our signatures checked by the reference Standard Webhooks implementation."""

from __future__ import annotations

import json
import random
import time

import pytest
import standardwebhooks

from tahoe_auth.domain import webhooks
from tahoe_auth.domain.errors import InvalidArgument

BODY = json.dumps({"type": "user.created", "data": {"id": "u1"}}).encode()


def test_reference_library_accepts_our_signature() -> None:
    secret = webhooks.generate_secret()
    sent = webhooks.headers([secret], "msg_1", int(time.time()), BODY)
    payload = standardwebhooks.Webhook(secret).verify(BODY, sent)
    assert payload == {"type": "user.created", "data": {"id": "u1"}}


def test_reference_library_rejects_a_tampered_body() -> None:
    secret = webhooks.generate_secret()
    sent = webhooks.headers([secret], "msg_1", int(time.time()), BODY)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(BODY.replace(b"u1", b"u2"), sent)


def test_rotation_sends_one_signature_per_secret_and_either_verifies() -> None:
    old, new = webhooks.generate_secret(), webhooks.generate_secret()
    sent = webhooks.headers([new, old], "msg_2", int(time.time()), BODY)
    assert len(sent["webhook-signature"].split()) == 2
    for secret in (old, new):
        standardwebhooks.Webhook(secret).verify(BODY, sent)
        assert webhooks.verify(secret, sent, BODY, int(time.time()))
    assert not webhooks.verify(webhooks.generate_secret(), sent, BODY, int(time.time()))


def test_our_verifier_enforces_the_timestamp_tolerance() -> None:
    secret = webhooks.generate_secret()
    stamp = int(time.time()) - 1000
    sent = webhooks.headers([secret], "msg_3", stamp, BODY)
    assert not webhooks.verify(secret, sent, BODY, int(time.time()))
    assert webhooks.verify(secret, sent, BODY, stamp + 10)


@pytest.mark.parametrize("bad", ["sk_abc", "whsec_!!!", "whsec_" + "QUJD"])
def test_malformed_secrets_are_invalid_arguments(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        webhooks.secret_key(bad)


def test_retry_schedule_backs_off_with_jitter_for_about_three_days() -> None:
    policy = webhooks.RetryPolicy()
    rng = random.Random(7)
    elapsed, attempts, delays = 0.0, 1, []
    while (wait := policy.next_attempt_in(attempts, elapsed, rng=rng)) is not None:
        delays.append(wait)
        elapsed += wait
        attempts += 1
    steady = [webhooks.RetryPolicy(jitter=0).delay(n) for n in range(1, attempts)]
    assert steady == sorted(steady) and steady[0] == 5 and steady[-1] == policy.max_delay
    assert delays[0] < 10 and max(delays) <= policy.max_delay * 1.2
    assert 2 * 24 * 3600 < elapsed <= 3 * 24 * 3600
    assert 8 <= attempts <= 14
    jittered = {round(policy.delay(3), 3) for _ in range(20)}
    assert len(jittered) > 1


def test_retry_after_is_honoured_when_longer() -> None:
    policy = webhooks.RetryPolicy(jitter=0)
    assert policy.next_attempt_in(1, 0, retry_after=120) == 120
    assert policy.next_attempt_in(1, 0, retry_after=1) == policy.first_delay
    assert policy.next_attempt_in(1, policy.horizon - 1) is None


def test_parse_retry_after() -> None:
    assert webhooks.parse_retry_after("30") == 30
    assert webhooks.parse_retry_after(None) is None
    assert webhooks.parse_retry_after("soon") is None
    when = webhooks.parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT")
    assert when is not None and when > 1e9
