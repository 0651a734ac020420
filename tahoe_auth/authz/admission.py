"""Limits and metering for one request through Envoy, in the order Check needs them:

    admission = app.admission.admit(tenant_id=..., client_address=..., subject_type=...,
                                    subject_id=..., route=...)
    if not admission.allowed: deny 429 with admission.headers and json.dumps(admission.body)
    else: allow, adding admission.headers to the response

1. the hard quota of `api.requests` (memory only: Quotas.check);
2. the rate limits (at most one Redis round trip, or the in-memory fallback);
3. if allowed, one `api.requests` event by route and subject type into the in-process
   recorder (flushed every second: no round trip here).
A request denied by its quota costs no Redis call and takes nothing from its rate limits.

`check_hook` applies all of it to ext_authz Check as a post-decision hook: allowed
requests are admitted (429 when refused, `ratelimit-*` headers either way); requests
refused for their credential count against the per-address limit only, so a flood of
guessed credentials from one address turns from 401s into 429s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tahoe_auth.authz.check import CheckContext, CheckOutcome
from tahoe_auth.authz.ratelimit import RateLimiter
from tahoe_auth.domain import decision, ratelimit
from tahoe_auth.domain.principal import API_KEY, USER
from tahoe_auth.domain.ratelimit import RateLimitDecision, RateLimitSubject
from tahoe_auth.domain.usage import API_REQUESTS, QuotaDecision, quota_denial_body, quota_headers
from tahoe_auth.services.quotas import Quotas
from tahoe_auth.services.usage_recorder import UsageRecorder

RATE_LIMITED = decision.RATE_LIMITED
QUOTA_EXCEEDED = decision.QUOTA_EXCEEDED
_UNAUTHENTICATED = (decision.NO_CREDENTIAL, decision.INVALID_CREDENTIAL)


@dataclass(frozen=True)
class Admission:
    allowed: bool
    # For the response either way: ratelimit-limit/-remaining/-reset (+ retry-after on 429).
    headers: list[tuple[str, str]] = field(default_factory=list)
    # The small JSON body of a 429 ({"error", "message"}); None when allowed.
    body: dict[str, str] | None = None
    reason: str = ""
    rate: RateLimitDecision = ratelimit.UNLIMITED
    quota: QuotaDecision | None = None

    @property
    def http_status(self) -> int:
        return 200 if self.allowed else 429


class AdmissionControl:
    def __init__(self, limiter: RateLimiter, quotas: Quotas, recorder: UsageRecorder) -> None:
        self._limiter = limiter
        self._quotas = quotas
        self._recorder = recorder

    def admit(
        self, *, tenant_id: str, client_address: str, subject_type: str, subject_id: str, route: str
    ) -> Admission:
        quota = self._quotas.check(tenant_id, API_REQUESTS) if tenant_id else None
        if quota is not None and not quota.allowed:
            return Admission(False, quota_headers(quota), quota_denial_body(quota), QUOTA_EXCEEDED, quota=quota)
        subject = RateLimitSubject(
            client_address=client_address,
            tenant_id=tenant_id,
            api_key_id=subject_id if subject_type == API_KEY else "",
            user_id=subject_id if subject_type == USER else "",
        )
        rate = self._limiter.check(subject)
        headers = ratelimit.headers(rate)
        if not rate.allowed:
            return Admission(False, headers, ratelimit.denial_body(rate), RATE_LIMITED, rate, quota)
        if tenant_id:
            self._recorder.record_request(tenant_id, route, subject_type)
        return Admission(True, headers, None, "", rate, quota)

    def admit_anonymous(self, client_address: str) -> Admission:
        """Before authentication (or for a 401): the global per-address limit only."""
        return self.admit(tenant_id="", client_address=client_address, subject_type="", subject_id="", route="")

    def check_hook(self, context: CheckContext, outcome: CheckOutcome) -> CheckOutcome:
        principal = outcome.decision.principal
        if outcome.allowed and principal is not None:
            admission = self.admit(
                tenant_id=principal.tenant_id,
                client_address=context.client_address,
                subject_type=principal.subject_type,
                subject_id=principal.subject,
                route=context.route,
            )
        elif outcome.decision.reason in _UNAUTHENTICATED:
            admission = self.admit_anonymous(context.client_address)
        else:
            return outcome
        outcome.response_headers.update(admission.headers)
        if not admission.allowed:
            message = (admission.body or {}).get("message", "too many requests")
            outcome.decision = dataclasses.replace(
                outcome.decision, allowed=False, reason=admission.reason, message=message
            )
            outcome.http_status = admission.http_status
        return outcome
