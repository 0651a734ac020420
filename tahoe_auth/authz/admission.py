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

`check_hook` applies all of it to ext_authz Check as a post-decision hook. Every
request Check decides is counted by the limiter and answered with its `ratelimit-*`
headers, whatever the answer (200, 401, 403, 404 or the 429 itself):
- allowed requests are admitted as above (429 when refused);
- requests refused for their credential (401) count against the per-address limit
  only, so a flood of guessed credentials from one address turns from 401s into 429s;
- requests refused for an authenticated principal (403, 404) count against that
  principal's rate limits like an allowed request (no quota check, nothing metered),
  so probing other tenants' ids or forbidden routes is limited like any traffic, and
  the headers describe the same policies as the principal's allowed responses.
Only a 503 (the decision could not be made) carries none: nothing was counted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tahoe_auth.authz.check import CheckContext, CheckOutcome
from tahoe_auth.authz.ratelimit import RateLimiter
from tahoe_auth.domain import decision, ratelimit, reasons
from tahoe_auth.domain.dashboards import credential_label
from tahoe_auth.domain.principal import API_KEY, USER
from tahoe_auth.domain.ratelimit import RateLimitDecision, RateLimitSubject
from tahoe_auth.domain.usage import API_REQUESTS, QuotaDecision, quota_denial_body, quota_headers
from tahoe_auth.services.quotas import Quotas
from tahoe_auth.services.usage_recorder import UsageRecorder

RATE_LIMITED = decision.RATE_LIMITED
QUOTA_EXCEEDED = decision.QUOTA_EXCEEDED
_UNAUTHENTICATED = (decision.NO_CREDENTIAL, decision.INVALID_TOKEN)


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
        return reasons.REASONS[decision.ALLOW if self.allowed else self.reason].http_status


MAX_REMEMBERED_SUBJECTS = 50_000


class AdmissionControl:
    def __init__(self, limiter: RateLimiter, quotas: Quotas, recorder: UsageRecorder) -> None:
        self._limiter = limiter
        self._quotas = quotas
        self._recorder = recorder
        # The rate-limit subject of each (tenant, address, subject type, subject), built
        # once: a plain tuple hashes faster than the dataclass is built and hashed.
        # Subjects hold no policy (the limiter looks limits up on every check), so
        # nothing here goes stale when a tenant's settings change.
        self._subjects: dict[tuple[str, str, str, str], RateLimitSubject] = {}

    def admit(
        self,
        *,
        tenant_id: str,
        client_address: str,
        subject_type: str,
        subject_id: str,
        route: str,
        credential: str = "",
    ) -> Admission:
        quota = self._quotas.check(tenant_id, API_REQUESTS) if tenant_id else None
        if quota is not None and not quota.allowed:
            return Admission(False, quota_headers(quota), quota_denial_body(quota), QUOTA_EXCEEDED, quota=quota)
        admission = self._rate_limit(tenant_id, client_address, subject_type, subject_id, quota)
        if admission.allowed and tenant_id:
            self._recorder.record_request(tenant_id, route, subject_type, credential)
        return admission

    def count_refused(self, *, tenant_id: str, client_address: str, subject_type: str, subject_id: str) -> Admission:
        """A request already refused for its principal (403, 404): it takes from the
        principal's rate limits like any other, and is not metered. Its quota is not
        checked: the request would not be served anyway. `allowed` = not rate limited."""
        return self._rate_limit(tenant_id, client_address, subject_type, subject_id, None)

    def _rate_limit(
        self, tenant_id: str, client_address: str, subject_type: str, subject_id: str, quota: QuotaDecision | None
    ) -> Admission:
        key = (tenant_id, client_address, subject_type, subject_id)
        subject = self._subjects.get(key)
        if subject is None:
            subject = RateLimitSubject(
                client_address=client_address,
                tenant_id=tenant_id,
                api_key_id=subject_id if subject_type == API_KEY else "",
                user_id=subject_id if subject_type == USER else "",
            )
            if len(self._subjects) >= MAX_REMEMBERED_SUBJECTS:
                self._subjects.clear()
            self._subjects[key] = subject
        rate = self._limiter.check(subject)
        headers = ratelimit.headers(rate)
        if not rate.allowed:
            return Admission(False, headers, ratelimit.denial_body(rate), RATE_LIMITED, rate, quota)
        return Admission(True, headers, None, "", rate, quota)

    def admit_anonymous(self, client_address: str) -> Admission:
        """Before authentication (or for a 401): the global per-address limit only."""
        return self.admit(tenant_id="", client_address=client_address, subject_type="", subject_id="", route="")

    def check_hook(self, context: CheckContext, outcome: CheckOutcome) -> CheckOutcome:
        """Every decided request is counted and gets `ratelimit-*` headers (module
        docstring). Returns a new outcome (the 429 is a `rate_limited` or
        `quota_exceeded` decision), or the same one when there is nothing to add."""
        principal = outcome.decision.principal
        if outcome.decision.reason == decision.UNAVAILABLE:
            return outcome  # no decision was made: nothing to count (Redis may be why)
        if principal is None or outcome.decision.reason in _UNAUTHENTICATED:
            admission = self.admit_anonymous(context.client_address)
        elif outcome.allowed:
            admission = self.admit(
                tenant_id=principal.tenant_id,
                client_address=context.client_address,
                subject_type=principal.subject_type,
                subject_id=principal.subject,
                route=context.route,
                credential=credential_label(principal.credential, principal.subject_type, principal.subject),
            )
        else:
            admission = self.count_refused(
                tenant_id=principal.tenant_id,
                client_address=context.client_address,
                subject_type=principal.subject_type,
                subject_id=principal.subject,
            )
        if admission.allowed and not admission.headers:
            return outcome
        if outcome.response_headers:
            headers = dict(outcome.response_headers)
            headers.update(admission.headers)
        else:
            headers = dict(admission.headers)
        if admission.allowed:
            return outcome.with_response_headers(headers)
        message = (admission.body or {}).get("message", "too many requests")
        refused = dataclasses.replace(outcome.decision, allowed=False, reason=admission.reason, message=message)
        return dataclasses.replace(outcome, decision=refused, response_headers=headers)
