"""Rate-limit maths, policies and decisions. Pure: no I/O, time is passed in.

Time is integer microseconds so that the Redis Lua script (doubles, exact below 2**53)
and the in-process fallback compute bit-identical answers; `step` here is the reference
and store/limiter_backends.py mirrors it line by line in Lua.

Strategies, one state record per policy key, and their documented error:

``fixed_window``    state (window, count). Exact within a window: never more than
                    `limit` per window. A burst straddling a boundary can admit up to
                    2 x limit within one period (the classic edge effect).
``sliding_window``  state (window, count, previous). Two-window weighted counter: the
                    previous window's count is taken as spread evenly over it, so the
                    estimate is `previous x (unelapsed share) + count`. Exact at an
                    instant (never admits past the estimate); with uneven traffic a
                    window can admit up to 2 x limit in the worst case (all of the
                    previous window's requests at its very end); on even traffic the
                    error is close to zero.
``gcra``            state tat (theoretical arrival time). A token bucket of capacity
                    `burst` (default: limit) refilled at limit/period. Exact: over any
                    interval of length d it admits at most burst + d x limit/period
                    (emission interval rounded to a microsecond); no edge effect.

A request is allowed when every enforced policy allows it, and then (only then) it is
counted by every policy that would have allowed it: denied requests consume nothing.
Shadow policies are evaluated and counted like the others but never deny; their
would-be denials are reported as shadow hits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from tahoe_auth.domain.errors import InvalidArgument

US = 1_000_000


class Strategy(StrEnum):
    FIXED_WINDOW = "fixed_window"
    SLIDING_WINDOW = "sliding_window"
    GCRA = "gcra"


STRATEGY_CODES = {Strategy.FIXED_WINDOW: 1, Strategy.SLIDING_WINDOW: 2, Strategy.GCRA: 3}

MIN_PERIOD = 1.0
MAX_PERIOD = 31 * 86400.0
MAX_LIMIT = 1_000_000_000


@dataclass(frozen=True)
class Policy:
    name: str
    limit: int
    period: float
    strategy: Strategy = Strategy.GCRA
    burst: int = 0
    shadow: bool = False

    @property
    def period_us(self) -> int:
        return round(self.period * US)

    @property
    def capacity(self) -> int:
        """GCRA bucket size: how many requests may arrive at once."""
        return self.burst or self.limit

    @property
    def emission_us(self) -> int:
        """GCRA: one request's worth of refill time."""
        return max(1, round(self.period_us / self.limit))

    def divided(self, instances: int) -> Policy:
        """This instance's share when each instance limits on its own (fallback)."""
        if instances <= 1:
            return self
        return replace(
            self,
            limit=max(1, math.ceil(self.limit / instances)),
            burst=max(1, math.ceil(self.burst / instances)) if self.burst else 0,
        )


@dataclass(frozen=True)
class Outcome:
    """One policy's verdict. Times in microseconds."""

    allowed: bool
    remaining: int
    reset_us: int
    retry_us: int


State = tuple[int, ...]
"""fixed (window, count); sliding (window, count, previous); gcra (tat,)."""


def step(policy: Policy, state: State | None, now_us: int, cost: int = 1) -> tuple[Outcome, State, int]:
    """Evaluate one policy: (outcome, state to store if the request is counted, ttl µs)."""
    if policy.strategy is Strategy.FIXED_WINDOW:
        return _fixed_window(policy, state, now_us, cost)
    if policy.strategy is Strategy.SLIDING_WINDOW:
        return _sliding_window(policy, state, now_us, cost)
    return _gcra(policy, state, now_us, cost)


def _fixed_window(policy: Policy, state: State | None, now: int, cost: int) -> tuple[Outcome, State, int]:
    period, limit = policy.period_us, policy.limit
    window = now // period
    count = state[1] if state and len(state) >= 2 and state[0] == window else 0
    reset = (window + 1) * period - now
    # States carry their window (or tat), so keeping a key longer than it matters is
    # harmless: keys live at least a period, which also keeps fake-clock tests honest.
    if count + cost <= limit:
        return Outcome(True, limit - count - cost, reset, 0), (window, count + cost), period
    return Outcome(False, max(0, limit - count), reset, reset), (window, count), period


