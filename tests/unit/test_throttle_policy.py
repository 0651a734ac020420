from __future__ import annotations

import pytest

from tahoe_auth.domain.errors import LoginThrottled
from tahoe_auth.domain.throttle import ACCOUNT_POLICY, ADDRESS_POLICY, ThrottlePolicy
from tahoe_auth.services.throttle import LoginThrottle
from tahoe_auth.store.kv import MemoryStore


def test_delays_grow_and_are_capped() -> None:
    policy = ThrottlePolicy(free_failures=3, max_delay=60)
    assert [policy.delay_after(n) for n in range(1, 11)] == [0, 0, 1, 2, 4, 8, 16, 32, 60, 60]


def test_delays_can_double_less_often() -> None:
    policy = ThrottlePolicy(free_failures=3, max_delay=5, doubling_every=2)
    assert [policy.delay_after(n) for n in range(1, 11)] == [0, 0, 1, 1, 2, 2, 4, 4, 5, 5]


def tries_in_a_window(policy: ThrottlePolicy) -> int:
    """Failures one guesser gets within a window, retrying the moment the wait ends."""
    elapsed, failures = 0.0, 0
    while elapsed < policy.window:
        failures += 1
        elapsed += policy.delay_after(failures)
    return failures


def test_an_address_is_throttled_more_gently_than_an_account() -> None:
    """An address may be a NAT full of people: more free failures, slower growth and a
    lower cap than an account, at the price of more guesses per address (documented in
    domain/throttle.py)."""
    failures = range(1, 5000)
    assert all(ADDRESS_POLICY.delay_after(n) <= ACCOUNT_POLICY.delay_after(n) for n in failures)
    assert max(ADDRESS_POLICY.delay_after(n) for n in failures) == 60
    assert max(ACCOUNT_POLICY.delay_after(n) for n in failures) == 900
    assert tries_in_a_window(ACCOUNT_POLICY) < 20
    assert tries_in_a_window(ADDRESS_POLICY) < 220


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_dozens_of_failures_behind_one_address_delay_nobody_else() -> None:
    throttle = LoginThrottle(MemoryStore(Clock()))
    for user in range(45):  # people behind one NAT, each mistyping twice
        for _ in range(2):
            throttle.check("acme", f"user{user}@x.test", "192.0.2.1")
            throttle.failed("acme", f"user{user}@x.test", "192.0.2.1")
    throttle.check("acme", "someone-else@x.test", "192.0.2.1")


def test_an_address_under_attack_waits_a_minute_at_most() -> None:
    throttle = LoginThrottle(MemoryStore(Clock()))
    for n in range(5000):
        throttle.failed("acme", f"victim{n}@x.test", "192.0.2.66")
    with pytest.raises(LoginThrottled) as info:
        throttle.check("acme", "someone-else@x.test", "192.0.2.66")
    assert 0 < info.value.retry_after <= 60


def test_account_is_slowed_then_forgiven() -> None:
    clock = Clock()
    throttle = LoginThrottle(MemoryStore(clock))
    for _ in range(ACCOUNT_POLICY.free_failures):
        throttle.check("acme", "a@x.test", "10.0.0.1")
        throttle.failed("acme", "a@x.test", "10.0.0.1")
    with pytest.raises(LoginThrottled) as info:
        throttle.check("acme", "a@x.test", "10.0.0.1")
    assert 0 < info.value.retry_after <= 1
    throttle.check("acme", "b@x.test", "10.0.0.2")  # other accounts are not affected
    clock.now += 1.01
    throttle.check("acme", "a@x.test", "10.0.0.1")  # the delay passed: not a lockout
    clock.now += ACCOUNT_POLICY.window
    throttle.failed("acme", "a@x.test", "10.0.0.1")
    throttle.check("acme", "a@x.test", "10.0.0.1")  # the window forgot the old failures


def test_success_clears_the_account() -> None:
    throttle = LoginThrottle(MemoryStore(Clock()))
    for _ in range(ACCOUNT_POLICY.free_failures + 2):
        throttle.failed("acme", "a@x.test", "")
    throttle.succeeded("acme", "a@x.test")
    throttle.check("acme", "a@x.test", "")
