"""Credential + request -> Decision: the path shared by ext_authz Check and
ExplainDecision (the gRPC API's interceptor authenticates the same way and decides
with the same `domain.decision.decide`).

Never raises for a bad credential or an unreachable store: those are decisions too
(401, or 503 when the decision cannot be made: fail closed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tahoe_auth.authz.authenticator import Authenticator
from tahoe_auth.domain import decision
from tahoe_auth.domain.errors import Unauthenticated, Unavailable

log = logging.getLogger(__name__)

NO_CREDENTIAL_MESSAGE = "send `authorization: Bearer <access token | API key | service token>`"
INVALID_MESSAGE = "credential is invalid, expired or revoked"
UNAVAILABLE_MESSAGE = "authorization is temporarily unavailable; retry shortly"


@dataclass(frozen=True)
class AccessRequest:
    """What is asked: a credential (without `Bearer `) and what the route requires."""

    credential: str
    required_permission: str = ""
    resource_tenant: str = ""
    upstream: str = ""


def bearer_credential(authorization: str) -> str:
    """The credential of an `authorization: Bearer <credential>` header, else ""."""
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return credential.strip()


class AccessEvaluator:
    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    def evaluate(self, request: AccessRequest) -> decision.Decision:
        if not request.credential:
            return decision.unauthenticated(decision.NO_CREDENTIAL, NO_CREDENTIAL_MESSAGE)
        try:
            principal = self._authenticator.authenticate(request.credential)
        except Unauthenticated as exc:
            detail = getattr(exc, "detail", "") or exc.message
            return decision.unauthenticated(decision.INVALID_TOKEN, INVALID_MESSAGE, detail)
        except Unavailable as exc:  # store.kv.StoreUnavailable too
            # Fail closed: without the database or Redis the credential cannot be
            # judged, and a guess in either direction is wrong.
            detail = getattr(exc, "detail", "") or exc.message
            return decision.Decision(False, decision.UNAVAILABLE, UNAVAILABLE_MESSAGE, detail=detail)
        return decision.decide(principal, request.required_permission, request.resource_tenant, tenant_required=True)
