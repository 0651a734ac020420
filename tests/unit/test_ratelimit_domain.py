"""Rate-limit maths with an explicit clock (integer microseconds)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tahoe_auth.domain import ratelimit as rl
from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.domain.ratelimit import Policy, PolicyCheck, Strategy

S = rl.US
T0 = 1_900_800_000 * S  # a multiple of every period used below: a window boundary


class Sim:
    """The reference model: `step` over a dict, counting only allowed requests."""

    def __init__(self) -> None:
        self.state: dict[str, tuple[int, ...]] = {}

    def hit(self, policy: Policy, now: int, cost: int = 1, key: str = "k") -> rl.Outcome:
        outcome, state, _ = rl.step(policy, self.state.get(key), now, cost)
        if outcome.allowed:
            self.state[key] = state
        return outcome

    def admitted(self, policy: Policy, times: list[int]) -> list[int]:
        return [t for t in times if self.hit(policy, t).allowed]


# --- fixed window -----------------------------------------------------------------------


def test_fixed_window_counts_exactly_within_a_window_and_resets_at_its_end() -> None:
    policy = Policy("p", 5, 60.0, Strategy.FIXED_WINDOW)
    sim = Sim()
    outcomes = [sim.hit(policy, T0 + 10 * S) for _ in range(6)]
    assert [o.allowed for o in outcomes] == [True] * 5 + [False]
    assert [o.remaining for o in outcomes[:5]] == [4, 3, 2, 1, 0]
    assert outcomes[5].retry_us == outcomes[5].reset_us == 50 * S
    assert sim.hit(policy, T0 + 60 * S - 1).allowed is False
    assert sim.hit(policy, T0 + 60 * S).allowed is True


def test_fixed_window_edge_admits_twice_the_limit_across_a_boundary() -> None:
    """The documented error: limit at the end of one window, limit at the start of the next."""
    policy = Policy("p", 10, 60.0, Strategy.FIXED_WINDOW)
    sim = Sim()
    end_of_first = [T0 + 60 * S - 1000] * 15
    start_of_second = [T0 + 60 * S + 1000] * 15
    assert len(sim.admitted(policy, end_of_first + start_of_second)) == 20


# --- sliding window ---------------------------------------------------------------------


def test_sliding_window_weights_the_previous_window() -> None:
    policy = Policy("p", 100, 60.0, Strategy.SLIDING_WINDOW)
    sim = Sim()
    assert len(sim.admitted(policy, [T0 + 59 * S] * 120)) == 100
    # 10% into the next window, 90% of the previous window still counts: 10 more fit.
    assert len(sim.admitted(policy, [T0 + 66 * S] * 50)) == 10
    # Half way: the previous window weighs 50; 10 already taken here: 40 more fit.
    assert len(sim.admitted(policy, [T0 + 90 * S] * 50)) == 40


def test_sliding_window_retry_after_is_when_the_estimate_fits_again() -> None:
    policy = Policy("p", 10, 60.0, Strategy.SLIDING_WINDOW)
    sim = Sim()
    sim.admitted(policy, [T0 + 30 * S] * 10)
    denied = sim.hit(policy, T0 + 61 * S)  # previous 10 weighs 10 * 59/60 > 9
    assert not denied.allowed
    # Fits when 10 * (60 - e) / 60 <= 9, i.e. e >= 6 s into the window: 5 s from now.
    assert denied.retry_us == 5 * S
    assert not sim.hit(policy, T0 + 66 * S - 1).allowed
    assert sim.hit(policy, T0 + 66 * S).allowed


def test_sliding_window_retry_after_when_the_current_window_is_full() -> None:
    policy = Policy("p", 10, 60.0, Strategy.SLIDING_WINDOW)
    sim = Sim()
    sim.admitted(policy, [T0] * 10)
    denied = sim.hit(policy, T0 + 30 * S)
    # Next window, previous = 10: fits when 10 * (60 - e) / 60 <= 9, e = 6 s.
    assert denied.retry_us == (30 + 6) * S
    assert sim.hit(policy, T0 + 66 * S).allowed


# --- gcra -------------------------------------------------------------------------------


def test_gcra_admits_the_burst_at_once_then_the_rate() -> None:
    policy = Policy("p", 60, 60.0, Strategy.GCRA, burst=10)
    sim = Sim()
    outcomes = [sim.hit(policy, T0) for _ in range(11)]
    assert [o.allowed for o in outcomes] == [True] * 10 + [False]
    assert [o.remaining for o in outcomes[:10]] == list(range(9, -1, -1))
    assert outcomes[10].retry_us == 1 * S  # one emission interval
    assert outcomes[9].reset_us == 10 * S  # the bucket is full again in 10 s
    assert not sim.hit(policy, T0 + S - 1).allowed
    assert sim.hit(policy, T0 + S).allowed


def test_gcra_has_no_window_edge() -> None:
    policy = Policy("p", 10, 60.0, Strategy.GCRA)
    sim = Sim()
    admitted = sim.admitted(policy, [T0 + 60 * S - 1000] * 15 + [T0 + 60 * S + 1000] * 15)
    assert len(admitted) == 10


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 50),
    period=st.sampled_from([1.0, 7.0, 60.0]),
    burst=st.integers(0, 20),
    gaps=st.lists(st.integers(0, 3 * S), min_size=1, max_size=200),
)
def test_gcra_never_exceeds_burst_plus_rate(limit: int, period: float, burst: int, gaps: list[int]) -> None:
    policy = Policy("p", limit, period, Strategy.GCRA, burst=burst)
    times, now = [], T0
    for gap in gaps:
        now += gap
        times.append(now)
    admitted = Sim().admitted(policy, times)
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            span = admitted[j] - start
            assert j - i + 1 <= policy.capacity + span / policy.emission_us


@settings(max_examples=60, deadline=None)
@given(
    strategy=st.sampled_from([Strategy.FIXED_WINDOW, Strategy.SLIDING_WINDOW]),
    limit=st.integers(1, 30),
    gaps=st.lists(st.integers(0, 20 * S), min_size=1, max_size=200),
)
def test_windows_never_exceed_the_limit_within_one_window(strategy: Strategy, limit: int, gaps: list[int]) -> None:
    policy = Policy("p", limit, 60.0, strategy)
    times, now = [], T0
    for gap in gaps:
        now += gap
        times.append(now)
    admitted = Sim().admitted(policy, times)
    per_window: dict[int, int] = {}
    for t in admitted:
        per_window[t // policy.period_us] = per_window.get(t // policy.period_us, 0) + 1
    assert max(per_window.values()) <= limit


# --- decisions and headers -----------------------------------------------------------------


def checks(*policies: Policy) -> list[PolicyCheck]:
    return [PolicyCheck(f"k:{p.name}", p) for p in policies]


def test_decision_reports_the_denying_policy_with_the_longest_wait() -> None:
    a, b, c = Policy("a", 10, 60.0), Policy("b", 5, 60.0), Policy("c", 1, 60.0)
    outcomes = [rl.Outcome(True, 3, 5 * S, 0), rl.Outcome(False, 0, 9 * S, 2 * S), rl.Outcome(False, 0, 60 * S, 7 * S)]
    decision = rl.decide(checks(a, b, c), outcomes)
    assert not decision.allowed
    assert (decision.policy, decision.limit, decision.retry_after, decision.reset) == ("c", 1, 7.0, 60.0)
    assert rl.headers(decision) == [
        ("ratelimit-limit", "1"),
        ("ratelimit-remaining", "0"),
        ("ratelimit-reset", "60"),
        ("retry-after", "7"),
    ]


def test_allowed_decision_reports_the_policy_closest_to_exhaustion() -> None:
    a, b = Policy("a", 100, 60.0), Policy("b", 10, 60.0)
    decision = rl.decide(checks(a, b), [rl.Outcome(True, 50, S, 0), rl.Outcome(True, 2, 1_500_000, 0)])
    assert decision.allowed and decision.policy == "b"
    assert rl.headers(decision) == [("ratelimit-limit", "10"), ("ratelimit-remaining", "2"), ("ratelimit-reset", "2")]


def test_shadow_policies_never_deny_but_report_hits() -> None:
    enforced, shadow = Policy("a", 100, 60.0), Policy("b", 1, 60.0, shadow=True)
    decision = rl.decide(checks(enforced, shadow), [rl.Outcome(True, 5, S, 0), rl.Outcome(False, 0, S, S)])
    assert decision.allowed and decision.shadow_hits == ("b",) and decision.policy == "a"


def test_denied_requests_consume_nothing() -> None:
    """All or nothing: a denial by one policy leaves the other policies' counts alone."""
    from tahoe_auth.store.limiter_backends import MemoryLimiterBackend

    backend = MemoryLimiterBackend()
    roomy, tight = Policy("roomy", 3, 60.0, Strategy.FIXED_WINDOW), Policy("tight", 1, 60.0, Strategy.FIXED_WINDOW)
    both = [PolicyCheck("r", roomy), PolicyCheck("t", tight)]
    assert [o.allowed for o in backend.evaluate(both, T0)] == [True, True]
    for _ in range(5):
        assert [o.allowed for o in backend.evaluate(both, T0)] == [True, False]
    assert [o.remaining for o in backend.evaluate([PolicyCheck("r", roomy)], T0)] == [1]