def _sliding_window(policy: Policy, state: State | None, now: int, cost: int) -> tuple[Outcome, State, int]:
    period, limit = policy.period_us, policy.limit
    window = now // period
    elapsed = now - window * period
    current = previous = 0
    if state and len(state) >= 2:
        if state[0] == window:
            current, previous = state[1], state[2] if len(state) > 2 else 0
        elif state[0] == window - 1:
            previous = state[1]
    # float(...) * float(...): the same double arithmetic as the Lua script
    estimate = float(previous) * float(period - elapsed) / period + current
    ttl = 2 * period - elapsed
    reset = ttl if current > 0 else (period - elapsed if previous > 0 else 0)
    if estimate + cost <= limit:
        remaining = max(0, math.floor(limit - estimate - cost))
        return Outcome(True, remaining, reset, 0), (window, current + cost, previous), ttl
    retry = _sliding_retry(limit, period, elapsed, current, previous, cost)
    remaining = max(0, math.floor(limit - estimate))
    return Outcome(False, remaining, reset, retry), (window, current, previous), ttl


def _sliding_retry(limit: int, period: int, elapsed: int, current: int, previous: int, cost: int) -> int:
    """How long until `previous x (unelapsed share) + current + cost` fits again."""
    if previous > 0 and current + cost <= limit:
        at = period * (1 - (limit - current - cost) / previous)
        return max(1, math.ceil(at - elapsed))
    later = 0.0
    if cost > limit:
        later = float(period)
    elif current + cost > limit:
        later = period * (1 - (limit - cost) / current)
    return max(1, math.ceil(period - elapsed + later))


def _gcra(policy: Policy, state: State | None, now: int, cost: int) -> tuple[Outcome, State, int]:
    emission = policy.emission_us
    tolerance = emission * policy.capacity
    tat = max(state[0], now) if state else now
    new_tat = tat + emission * cost
    allow_at = new_tat - tolerance
    if now >= allow_at:
        remaining = (now - allow_at) // emission
        return Outcome(True, remaining, new_tat - now, 0), (new_tat,), max(new_tat - now, tolerance)
    return Outcome(False, 0, tat - now, allow_at - now), (tat,), max(tat - now, tolerance)


# --- decisions ------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyCheck:
    """A policy applied to one subject: its state key and the policy."""

    key: str
    policy: Policy


@dataclass(frozen=True)
class RateLimitDecision:
    allowed: bool
    limit: int = 0
    remaining: int = 0
    reset: float = 0.0
    retry_after: float = 0.0
    # The policy that decided: the one that denied, else the one closest to exhaustion.
    policy: str = ""
    # Shadow policies that would have denied this request.
    shadow_hits: tuple[str, ...] = ()
    # True when decided by the per-instance fallback (Redis unreachable).
    degraded: bool = False
    outcomes: tuple[tuple[PolicyCheck, Outcome], ...] = ()


UNLIMITED = RateLimitDecision(allowed=True)


def overall_allowed(checks: Sequence[PolicyCheck], outcomes: Sequence[Outcome]) -> bool:
    return all(o.allowed for c, o in zip(checks, outcomes, strict=True) if not c.policy.shadow)


