"""`tahoe-auth mfa reset` removes the factors of a user who lost them, audited."""

from __future__ import annotations

import json
from pathlib import Path

import pyotp
import pytest

from tahoe_auth import cli
from tahoe_auth.app import build_app
from tahoe_auth.config import Settings
from tahoe_auth.domain.principal import USER, Principal
from tahoe_auth.services.context import CallContext
from tahoe_auth.store.db import SYSTEM


def test_a_user_who_lost_their_factors_gets_them_removed(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAHOE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("TAHOE_VAR_DIR", str(tmp_path / "var"))
    app = build_app(Settings.from_env())
    try:
        app.keys.ensure_active_key()
        tenant, owner = app.tenants.create_tenant_with_owner(
            "lostphone", "Lost Phone", "o@example.test", "x7#Vq!r2Lm9pWz"
        )
        ctx = CallContext(principal=Principal(tenant.id, owner.id, USER))
        started = app.second_factors.begin_totp(ctx, "Phone")
        code = pyotp.TOTP(started.secret).now()
        app.second_factors.confirm_totp(ctx, started.factor.id, code)
        assert len(app.second_factors.list_factors(ctx, tenant.id, owner.id).factors) == 1
    finally:
        app.close()

    assert cli.main(["mfa", "reset", "--tenant", "lostphone", "--email", "O@example.test"]) == 0
    assert json.loads(capsys.readouterr().out)["removed_factors"] == 1
    assert cli.main(["mfa", "reset", "--tenant", "lostphone", "--email", "nobody@example.test"]) == 1

    app = build_app(Settings.from_env())
    try:
        listed = app.second_factors.list_factors(ctx, tenant.id, owner.id)
        assert not listed.factors and listed.recovery_codes_remaining == 0
        with app.db.unit_of_work(SYSTEM) as uow:
            actions = [
                (e.fields.action, e.fields.actor, e.fields.details.get("by_admin")) for e in uow.audit.chain(tenant.id)
            ]
        assert ("mfa.factor_removed", "cli", True) in actions
    finally:
        app.close()
