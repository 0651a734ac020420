"""DecisionService: validate, convert, call the explainer, convert back."""

from __future__ import annotations

import grpc

from tahoe_auth.api import convert
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.authz import upstream
from tahoe_auth.authz.access import AccessRequest, bearer_credential
from tahoe_auth.authz.explain import DecisionExplainer
from tahoe_auth.domain import permissions
from tahoe_auth.v1 import decision_pb2, decision_pb2_grpc


class DecisionServicer(decision_pb2_grpc.DecisionServiceServicer):
    def __init__(self, explainer: DecisionExplainer) -> None:
        self._explainer = explainer

    def ExplainDecision(
        self, request: decision_pb2.ExplainDecisionRequest, context: grpc.ServicerContext
    ) -> decision_pb2.ExplainDecisionResponse:
        ctx = current_call()
        caller = ctx.require_principal()
        if request.required_permission:
            permissions.parse(request.required_permission, "required_permission")
        own = not request.credential
        credential = request.credential.strip()
        if own:
            credential = bearer_credential(dict(context.invocation_metadata()).get("authorization", ""))
        explanation = self._explainer.explain(
            caller,
            AccessRequest(
                credential=credential,
                required_permission=request.required_permission,
                resource_tenant=request.resource_tenant_id,
                upstream=request.upstream or upstream.DEFAULT_AUDIENCE,
            ),
            own=own,
        )
        outcome = explanation.decision
        return decision_pb2.ExplainDecisionResponse(
            allowed=outcome.allowed,
            reason=outcome.reason,
            message=outcome.message,
            http_status=outcome.http_status,
            credential=outcome.principal.credential if outcome.principal else "",
            principal=convert.principal(outcome.principal) if outcome.principal else None,
            required_permission=request.required_permission,
            rule=outcome.rule,
            upstream_headers=explanation.upstream_headers,
            detail=explanation.detail,
        )
