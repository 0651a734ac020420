"""`tahoe-auth service-account create` registers an internal service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tahoe_auth import cli
from tahoe_auth.app import build_app
from tahoe_auth.config import Settings
from tahoe_auth.domain import tokens


def test_registering_the_transcription_service_platform_wide(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAHOE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("TAHOE_VAR_DIR", str(tmp_path / "var"))
    argv = ["service-account", "create", "--name", "transcription", "--permission", "usage:write"]
    assert cli.main(argv) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["tenant_id"] == "" and created["permissions"] == ["usage:write"]
    assert cli.main(argv) == 1  # the name is taken
    assert cli.main([*argv[:3], "other", "--tenant", "nope"]) == 1

    app = build_app(Settings.from_env())
    try:
        app.keys.ensure_active_key()
        token, _ = app.service_accounts.issue_token(created["client_id"], created["client_secret"])
        claims = tokens.verify_access_token(token, app.keys.ring(), issuer=app.settings.issuer, audience="tahoe")
        assert claims.subject_type == "service" and claims.tenant_id == "" and claims.subject == created["client_id"]
    finally:
        app.close()
