"""Tenants and their users."""

from __future__ import annotations

import re

from tahoe_auth.clock import Clock
from tahoe_auth.domain import passwords
from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.services.sessions import normalize_email
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def check_slug(slug: str) -> str:
    if not SLUG.match(slug):
        raise InvalidArgument("slug", "slug must be 1-63 lowercase letters, digits or dashes")
    return slug


def check_email(email: str, field: str = "email") -> str:
    email = normalize_email(email)
    if len(email) > 320 or not EMAIL.match(email):
        raise InvalidArgument(field, f"{email!r} is not an email address")
    return email


class TenantAdmin:
    def __init__(self, db: Database, hasher: passwords.BoundedHasher, clock: Clock) -> None:
        self._db = db
        self._hasher = hasher
        self._clock = clock

    def create_tenant_with_owner(
        self, slug: str, display_name: str, owner_email: str, password: str
    ) -> tuple[m.Tenant, m.User]:
        slug = check_slug(slug.strip().lower())
        email = check_email(owner_email)
        passwords.check_policy(password)
        password_hash = self._hasher.hash(password)
        with self._db.unit_of_work(SYSTEM) as uow:
            tenant = uow.tenants.add(m.Tenant(slug=slug, display_name=display_name or slug))
            user = uow.users.add(
                m.User(
                    tenant_id=tenant.id, email=email, password_hash=password_hash, password_changed_at=self._clock.now()
                )
            )
            uow.role_bindings.add(tenant.id, user.id, "owner")
            uow.commit()
        return tenant, user
