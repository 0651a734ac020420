"""Users of a tenant: create, read, update, disable, enable, delete, passwords.

Acting on another user needs standing over them: the caller must hold every
permission that user holds (an admin cannot disable, delete or reset the password
of an owner), and the tenant's last active owner cannot be disabled or deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tahoe_auth.domain import events, password_policy, passwords
from tahoe_auth.domain.errors import FailedPrecondition, InvalidArgument, InvalidCredentials
from tahoe_auth.domain.fields import check_display_name, check_email
from tahoe_auth.domain.permissions import OWNER
from tahoe_auth.domain.principal import Principal
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services import access
from tahoe_auth.services.account_mail import AccountMail
from tahoe_auth.services.audit import AuditLog
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.events import emit
from tahoe_auth.services.paging import decode_page_token, next_token, page_size_or_default
from tahoe_auth.services.roles import ensure_not_last_owner, role_grants
from tahoe_auth.services.sessions import SessionService
from tahoe_auth.store import models as m
from tahoe_auth.store.db import Database, UnitOfWork
from tahoe_auth.store.directory import user_permissions

ACTIVE, DISABLED = "active", "disabled"
UPDATABLE = frozenset({"display_name", "email"})


@dataclass(frozen=True)
class UserView:
    row: m.User
    roles: list[str]


def _password_context(tenant: m.Tenant, email: str) -> password_policy.PasswordContext:
    return password_policy.context_for(tenant.settings, (tenant.slug, tenant.display_name), email)


class Users:
    def __init__(
        self,
        db: Database,
        hasher: passwords.BoundedHasher,
        sessions: SessionService,
        notifier: ChangeNotifier,
        clock: Clock,
        audit_log: AuditLog,
        account_mail: AccountMail,
    ) -> None:
        self._audit = audit_log
        self._mail = account_mail
        self._db = db
        self._hasher = hasher
        self._sessions = sessions
        self._notifier = notifier
        self._clock = clock

    def create(
        self,
        ctx: CallContext,
        tenant_id: str,
        email: str,
        display_name: str,
        password: str,
        roles: Sequence[str],
    ) -> UserView:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        email = check_email(email, "user.email")
        if password:
            with self._db.unit_of_work(tenant_id) as uow:
                rules = _password_context(uow.tenants.get(tenant_id), email)
            password_policy.check(password, rules, "password")
        password_hash = self._hasher.hash(password) if password else None
        with self._db.unit_of_work(tenant_id) as uow:
            for role in roles:
                access.ensure_can_grant(principal, role_grants(uow, role))
            user = uow.users.add(
                m.User(
                    tenant_id=tenant_id,
                    email=email,
                    display_name=check_display_name(display_name, "user.display_name"),
                    password_hash=password_hash,
                    password_changed_at=self._clock.now() if password_hash else None,
                )
            )
            for role in sorted(set(roles)):
                uow.role_bindings.add(tenant_id, user.id, role)
            data = {"user_id": user.id, "email": email, "roles": sorted(set(roles))}
            emit(uow, tenant_id, events.USER_CREATED, data)
            self._mail.email_verification(uow, uow.tenants.get(tenant_id), user)
            self._audit.record(uow, ctx, tenant_id, "user.create", f"user:{user.id}", details=data)
            uow.commit()
        return UserView(user, sorted(set(roles)))

    def get(self, ctx: CallContext, tenant_id: str, user_id: str) -> UserView:
        tenant_id = access.target_tenant(ctx.require_principal(), tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            user = uow.users.get(user_id)
            return UserView(user, uow.role_bindings.roles_of(user_id))

    def page(
        self, ctx: CallContext, tenant_id: str, role: str, state: str | None, page_size: int, page_token: str
    ) -> tuple[list[UserView], str]:
        tenant_id = access.target_tenant(ctx.require_principal(), tenant_id)
        limit = page_size_or_default(page_size)
        with self._db.unit_of_work(tenant_id) as uow:
            rows = list(
                uow.users.page(role=role or None, status=state, after=decode_page_token(page_token), limit=limit + 1)
            )
            roles = uow.role_bindings.roles_of_many([row.id for row in rows[:limit]])
        return [UserView(row, roles[row.id]) for row in rows[:limit]], next_token(rows, limit)

    def update(self, ctx: CallContext, tenant_id: str, user_id: str, changes: Mapping[str, str]) -> UserView:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        if not changes or set(changes) - UPDATABLE:
            raise InvalidArgument("update_mask", "update_mask paths must be among display_name, email")
        with self._db.unit_of_work(tenant_id) as uow:
            user = self._user_in_reach(uow, principal, user_id)
            if "display_name" in changes:
                user.display_name = check_display_name(changes["display_name"], "user.display_name")
            old_email = user.email
            if "email" in changes:
                user.email = check_email(changes["email"], "user.email")
            uow.users.flush_unique(user)
            if user.email != old_email:
                # A new address is unproven until its link is followed; the old one
                # hears of the change (someone who took over the account cannot hide it).
                user.email_verified_at = None
                tenant = uow.tenants.get(tenant_id)
                self._mail.email_verification(uow, tenant, user)
                self._mail.email_changed(uow, tenant, old_email, user.email)
            roles = uow.role_bindings.roles_of(user_id)
            emit(uow, tenant_id, events.USER_UPDATED, {"user_id": user_id, "changed": sorted(changes)})
            self._audit.record(uow, ctx, tenant_id, "user.update", f"user:{user_id}", details=dict(changes))
            uow.commit()
        return UserView(user, roles)

    def set_status(self, ctx: CallContext, tenant_id: str, user_id: str, status: str) -> UserView:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            user = self._user_in_reach(uow, principal, user_id)
            if status == DISABLED and OWNER in uow.role_bindings.roles_of(user_id):
                ensure_not_last_owner(uow, tenant_id, user_id)
            user.status = status
            roles = uow.role_bindings.roles_of(user_id)
            emit(uow, tenant_id, events.USER_UPDATED, {"user_id": user_id, "status": status})
            action = "user.disable" if status == DISABLED else "user.enable"
            self._audit.record(uow, ctx, tenant_id, action, f"user:{user_id}")
            self._notifier.user_changed(uow, tenant_id, user_id)
            uow.commit()
        if status == DISABLED:
            self._sessions.revoke_user_sessions(tenant_id, user_id, "user_disabled")
        return UserView(user, roles)

    def delete(self, ctx: CallContext, tenant_id: str, user_id: str) -> None:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            user = self._user_in_reach(uow, principal, user_id)
            if OWNER in uow.role_bindings.roles_of(user_id):
                ensure_not_last_owner(uow, tenant_id, user_id)
            session_ids = uow.sessions.active_ids_for_user(user_id, self._clock.now())
            key_ids = uow.api_keys.ids_of_user(user_id)
            uow.users.delete(user)  # sessions, role bindings and API keys go with it
            emit(uow, tenant_id, events.USER_DELETED, {"user_id": user_id})
            details = {"sessions_ended": len(session_ids), "api_keys_deleted": len(key_ids)}
            self._audit.record(uow, ctx, tenant_id, "user.delete", f"user:{user_id}", details=details)
            self._notifier.sessions_revoked(uow, tenant_id, session_ids)
            for key_id in key_ids:
                self._notifier.credential_revoked(uow, tenant_id, key_id)
            self._notifier.user_changed(uow, tenant_id, user_id)
            uow.commit()

    def change_password(self, ctx: CallContext, current: str, new: str) -> int:
        principal = ctx.require_principal()
        user_id = access.require_user(principal, "changing a password")
        if not principal.session_id:
            raise FailedPrecondition("changing a password needs a login session's access token")
        with self._db.unit_of_work(principal.tenant_id) as uow:
            user = uow.users.get(user_id)
            encoded = user.password_hash
            rules = _password_context(uow.tenants.get(principal.tenant_id), user.email)
        password_policy.check(new, rules, "new_password")
        too_long = len(current) > passwords.MAX_LENGTH
        if not self._hasher.verify(None if too_long else encoded, current).ok:
            raise InvalidCredentials()
        self._set_password(ctx, principal.tenant_id, user_id, self._hasher.hash(new), "password.change")
        return self._sessions.revoke_user_sessions(
            principal.tenant_id, user_id, "password_changed", keep=principal.session_id
        )

    def reset_password(self, ctx: CallContext, tenant_id: str, user_id: str, new: str) -> tuple[str, int]:
        """Sets `new` (or a generated password, returned) and ends every session of the user."""
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            user = self._user_in_reach(uow, principal, user_id)
            rules = _password_context(uow.tenants.get(tenant_id), user.email)
        generated = "" if new else password_policy.generate(rules)
        password_policy.check(new or generated, rules, "new_password")
        self._set_password(ctx, tenant_id, user_id, self._hasher.hash(new or generated), "password.reset")
        ended = self._sessions.revoke_user_sessions(tenant_id, user_id, "password_reset")
        return generated, ended

    def _set_password(self, ctx: CallContext, tenant_id: str, user_id: str, password_hash: str, action: str) -> None:
        with self._db.unit_of_work(tenant_id) as uow:
            user = uow.users.get(user_id)
            user.password_hash = password_hash
            user.password_changed_at = self._clock.now()
            self._audit.record(uow, ctx, tenant_id, action, f"user:{user_id}")
            self._notifier.user_changed(uow, tenant_id, user_id)
            uow.commit()

    @staticmethod
    def _user_in_reach(uow: UnitOfWork, principal: Principal, user_id: str) -> m.User:
        """The user, if the caller may act on them: themselves, or someone whose every
        permission the caller also holds."""
        user = uow.users.get(user_id)
        if not access.is_self(principal, user.tenant_id, user_id):
            _, theirs = user_permissions(uow, user_id)
            access.ensure_can_grant(principal, theirs)
        return user
