"""The gRPC API's own rate limits: the `RateLimit` step of the interceptor chain.

Runs before authentication, so it needs nothing but the peer address and, for Login,
the account named in the request. Every method (health checks excepted) counts against
`api_per_address`; Login also counts against `login_per_address` and
`login_per_account` (tenant + email, hashed). All keys sit in `{global}`: one Redis
call, one hash slot. Over a limit: RESOURCE_EXHAUSTED / RATE_LIMITED with RetryInfo
and a QuotaFailure naming the policy (api/errors.py). Failed-login throttling
(services/throttle.py) is separate and still applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tahoe_auth.api.interceptors import Call, client_address
from tahoe_auth.authz.ratelimit import RateLimiter
from tahoe_auth.domain.crypto import sha256_hex
from tahoe_auth.domain.errors import RateLimited
from tahoe_auth.domain.ratelimit import Policy, PolicyCheck, RateLimitDecision, Strategy

LOGIN = "/tahoe_auth.v1.AuthService/Login"


API_PER_ADDRESS = Policy("api_per_address", 600, 60.0, Strategy.GCRA)
LOGIN_PER_ADDRESS = Policy("login_per_address", 60, 60.0, Strategy.GCRA)
LOGIN_PER_ACCOUNT = Policy("login_per_account", 10, 60.0, Strategy.GCRA)


@dataclass(frozen=True)
class ApiLimits:
    per_address: Policy = API_PER_ADDRESS
    login_per_address: Policy = LOGIN_PER_ADDRESS
    login_per_account: Policy = LOGIN_PER_ACCOUNT


class RateLimit:
    def __init__(self, limiter: RateLimiter, limits: ApiLimits | None = None) -> None:
        self._limiter = limiter
        self._limits = limits or ApiLimits()

    def checks(self, call: Call) -> list[PolicyCheck]:
        address = client_address(call.context.peer()).replace("{", "_").replace("}", "_")
        checks = [PolicyCheck(f"rl:{{global}}:api:addr:{address}", self._limits.per_address)]
        if call.method == LOGIN and call.request is not None:
            account = sha256_hex(f"{call.request.tenant.strip().lower()}\n{call.request.email.strip().lower()}")
            checks.append(PolicyCheck(f"rl:{{global}}:login:addr:{address}", self._limits.login_per_address))
            checks.append(PolicyCheck(f"rl:{{global}}:login:acct:{account[:32]}", self._limits.login_per_account))
        return checks

    def __call__(self, call: Call, proceed: Callable[[], Any]) -> Any:
        if not call.policy.log_calls:  # health checks: never limited
            return proceed()
        decision = self._limiter.check_policies(self.checks(call))
        if not decision.allowed:
            seconds = max(1, math.ceil(decision.retry_after))
            raise RateLimited(
                f"rate limit {decision.policy} exceeded ({decision.limit} per {_period(decision)}); "
                f"retry in {seconds} s",
                decision.retry_after,
                quota=decision.policy,
                policy=decision.policy,
            )
        return proceed()


def _period(decision: RateLimitDecision) -> str:
    for check, _ in decision.outcomes:
        if check.policy.name == decision.policy:
            return f"{check.policy.period:g} s"
    return "period"
