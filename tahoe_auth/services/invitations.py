"""Invitations: invite an email address into a tenant with a role.

The token (`iv_` + 256 random bits) is returned to the inviter once (nothing sends
mail yet) and stored as SHA-256; accepting spends it atomically, so it works once.
A `user.invited` event goes to the outbox in the same transaction for the
webhook issue to deliver; it carries no token.
"""

from __future__ import annotations

import datetime as dt

from tahoe_auth.domain import crypto, events, password_policy, passwords
from tahoe_auth.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvalidCredentials,
    InvitationInvalid,
    NotFound,
    TenantSuspended,
)
from tahoe_auth.domain.fields import check_display_name, check_email
from tahoe_auth.domain.principal import USER, Principal
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services import access
from tahoe_auth.services.account_mail import AccountMail
from tahoe_auth.services.audit import Actor, AuditLog
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.events import emit
from tahoe_auth.services.mfa import IssuedChallenge
from tahoe_auth.services.paging import decode_page_token, next_token, page_size_or_default
from tahoe_auth.services.roles import role_grants
from tahoe_auth.services.sessions import IssuedTokens, SessionService, normalize_email
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database, UnitOfWork

TOKEN_PREFIX = "iv_"
DEFAULT_TTL = dt.timedelta(hours=72)
MAX_TTL = dt.timedelta(days=30)
CREATED_EVENT = events.USER_INVITED
PENDING, ACCEPTED, REVOKED, EXPIRED = "pending", "accepted", "revoked", "expired"


def state_of(row: m.Invitation, now: dt.datetime) -> str:
    if row.accepted_at is not None:
        return ACCEPTED
    if row.revoked_at is not None:
        return REVOKED
    return PENDING if row.expires_at > now else EXPIRED


def actor(principal: Principal) -> str:
    """Who did it, for records: a user id, or `<type>:<id>` for other callers."""
    return principal.subject if principal.subject_type == USER else f"{principal.subject_type}:{principal.subject}"


def _inviter(uow: UnitOfWork, by: Principal) -> str:
    """Who invited, in the mail's words: a user's name or email, else the tenant's admins."""
    if by.subject_type == USER and by.tenant_id:
        try:
            user = uow.users.get(by.subject)
        except NotFound:
            return "An administrator"
        return user.display_name or user.email
    return "An administrator"


def check_ttl(ttl: dt.timedelta | None) -> dt.timedelta:
    if ttl is None:
        return DEFAULT_TTL
    if not dt.timedelta(minutes=1) <= ttl <= MAX_TTL:
        raise InvalidArgument("ttl", "ttl must be between one minute and 30 days")
    return ttl


