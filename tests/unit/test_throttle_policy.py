from __future__ import annotations

import pytest

from tahoe_auth.domain.errors import LoginThrottled
from tahoe_auth.services.throttle import ACCOUNT_POLICY, LoginThrottle, ThrottlePolicy
from tahoe_auth.store.kv import MemoryStore


def test_delays_grow_and_are_capped() -> None:
    policy = ThrottlePolicy(free_failures=3, max_delay=60)
    assert [policy.delay_after(n) for n in range(1, 11)] == [0, 0, 1, 2, 4, 8, 16, 32, 60, 60]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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
