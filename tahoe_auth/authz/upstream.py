"""What an upstream receives for an allowed request: the `x-tahoe-*` headers and the
signed identity token carrying the same facts (`x-tahoe-identity`), and never the
caller's credential (CREDENTIAL_HEADERS are removed).

Identity tokens are ES256 JWTs (`typ: tahoe-id+jwt`) signed with the service's keys,
audience = the upstream's name (Envoy's `upstream` context extension, or
DEFAULT_AUDIENCE). Signing costs ~60 µs, so a token is reused for the same facts and
audience during the first third of its lifetime: an upstream always receives a token
valid for at least two thirds of IDENTITY_TOKEN_TTL.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from tahoe_auth.domain import tokens
from tahoe_auth.domain.decision import Decision
from tahoe_auth.kernel.cache import TTLCache
from tahoe_auth.services.keys import KeyManager

PREFIX = "x-tahoe-"
TENANT_ID = "x-tahoe-tenant-id"
SUBJECT = "x-tahoe-subject"
SUBJECT_TYPE = "x-tahoe-subject-type"
PERMISSIONS = "x-tahoe-permissions"
IDENTITY = "x-tahoe-identity"
SET_HEADERS = (TENANT_ID, SUBJECT, SUBJECT_TYPE, PERMISSIONS, IDENTITY)
CREDENTIAL_HEADERS = ("authorization",)
"""Removed from every allowed request, whatever the Envoy config: Check has read the
caller's credential (access token, API key, service token); no upstream receives it."""

DEFAULT_AUDIENCE = "tahoe-upstream"
REUSE_FRACTION = 1 / 3


@dataclass(frozen=True)
class UpstreamFacts:
    """The verified facts of an allowed decision, as upstreams see them."""

    tenant_id: str
    subject: str
    subject_type: str
    permissions: tuple[str, ...]

    def headers(self) -> dict[str, str]:
        return {
            TENANT_ID: self.tenant_id,
            SUBJECT: self.subject,
            SUBJECT_TYPE: self.subject_type,
            PERMISSIONS: " ".join(self.permissions),
        }


def facts_for(outcome: Decision, resource_tenant: str = "") -> UpstreamFacts:
    """Permissions: the grants relevant to the route's required permission (what the
    decision rested on); for routes that require none, every grant the principal
    holds, so that the upstream can make finer decisions itself. A platform-scoped
    principal acts in the tenant the route names."""
    principal = outcome.principal
    assert principal is not None and outcome.allowed
    if outcome.permission:
        if principal.platform_admin:
            permissions: tuple[str, ...] = (outcome.permission,)
        else:
            permissions = tuple(principal.permissions.relevant_to(outcome.permission))
    else:
        permissions = tuple(principal.permissions)
    return UpstreamFacts(
        tenant_id=principal.tenant_id or resource_tenant,
        subject=principal.subject,
        subject_type=principal.subject_type,
        permissions=permissions,
    )


class IdentityTokens:
    """Mints `x-tahoe-identity` tokens, reusing one per (facts, audience) for a while."""

    def __init__(self, keys: KeyManager, issuer: str, ttl: int, max_entries: int = 50_000) -> None:
        self._keys = keys
        self._issuer = issuer
        self._ttl = ttl
        self.cache: TTLCache[tuple[UpstreamFacts, str], str] = TTLCache(max_entries)

    @property
    def ttl(self) -> int:
        return self._ttl

    def token_for(self, facts: UpstreamFacts, audience: str) -> str:
        key = (facts, audience)
        token = self.cache.get(key)
        if token is not None:
            return token
        now = int(time.time())
        claims = tokens.IdentityClaims(
            issuer=self._issuer,
            audience=audience,
            tenant_id=facts.tenant_id,
            subject=facts.subject,
            subject_type=facts.subject_type,
            permissions=facts.permissions,
            issued_at=now,
            expires_at=now + self._ttl,
            token_id=uuid.uuid4().hex,
        )
        token = tokens.issue_identity_token(self._keys.ring(), claims)
        self.cache.put(key, token, now + self._ttl * REUSE_FRACTION)
        return token

    def clear(self) -> None:
        self.cache.clear()
