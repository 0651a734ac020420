"""Signing keys: sealed in the database, loaded into an in-process KeyRing.

Staged rotation (domain/key_schedule.py): `rotate` adds a NEXT key that is published
at once and signs only after the publication delay; every instance switches to it at
that time by itself (the ring is recomputed from the cached rows when the schedule
says something changes, with no I/O). The key it replaces stays published until its
last token has expired. `revoke` is the emergency path: the key leaves the JWKS and
its tokens are refused at once, and signing moves to a published NEXT key, or to a
new key, immediately.

Every instance reloads the key rows on a short timer (`start_refresh`), so changes
made by another process (a second instance, `tahoe-auth keys rotate` from a shell on
the embedded default) arrive without any notification; the change notification makes
it faster where there is a channel (Redis). A token naming an unknown `kid` also
triggers a reload (at most once a second).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tahoe_auth.domain import audit, crypto, key_schedule, tokens
from tahoe_auth.domain.errors import NotFound, SigningKeyRevoked
from tahoe_auth.domain.key_schedule import KeyState
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services.audit import Actor, AuditLog
from tahoe_auth.services.context import CallContext
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database, UnitOfWork

log = logging.getLogger(__name__)

SEAL_PURPOSE = "signing-keys"
RELOAD_INTERVAL = 1.0
"""At most one reload per second for tokens naming an unknown kid."""
REFRESH_INTERVAL = 2.0
"""Every instance rereads the key rows this often (changes from other processes)."""

KEY_REFRESH_THREAD = "signing-keys"

RevocationListener = Callable[[frozenset[str]], None]


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes (stored as UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _record(row: m.SigningKey) -> key_schedule.KeyRecord:
    return key_schedule.KeyRecord(
        kid=row.kid,
        created_at=_aware(row.created_at),
        activates_at=_aware(row.activates_at),
        revoked_at=_aware(row.revoked_at) if row.revoked_at is not None else None,
    )


class KeyManager:
    def __init__(
        self,
        db: Database,
        master_key: bytes,
        notifier: ChangeNotifier,
        clock: Clock,
        max_token_ttl: int,
        audit_log: AuditLog | None = None,
        publish_delay: int = 900,
        refresh_interval: float = REFRESH_INTERVAL,
    ) -> None:
        self._audit = audit_log
        self._db = db
        self._seal_key = crypto.derive_key(master_key, SEAL_PURPOSE)
        self._notifier = notifier
        self._clock = clock
        self._max_token_ttl = max_token_ttl
        self.publish_delay = publish_delay
        self.retention = dt.timedelta(seconds=max_token_ttl + tokens.CLOCK_SKEW_SECONDS)
        self._refresh_interval = refresh_interval
        self._records: dict[str, key_schedule.KeyRecord] = {}
        self._unsealed: dict[str, tokens.SigningKey] = {}
        self._schedule = key_schedule.Schedule((), None, None)
        self._ring: tokens.KeyRing | None = None
        self._ring_until = math.inf
        self._revoked: frozenset[str] = frozenset()
        self._listeners: list[RevocationListener] = []
        self._lock = threading.RLock()
        self._last_reload = 0.0
        self.unknown_kid_reloads = 0
        self._refresh_failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- reading -------------------------------------------------------------------

    def ring(self) -> tokens.KeyRing:
        """The keys to verify with and the one that signs now (no I/O once loaded)."""
        ring = self._ring
        if ring is None:
            return self.reload()
        if self._clock.timestamp() >= self._ring_until and self._lock.acquire(blocking=False):
            # An activation or unpublication is due: recompute from the cached rows. If a
            # reload holds the lock, it is recomputing anyway: keep serving this ring.
            try:
                return self._rebuild()
            finally:
                self._lock.release()
        return ring

    def schedule(self) -> key_schedule.Schedule:
        """Every key's state and times, as of now."""
        self.ring()
        return self._schedule

    def on_revoked(self, listener: RevocationListener) -> None:
        """Call `listener(kids)` when this instance learns that keys were revoked
        (caches holding anything those keys signed must drop it)."""
        self._listeners.append(listener)

    def reload(self) -> tokens.KeyRing:
        with self._lock:
            first = self._ring is None
            with self._db.unit_of_work(SYSTEM) as uow:
                rows = uow.signing_keys.all()
            records = {row.kid: _record(row) for row in rows}
            for row in rows:
                if row.revoked_at is None and row.kid not in self._unsealed:
                    self._unsealed[row.kid] = self._unseal(row)
            for kid in list(self._unsealed):
                record = records.get(kid)
                if record is None or record.revoked_at is not None:
                    del self._unsealed[kid]
            self._records = records
            ring = self._rebuild()
            self._last_reload = time.monotonic()
            revoked = frozenset(kid for kid, r in records.items() if r.revoked_at is not None)
            newly_revoked = revoked - self._revoked
            self._revoked = revoked
        if newly_revoked and not first:
            log.warning("signing keys revoked: %s", ", ".join(sorted(newly_revoked)))
            for listener in self._listeners:
                try:
                    listener(newly_revoked)
                except Exception:
                    log.exception("a key revocation listener failed")
        return ring

    def _rebuild(self) -> tokens.KeyRing:
        """Recompute states from the cached rows and the clock (caller holds the lock)."""
        current = key_schedule.schedule(self._records.values(), self._clock.now(), self.retention)
        keys = [self._unsealed[k.kid] for k in current.keys if k.published and k.kid in self._unsealed]
        previous = self._ring.active_kid if self._ring is not None else None
        ring = tokens.KeyRing.of(keys, current.active_kid)
        self._schedule = current
        self._ring_until = current.changes_at.timestamp() if current.changes_at is not None else math.inf
        self._ring = ring
        if previous is not None and current.active_kid != previous:
            log.info("signing key %s is active (was %s)", current.active_kid, previous)
        return ring

    def ring_for_unknown_kid(self) -> tokens.KeyRing | None:
        """A token names a kid we do not know: reload, but not more than once a second."""
        if time.monotonic() - self._last_reload < RELOAD_INTERVAL:
            return None
        self.unknown_kid_reloads += 1
        return self.reload()

    # --- the refresh timer ---------------------------------------------------------

    def start_refresh(self) -> None:
        """Reread the key rows every `refresh_interval` seconds until `stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._refresh_loop, name=KEY_REFRESH_THREAD, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh_interval):
            try:
                self.reload()
            except Exception as exc:  # keep the keys we have; the next tick tries again
                if not self._refresh_failing:
                    log.warning("reloading signing keys failed (keeping the current ones): %s", exc)
                self._refresh_failing = True
            else:
                if self._refresh_failing:
                    log.info("reloading signing keys works again")
                self._refresh_failing = False

    # --- changing ------------------------------------------------------------------

    def ensure_active_key(self) -> None:
        """At start: a key that signs at once if none does (a fresh database: no
        verifier can hold a stale JWKS yet)."""
        if self.ring().active_kid is not None:
            return
        now = self._clock.now()
        with self._db.unit_of_work(SYSTEM) as uow:
            rows = {row.kid: row for row in uow.signing_keys.all(for_update=True)}
            current = key_schedule.schedule(map(_record, rows.values()), now, self.retention)
            if current.active_kid is None:
                kid = self._activate_now(uow, rows, current, now)
                self._record_audit(uow, None, "signing_key.rotate", kid, {"activates_at": now.isoformat()})
                self._notifier.keys_changed(uow)
                uow.commit()
                log.info("no signing key was active: %s signs from now on", kid)
        self.reload()

    def rotate(self, ctx: CallContext | None = None) -> key_schedule.KeyStatus:
        """Publish a NEXT key that signs after the publication delay. `ctx` is the
        caller (none: the system or the CLI)."""
        now = self._clock.now()
        activates_at = now + dt.timedelta(seconds=self.publish_delay)
        key = tokens.generate_key()
        with self._db.unit_of_work(SYSTEM) as uow:
            rows = uow.signing_keys.all(for_update=True)
            self._add(uow, key, now, activates_at)
            records = [*map(_record, rows), key_schedule.KeyRecord(key.kid, now, activates_at)]
            current = key_schedule.schedule(records, now, self.retention)
            uow.signing_keys.delete(key_schedule.prunable(current, now, self.retention))
            details = {"activates_at": activates_at.isoformat(), "publish_delay_seconds": self.publish_delay}
            self._record_audit(uow, ctx, "signing_key.rotate", key.kid, details)
            self._notifier.keys_changed(uow)
            uow.commit()
        log.info("signing key %s published; it signs from %s", key.kid, activates_at.isoformat())
        self.reload()
        status = self.schedule().status(key.kid)
        assert status is not None
        return status

    def revoke(self, kid: str, ctx: CallContext | None = None) -> key_schedule.KeyStatus:
        """Emergency: `kid` leaves the JWKS and its tokens are refused at once. If it was
        signing, a published NEXT key signs from now on, or a new key does (verifiers
        whose cached JWKS lacks that key reject its tokens until they refetch).
        Returns the status of the key that signs afterwards."""
        now = self._clock.now()
        with self._db.unit_of_work(SYSTEM) as uow:
            rows = {row.kid: row for row in uow.signing_keys.all(for_update=True)}
            row = rows.get(kid)
            if row is None:
                raise NotFound("signing_key", f"no signing key {kid!r}")
            if row.revoked_at is not None:
                raise SigningKeyRevoked(kid)
            before = key_schedule.schedule(map(_record, rows.values()), now, self.retention)
            was = before.status(kid)
            assert was is not None
            row.revoked_at = now
            after = key_schedule.schedule(map(_record, rows.values()), now, self.retention)
            signing = after.active_kid
            if was.state is KeyState.ACTIVE or signing is None:
                signing = self._activate_now(uow, rows, after, now)
            details = {"state": was.state.value, "signing_kid": signing}
            self._record_audit(uow, ctx, "signing_key.revoke", kid, details)
            self._notifier.keys_changed(uow)
            uow.commit()
        log.warning("signing key %s revoked (was %s); %s signs now", kid, was.state.value, signing)
        self.reload()
        status = self.schedule().status(signing)
        assert status is not None
        return status

    def _activate_now(
        self, uow: UnitOfWork, rows: dict[str, m.SigningKey], current: key_schedule.Schedule, now: dt.datetime
    ) -> str:
        """Make a key sign from `now`: the soonest published NEXT key, or a new one."""
        promote = key_schedule.successor_to_promote(current)
        if promote is not None:
            rows[promote].activates_at = now
            uow.session.flush()
            return promote
        key = tokens.generate_key()
        self._add(uow, key, now, now)
        return key.kid

    def _add(self, uow: UnitOfWork, key: tokens.SigningKey, now: dt.datetime, activates_at: dt.datetime) -> None:
        assert key.private_key is not None
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        uow.signing_keys.add(
            m.SigningKey(
                kid=key.kid,
                algorithm=tokens.ALGORITHM,
                public_jwk=key.public_jwk,
                private_key_sealed=crypto.seal(self._seal_key, pem, key.kid),
                created_at=now,
                activates_at=activates_at,
            )
        )

    def _record_audit(
        self, uow: UnitOfWork, ctx: CallContext | None, action: str, kid: str, details: Mapping[str, object]
    ) -> None:
        if self._audit is None:
            return
        actor = None if ctx is not None else Actor("", audit.SYSTEM_ACTOR)
        self._audit.record(uow, ctx, audit.PLATFORM_CHAIN, action, f"signing_key:{kid}", details=details, actor=actor)

    def _unseal(self, row: m.SigningKey) -> tokens.SigningKey:
        pem = crypto.unseal(self._seal_key, row.private_key_sealed, row.kid)
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ValueError(f"signing key {row.kid} is not an EC key")
        return tokens.SigningKey(kid=row.kid, public_key=private.public_key(), private_key=private)
