"""Idle and absolute session lifetimes, and rehash on login, with a clock we move."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import pytest

from tahoe_auth.app import App, build_app
from tahoe_auth.config import PasswordParams, Settings
from tahoe_auth.domain.errors import RefreshTokenInvalid
from tahoe_auth.kernel.clock import FakeClock
from tahoe_auth.services.context import CallContext

PASSWORD = "seven quiet kettles"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(dt.datetime.now(dt.UTC))


@pytest.fixture
def app(pg_env: dict[str, str], clock: FakeClock) -> Iterator[App]:
    settings = dataclasses.replace(Settings.from_env(pg_env), session_idle_ttl=3600, session_absolute_ttl=3 * 3600)
    application = build_app(settings, clock=clock)
    application.keys.ensure_active_key()
    application.tenants.create_tenant_with_owner("life", "Life", "o@life.test", PASSWORD)
    yield application
    application.close()


def test_idle_session_ends(app: App, clock: FakeClock) -> None:
    issued = app.sessions.login("life", "o@life.test", PASSWORD, CallContext())
    clock.advance(3599)
    renewed = app.sessions.refresh(issued.refresh_token, CallContext())  # use resets the idle timer
    clock.advance(3599)
    renewed = app.sessions.refresh(renewed.refresh_token, CallContext())
    clock.advance(3601)
    with pytest.raises(RefreshTokenInvalid):
        app.sessions.refresh(renewed.refresh_token, CallContext())


def test_absolute_lifetime_ends_even_an_active_session(app: App, clock: FakeClock) -> None:
    token = app.sessions.login("life", "o@life.test", PASSWORD, CallContext()).refresh_token
    for _ in range(5):
        clock.advance(1800)
        token = app.sessions.refresh(token, CallContext()).refresh_token
    clock.advance(1801)  # 3 h 0 min 1 s after login
    with pytest.raises(RefreshTokenInvalid):
        app.sessions.refresh(token, CallContext())


def test_login_rehashes_when_parameters_change(pg_env: dict[str, str], app: App) -> None:
    with app.db.unit_of_work("system") as uow:
        tenant = uow.tenants.find("life")
        assert tenant is not None
    with app.db.unit_of_work(tenant.id) as uow:
        user = uow.users.by_email("o@life.test")
        assert user is not None and ",t=2," in (user.password_hash or "")
    stronger = dataclasses.replace(Settings.from_env(pg_env), password=PasswordParams(time_cost=3))
    upgraded = build_app(stronger)
    try:
        upgraded.sessions.login("life", "o@life.test", PASSWORD, CallContext())
        with upgraded.db.unit_of_work(tenant.id) as uow:
            rehashed = uow.users.by_email("o@life.test")
            assert rehashed is not None and ",t=3," in (rehashed.password_hash or "")
        upgraded.sessions.login("life", "o@life.test", PASSWORD, CallContext())  # still the same password
    finally:
        upgraded.close()