def test_no_policies_means_unlimited_and_no_headers() -> None:
    assert rl.decide([], []) is rl.UNLIMITED
    assert rl.headers(rl.UNLIMITED) == []


def test_policy_share_per_instance_rounds_up() -> None:
    policy = Policy("p", 100, 60.0, burst=10)
    assert policy.divided(3) == Policy("p", 34, 60.0, burst=4)
    assert Policy("p", 1, 60.0).divided(4).limit == 1
    assert policy.divided(1) is policy


# --- subjects, keys and settings -------------------------------------------------------------


def test_keys_carry_their_tenant_and_the_address_key_is_global_unless_overridden() -> None:
    limits = rl.parse_limits({"per_api_key": {"limit": 5}, "per_user": {"limit": 7}})
    subject = rl.RateLimitSubject("10.0.0.1", "t1", api_key_id="k1", user_id="u1")
    keys = {c.policy.name: c.key for c in rl.policy_checks(subject, limits)}
    assert keys == {
        "per_address": "rl:{global}:addr:10.0.0.1",
        "per_tenant": "rl:{t1}:tenant",
        "per_api_key": "rl:{t1}:key:k1",
        "per_user": "rl:{t1}:user:u1",
    }
    own = rl.parse_limits({"per_address": {"limit": 1000}})
    assert rl.policy_checks(rl.RateLimitSubject("::1", "t1"), own)[0].key == "rl:{t1}:addr:::1"
    hostile = rl.policy_checks(rl.RateLimitSubject("1.2.3.4}{x", ""), rl.DEFAULT_LIMITS)
    assert [c.key for c in hostile] == ["rl:{global}:addr:1.2.3.4__x"]


