"""Service accounts (the service registry) and their client credentials.

A tenant's account acts within its tenant. A platform-wide account (created by a
platform administrator with no tenant_id) lives in its own, non-tenant table and its
tokens carry no tenant: it may act on any tenant, but only within its permissions
(the transcription service reporting usage for every tenant is the first).

`IssueServiceToken` exchanges the client id (the account id) and secret (`tahoe_sa_…`,
stored as HMAC-SHA256) for a short-lived ES256 access token with `sty=service`. The
Authenticator loads the account's permissions live (authz/directory.py), so changes
and revocations apply to tokens already issued within a second.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from tahoe_auth.config import Settings
from tahoe_auth.domain import apikeys, crypto, events, permissions, tokens
from tahoe_auth.domain.errors import ClientCredentialsInvalid, InvalidArgument, TenantSuspended
from tahoe_auth.domain.fields import check_description
from tahoe_auth.domain.principal import SERVICE
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services import access
from tahoe_auth.services.api_keys import check_grace
from tahoe_auth.services.audit import AuditLog
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.events import emit
from tahoe_auth.services.keys import KeyManager
from tahoe_auth.services.paging import decode_page_token, next_token, page_size_or_default
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database, UnitOfWork
from tahoe_auth.store.repositories import ServiceAccountRepository

HMAC_PURPOSE = "service-secret-hmac"
TOKEN_TTL = 600
UPDATABLE = frozenset({"description", "permissions"})

Account = m.ServiceAccount | m.PlatformServiceAccount


class ServiceAccounts:
    def __init__(
        self,
        db: Database,
        keys: KeyManager,
        notifier: ChangeNotifier,
        settings: Settings,
        clock: Clock,
        audit_log: AuditLog,
    ) -> None:
        self._audit = audit_log
        self._db = db
        self._keys = keys
        self._notifier = notifier
        self._settings = settings
        self._clock = clock
        self._hmac_key = crypto.derive_key(settings.master_key, HMAC_PURPOSE)

    # -- the registry ----------------------------------------------------------

    def create(
        self, ctx: CallContext, tenant_id: str, name: str, description: str, grants: Sequence[str]
    ) -> tuple[Account, str]:
        principal = ctx.require_principal()
        scope = self._scope(ctx, tenant_id)
        name = permissions.check_role_name(name, "service_account.name")
        grants = permissions.validate(grants, "service_account.permissions")
        access.ensure_can_grant(principal, grants)
        secret, prefix = self._new_secret()
        with self._db.unit_of_work(scope) as uow:
            model = m.ServiceAccount if scope != SYSTEM else m.PlatformServiceAccount
            account: Account = model(name=name, description=check_description(description), permissions=grants)
            if isinstance(account, m.ServiceAccount):
                account.tenant_id = scope
            self._set_secret(account, secret, prefix, None)
            self._repo(uow, scope).add(account)
            self._audited(uow, ctx, scope, "service_account.create", account.id, {"name": name, "permissions": grants})
            uow.commit()
        return account, secret

    def get(self, ctx: CallContext, tenant_id: str, account_id: str) -> Account:
        scope = self._scope(ctx, tenant_id)
        with self._db.unit_of_work(scope) as uow:
            return self._repo(uow, scope).get(account_id)

    def page(self, ctx: CallContext, tenant_id: str, page_size: int, page_token: str) -> tuple[list[Account], str]:
        scope = self._scope(ctx, tenant_id)
        limit = page_size_or_default(page_size)
        with self._db.unit_of_work(scope) as uow:
            rows = list(self._repo(uow, scope).page(after=decode_page_token(page_token), limit=limit + 1))
        return rows[:limit], next_token(rows, limit)

    def update(
        self,
        ctx: CallContext,
        tenant_id: str,
        account_id: str,
        mask: Sequence[str],
        description: str,
        grants: Sequence[str],
    ) -> Account:
        principal = ctx.require_principal()
        scope = self._scope(ctx, tenant_id)
        if not mask or set(mask) - UPDATABLE:
            raise InvalidArgument("update_mask", "update_mask paths must be among description, permissions")
        with self._db.unit_of_work(scope) as uow:
            account = self._repo(uow, scope).get(account_id)
            access.ensure_can_grant(principal, account.permissions)
            if "permissions" in mask:
                account.permissions = permissions.validate(grants, "service_account.permissions")
                access.ensure_can_grant(principal, account.permissions)
            if "description" in mask:
                account.description = check_description(description)
            details = {"permissions": sorted(account.permissions), "changed": sorted(mask)}
            self._audited(uow, ctx, scope, "service_account.update", account_id, details)
            self._changed(uow, scope, account_id)
            uow.commit()
        return account

    def delete(self, ctx: CallContext, tenant_id: str, account_id: str) -> None:
        principal = ctx.require_principal()
        scope = self._scope(ctx, tenant_id)
        with self._db.unit_of_work(scope) as uow:
            repo = self._repo(uow, scope)
            account = repo.get(account_id)
            access.ensure_can_grant(principal, account.permissions)
            repo.delete(account)
            self._audited(uow, ctx, scope, "service_account.delete", account_id, {})
            self._changed(uow, scope, account_id)
            uow.commit()

    def rotate(
        self, ctx: CallContext, tenant_id: str, account_id: str, grace: dt.timedelta | None
    ) -> tuple[Account, str]:
        principal = ctx.require_principal()
        scope = self._scope(ctx, tenant_id)
        grace = check_grace(grace)
        secret, prefix = self._new_secret()
        with self._db.unit_of_work(scope) as uow:
            account = self._repo(uow, scope).get(account_id)
            access.ensure_can_grant(principal, account.permissions)
            self._set_secret(account, secret, prefix, grace)
            details = {"grace_seconds": int(grace.total_seconds()) if grace else 0, "prefix": prefix}
            self._audited(uow, ctx, scope, "service_account.secret_rotate", account_id, details)
            self._changed(uow, scope, account_id)
            uow.commit()
        return account, secret

    def revoke(self, ctx: CallContext, tenant_id: str, account_id: str) -> Account:
        """Every secret and every token issued so far stop working; rotate for a new secret."""
        scope = self._scope(ctx, tenant_id)
        with self._db.unit_of_work(scope) as uow:
            account = self._repo(uow, scope).get(account_id)
            account.secret_hash = account.previous_secret_hash = None
            account.previous_expires_at = None
            account.secret_revoked_at = self._clock.now()
            self._audited(uow, ctx, scope, "service_account.secret_revoke", account_id, {})
            self._changed(uow, scope, account_id)
            uow.commit()
        return account

    # -- client credentials -> token -------------------------------------------

    def issue_token(self, client_id: str, client_secret: str) -> tuple[str, int]:
        parsed = apikeys.parse(client_secret)
        if parsed is None or parsed.kind != apikeys.SERVICE_SECRET or not client_id:
            raise ClientCredentialsInvalid()
        digest = crypto.hmac_sha256_hex(self._hmac_key, client_secret)
        with self._db.unit_of_work(SYSTEM) as uow:
            account: Account | None = uow.service_accounts.find(client_id)
            account = account or uow.platform_service_accounts.find(client_id)
            tenant = uow.tenants.find(account.tenant_id) if isinstance(account, m.ServiceAccount) else None
        if account is None or not self._secret_matches(account, digest):
            raise ClientCredentialsInvalid()
        if tenant is not None and tenant.status != "active":
            raise TenantSuspended()
        now = int(self._clock.timestamp())
        revoked = account.secret_revoked_at
        if revoked is not None:
            # Tokens issued before a revocation are refused up to the next whole second.
            now = max(now, int(revoked.timestamp()) + 1)
        token, claims = tokens.issue_access_token(
            self._keys.ring(),
            issuer=self._settings.issuer,
            audience=self._settings.audience,
            subject=account.id,
            tenant_id=tenant.id if tenant is not None else "",
            subject_type=SERVICE,
            session_id="",
            now=now,
            ttl=TOKEN_TTL,
        )
        return token, claims.expires_at

    def _secret_matches(self, account: Account, digest: str) -> bool:
        current = account.secret_hash is not None and crypto.constant_time_equal(account.secret_hash, digest)
        previous = (
            account.previous_secret_hash is not None
            and account.previous_expires_at is not None
            and account.previous_expires_at > self._clock.now()
            and crypto.constant_time_equal(account.previous_secret_hash, digest)
        )
        return current or previous

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _scope(ctx: CallContext, tenant_id: str) -> str:
        """The tenant, or SYSTEM for the platform-wide registry (platform administrators
        naming no tenant)."""
        principal = ctx.require_principal()
        if principal.platform_admin and not tenant_id:
            return SYSTEM
        return access.target_tenant(principal, tenant_id)

    @staticmethod
    def _repo(uow: UnitOfWork, scope: str) -> ServiceAccountRepository:
        return uow.platform_service_accounts if scope == SYSTEM else uow.service_accounts

    def _new_secret(self) -> tuple[str, str]:
        secret = apikeys.generate(apikeys.SERVICE_SECRET)
        parsed = apikeys.parse(secret)
        assert parsed is not None
        return secret, parsed.prefix

    def _set_secret(self, account: Account, secret: str, prefix: str, grace: dt.timedelta | None) -> None:
        now = self._clock.now()
        keep_previous = bool(grace) and account.secret_hash is not None
        account.previous_secret_hash = account.secret_hash if keep_previous else None
        account.previous_expires_at = now + grace if keep_previous and grace else None
        account.secret_hash = crypto.hmac_sha256_hex(self._hmac_key, secret)
        account.secret_prefix = prefix
        account.secret_rotated_at = now

    def _audited(
        self, uow: UnitOfWork, ctx: CallContext, scope: str, action: str, account_id: str, details: dict[str, Any]
    ) -> None:
        """Platform accounts (SYSTEM scope) on the platform chain, without an event."""
        tenant_id = "" if scope == SYSTEM else scope
        if tenant_id:
            change = action.partition(".")[2]
            emit(uow, tenant_id, events.SERVICE_ACCOUNT_CHANGED, {"service_account_id": account_id, "change": change})
        self._audit.record(uow, ctx, tenant_id, action, f"service_account:{account_id}", details=details)

    def _changed(self, uow: UnitOfWork, scope: str, account_id: str) -> None:
        self._notifier.service_changed(uow, "" if scope == SYSTEM else scope, account_id)
