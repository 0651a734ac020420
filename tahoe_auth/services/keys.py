"""Signing keys: sealed in the database, loaded into an in-process KeyRing.

Rotation adds a new active key; the old one is retired but stays in the ring (and in
the JWKS) until every token it signed has expired. Instances learn about a new key
from the change notification, or on the first token with an unknown `kid` (reloading
at most once a second), so a rotation causes no spurious rejections and no restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tahoe_auth.clock import Clock
from tahoe_auth.domain import audit, crypto, tokens
from tahoe_auth.services.audit import Actor, AuditLog
from tahoe_auth.services.changes import ChangeNotifier
from tahoe_auth.services.context import CallContext
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database

log = logging.getLogger(__name__)

SEAL_PURPOSE = "signing-keys"
RELOAD_INTERVAL = 1.0


class KeyManager:
    def __init__(
        self,
        db: Database,
        master_key: bytes,
        notifier: ChangeNotifier,
        clock: Clock,
        max_token_ttl: int,
        audit_log: AuditLog | None = None,
    ) -> None:
        self._audit = audit_log
        self._db = db
        self._seal_key = crypto.derive_key(master_key, SEAL_PURPOSE)
        self._notifier = notifier
        self._clock = clock
        self._max_token_ttl = max_token_ttl
        self._ring: tokens.KeyRing | None = None
        self._lock = threading.Lock()
        self._last_reload = 0.0

    def ring(self) -> tokens.KeyRing:
        ring = self._ring
        if ring is None:
            return self.reload()
        return ring

    def reload(self) -> tokens.KeyRing:
        with self._lock:
            cutoff = self._clock.now() - dt.timedelta(seconds=self._max_token_ttl + tokens.CLOCK_SKEW_SECONDS)
            with self._db.unit_of_work(SYSTEM) as uow:
                rows = [r for r in uow.signing_keys.all() if r.retired_at is None or r.retired_at > cutoff]
            keys = [self._unseal(row) for row in rows]
            active = next((row.kid for row in reversed(rows) if row.retired_at is None), None)
            self._ring = tokens.KeyRing.of(keys, active)
            self._last_reload = time.monotonic()
            return self._ring

    def ring_for_unknown_kid(self) -> tokens.KeyRing | None:
        """A token names a kid we do not know: reload, but not more than once a second."""
        if time.monotonic() - self._last_reload < RELOAD_INTERVAL:
            return None
        return self.reload()

    def ensure_active_key(self) -> None:
        if self.ring().active_kid is None:
            self.rotate()

    def rotate(self, ctx: CallContext | None = None) -> str:
        """Add a new active key. `ctx` is the caller (none: the system, e.g. at first start)."""
        key = tokens.generate_key()
        assert key.private_key is not None
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        now = self._clock.now()
        prune_before = now - dt.timedelta(seconds=2 * (self._max_token_ttl + tokens.CLOCK_SKEW_SECONDS))
        with self._db.unit_of_work(SYSTEM) as uow:
            uow.signing_keys.add(
                m.SigningKey(
                    kid=key.kid,
                    algorithm=tokens.ALGORITHM,
                    public_jwk=key.public_jwk,
                    private_key_sealed=crypto.seal(self._seal_key, pem, key.kid),
                    created_at=now,
                )
            )
            uow.signing_keys.retire_all_except(key.kid, now)
            uow.signing_keys.delete_retired_before(prune_before)
            if self._audit is not None:
                actor = None if ctx is not None else Actor("", audit.SYSTEM_ACTOR)
                self._audit.record(
                    uow, ctx, audit.PLATFORM_CHAIN, "signing_key.rotate", f"signing_key:{key.kid}", actor=actor
                )
            uow.commit()
        log.info("signing key rotated: new kid %s", key.kid)
        self.reload()
        self._notifier.keys_changed()
        return key.kid

    def _unseal(self, row: m.SigningKey) -> tokens.SigningKey:
        pem = crypto.unseal(self._seal_key, row.private_key_sealed, row.kid)
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ValueError(f"signing key {row.kid} is not an EC key")
        return tokens.SigningKey(kid=row.kid, public_key=private.public_key(), private_key=private)