class Invitations:
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

    def add(
        self, uow: UnitOfWork, tenant_id: str, email: str, role: str, by: Principal, ttl: dt.timedelta | None
    ) -> tuple[m.Invitation, str]:
        """Within the caller's transaction (CreateTenant invites the first owner this way)."""
        token = TOKEN_PREFIX + crypto.random_token(32)
        now = self._clock.now()
        row = uow.invitations.add(
            m.Invitation(
                tenant_id=tenant_id,
                email=email,
                role=role,
                token_hash=crypto.sha256_hex(token),
                invited_by=actor(by),
                created_at=now,
                expires_at=now + check_ttl(ttl),
            )
        )
        self._record(uow, row, resent=False)
        self._mail.invitation(uow, uow.tenants.get(tenant_id), row, token, _inviter(uow, by))
        return row, token

    def create(
        self, ctx: CallContext, tenant_id: str, email: str, role: str, ttl: dt.timedelta | None
    ) -> tuple[m.Invitation, str]:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        email = check_email(email)
        if not role:
            raise InvalidArgument("role", "role is required")
        with self._db.unit_of_work(tenant_id) as uow:
            access.ensure_can_grant(principal, role_grants(uow, role))
            row, token = self.add(uow, tenant_id, email, role, principal, ttl)
            details = {"email": email, "role": role}
            self._audit.record(uow, ctx, tenant_id, "invitation.create", f"invitation:{row.id}", details=details)
            uow.commit()
        return row, token

    def page(
        self, ctx: CallContext, tenant_id: str, state: str | None, page_size: int, page_token: str
    ) -> tuple[list[m.Invitation], str]:
        tenant_id = access.target_tenant(ctx.require_principal(), tenant_id)
        limit = page_size_or_default(page_size)
        with self._db.unit_of_work(tenant_id) as uow:
            rows = list(
                uow.invitations.page(
                    state=state, now=self._clock.now(), after=decode_page_token(page_token), limit=limit + 1
                )
            )
        return rows[:limit], next_token(rows, limit)

    def resend(
        self, ctx: CallContext, tenant_id: str, invitation_id: str, ttl: dt.timedelta | None
    ) -> tuple[m.Invitation, str]:
        """A new token (the old one stops working) and a new expiry."""
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        token = TOKEN_PREFIX + crypto.random_token(32)
        with self._db.unit_of_work(tenant_id) as uow:
            row = uow.invitations.get(invitation_id)
            if state_of(row, self._clock.now()) in (ACCEPTED, REVOKED):
                raise FailedPrecondition("the invitation was already accepted or revoked")
            access.ensure_can_grant(principal, role_grants(uow, row.role))
            row.token_hash = crypto.sha256_hex(token)
            row.expires_at = self._clock.now() + check_ttl(ttl)
            self._record(uow, row, resent=True)
            self._mail.invitation(uow, uow.tenants.get(tenant_id), row, token, _inviter(uow, principal))
            self._audit.record(uow, ctx, tenant_id, "invitation.resend", f"invitation:{row.id}")
            uow.commit()
        return row, token

    def revoke(self, ctx: CallContext, tenant_id: str, invitation_id: str) -> m.Invitation:
        tenant_id = access.target_tenant(ctx.require_principal(), tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            row = uow.invitations.get(invitation_id)
            if row.accepted_at is not None:
                raise FailedPrecondition("the invitation was already accepted")
            row.revoked_at = row.revoked_at or self._clock.now()
            self._audit.record(uow, ctx, tenant_id, "invitation.revoke", f"invitation:{row.id}")
            uow.commit()
        return row

    def accept(
        self, token: str, password: str, display_name: str, ctx: CallContext
    ) -> tuple[IssuedTokens | IssuedChallenge, m.Invitation]:
        if not token.startswith(TOKEN_PREFIX):
            raise InvitationInvalid()
        token_hash = crypto.sha256_hex(token)
        invitation, tenant = self._find(token_hash)
        if tenant.status != "active":
            raise TenantSuspended()
        with self._db.unit_of_work(tenant.id) as uow:
            existing = uow.users.by_email(normalize_email(invitation.email))
        password_hash = self._new_password_hash(tenant, invitation.email, existing, password)
        with self._db.unit_of_work(tenant.id) as uow:
            if not uow.invitations.spend(invitation.id, token_hash, self._clock.now()):
                raise InvitationInvalid()  # spent by a concurrent accept, or revoked meanwhile
            user = self._joining_user(uow, invitation, existing, password_hash, display_name)
            try:
                role_grants(uow, invitation.role)
            except NotFound:
                raise FailedPrecondition(f"the invited role {invitation.role!r} no longer exists") from None
            if not uow.role_bindings.exists(user.id, invitation.role):
                uow.role_bindings.add(tenant.id, user.id, invitation.role)
            row = uow.invitations.get(invitation.id)
            row.user_id = user.id
            data = {"invitation_id": row.id, "user_id": user.id, "email": row.email, "role": row.role}
            emit(uow, tenant.id, events.INVITATION_ACCEPTED, data)
            if existing is None:
                emit(uow, tenant.id, events.USER_CREATED, {"user_id": user.id, "email": row.email, "roles": [row.role]})
            self._audit.record(
                uow,
                ctx,
                tenant.id,
                "invitation.accept",
                f"invitation:{row.id}",
                details=data,
                actor=Actor(user.id, USER),
            )
            self._notifier.user_changed(uow, tenant.id, user.id)
            uow.commit()
        return self._sessions.start_session(tenant.id, user.id, ctx), row

    def _find(self, token_hash: str) -> tuple[m.Invitation, m.Tenant]:
        with self._db.unit_of_work(SYSTEM) as uow:
            invitation = uow.invitations.by_token_hash(token_hash)
            tenant = uow.tenants.find(invitation.tenant_id) if invitation is not None else None
        if invitation is None or tenant is None or state_of(invitation, self._clock.now()) != PENDING:
            raise InvitationInvalid()
        return invitation, tenant

    def _new_password_hash(self, tenant: m.Tenant, email: str, existing: m.User | None, password: str) -> str | None:
        """A new user sets a password. An existing one proves the account is theirs with
        it (else the inviter, who holds the token, could log in as them)."""
        if existing is not None and existing.status != "active":
            raise InvalidCredentials()
        if existing is None or existing.password_hash is None:
            context = password_policy.context_for(tenant.settings, (tenant.slug, tenant.display_name), email)
            password_policy.check(password, context)
            return self._hasher.hash(password)
        too_long = len(password) > passwords.MAX_LENGTH
        if not self._hasher.verify(None if too_long else existing.password_hash, password).ok:
            raise InvalidCredentials()
        return None

    def _joining_user(
        self,
        uow: UnitOfWork,
        invitation: m.Invitation,
        existing: m.User | None,
        password_hash: str | None,
        display_name: str,
    ) -> m.User:
        # The invitation's token went to the address: following it proves the address.
        now = self._clock.now()
        if existing is not None:
            user = uow.users.get(existing.id)
            if password_hash is not None:
                user.password_hash, user.password_changed_at = password_hash, now
            user.email_verified_at = user.email_verified_at or now
            return user
        return uow.users.add(
            m.User(
                tenant_id=invitation.tenant_id,
                email=invitation.email,
                display_name=check_display_name(display_name),
                password_hash=password_hash,
                password_changed_at=now,
                email_verified_at=now,
            )
        )

    @staticmethod
    def _record(uow: UnitOfWork, row: m.Invitation, *, resent: bool) -> None:
        payload = {
            "invitation_id": row.id,
            "email": row.email,
            "role": row.role,
            "invited_by": row.invited_by,
            "expires_at": row.expires_at.isoformat(),
            "resent": resent,
        }
        emit(uow, row.tenant_id, CREATED_EVENT, payload)
