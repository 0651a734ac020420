"""Turns a bearer credential into a Principal, fast when warm.

Warm path (no SQL, no network): verified-token cache -> session state cache -> subject
facts cache. Caches are dropped by change notifications from any instance and are not
trusted at all while notifications might be missed; then every call takes the cold
path, which reads the database, and fails closed (Unavailable) if it cannot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tahoe_auth.domain import apikeys, tokens
from tahoe_auth.domain.errors import Unauthenticated
from tahoe_auth.domain.mfa import MfaStanding
from tahoe_auth.domain.principal import SERVICE, USER, Principal
from tahoe_auth.kernel import changes
from tahoe_auth.kernel.cache import TTLCache
from tahoe_auth.kernel.changes import CacheTrust
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services.keys import KeyManager
from tahoe_auth.store.directory import Directory, SessionFacts, SubjectFacts

log = logging.getLogger(__name__)

FACTS_MAX_AGE = 300.0
"""Backstop: even without a notification, facts are reloaded after this long."""

SecretResolver = Callable[[apikeys.ParsedSecret], Principal]


class InvalidCredential(Unauthenticated):
    """Any credential that fails verification. `detail` is for logs, never for callers."""

    def __init__(self, detail: str) -> None:
        super().__init__("credential is invalid, expired or revoked")
        self.detail = detail


class Authenticator:
    def __init__(
        self,
        keys: KeyManager,
        directory: Directory,
        trust: CacheTrust,
        clock: Clock,
        *,
        issuer: str,
        audience: str,
        max_entries: int = 100_000,
    ) -> None:
        self._keys = keys
        self._directory = directory
        self._trust = trust
        self._clock = clock
        self._issuer = issuer
        self._audience = audience
        self.tokens: TTLCache[str, tokens.AccessClaims] = TTLCache(max_entries)
        self.sessions: TTLCache[tuple[str, str], SessionFacts] = TTLCache(max_entries)
        self.subjects: TTLCache[tuple[str, str, str], SubjectFacts] = TTLCache(max_entries)
        self._secret_resolvers: dict[str, SecretResolver] = {}
        self._subject_loaders: dict[str, Callable[[str, str], SubjectFacts]] = {USER: directory.user_facts}

    def register_secret(self, kind: str, resolver: SecretResolver) -> None:
        self._secret_resolvers[kind] = resolver

    def register_subject_type(self, subject_type: str, loader: Callable[[str, str], SubjectFacts]) -> None:
        self._subject_loaders[subject_type] = loader

    def authenticate(self, credential: str) -> Principal:
        if apikeys.looks_like_secret(credential):
            return self._authenticate_secret(credential)
        claims = self._verify_jwt(credential)
        return self._principal_for(claims)

    def _authenticate_secret(self, credential: str) -> Principal:
        parsed = apikeys.parse(credential)
        if parsed is None:
            raise InvalidCredential("malformed secret or wrong checksum")
        resolver = self._secret_resolvers.get(parsed.kind)
        if resolver is None:
            raise InvalidCredential(f"secret kind {parsed.kind!r} is not accepted here")
        return resolver(parsed)

    def _verify_jwt(self, token: str) -> tokens.AccessClaims:
        cached = self.tokens.get(token)
        ring = self._keys.ring()
        if cached is not None and cached.key_id in ring.keys:
            return cached  # (a revoked key is no longer in the ring: verify afresh, and fail)
        try:
            claims = tokens.verify_access_token(token, ring, issuer=self._issuer, audience=self._audience)
        except tokens.UnknownKey:
            reloaded = self._keys.ring_for_unknown_kid()
            if reloaded is None:
                raise
            claims = tokens.verify_access_token(token, reloaded, issuer=self._issuer, audience=self._audience)
        self.tokens.put(token, claims, claims.expires_at)
        return claims

    def _principal_for(self, claims: tokens.AccessClaims) -> Principal:
        if claims.session_id and not self._session_active(claims.tenant_id, claims.session_id):
            raise InvalidCredential(f"session {claims.session_id} is revoked or expired")
        facts = self.subject_facts(claims.tenant_id, claims.subject_type, claims.subject)
        if claims.issued_at < facts.not_before:
            raise InvalidCredential(f"token {claims.token_id} was issued before its credentials were revoked")
        if claims.subject_type == USER and not claims.session_id and not claims.restriction:
            raise InvalidCredential(f"user token {claims.token_id} names no session")
        return Principal(
            tenant_id=claims.tenant_id,
            subject=claims.subject,
            subject_type=claims.subject_type,
            permissions=facts.permissions,
            session_id=claims.session_id,
            expires_at=claims.expires_at,
            tenant_active=facts.tenant_active,
            subject_active=facts.subject_active,
            credential=f"{'service' if claims.subject_type == SERVICE else 'access'} token jti={claims.token_id}",
            amr=claims.amr,
            mfa=MfaStanding(
                enrolled=facts.mfa_enrolled,
                required=facts.mfa_required,
                verified_at=claims.mfa_at,
                step_up_seconds=facts.step_up_seconds,
            ),
            restriction=claims.restriction,
            challenge_id=claims.challenge_id,
        )

    def _trust_caches(self) -> bool:
        return self._trust.caches_trusted()

    def _session_active(self, tenant_id: str, session_id: str) -> bool:
        key = (tenant_id, session_id)
        applied = self._trust.changes_applied()
        trusted = self._trust_caches()
        facts = self.sessions.get(key) if trusted else None
        if facts is None:
            facts = self._directory.session_facts(tenant_id, session_id, self._clock.now())
            if trusted and self._trust.changes_applied() == applied:
                self.sessions.put(key, facts, min(facts.expires_at, time.time() + FACTS_MAX_AGE))
        return facts.active and facts.expires_at > time.time()

    def subject_facts(self, tenant_id: str, subject_type: str, subject: str) -> SubjectFacts:
        key = (tenant_id, subject_type, subject)
        applied = self._trust.changes_applied()
        trusted = self._trust_caches()
        facts = self.subjects.get(key) if trusted else None
        if facts is None:
            loader = self._subject_loaders.get(subject_type)
            if loader is None:
                raise InvalidCredential(f"unknown subject type {subject_type!r}")
            facts = loader(tenant_id, subject)
            if trusted and self._trust.changes_applied() == applied:
                self.subjects.put(key, facts, time.time() + FACTS_MAX_AGE)
        return facts

    def apply_change(self, channel: str, message: str) -> None:
        """A change notification, published by any instance (or applied by this one)."""
        if channel == changes.SESSION_REVOKED:
            tenant_id, _, session_id = message.partition(":")
            self.sessions.put((tenant_id, session_id), SessionFacts(False, time.time()), time.time() + 3600)
        elif channel == changes.USER_CHANGED:
            tenant_id, _, user_id = message.partition(":")
            self.subjects.pop((tenant_id, USER, user_id))
        elif channel == changes.SERVICE_CHANGED:
            tenant_id, _, account_id = message.partition(":")
            self.subjects.pop((tenant_id, SERVICE, account_id))
        elif channel == changes.TENANT_CHANGED:
            self.subjects.drop_where(lambda key: key[0] == message)
        elif channel == changes.KEYS_CHANGED:
            self._keys.reload()
        elif channel == "":
            self.sessions.clear()
            self.subjects.clear()