def test_optional_policies_apply_only_when_configured() -> None:
    subject = rl.RateLimitSubject("10.0.0.1", "t1", api_key_id="k1", user_id="u1")
    names = [c.policy.name for c in rl.policy_checks(subject, rl.DEFAULT_LIMITS)]
    assert names == ["per_address", "per_tenant"]
    assert rl.policy_checks(rl.RateLimitSubject(), rl.DEFAULT_LIMITS) == []


def test_tenant_settings_override_and_disable_policies() -> None:
    limits = rl.parse_limits(
        {
            "shadow": True,
            "per_tenant": {"limit": 50, "period": 1, "strategy": "sliding_window"},
            "per_address": {"enabled": False},
            "per_api_key": {"limit": 10, "burst": 30},
        }
    )
    assert limits.policies["per_tenant"] == Policy("per_tenant", 50, 1.0, Strategy.SLIDING_WINDOW)
    assert "per_address" not in limits.policies
    assert limits.policies["per_api_key"] == Policy("per_api_key", 10, 60.0, Strategy.GCRA, burst=30)
    subject = rl.RateLimitSubject("10.0.0.1", "t1", api_key_id="k")
    assert all(c.policy.shadow for c in rl.policy_checks(subject, limits))
    # Fields left out keep the defaults'.
    assert rl.parse_limits({"per_tenant": {"shadow": True}}).policies["per_tenant"] == Policy(
        "per_tenant", 1000, 60.0, shadow=True
    )


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"per_everything": {}}, "rate_limits"),
        ({"per_tenant": {"limit": 0}}, "rate_limits.per_tenant.limit"),
        ({"per_tenant": {"limit": "10"}}, "rate_limits.per_tenant.limit"),
        ({"per_tenant": {"period": 0.5}}, "rate_limits.per_tenant.period"),
        ({"per_tenant": {"strategy": "leaky"}}, "rate_limits.per_tenant.strategy"),
        ({"per_tenant": {"strategy": "fixed_window", "burst": 5}}, "rate_limits.per_tenant.burst"),
        ({"per_tenant": {"shadow": "yes"}}, "rate_limits.per_tenant.shadow"),
        ({"per_tenant": {"limit": 10, "colour": "red"}}, "rate_limits.per_tenant"),
        ({"per_tenant": {"limit": 10_000_000, "period": 1}}, "rate_limits.per_tenant.limit"),
        ({"shadow": 1}, "rate_limits.shadow"),
        ({"per_tenant": 5}, "rate_limits.per_tenant"),
    ],
)
def test_invalid_settings_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        rl.parse_limits(raw)
    assert info.value.field == field