def decide(checks: Sequence[PolicyCheck], outcomes: Sequence[Outcome], *, degraded: bool = False) -> RateLimitDecision:
    if not checks:
        return UNLIMITED
    pairs = tuple(zip(checks, outcomes, strict=True))
    # One pass, no intermediate lists: Check runs this on every request. Ties go to
    # the first pair, as max()/min() would.
    shadow_hits: tuple[str, ...] = ()
    denied: tuple[PolicyCheck, Outcome] | None = None
    enforced: list[tuple[PolicyCheck, Outcome]] = []
    for pair in pairs:
        policy, verdict = pair[0].policy, pair[1]
        if policy.shadow:
            if not verdict.allowed:
                shadow_hits += (policy.name,)
        elif not verdict.allowed:
            if denied is None or verdict.retry_us > denied[1].retry_us:
                denied = pair
        else:
            enforced.append(pair)
    if denied is not None:
        check, outcome = denied
        allowed = False
    elif len(enforced) == 1:
        (check, outcome), allowed = enforced[0], True
    elif enforced:
        check, outcome = min(enforced, key=lambda pair: (pair[1].remaining / pair[0].policy.limit, -pair[1].reset_us))
        allowed = True
    else:  # every policy is in shadow mode: report the tightest one, allow
        check, outcome = min(pairs, key=lambda pair: pair[1].remaining / pair[0].policy.limit)
        allowed = True
    return RateLimitDecision(
        allowed=allowed,
        limit=check.policy.limit,
        remaining=outcome.remaining,
        reset=outcome.reset_us / US,
        retry_after=0.0 if allowed else outcome.retry_us / US,
        policy=check.policy.name,
        shadow_hits=shadow_hits,
        degraded=degraded,
        outcomes=pairs,
    )


def headers(decision: RateLimitDecision) -> list[tuple[str, str]]:
    """`ratelimit-limit` / `ratelimit-remaining` / `ratelimit-reset` (seconds, rounded
    up), plus `retry-after` on a denial: for Check's allowed and denied responses."""
    if not decision.limit:
        return []
    result = [
        ("ratelimit-limit", str(decision.limit)),
        ("ratelimit-remaining", str(max(0, decision.remaining))),
        ("ratelimit-reset", str(math.ceil(decision.reset))),
    ]
    if not decision.allowed:
        result.append(("retry-after", str(max(1, math.ceil(decision.retry_after)))))
    return result


def denial_body(decision: RateLimitDecision) -> dict[str, str]:
    return {
        "error": "rate_limited",
        "message": f"rate limit {decision.policy} exceeded ({decision.limit} requests); "
        f"retry in {max(1, math.ceil(decision.retry_after))} s",
    }


# --- subjects and per-tenant settings ---------------------------------------------------

PER_ADDRESS = "per_address"
PER_TENANT = "per_tenant"
PER_API_KEY = "per_api_key"
PER_USER = "per_user"
POLICY_NAMES = (PER_ADDRESS, PER_TENANT, PER_API_KEY, PER_USER)


@dataclass(frozen=True)
class RateLimitSubject:
    """Who a request is counted against. Empty fields are not limited by their policy."""

    client_address: str = ""
    tenant_id: str = ""
    api_key_id: str = ""
    user_id: str = ""
    cost: int = 1


@dataclass(frozen=True)
class LimitSet:
    """The policies in force for one tenant (or the deployment's defaults)."""

    policies: Mapping[str, Policy]
    shadow: bool = False
    # Policies the tenant set itself: its per-address limit then counts per tenant.
    overridden: frozenset[str] = frozenset()


DEFAULT_LIMITS = LimitSet(
    {
        PER_ADDRESS: Policy(PER_ADDRESS, 100, 60.0, Strategy.GCRA),
        PER_TENANT: Policy(PER_TENANT, 1000, 60.0, Strategy.GCRA),
    }
)

_KEY_UNSAFE = re.compile(r"[{}\s]")


def _safe(part: str) -> str:
    return _KEY_UNSAFE.sub("_", part)[:128]


def policy_checks(subject: RateLimitSubject, limits: LimitSet) -> list[PolicyCheck]:
    """The checks for one request. Keys carry their tenant in a hash tag; the global
    per-address key says `{global}` (see docs/usage.md on Redis Cluster)."""
    tenant = _safe(subject.tenant_id)
    scoped: list[tuple[str, str]] = []
    if subject.client_address:
        scope = tenant if tenant and PER_ADDRESS in limits.overridden else "global"
        scoped.append((PER_ADDRESS, f"rl:{{{scope}}}:addr:{_safe(subject.client_address)}"))
    if tenant:
        scoped.append((PER_TENANT, f"rl:{{{tenant}}}:tenant"))
        if subject.api_key_id:
            scoped.append((PER_API_KEY, f"rl:{{{tenant}}}:key:{_safe(subject.api_key_id)}"))
        if subject.user_id:
            scoped.append((PER_USER, f"rl:{{{tenant}}}:user:{_safe(subject.user_id)}"))
    checks = []
    for name, key in scoped:
        policy = limits.policies.get(name)
        if policy is None:
            continue
        if limits.shadow and not policy.shadow:
            policy = replace(policy, shadow=True)
        checks.append(PolicyCheck(key, policy))
    return checks


