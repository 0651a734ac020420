"""API keys (`tahoe_sk_…`) to Principals, with no SQL when warm.

A key's facts (tenant, owner, scopes, validity) are cached in-process by the HMAC of
the secret; the owner's permissions come from the Authenticator's subject cache. Both
are dropped by change notifications (revocation, rotation, role changes) and are not
trusted while notifications might be missed. The key's permissions are its scopes
within its owner's current permissions, so demoting the owner shrinks the key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tahoe_auth.authz.authenticator import FACTS_MAX_AGE, Authenticator, InvalidCredential
from tahoe_auth.domain import apikeys, crypto
from tahoe_auth.domain.errors import Unauthenticated
from tahoe_auth.domain.permissions import PermissionSet
from tahoe_auth.domain.principal import API_KEY, PLATFORM, USER, Principal
from tahoe_auth.kernel import changes
from tahoe_auth.kernel.cache import TTLCache
from tahoe_auth.kernel.changes import CacheTrust
from tahoe_auth.services.last_used import LastUsedRecorder
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database


@dataclass(frozen=True)
class KeyFacts:
    tenant_id: str
    key_id: str
    user_id: str
    prefix: str
    scopes: PermissionSet
    # Unix time after which this secret is refused (expiry, or a rotation's grace end).
    valid_until: float | None
    revoked: bool


def key_facts(row: m.ApiKey, digest: str) -> KeyFacts:
    ends = [t.timestamp() for t in (row.expires_at,) if t is not None]
    if not crypto.constant_time_equal(row.secret_hash, digest):
        # The previous secret of a rotation: valid until the grace period ends.
        ends.append(row.previous_expires_at.timestamp() if row.previous_expires_at else 0.0)
    return KeyFacts(
        tenant_id=row.tenant_id,
        key_id=row.id,
        user_id=row.user_id,
        prefix=row.prefix,
        scopes=PermissionSet.of(row.scopes),
        valid_until=min(ends) if ends else None,
        revoked=row.revoked_at is not None,
    )


class ApiKeyResolver:
    def __init__(
        self,
        db: Database,
        hmac_key: bytes,
        authenticator: Authenticator,
        trust: CacheTrust,
        last_used: LastUsedRecorder,
        max_entries: int = 100_000,
    ) -> None:
        self._db = db
        self._hmac_key = hmac_key
        self._authenticator = authenticator
        self._trust = trust
        self._last_used = last_used
        self.keys: TTLCache[str, KeyFacts] = TTLCache(max_entries)

    def digest(self, secret: str) -> str:
        return crypto.hmac_sha256_hex(self._hmac_key, secret)

    def resolve(self, parsed: apikeys.ParsedSecret) -> Principal:
        facts = self._facts(self.digest(parsed.secret))
        if facts.revoked or (facts.valid_until is not None and facts.valid_until <= time.time()):
            raise InvalidCredential(f"api key {facts.prefix} is revoked or expired")
        owner = self._authenticator.subject_facts(facts.tenant_id, USER, facts.user_id)
        self._last_used.touch(facts.tenant_id, facts.key_id)
        return Principal(
            tenant_id=facts.tenant_id,
            subject=facts.key_id,
            subject_type=API_KEY,
            permissions=facts.scopes.intersect(owner.permissions),
            expires_at=int(facts.valid_until) if facts.valid_until is not None else None,
            tenant_active=owner.tenant_active,
            subject_active=owner.subject_active,
            credential=f"api key {facts.prefix}",
        )

    def _facts(self, digest: str) -> KeyFacts:
        applied = self._trust.changes_applied()
        trusted = self._trust.caches_trusted()
        facts = self.keys.get(digest) if trusted else None
        if facts is not None:
            return facts
        with self._db.unit_of_work(SYSTEM) as uow:
            row = uow.api_keys.by_hash(digest)
            facts = key_facts(row, digest) if row is not None else None
        if facts is None:
            raise InvalidCredential("unknown api key")
        if trusted and self._trust.changes_applied() == applied:
            self.keys.put(digest, facts, time.time() + FACTS_MAX_AGE)
        return facts

    def apply_change(self, channel: str, message: str) -> None:
        if channel == changes.CREDENTIAL_REVOKED:
            tenant_id, _, key_id = message.partition(":")
            self.keys.drop_items_where(lambda _, facts: facts.key_id == key_id and facts.tenant_id == tenant_id)
        elif channel == "":
            self.keys.clear()


PLATFORM_KEY_CACHE_SECONDS = 30.0


class PlatformKeyResolver:
    """`tahoe_pa_…` keys (services/platform.py creates them) -> a platform principal."""

    def __init__(self, db: Database, hmac_key: bytes) -> None:
        self._db = db
        self.hmac_key = hmac_key
        self.cache: TTLCache[str, Principal] = TTLCache(1000)

    def resolve(self, parsed: apikeys.ParsedSecret) -> Principal:
        digest = crypto.hmac_sha256_hex(self.hmac_key, parsed.secret)
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        with self._db.unit_of_work(SYSTEM) as uow:
            row = uow.platform_credentials.by_hash(digest)
        # The lookup is by HMAC, itself a keyed hash of the whole secret; comparing the
        # digests in constant time on top keeps timing independent of the stored value.
        if row is None or row.revoked_at is not None or not crypto.constant_time_equal(row.secret_hash, digest):
            raise Unauthenticated("credential is invalid, expired or revoked")
        principal = Principal(
            tenant_id="",
            subject=row.id,
            subject_type=PLATFORM,
            platform_admin=True,
            credential=f"platform key {row.prefix}",
        )
        self.cache.put(digest, principal, time.time() + PLATFORM_KEY_CACHE_SECONDS)
        return principal
