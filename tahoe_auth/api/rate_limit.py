"""The gRPC API's own rate limits: the `RateLimit` step of the interceptor chain.

Runs before authentication, so it needs nothing but the client address (the peer's, or
the one a trusted proxy forwarded: api/forwarded.py) and, for Login,
the account named in the request. Which methods are limited, and by what, is one table
(`METHOD_LIMITS`): Login per client address and per account (tenant + email, hashed),
Refresh, IssueServiceToken and AcceptInvitation per client address; the browser
session methods like Login and Refresh. Authenticated
methods are not limited here (their callers are known; Check limits traffic through
Envoy per tenant). All keys sit in `{global}`:
one Redis call, one hash slot. Over a limit: RESOURCE_EXHAUSTED / RATE_LIMITED with
RetryInfo and a QuotaFailure naming the policy (api/errors.py). Failed-login throttling
(services/throttle.py) is separate and still applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from tahoe_auth.api.interceptors import Call
from tahoe_auth.authz.ratelimit import RateLimiter
from tahoe_auth.domain.crypto import sha256_hex
from tahoe_auth.domain.errors import RateLimited
from tahoe_auth.domain.ratelimit import Policy, PolicyCheck, RateLimitDecision, Strategy

AUTH = "/tahoe_auth.v1.AuthService/"
BROWSER = "/tahoe_auth.v1.BrowserSessionService/"
ACCOUNT = "/tahoe_auth.v1.AccountService/"

LOGIN_PER_ADDRESS = Policy("login_per_address", 60, 60.0, Strategy.GCRA)
LOGIN_PER_ACCOUNT = Policy("login_per_account", 10, 60.0, Strategy.GCRA)
REFRESH_PER_ADDRESS = Policy("refresh_per_address", 600, 60.0, Strategy.GCRA)
# Both exchange a secret (invitation token, client secret) without a prior credential:
# the same guessing surface as Login, so limited per address too.
INVITATION_PER_ADDRESS = Policy("accept_invitation_per_address", 30, 60.0, Strategy.GCRA)
SERVICE_TOKEN_PER_ADDRESS = Policy("service_token_per_address", 600, 60.0, Strategy.GCRA)
# Answers to MFA challenges and passwordless starts: guesses at a code (the challenge and
# the user count them too, services/mfa.py), so per address like Login.
MFA_PER_ADDRESS = Policy("mfa_per_address", 60, 60.0, Strategy.GCRA)

# "Forgot password" mails a link: per address, and per account named (alike whether or
# not it exists, so the limit says nothing about which accounts do). Following a
# mailed link spends a token: guesses per address, like an invitation's.
PASSWORD_RESET_PER_ADDRESS = Policy("password_reset_per_address", 10, 60.0, Strategy.GCRA)
PASSWORD_RESET_PER_ACCOUNT = Policy("password_reset_per_account", 3, 900.0, Strategy.GCRA)
LINK_PER_ADDRESS = Policy("mailed_link_per_address", 30, 60.0, Strategy.GCRA)

# method -> policies; a policy whose name ends in `_per_account` counts per account named
# in the request (its `tenant` and `email`: Login's, RequestPasswordReset's).
METHOD_LIMITS: Mapping[str, tuple[Policy, ...]] = {
    AUTH + "Login": (LOGIN_PER_ADDRESS, LOGIN_PER_ACCOUNT),
    AUTH + "Refresh": (REFRESH_PER_ADDRESS,),
    # The browser's Login and Refresh count in the same buckets as the API's (same
    # keys): two doors to one password check must not double a guesser's budget.
    # Logout spends no secret but reads the store without a credential: Refresh's.
    BROWSER + "BrowserLogin": (LOGIN_PER_ADDRESS, LOGIN_PER_ACCOUNT),
    BROWSER + "BrowserRefresh": (REFRESH_PER_ADDRESS,),
    BROWSER + "BrowserLogout": (REFRESH_PER_ADDRESS,),
    AUTH + "IssueServiceToken": (SERVICE_TOKEN_PER_ADDRESS,),
    AUTH + "VerifyMfa": (MFA_PER_ADDRESS,),
    AUTH + "BeginPasskeySignIn": (MFA_PER_ADDRESS,),
    BROWSER + "BrowserVerifyMfa": (MFA_PER_ADDRESS,),
    "/tahoe_auth.v1.TenantService/AcceptInvitation": (INVITATION_PER_ADDRESS,),
    ACCOUNT + "RequestPasswordReset": (PASSWORD_RESET_PER_ADDRESS, PASSWORD_RESET_PER_ACCOUNT),
    ACCOUNT + "ResetPasswordWithToken": (LINK_PER_ADDRESS,),
    ACCOUNT + "VerifyEmail": (LINK_PER_ADDRESS,),
}


class RateLimit:
    def __init__(self, limiter: RateLimiter, limits: Mapping[str, tuple[Policy, ...]] = METHOD_LIMITS) -> None:
        self._limiter = limiter
        self._limits = limits

    def checks(self, call: Call) -> list[PolicyCheck]:
        policies = self._limits.get(call.method, ())
        if not policies:
            return []
        address = call.address().replace("{", "_").replace("}", "_")
        checks = []
        for policy in policies:
            if policy.name.endswith("_per_account"):
                request = call.request
                if request is None:
                    continue
                account = sha256_hex(f"{request.tenant.strip().lower()}\n{request.email.strip().lower()}")
                checks.append(PolicyCheck(f"rl:{{global}}:{policy.name}:{account[:32]}", policy))
            else:
                checks.append(PolicyCheck(f"rl:{{global}}:{policy.name}:{address}", policy))
        return checks

    def __call__(self, call: Call, proceed: Callable[[], Any]) -> Any:
        checks = self.checks(call)
        if not checks:
            return proceed()
        decision = self._limiter.check_policies(checks)
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