_POLICY_FIELDS = {"limit", "period", "strategy", "burst", "shadow", "enabled"}


def parse_limits(
    raw: Mapping[str, Any] | None, base: LimitSet = DEFAULT_LIMITS, field: str = "rate_limits"
) -> LimitSet:
    """Validate a `rate_limits` settings dict and lay it over `base`.

    Schema (every key optional; see docs/usage.md)::

        {"shadow": false,
         "per_address": {"limit": 100, "period": 60, "strategy": "gcra", "burst": 100,
                         "shadow": false, "enabled": true},
         "per_tenant": {...}, "per_api_key": {...}, "per_user": {...}}

    Fields a policy leaves out come from `base` (or limit 100, period 60 s, gcra);
    `"enabled": false` or null switches a policy off. Raises InvalidArgument naming the
    offending field.
    """
    if not raw:
        return base
    if not isinstance(raw, Mapping):
        raise InvalidArgument(field, f"{field} must be an object")
    unknown = set(raw) - {*POLICY_NAMES, "shadow"}
    if unknown:
        raise InvalidArgument(field, f"{field} has unknown keys: {', '.join(sorted(unknown))}")
    shadow = _bool(raw.get("shadow", base.shadow), f"{field}.shadow")
    policies = dict(base.policies)
    overridden = set(base.overridden)
    for name in POLICY_NAMES:
        if name not in raw:
            continue
        overridden.add(name)
        parsed = _parse_policy(name, raw[name], base.policies.get(name), f"{field}.{name}")
        if parsed is None:
            policies.pop(name, None)
        else:
            policies[name] = parsed
    return LimitSet(policies, shadow, frozenset(overridden))


def _parse_policy(name: str, raw: Any, base: Policy | None, field: str) -> Policy | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidArgument(field, f"{field} must be an object or null")
    unknown = set(raw) - _POLICY_FIELDS
    if unknown:
        raise InvalidArgument(field, f"{field} has unknown keys: {', '.join(sorted(unknown))}")
    if not _bool(raw.get("enabled", True), f"{field}.enabled"):
        return None
    base = base or Policy(name, 100, 60.0)
    limit = _int(raw.get("limit", base.limit), f"{field}.limit", 1, MAX_LIMIT)
    period = raw.get("period", base.period)
    if isinstance(period, bool) or not isinstance(period, int | float) or not MIN_PERIOD <= period <= MAX_PERIOD:
        raise InvalidArgument(f"{field}.period", f"{field}.period must be {MIN_PERIOD:g}..{MAX_PERIOD:g} seconds")
    try:
        strategy = Strategy(raw.get("strategy", base.strategy))
    except ValueError:
        choices = ", ".join(s.value for s in Strategy)
        raise InvalidArgument(f"{field}.strategy", f"{field}.strategy must be one of {choices}") from None
    inherited = base.burst if "limit" not in raw and strategy is base.strategy else 0
    burst = _int(raw.get("burst", inherited), f"{field}.burst", 0, MAX_LIMIT)
    if burst and strategy is not Strategy.GCRA:
        raise InvalidArgument(f"{field}.burst", f"{field}.burst applies to the gcra strategy only")
    if period * US / limit < 1:
        raise InvalidArgument(f"{field}.limit", f"{field}: {limit} per {period:g} s is more than one per microsecond")
    shadow = _bool(raw.get("shadow", base.shadow), f"{field}.shadow")
    return Policy(name, limit, float(period), strategy, burst, shadow)


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(field, f"{field} must be true or false")
    return value


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(field, f"{field} must be an integer {low}..{high}")
    return value
