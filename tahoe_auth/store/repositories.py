"""Repositories: the only code that builds queries. Tenant filtering is not repeated
here: the unit of work adds it to every query on TenantScoped models (store/db.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from tahoe_auth.domain.errors import AlreadyExists, NotFound
from tahoe_auth.store import models as m


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


class UserRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

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

    def get_for_update(self, session_id: str) -> m.Session:
        record = self.session.scalars(select(m.Session).where(m.Session.id == session_id).with_for_update()).first()
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

    def all(self) -> Sequence[m.SigningKey]:
        return self.session.scalars(select(m.SigningKey).order_by(m.SigningKey.created_at)).all()

    def retire_all_except(self, kid: str, now: dt.datetime) -> None:
        self.session.execute(
            update(m.SigningKey)
            .where(m.SigningKey.kid != kid, m.SigningKey.retired_at.is_(None))
            .values(retired_at=now)
        )

    def delete_retired_before(self, cutoff: dt.datetime) -> None:
        for key in self.session.scalars(select(m.SigningKey).where(m.SigningKey.retired_at < cutoff)):
            self.session.delete(key)


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

    def count(self) -> int:
        return int(self.session.scalar(select(func.count()).select_from(m.PlatformCredential)) or 0)