def _decide_by_definition(checks: list[PolicyCheck], outcomes: list[rl.Outcome]) -> rl.RateLimitDecision:
    """decide() as its contract reads: the denial retrying last, else the enforced policy
    closest to exhaustion, else (all in shadow) the tightest; ties to the first."""
    pairs = tuple(zip(checks, outcomes, strict=True))
    enforced = [(c, o) for c, o in pairs if not c.policy.shadow]
    shadow_hits = tuple(c.policy.name for c, o in pairs if c.policy.shadow and not o.allowed)
    denied = [(c, o) for c, o in enforced if not o.allowed]
    if denied:
        (check, outcome), allowed = max(denied, key=lambda p: p[1].retry_us), False
    elif enforced:
        check, outcome = min(enforced, key=lambda p: (p[1].remaining / p[0].policy.limit, -p[1].reset_us))
        allowed = True
    else:
        (check, outcome), allowed = min(pairs, key=lambda p: p[1].remaining / p[0].policy.limit), True
    return rl.RateLimitDecision(
        allowed=allowed,
        limit=check.policy.limit,
        remaining=outcome.remaining,
        reset=outcome.reset_us / rl.US,
        retry_after=0.0 if allowed else outcome.retry_us / rl.US,
        policy=check.policy.name,
        shadow_hits=shadow_hits,
        outcomes=pairs,
    )


_verdicts = st.lists(
    st.tuples(
        st.sampled_from(rl.POLICY_NAMES),
        st.integers(1, 5),  # limit
        st.booleans(),  # shadow
        st.booleans(),  # allowed
        st.integers(0, 5),  # remaining
        st.integers(0, 3),  # reset_us (ties on purpose)
        st.integers(0, 3),  # retry_us
    ),
    min_size=1,
    max_size=4,
)


@given(_verdicts)
@settings(max_examples=500, deadline=None)
def test_decide_picks_the_policy_its_contract_names(verdicts: list[tuple[str, int, bool, bool, int, int, int]]) -> None:
    checks = [
        PolicyCheck(f"k{i}", Policy(name, limit, 60, shadow=shadow))
        for i, (name, limit, shadow, *_) in enumerate(verdicts)
    ]
    outcomes = [rl.Outcome(allowed, remaining, reset, retry) for *_, allowed, remaining, reset, retry in verdicts]
    assert rl.decide(checks, outcomes) == _decide_by_definition(checks, outcomes)
