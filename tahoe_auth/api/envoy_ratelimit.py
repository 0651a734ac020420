"""Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService`) served by
the same limiter, for teams that already use Envoy's `envoy.filters.http.ratelimit`.

Descriptors map onto the limiter in two ways:
  - entries named `remote_address`, `tenant_id`, `api_key_id`, `user_id` form a
    RateLimitSubject: the tenant's own policies apply (settings.rate_limits over the
    defaults), exactly as in Check;
  - a descriptor carrying a `limit` override (`requests_per_unit` per `unit`) is a
    fixed window of that size, keyed by the domain and all of its entries (in the
    `{<tenant_id>}` hash tag when it has a tenant_id entry, else `{global}`).
Descriptors that match neither are not limited. All descriptors of a request are
evaluated in one Redis call and counted all or nothing; `hits_addend` is the cost.
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import duration_pb2

from tahoe_auth.authz.ratelimit import RateLimiter
from tahoe_auth.domain.crypto import sha256_hex
from tahoe_auth.domain.ratelimit import US, Outcome, Policy, PolicyCheck, RateLimitSubject, Strategy

SUBJECT_KEYS = {"remote_address", "tenant_id", "api_key_id", "user_id"}
RateLimit = rls_pb2.RateLimitResponse.RateLimit
UNIT_SECONDS = {
    RateLimit.SECOND: 1.0,
    RateLimit.MINUTE: 60.0,
    RateLimit.HOUR: 3600.0,
    RateLimit.DAY: 86400.0,
    RateLimit.WEEK: 7 * 86400.0,
    RateLimit.MONTH: 30 * 86400.0,
    RateLimit.YEAR: 365 * 86400.0,
}
SECONDS_UNIT = sorted(((seconds, unit) for unit, seconds in UNIT_SECONDS.items()), reverse=True)


class EnvoyRateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        groups = [self._checks(request.domain, descriptor) for descriptor in request.descriptors]
        checks = [check for group in groups for check in group]
        decision = self._limiter.check_policies(checks, max(1, request.hits_addend or 1))
        outcomes = dict(zip((c.key for c in checks), (o for _, o in decision.outcomes), strict=False))
        statuses = [_status([(c, outcomes[c.key]) for c in group if c.key in outcomes]) for group in groups]
        code = rls_pb2.RateLimitResponse.OK if decision.allowed else rls_pb2.RateLimitResponse.OVER_LIMIT
        return rls_pb2.RateLimitResponse(overall_code=code, statuses=statuses)

    def _checks(self, domain: str, descriptor: Any) -> list[PolicyCheck]:
        entries = {e.key: e.value for e in descriptor.entries}
        if descriptor.HasField("limit"):
            limit = descriptor.limit
            seconds = UNIT_SECONDS.get(limit.unit)
            if seconds is None or limit.requests_per_unit <= 0:
                return []
            scope = entries.get("tenant_id", "").replace("{", "_").replace("}", "_") or "global"
            digest = sha256_hex(domain + "\n" + "\n".join(f"{k}={v}" for k, v in sorted(entries.items())))[:32]
            name = f"envoy:{domain}"
            policy = Policy(name, limit.requests_per_unit, seconds, Strategy.FIXED_WINDOW)
            return [PolicyCheck(f"rl:{{{scope}}}:envoy:{digest}", policy)]
        if not SUBJECT_KEYS & set(entries):
            return []
        subject = RateLimitSubject(
            client_address=entries.get("remote_address", ""),
            tenant_id=entries.get("tenant_id", ""),
            api_key_id=entries.get("api_key_id", ""),
            user_id=entries.get("user_id", ""),
        )
        return self._limiter.checks_for(subject)


def _status(pairs: list[tuple[PolicyCheck, Outcome]]) -> rls_pb2.RateLimitResponse.DescriptorStatus:
    if not pairs:
        return rls_pb2.RateLimitResponse.DescriptorStatus(code=rls_pb2.RateLimitResponse.OK)
    enforced = [(c, o) for c, o in pairs if not c.policy.shadow] or pairs
    denied = [(c, o) for c, o in enforced if not o.allowed]
    check, outcome = (
        max(denied, key=lambda p: p[1].retry_us)
        if denied
        else min(enforced, key=lambda p: p[1].remaining / p[0].policy.limit)
    )
    over = bool(denied) and not check.policy.shadow
    return rls_pb2.RateLimitResponse.DescriptorStatus(
        code=rls_pb2.RateLimitResponse.OVER_LIMIT if over else rls_pb2.RateLimitResponse.OK,
        current_limit=RateLimit(
            name=check.policy.name, requests_per_unit=check.policy.limit, unit=_unit(check.policy.period)
        ),
        limit_remaining=outcome.remaining,
        duration_until_reset=duration_pb2.Duration(seconds=-(-outcome.reset_us // US)),
    )


def _unit(period: float) -> int:
    """The largest unit that fits the period (Envoy's headers only know these units)."""
    for seconds, unit in SECONDS_UNIT:
        if period >= seconds:
            return int(unit)
    return int(RateLimit.SECOND)
