"""ExplainDecision: the decision Check would make, with its reasons, for operators.

Anyone may explain their own credential. Explaining someone else's needs `audit:read`
in that credential's tenant (decided by the same `decide`); a credential of another
tenant is NOT_FOUND. Why a credential is invalid (expired, revoked, unknown key) is
shown to platform administrators only: it says more than callers should learn.
"""

from __future__ import annotations

from dataclasses import dataclass

from tahoe_auth.authz import upstream
from tahoe_auth.authz.access import AccessEvaluator, AccessRequest
from tahoe_auth.domain import decision
from tahoe_auth.domain.errors import NotFound, PermissionDenied
from tahoe_auth.domain.principal import Principal

EXPLAIN_PERMISSION = "audit:read"


@dataclass(frozen=True)
class Explanation:
    decision: decision.Decision
    upstream_headers: dict[str, str]
    detail: str


class DecisionExplainer:
    def __init__(self, evaluator: AccessEvaluator) -> None:
        self._evaluator = evaluator

    def explain(self, caller: Principal, request: AccessRequest, *, own: bool) -> Explanation:
        if not own and not caller.platform_admin:
            allowed = decision.decide(caller, EXPLAIN_PERMISSION)
            if not allowed.allowed:
                raise PermissionDenied(
                    f"explaining another credential needs {EXPLAIN_PERMISSION}", permission=EXPLAIN_PERMISSION
                )
        outcome = self._evaluator.evaluate(request)
        subject = outcome.principal
        if not own and not caller.platform_admin and subject is not None and subject.tenant_id != caller.tenant_id:
            raise NotFound("credential")
        headers = upstream.facts_for(outcome, request.resource_tenant).headers() if outcome.allowed else {}
        return Explanation(outcome, headers, outcome.detail if caller.platform_admin else "")
