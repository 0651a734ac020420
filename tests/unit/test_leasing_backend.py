"""LeasingBackend over an exact backend: fewer round trips, never past a limit."""

from __future__ import annotations

from collections.abc import Sequence

from tahoe_auth.domain.ratelimit import US, Outcome, Policy, PolicyCheck, Strategy, overall_allowed
from tahoe_auth.store.limiter_backends import LeasingBackend, MemoryLimiterBackend


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """An exact backend (the in-memory one) that counts its calls, like round trips."""

    def __init__(self, clock: Clock) -> None:
        self.inner = MemoryLimiterBackend(clock)
        self.calls = 0

    def evaluate(self, checks: Sequence[PolicyCheck], now_us: int | None, cost: int = 1) -> list[Outcome]:
        self.calls += 1
        return self.inner.evaluate(checks, now_us, cost)

    def close(self) -> None:
        self.inner.close()


def setup(
    limit: int, period: float = 60.0, strategy: Strategy = Strategy.GCRA
) -> tuple[Clock, Counting, LeasingBackend, list[PolicyCheck]]:
    clock = Clock()
    inner = Counting(clock)
    leasing = LeasingBackend(inner, ttl=0.1, max_lease=64, clock=clock)
    checks = [PolicyCheck("rl:{t}:tenant", Policy("per_tenant", limit, period, strategy))]
    return clock, inner, leasing, checks


def admit(backend: LeasingBackend, checks: list[PolicyCheck], clock: Clock) -> bool:
    return overall_allowed(checks, backend.evaluate(checks, int(clock.now * US)))


def test_a_slow_subject_is_decided_exactly_one_round_trip_each() -> None:
    clock, inner, leasing, checks = setup(limit=100_000)
    for _ in range(20):
        assert admit(leasing, checks, clock)
        clock.now += 0.5  # two requests a second: nothing worth reserving
    assert inner.calls == 20


def test_a_busy_subject_needs_a_fraction_of_the_round_trips() -> None:
    clock, inner, leasing, checks = setup(limit=1_000_000)
    for _ in range(10_000):
        assert admit(leasing, checks, clock)
        clock.now += 0.0002  # 5,000 requests a second
    assert inner.calls < 10_000 / 30


def test_small_limits_stay_exact_at_any_pace() -> None:
    clock, inner, leasing, checks = setup(limit=50, strategy=Strategy.FIXED_WINDOW)
    answers = []
    for _ in range(60):
        answers.append(admit(leasing, checks, clock))
        clock.now += 0.0001
    assert answers == [True] * 50 + [False] * 10
    assert inner.calls == 60


def test_a_limit_is_never_exceeded_and_reached_within_one_percent_per_instance() -> None:
    clock = Clock()
    shared = MemoryLimiterBackend(clock)  # what Redis is to several instances

    class Shared(Counting):
        def __init__(self) -> None:
            self.inner, self.calls = shared, 0

    policy = Policy("per_tenant", 10_000, 60.0, Strategy.FIXED_WINDOW)
    checks = [PolicyCheck("rl:{t}:tenant", policy)]
    instances = [LeasingBackend(Shared(), ttl=0.1, max_lease=64, clock=clock) for _ in range(3)]
    admitted = 0
    for i in range(12_000):
        admitted += admit(instances[i % 3], checks, clock)
        clock.now += 0.00001
    assert admitted <= policy.limit
    assert admitted >= policy.limit - 3 * (policy.limit // 100)


def test_near_the_limit_denials_are_exact_and_the_remaining_count_honest() -> None:
    clock, _, leasing, checks = setup(limit=1000, strategy=Strategy.FIXED_WINDOW)
    remaining_seen = []
    allowed = 0
    for _ in range(1100):
        outcome = leasing.evaluate(checks, int(clock.now * US))[0]
        if outcome.allowed:
            allowed += 1
            remaining_seen.append(outcome.remaining)
        clock.now += 0.0001
    assert allowed <= 1000 and allowed >= 990
    assert remaining_seen == sorted(remaining_seen, reverse=True)  # counts down, never up
    assert remaining_seen[-1] <= 10


def test_unused_reservations_expire() -> None:
    clock, inner, leasing, checks = setup(limit=1_000_000)
    for _ in range(50):
        admit(leasing, checks, clock)
        clock.now += 0.0001
    calls = inner.calls
    clock.now += 0.2  # past the lease's ttl
    admit(leasing, checks, clock)
    assert inner.calls == calls + 1
