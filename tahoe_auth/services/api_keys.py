"""API keys: create (secret shown once), read, list, revoke, rotate with a grace period.

A key acts for one user (its owner). Its scopes must lie within the creator's
permissions and the owner's; at use, it holds its scopes within the owner's *current*
permissions (authz/apikeys.py). Acting on another user's key needs `apikeys:manage`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from tahoe_auth.domain import apikeys, crypto, events, permissions
from tahoe_auth.domain.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from tahoe_auth.domain.principal import API_KEY, Principal
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services import access
from tahoe_auth.services.audit import AuditLog
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.events import emit
from tahoe_auth.services.invitations import actor
from tahoe_auth.services.last_used import LastUsedRecorder
from tahoe_auth.services.paging import decode_page_token, next_token, page_size_or_default
from tahoe_auth.store import models as m
from tahoe_auth.store.db import Database
from tahoe_auth.store.directory import user_permissions

MANAGE = "apikeys:manage"
MAX_GRACE = dt.timedelta(days=7)


def check_grace(grace: dt.timedelta | None) -> dt.timedelta:
    grace = grace or dt.timedelta(0)
    if not dt.timedelta(0) <= grace <= MAX_GRACE:
        raise InvalidArgument("grace_period", "grace_period must be between 0 and 7 days")
    return grace


class ApiKeys:
    def __init__(
        self,
        db: Database,
        hmac_key: bytes,
        last_used: LastUsedRecorder,
        notifier: ChangeNotifier,
        clock: Clock,
        audit_log: AuditLog,
    ) -> None:
        self._audit = audit_log
        self._db = db
        self._hmac_key = hmac_key
        self._last_used = last_used
        self._notifier = notifier
        self._clock = clock

    def create(
        self,
        ctx: CallContext,
        tenant_id: str,
        user_id: str,
        name: str,
        scopes: Sequence[str],
        expires_at: dt.datetime | None,
    ) -> tuple[m.ApiKey, str]:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        if principal.subject_type == API_KEY:
            raise PermissionDenied("API keys cannot create API keys")
        owner_id = self._owner(principal, tenant_id, user_id)
        if not scopes:
            raise InvalidArgument("scopes", "an API key needs at least one scope")
        scopes = permissions.validate(scopes, "scopes")
        if not name.strip() or len(name) > 200:
            raise InvalidArgument("name", "name is required (at most 200 characters)")
        if expires_at is not None and expires_at <= self._clock.now():
            raise InvalidArgument("expire_time", "expire_time must be in the future")
        access.ensure_can_grant(principal, scopes)
        secret = apikeys.generate(apikeys.API_KEY)
        parsed = apikeys.parse(secret)
        assert parsed is not None
        with self._db.unit_of_work(tenant_id) as uow:
            uow.users.get(owner_id)
            _, owner_grants = user_permissions(uow, owner_id)
            # Scopes beyond the owner's permissions would never work: refuse them now.
            access.ensure_can_grant(Principal(tenant_id, owner_id, "user", owner_grants), scopes)
            row = uow.api_keys.add(
                m.ApiKey(
                    tenant_id=tenant_id,
                    user_id=owner_id,
                    created_by=actor(principal),
                    name=name.strip(),
                    prefix=parsed.prefix,
                    secret_hash=crypto.hmac_sha256_hex(self._hmac_key, secret),
                    scopes=scopes,
                    created_at=self._clock.now(),
                    expires_at=expires_at,
                )
            )
            data = {"api_key_id": row.id, "user_id": owner_id, "name": row.name, "scopes": list(scopes)}
            emit(uow, tenant_id, events.APIKEY_CREATED, data)
            self._audit.record(uow, ctx, tenant_id, "apikey.create", f"api_key:{row.id}", details=data)
            uow.commit()
        return row, secret

    def get(self, ctx: CallContext, tenant_id: str, key_id: str) -> m.ApiKey:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            row = uow.api_keys.get(key_id)
        self._ensure_reach(principal, tenant_id, row)
        return self._with_last_use(row)

    def page(
        self, ctx: CallContext, tenant_id: str, user_id: str, show_ended: bool, page_size: int, page_token: str
    ) -> tuple[list[m.ApiKey], str]:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        if not user_id and not access.holds(principal, MANAGE):
            user_id = access.require_user(principal, "listing one's own API keys")
        if user_id and not access.is_self(principal, tenant_id, user_id):
            access.require(principal, MANAGE, tenant_id)
        limit = page_size_or_default(page_size)
        with self._db.unit_of_work(tenant_id) as uow:
            rows = list(
                uow.api_keys.page(
                    user_id=user_id or None,
                    now=self._clock.now(),
                    show_ended=show_ended,
                    after=decode_page_token(page_token),
                    limit=limit + 1,
                )
            )
        return [self._with_last_use(row) for row in rows[:limit]], next_token(rows, limit)

    def revoke(self, ctx: CallContext, tenant_id: str, key_id: str) -> m.ApiKey:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            row = uow.api_keys.get(key_id)
            self._ensure_reach(principal, tenant_id, row)
            row.revoked_at = row.revoked_at or self._clock.now()
            emit(uow, tenant_id, events.APIKEY_REVOKED, {"api_key_id": key_id, "user_id": row.user_id})
            self._audit.record(uow, ctx, tenant_id, "apikey.revoke", f"api_key:{key_id}")
            self._notifier.credential_revoked(uow, tenant_id, key_id)
            uow.commit()
        return row

    def rotate(self, ctx: CallContext, tenant_id: str, key_id: str, grace: dt.timedelta | None) -> tuple[m.ApiKey, str]:
        """A new secret for the same key; the old one works until the grace period ends."""
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        grace = check_grace(grace)
        secret = apikeys.generate(apikeys.API_KEY)
        parsed = apikeys.parse(secret)
        assert parsed is not None
        now = self._clock.now()
        with self._db.unit_of_work(tenant_id) as uow:
            row = uow.api_keys.get(key_id)
            self._ensure_reach(principal, tenant_id, row)
            if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
                raise FailedPrecondition("a revoked or expired key cannot be rotated")
            row.previous_secret_hash = row.secret_hash if grace else None
            row.previous_expires_at = now + grace if grace else None
            row.secret_hash = crypto.hmac_sha256_hex(self._hmac_key, secret)
            row.prefix = parsed.prefix
            row.rotated_at = now
            emit(uow, tenant_id, events.APIKEY_ROTATED, {"api_key_id": key_id, "user_id": row.user_id})
            details = {"grace_seconds": int(grace.total_seconds()) if grace else 0, "prefix": parsed.prefix}
            self._audit.record(uow, ctx, tenant_id, "apikey.rotate", f"api_key:{key_id}", details=details)
            self._notifier.credential_revoked(uow, tenant_id, key_id)
            uow.commit()
        return row, secret

    @staticmethod
    def _owner(principal: Principal, tenant_id: str, user_id: str) -> str:
        if not user_id:
            return access.require_user(principal, "creating an API key without user_id")
        if not access.is_self(principal, tenant_id, user_id):
            access.require(principal, MANAGE, tenant_id)
        return user_id

    @staticmethod
    def _ensure_reach(principal: Principal, tenant_id: str, row: m.ApiKey) -> None:
        if not access.is_self(principal, tenant_id, row.user_id):
            access.require(principal, MANAGE, tenant_id)

    def _with_last_use(self, row: m.ApiKey) -> m.ApiKey:
        """Shows this instance's not-yet-written last use (rows are detached copies)."""
        pending = self._last_used.pending(row.tenant_id, row.id)
        if pending is not None and (row.last_used_at is None or pending > row.last_used_at):
            row.last_used_at = pending
        return row
