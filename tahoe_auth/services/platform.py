"""Platform-administrator credentials: `tahoe_pa_…` keys that create tenants and act
across them. Stored as HMAC-SHA256 under a key derived from the master key; authz/apikeys.py
resolves them on requests."""

from __future__ import annotations

from tahoe_auth.domain import apikeys, crypto
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database


class PlatformCredentials:
    def __init__(self, db: Database, master_key: bytes) -> None:
        self._db = db
        self.hmac_key = crypto.derive_key(master_key, apikeys.HMAC_PURPOSE)

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
