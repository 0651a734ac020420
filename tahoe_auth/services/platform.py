"""Platform-administrator credentials: `tahoe_pa_…` keys that create tenants and act
across them. Stored as HMAC-SHA256 under a key derived from the master key."""

from __future__ import annotations

import time

from tahoe_auth.authz.cache import TTLCache
from tahoe_auth.domain import apikeys, crypto
from tahoe_auth.domain.errors import Unauthenticated
from tahoe_auth.domain.principal import PLATFORM, Principal
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database

HMAC_PURPOSE = "api-key-hmac"
CACHE_SECONDS = 30.0


class PlatformCredentials:
    def __init__(self, db: Database, master_key: bytes) -> None:
        self._db = db
        self.hmac_key = crypto.derive_key(master_key, HMAC_PURPOSE)
        self.cache: TTLCache[str, Principal] = TTLCache(1000)

    def create(self, name: str) -> str:
        secret = apikeys.generate(apikeys.PLATFORM_KEY)
        parsed = apikeys.parse(secret)
        assert parsed is not None
        with self._db.unit_of_work(SYSTEM) as uow:
            uow.platform_credentials.add(
                m.PlatformCredential(
                    name=name, prefix=parsed.prefix, secret_hash=crypto.hmac_sha256_hex(self.hmac_key, secret)
                )
            )
            uow.commit()
        return secret

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
        self.cache.put(digest, principal, time.time() + CACHE_SECONDS)
        return principal
