"""Repositories: the only code that builds queries. Tenant filtering is not repeated
here: the unit of work adds it to every query on TenantScoped models (store/db.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Select, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from tahoe_auth.domain.errors import AlreadyExists, NotFound
from tahoe_auth.store import models as m

Cursor = tuple[dt.datetime, str]


def _page(query: Select[Any], model: Any, after: Cursor | None, limit: int) -> Select[Any]:
    """Keyset pagination, oldest first, by (created_at, id)."""
    if after is not None:
        created, row_id = after
        query = query.where((model.created_at > created) | ((model.created_at == created) & (model.id > row_id)))
    return query.order_by(model.created_at, model.id).limit(limit)


class TenantRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    def add(self, tenant: m.Tenant) -> m.Tenant:
        self.session.add(tenant)
        try:
            self.session.flush()
        except IntegrityError:
            raise AlreadyExists("tenant", f"tenant slug {tenant.slug!r} is taken") from None
        return tenant

    def get(self, tenant_id: str) -> m.Tenant:
        tenant = self.session.get(m.Tenant, tenant_id)
        if tenant is None:
            raise NotFound("tenant")
        return tenant

    def find(self, slug_or_id: str) -> m.Tenant | None:
        return self.session.scalars(
            select(m.Tenant).where((m.Tenant.slug == slug_or_id) | (m.Tenant.id == slug_or_id))
        ).first()

    def lock(self, tenant_id: str) -> m.Tenant:
        """The tenant row, locked until commit: serialises changes to its owners."""
        tenant = self.session.scalars(select(m.Tenant).where(m.Tenant.id == tenant_id).with_for_update()).first()
        if tenant is None:
            raise NotFound("tenant")
        return tenant

    def page(self, *, status: str | None, after: Cursor | None, limit: int) -> Sequence[m.Tenant]:
        query = select(m.Tenant)
        if status is not None:
            query = query.where(m.Tenant.status == status)
        return self.session.scalars(_page(query, m.Tenant, after, limit)).all()

    def flush_unique(self, tenant: m.Tenant) -> None:
        try:
            self.session.flush()
        except IntegrityError:
            raise AlreadyExists("tenant", f"tenant slug {tenant.slug!r} is taken") from None


class UserRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    def login_subject(self, tenant_slug_or_id: str, email: str) -> tuple[m.Tenant | None, m.User | None]:
        """The tenant named at login and its user with `email` (None when absent). The
        one query that joins across the tenant wall on purpose: run in the system scope."""
        row = self.session.execute(
            select(m.Tenant, m.User)
            .outerjoin(m.User, (m.User.tenant_id == m.Tenant.id) & (m.User.email == email))
            .where((m.Tenant.slug == tenant_slug_or_id) | (m.Tenant.id == tenant_slug_or_id))
            .limit(1)
        ).first()
        if row is None:
            return None, None
        return row[0], row[1]

    def add(self, user: m.User) -> m.User:
        self.session.add(user)
        try:
            self.session.flush()
        except IntegrityError:
            raise AlreadyExists("user", f"a user with email {user.email!r} exists in this tenant") from None
        return user

    def get(self, user_id: str) -> m.User:
        user = self.session.get(m.User, user_id)
        if user is None:
            raise NotFound("user")
        return user

    def by_email(self, email: str) -> m.User | None:
        return self.session.scalars(select(m.User).where(m.User.email == email)).first()

    def page(self, *, role: str | None, status: str | None, after: Cursor | None, limit: int) -> Sequence[m.User]:
        query = select(m.User)
        if role is not None:
            holders = select(m.RoleBinding.user_id).where(m.RoleBinding.role == role)
            query = query.where(m.User.id.in_(holders))
        if status is not None:
            query = query.where(m.User.status == status)
        return self.session.scalars(_page(query, m.User, after, limit)).all()

    def flush_unique(self, user: m.User) -> None:
        try:
            self.session.flush()
        except IntegrityError:
            raise AlreadyExists("user", f"a user with email {user.email!r} exists in this tenant") from None

    def delete(self, user: m.User) -> None:
        self.session.delete(user)
        self.session.flush()


class RoleBindingRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    def add(self, tenant_id: str, user_id: str, role: str) -> m.RoleBinding:
        binding = m.RoleBinding(tenant_id=tenant_id, user_id=user_id, role=role)
        self.session.add(binding)
        self.session.flush()
        return binding

    def roles_of(self, user_id: str) -> list[str]:
        return list(
            self.session.scalars(
                select(m.RoleBinding.role).where(m.RoleBinding.user_id == user_id).order_by(m.RoleBinding.role)
            )
        )

    def roles_of_many(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {user_id: [] for user_id in user_ids}
        rows = self.session.execute(
            select(m.RoleBinding.user_id, m.RoleBinding.role)
            .where(m.RoleBinding.user_id.in_(user_ids))
            .order_by(m.RoleBinding.role)
        )
        for user_id, role in rows:
            found[user_id].append(role)
        return found

    def exists(self, user_id: str, role: str) -> bool:
        query = select(m.RoleBinding.id).where(m.RoleBinding.user_id == user_id, m.RoleBinding.role == role)
        return self.session.scalars(query).first() is not None

    def remove(self, user_id: str, role: str) -> bool:
        result = self.session.execute(
            delete(m.RoleBinding).where(m.RoleBinding.user_id == user_id, m.RoleBinding.role == role)
        )
        return int(result.rowcount) > 0  # type: ignore[attr-defined]

    def holders(self, role: str) -> list[str]:
        return list(self.session.scalars(select(m.RoleBinding.user_id).where(m.RoleBinding.role == role)))

    def remove_everywhere(self, role: str) -> list[str]:
        holders = self.holders(role)
        self.session.execute(delete(m.RoleBinding).where(m.RoleBinding.role == role))
        return holders

    def active_holders(self, role: str) -> list[str]:
        return list(
            self.session.scalars(
                select(m.RoleBinding.user_id)
                .join(m.User, m.User.id == m.RoleBinding.user_id)
                .where(m.RoleBinding.role == role, m.User.status == "active")
            )
        )


class SessionRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    def add(self, record: m.Session) -> m.Session:
        self.session.add(record)
        self.session.flush()
        return record

    def get(self, session_id: str) -> m.Session:
        record = self.session.get(m.Session, session_id)
        if record is None:
            raise NotFound("session")
        return record

    def list_for_user(
        self, user_id: str, *, now: dt.datetime, show_ended: bool, after: tuple[dt.datetime, str] | None, limit: int
    ) -> Sequence[m.Session]:
        query = select(m.Session).where(m.Session.user_id == user_id)
        if not show_ended:
            query = query.where(
                m.Session.revoked_at.is_(None), m.Session.expires_at > now, m.Session.idle_expires_at > now
            )
        if after is not None:
            created, session_id = after
            query = query.where(
                (m.Session.created_at < created) | ((m.Session.created_at == created) & (m.Session.id < session_id))
            )
        query = query.order_by(m.Session.created_at.desc(), m.Session.id.desc()).limit(limit)
        return self.session.scalars(query).all()

    def active_ids_for_user(self, user_id: str, now: dt.datetime) -> list[str]:
        return list(
            self.session.scalars(
                select(m.Session.id).where(
                    m.Session.user_id == user_id, m.Session.revoked_at.is_(None), m.Session.expires_at > now
                )
            )
        )

    def active_owners(self, session_ids: Sequence[str]) -> dict[str, str]:
        """Session id -> user id, for those of `session_ids` not yet revoked."""
        if not session_ids:
            return {}
        rows = self.session.execute(
            select(m.Session.id, m.Session.user_id).where(m.Session.id.in_(session_ids), m.Session.revoked_at.is_(None))
        )
        return {row[0]: row[1] for row in rows}

    def revoke(self, session_ids: Sequence[str], now: dt.datetime, reason: str) -> int:
        if not session_ids:
            return 0
        result = self.session.execute(
            update(m.Session)
            .where(m.Session.id.in_(session_ids), m.Session.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason=reason)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


class RefreshTokenRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    def add(self, tenant_id: str, session_id: str, token_hash: str) -> None:
        self.session.add(m.RefreshToken(tenant_id=tenant_id, session_id=session_id, token_hash=token_hash))
        self.session.flush()

    def find(self, token_hash: str) -> m.RefreshToken | None:
        return self.session.scalars(select(m.RefreshToken).where(m.RefreshToken.token_hash == token_hash)).first()

    def spend(self, token_hash: str, now: dt.datetime) -> bool:
        """Mark the token used; True for exactly one caller however many race."""
        result = self.session.execute(
            update(m.RefreshToken)
            .where(m.RefreshToken.token_hash == token_hash, m.RefreshToken.used_at.is_(None))
            .values(used_at=now)
        )
        return int(result.rowcount) == 1  # type: ignore[attr-defined]


class SigningKeyRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    def add(self, key: m.SigningKey) -> None:
        self.session.add(key)
        self.session.flush()

    def all(self, *, for_update: bool = False) -> Sequence[m.SigningKey]:
        """Every key; `for_update` locks the rows (PostgreSQL) so that concurrent
        rotations and revocations are applied one after the other."""
        query = select(m.SigningKey).order_by(m.SigningKey.created_at)
        if for_update:
            query = query.with_for_update()
        return self.session.scalars(query).all()

    def delete(self, kids: Sequence[str]) -> None:
        if kids:
            self.session.execute(delete(m.SigningKey).where(m.SigningKey.kid.in_(kids)))


class PlatformCredentialRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    def add(self, credential: m.PlatformCredential) -> None:
        self.session.add(credential)
        self.session.flush()

    def by_hash(self, secret_hash: str) -> m.PlatformCredential | None:
        return self.session.scalars(
            select(m.PlatformCredential).where(m.PlatformCredential.secret_hash == secret_hash)
        ).first()


class RoleRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    def add(self, role: m.Role) -> m.Role:
        self.session.add(role)
        try:
            self.session.flush()
        except IntegrityError:
            raise AlreadyExists("role", f"role {role.name!r} exists in this tenant") from None
        return role

    def find(self, name: str) -> m.Role | None:
        return self.session.scalars(select(m.Role).where(m.Role.name == name)).first()

    def all(self) -> Sequence[m.Role]:
        return self.session.scalars(select(m.Role).order_by(m.Role.name)).all()

    def permissions_of(self, names: Sequence[str]) -> dict[str, list[str]]:
        if not names:
            return {}
        rows = self.session.execute(select(m.Role.name, m.Role.permissions).where(m.Role.name.in_(names)))
        return {name: list(permissions) for name, permissions in rows}

    def delete(self, role: m.Role) -> None:
        self.session.delete(role)
        self.session.flush()


class ApiKeyRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    def add(self, key: m.ApiKey) -> m.ApiKey:
        self.session.add(key)
        self.session.flush()
        return key

    def get(self, key_id: str) -> m.ApiKey:
        key = self.session.get(m.ApiKey, key_id)
        if key is None:
            raise NotFound("api_key")
        return key

    def by_hash(self, digest: str) -> m.ApiKey | None:
        """The key whose current or previous (rotated) secret has this digest."""
        query = select(m.ApiKey).where((m.ApiKey.secret_hash == digest) | (m.ApiKey.previous_secret_hash == digest))
        return self.session.scalars(query).first()

    def page(
        self, *, user_id: str | None, now: dt.datetime, show_ended: bool, after: Cursor | None, limit: int
    ) -> Sequence[m.ApiKey]:
        query = select(m.ApiKey)
        if user_id is not None:
            query = query.where(m.ApiKey.user_id == user_id)
        if not show_ended:
            query = query.where(
                m.ApiKey.revoked_at.is_(None), m.ApiKey.expires_at.is_(None) | (m.ApiKey.expires_at > now)
            )
        return self.session.scalars(_page(query, m.ApiKey, after, limit)).all()

    def ids_of_user(self, user_id: str) -> list[str]:
        return list(self.session.scalars(select(m.ApiKey.id).where(m.ApiKey.user_id == user_id)))

    def record_last_used(self, used: Mapping[str, dt.datetime]) -> None:
        """One statement per key, and only forwards: never moves last_used_at back."""
        for key_id, when in used.items():
            self.session.execute(
                update(m.ApiKey)
                .where(m.ApiKey.id == key_id, m.ApiKey.last_used_at.is_(None) | (m.ApiKey.last_used_at < when))
                .values(last_used_at=when)
            )


class InvitationRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    def add(self, invitation: m.Invitation) -> m.Invitation:
        self.session.add(invitation)
        self.session.flush()
        return invitation

    def get(self, invitation_id: str) -> m.Invitation:
        invitation = self.session.get(m.Invitation, invitation_id)
        if invitation is None:
            raise NotFound("invitation")
        return invitation

    def by_token_hash(self, token_hash: str) -> m.Invitation | None:
        return self.session.scalars(select(m.Invitation).where(m.Invitation.token_hash == token_hash)).first()

    def spend(self, invitation_id: str, token_hash: str, now: dt.datetime) -> bool:
        """Mark it accepted; True for exactly one caller however many race."""
        result = self.session.execute(
            update(m.Invitation)
            .where(
                m.Invitation.id == invitation_id,
                m.Invitation.token_hash == token_hash,
                m.Invitation.accepted_at.is_(None),
                m.Invitation.revoked_at.is_(None),
                m.Invitation.expires_at > now,
            )
            .values(accepted_at=now)
        )
        return int(result.rowcount) == 1  # type: ignore[attr-defined]

    def page(self, *, state: str | None, now: dt.datetime, after: Cursor | None, limit: int) -> Sequence[m.Invitation]:
        i = m.Invitation
        open_ = i.accepted_at.is_(None) & i.revoked_at.is_(None)
        conditions = {
            "pending": open_ & (i.expires_at > now),
            "expired": open_ & (i.expires_at <= now),
            "accepted": i.accepted_at.is_not(None),
            "revoked": i.revoked_at.is_not(None),
        }
        query = select(i)
        if state is not None:
            query = query.where(conditions[state])
        return self.session.scalars(_page(query, i, after, limit)).all()


class ServiceAccountRepository:
    """Tenant service accounts, or (with `model=PlatformServiceAccount`, in the system
    scope) platform-wide ones: the same queries over either table."""

    def __init__(self, session: OrmSession, model: type[m.ServiceAccount] | type[m.PlatformServiceAccount]) -> None:
        self.session = session
        self.model = model

    def add(self, account: m.ServiceAccountFields) -> None:
        self.session.add(account)
        try:
            self.session.flush()
        except IntegrityError:
            raise AlreadyExists("service_account", f"service account {account.name!r} exists") from None

    def find(self, account_id: str) -> m.ServiceAccount | m.PlatformServiceAccount | None:
        return cast(m.ServiceAccount | m.PlatformServiceAccount | None, self.session.get(self.model, account_id))

    def get(self, account_id: str) -> m.ServiceAccount | m.PlatformServiceAccount:
        account = self.find(account_id)
        if account is None:
            raise NotFound("service_account")
        return account

    def page(self, *, after: Cursor | None, limit: int) -> Sequence[m.ServiceAccount | m.PlatformServiceAccount]:
        return self.session.scalars(_page(select(self.model), self.model, after, limit)).all()

    def delete(self, account: m.ServiceAccountFields) -> None:
        self.session.delete(account)
        self.session.flush()
