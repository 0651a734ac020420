"""The ext_authz Check use case, free of protobuf: a request as Envoy describes it
-> decision -> post-decision hooks -> what Envoy should do (api/ext_authz.py turns
it into a CheckResponse).

Post-decision hooks run in order after the decision, on every request (also when
the decision itself was reused). The outcome is immutable: a hook returns it
unchanged, or a new one (`dataclasses.replace`) that may turn an allow into a denial
(a rate limiter answering 429 returns a `rate_limited` decision: the HTTP status
always follows the decision's reason, domain/reasons.py) and may add headers to the
client's response (`response_headers`, e.g. `ratelimit-*`). They see the
CheckContext: credential, route requirements and name, client address, request id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from tahoe_auth.authz import upstream
from tahoe_auth.authz.access import AccessEvaluator, AccessRequest
from tahoe_auth.domain import decision
from tahoe_auth.kernel import logs
from tahoe_auth.kernel.cache import TTLCache
from tahoe_auth.kernel.changes import CacheTrust

log = logging.getLogger("tahoe_auth.ext_authz")


@dataclass(slots=True)
class CheckContext:
    """The request as Envoy describes it, in the terms our decision uses."""

    access: AccessRequest
    request_id: str = ""
    method: str = ""
    path: str = ""
    # The route's stable name (context extension `route`; default: the upstream's name),
    # for limits and usage by route without the cardinality of raw paths.
    route: str = ""
    # The downstream peer as Envoy saw it (for per-address limits).
    client_address: str = ""
    # Names of x-tahoe-* headers the client sent (removed before the upstream).
    client_tahoe_headers: tuple[str, ...] = ()


NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def _no_headers() -> Mapping[str, str]:
    return NO_HEADERS  # shared and read-only: no allocation per outcome


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """What Envoy should do. Frozen: hooks return a new one (`dataclasses.replace`),
    with new header mappings rather than changed ones."""

    decision: decision.Decision
    # Headers added to the client's response, allowed or denied (e.g. rate limits).
    response_headers: Mapping[str, str] = field(default_factory=_no_headers)
    # For allowed requests: headers set on the upstream request (overwrite), and
    # headers removed from it: the credential (upstream.CREDENTIAL_HEADERS), always,
    # and client-sent x-tahoe-* ones that are not overwritten.
    upstream_headers: Mapping[str, str] = field(default_factory=_no_headers)
    remove_headers: tuple[str, ...] = ()
    # For an allow reused from the decision cache: a scratch space the transports keep
    # the response they built from it in, so that it is built once per cached decision
    # (upstream and remove headers cannot change within one) and dropped with it.
    memo: dict[str, object] | None = field(default=None, compare=False)

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    def with_response_headers(self, headers: Mapping[str, str]) -> CheckOutcome:
        """This outcome with other client response headers: `dataclasses.replace`,
        at a fraction of its cost (hooks call it on every Check)."""
        return CheckOutcome(self.decision, headers, self.upstream_headers, self.remove_headers, self.memo)

    @property
    def http_status(self) -> int:
        """The decision's, from its reason's row: never set separately."""
        return self.decision.http_status


PostDecisionHook = Callable[[CheckContext, CheckOutcome], CheckOutcome]


class DenialRecorder(Protocol):
    """Where denials go besides the sampled log: the aggregated audit trail
    (services/denials.py), in memory on the hot path."""

    def record(self, tenant_id: str, reason: str, route: str) -> None: ...


def resource_tenant(path: str, prefix: str) -> str:
    """The path segment right after `prefix` (`/v1/tenants/{tenant}/…`), else ""."""
    if not prefix or not path.startswith(prefix):
        return ""
    return path[len(prefix) :].split("/", 1)[0].split("?", 1)[0]


DECISION_TTL = 0.5
"""How long an allowed decision (with its upstream headers) is reused for the same
credential and route. Any change notification clears them all at once; this bound
only covers a Check racing with a notification, and keeps every revocation well
within the one second the contract allows."""


@dataclass(frozen=True, slots=True)
class _Allowed:
    decision: decision.Decision
    # Read-only: shared by every outcome that reuses this decision (no copy per Check).
    upstream_headers: Mapping[str, str]
    remove_headers: tuple[str, ...]
    memo: dict[str, object] = field(default_factory=dict)


class Gatekeeper:
    def __init__(
        self,
        evaluator: AccessEvaluator,
        identity: upstream.IdentityTokens,
        trust: CacheTrust,
        hooks: Sequence[PostDecisionHook] = (),
        denials: DenialRecorder | None = None,
        max_entries: int = 100_000,
    ) -> None:
        self._evaluator = evaluator
        self._identity = identity
        self._trust = trust
        self.hooks: list[PostDecisionHook] = list(hooks)
        self._denial_log = logs.SampledLog(log)
        self._audit = denials
        self.decisions: TTLCache[tuple[AccessRequest, tuple[str, ...]], _Allowed] = TTLCache(max_entries)

    def apply_change(self, channel: str, message: str) -> None:
        """Any change to credentials, sessions, users, roles or tenants: decide afresh."""
        self.decisions.clear()

    @property
    def identity_ttl(self) -> int:
        return self._identity.ttl

    def check(self, context: CheckContext) -> CheckOutcome:
        result = self._decide(context)
        for hook in self.hooks:
            result = hook(context, result)
        if not result.allowed:
            self._log_denial(context, result)
        return result

    def has_cached_decision(self, context: CheckContext) -> bool:
        """Whether `check` would reuse a decision (no I/O but the hooks' own)."""
        return self._trust.caches_trusted() and self.decisions.holds((context.access, context.client_tahoe_headers))

    def _decide(self, context: CheckContext) -> CheckOutcome:
        key = (context.access, context.client_tahoe_headers)
        # While notifications might be missed, nothing cached is trusted (as in the Authenticator).
        applied = self._trust.changes_applied()
        trusted = self._trust.caches_trusted()
        cached = self.decisions.get(key) if trusted else None
        if cached is not None:
            return CheckOutcome(
                cached.decision, NO_HEADERS, cached.upstream_headers, cached.remove_headers, cached.memo
            )
        outcome = self._evaluator.evaluate(context.access)
        if not outcome.allowed:
            return CheckOutcome(outcome)
        access = context.access
        facts = upstream.facts_for(outcome, access.resource_tenant)
        headers = facts.headers()
        headers[upstream.IDENTITY] = self._identity.token_for(facts, access.upstream or upstream.DEFAULT_AUDIENCE)
        strays = tuple(name for name in context.client_tahoe_headers if name not in headers)
        remove = upstream.CREDENTIAL_HEADERS + strays
        if trusted and self._trust.changes_applied() == applied:
            expires = time.time() + DECISION_TTL
            if outcome.principal is not None and outcome.principal.expires_at is not None:
                expires = min(expires, outcome.principal.expires_at)
            self.decisions.put(key, _Allowed(outcome, MappingProxyType(dict(headers)), remove), expires)
        return CheckOutcome(outcome, NO_HEADERS, headers, remove)

    def _log_denial(self, context: CheckContext, result: CheckOutcome) -> None:
        d = result.decision
        status = result.http_status
        principal = d.principal
        if self._audit is not None:
            self._audit.record(principal.tenant_id if principal else "", d.reason, context.route)
        self._denial_log.log(
            logging.ERROR if status >= 500 else logging.INFO,
            d.reason,
            "denied %s %s: %s %s",
            context.method,
            context.path,
            status,
            d.reason,
            extra={
                "detail": d.detail,
                "required_permission": context.access.required_permission,
                "upstream": context.access.upstream,
                "credential": principal.credential if principal else "",
                "principal": f"{principal.tenant_id}/{principal.subject_type}:{principal.subject}" if principal else "",
            },
        )
