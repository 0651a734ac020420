"""Staged signing-key rotation and emergency revocation, on real servers.

The publication delay is 2 s here (the JWKS max-age 1 s), so that a rotation's whole
life fits in a test: published at once, signing at its activation time on every
instance without any notification, the old key published until its tokens expire.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import types
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import jwt
import pytest
from sqlalchemy import event

from tahoe_auth.app import build_app
from tahoe_auth.config import Settings
from tahoe_auth.domain.key_schedule import KeyState
from tahoe_auth.http_side import SideServer
from tahoe_auth.identity import IdentityVerifier
from tahoe_auth.kernel.clock import FakeClock
from tahoe_auth.v1 import auth_pb2, keys_pb2, keys_pb2_grpc
from tests.integration.test_ext_authz import check, check_request, denial, upstream_headers
from tests.support import (
    RunningServer,
    Tenant,
    bearer,
    call_error,
    error_reason,
    running_server,
    token_is_valid,
    wait_until,
)

STAGED = {"signing_key_publish_delay": 2, "jwks_max_age": 1, "signing_key_refresh_interval": 1}
STAGED_ENV = {
    "TAHOE_SIGNING_KEY_PUBLISH_DELAY": "2",
    "TAHOE_JWKS_MAX_AGE": "1",
    "TAHOE_SIGNING_KEY_REFRESH_INTERVAL": "1",
}


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


class Session:
    """A login whose refresh token mints access tokens without a password hash (fast
    enough to land inside a 2 s publication window on a loaded machine)."""

    def __init__(self, server: RunningServer, tenant: Tenant) -> None:
        self._server = server
        tokens = server.login(tenant).tokens
        self.first, self._refresh = tokens.access_token, tokens.refresh_token

    def token(self, via: RunningServer | None = None) -> str:
        tokens = (via or self._server).auth.Refresh(auth_pb2.RefreshRequest(refresh_token=self._refresh)).tokens
        self._refresh = tokens.refresh_token
        return tokens.access_token


def keys_stub(server: RunningServer) -> keys_pb2_grpc.KeyServiceStub:
    return keys_pb2_grpc.KeyServiceStub(server.channel)


@contextlib.contextmanager
def side_port(server: RunningServer) -> Iterator[str]:
    """The server's HTTP side port (JWKS) on a free port: its base URL."""
    side = SideServer(server.app, types.SimpleNamespace(ready=True), "127.0.0.1:0")  # type: ignore[arg-type]
    side.start()
    try:
        yield f"http://{side.address}"
    finally:
        side.stop()


@pytest.fixture
def staged_pair(pg_env: dict[str, str]) -> Iterator[tuple[RunningServer, RunningServer]]:
    with running_server(pg_env, **STAGED) as a, running_server(pg_env, **STAGED) as b:
        for instance in (a, b):
            assert instance.app.store.subscribed.wait(5)  # type: ignore[attr-defined]
        yield a, b


@pytest.mark.postgres
@pytest.mark.redis
def test_staged_rotation_across_two_instances_rejects_nothing(staged_pair: tuple[RunningServer, RunningServer]) -> None:
    a, b = staged_pair
    session = Session(a, a.create_tenant())
    old_kid = a.app.keys.ring().active_kid
    before = session.first

    rotated = keys_stub(a).RotateSigningKey(keys_pb2.RotateSigningKeyRequest(), metadata=bearer(a.platform_key))
    new_kid = rotated.next_kid
    assert rotated.active_kid == old_kid != new_kid  # the current key keeps signing
    states = {k.kid: k.state for k in rotated.keys}
    assert states == {old_kid: keys_pb2.SIGNING_KEY_STATE_ACTIVE, new_kid: keys_pb2.SIGNING_KEY_STATE_NEXT}
    staged = next(k for k in rotated.keys if k.kid == new_kid)
    assert staged.published and not staged.active
    assert staged.activate_time.ToSeconds() - staged.create_time.ToSeconds() in (1, 2)  # 2 s, truncated

    # Published at once on both instances (b by the notification), not signing yet.
    for instance in (a, b):
        wait_until(lambda i=instance: new_kid in i.app.keys.ring().keys, limit=1.0)  # type: ignore[misc]
    just_after = session.token()
    assert kid_of(just_after) == old_kid

    # Both switch at the activation time by themselves: no notification is involved.
    for instance in (a, b):
        wait_until(lambda i=instance: i.app.keys.ring().active_kid == new_kid, limit=4.0)  # type: ignore[misc]
    after_a, after_b = session.token(a), session.token(b)
    assert kid_of(after_a) == kid_of(after_b) == new_kid
    for token in (before, just_after, after_a, after_b):
        assert token_is_valid(a, token) and token_is_valid(b, token)

    listed = keys_stub(b).ListSigningKeys(keys_pb2.ListSigningKeysRequest(), metadata=bearer(b.platform_key))
    assert listed.active_kid == new_kid and listed.keys[0].kid == new_kid and listed.keys[0].active
    old = next(k for k in listed.keys if k.kid == old_kid)
    assert old.state == keys_pb2.SIGNING_KEY_STATE_RETIRED and old.published
    assert old.retire_time == staged.activate_time
    ttl = max(a.app.settings.access_token_ttl, 300) + 5
    assert old.unpublish_time.ToSeconds() - old.retire_time.ToSeconds() in (ttl - 1, ttl)


@pytest.mark.postgres
@pytest.mark.redis
def test_identity_verifiers_accept_every_identity_token_across_a_rotation(pg_env: dict[str, str]) -> None:
    """x-tahoe-identity tokens come from the same key ring: a verifier holding a long-cached
    JWKS (600 s) fetched during the publication window verifies the next key's tokens
    without refetching; one that fetched before the rotation refetches once."""
    with running_server(pg_env, **STAGED) as server, side_port(server) as base:
        fetches = {"early": 0, "staged": 0}
        cache_control: set[str] = set()

        def counting(name: str):  # type: ignore[no-untyped-def]
            def fetch(url: str, timeout: float) -> bytes:
                fetches[name] += 1
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    cache_control.add(response.headers["cache-control"])
                    body: bytes = response.read()
                return body

            return fetch

        def verifier(name: str) -> IdentityVerifier:
            return IdentityVerifier(
                f"{base}/.well-known/jwks.json", audience="transcription", jwks_ttl=600.0, fetch=counting(name)
            )

        # Three callers logged in up front (password hashing is slow); each one's first
        # Check mints a fresh identity token, signed by the key active at that moment.
        callers = iter([server.owner_token(server.create_tenant()) for _ in range(3)])

        def identity_token() -> str:
            token = next(callers)
            return upstream_headers(check(server, check_request(f"Bearer {token}")))["x-tahoe-identity"]

        early, staged = verifier("early"), verifier("staged")
        old_kid = server.app.keys.ring().active_kid
        before = identity_token()
        early.verify(before)
        new_kid = server.app.keys.rotate().kid
        just_after = identity_token()
        for token in (before, just_after):
            staged.verify(token)
            early.verify(token)
        wait_until(lambda: server.app.keys.ring().active_kid == new_kid, limit=4.0)
        after = identity_token()
        assert [kid_of(t) for t in (before, just_after, after)] == [old_kid, old_kid, new_kid]
        for token in (before, just_after, after):
            assert staged.verify(token).token_id
            assert early.verify(token).token_id
        assert fetches == {"staged": 1, "early": 2}
        assert cache_control == {"public, max-age=1"}  # below the 2 s publication delay


@pytest.mark.postgres
@pytest.mark.redis
def test_revoking_the_active_key_refuses_its_tokens_everywhere_at_once(
    staged_pair: tuple[RunningServer, RunningServer],
) -> None:
    a, b = staged_pair
    tenant = a.create_tenant()
    compromised = a.app.keys.ring().active_kid
    assert compromised is not None
    token = a.login(tenant).tokens.access_token
    for instance in (a, b):  # verified, cached, and allowed (decision and identity token cached) on both
        assert token_is_valid(instance, token) and token_is_valid(instance, token)
        upstream_headers(check(instance, check_request(f"Bearer {token}")))
        upstream_headers(check(instance, check_request(f"Bearer {token}")))
    next_kid = a.app.keys.rotate().kid  # staged for 2 s: revocation promotes it at once

    revoked = keys_stub(a).RevokeSigningKey(
        keys_pb2.RevokeSigningKeyRequest(kid=compromised), metadata=bearer(a.platform_key)
    )
    assert revoked.active_kid == next_kid
    entry = next(k for k in revoked.keys if k.kid == compromised)
    assert entry.state == keys_pb2.SIGNING_KEY_STATE_REVOKED and not entry.published
    assert entry.revoke_time == revoked.revoke_time == entry.unpublish_time

    assert not token_is_valid(a, token)
    wait_until(lambda: not token_is_valid(b, token), limit=1.0)
    for instance in (a, b):
        status, _, body = denial(check(instance, check_request(f"Bearer {token}")))
        assert status == 401 and body["error"] == "invalid_token", body
        ring = instance.app.keys.ring()
        assert compromised not in ring.keys and ring.active_kid == next_kid
        assert compromised not in {k["kid"] for k in ring.jwks()["keys"]}
    fresh = a.login(tenant).tokens.access_token
    assert kid_of(fresh) == next_kid and token_is_valid(a, fresh) and token_is_valid(b, fresh)
    identity = upstream_headers(check(b, check_request(f"Bearer {fresh}")))["x-tahoe-identity"]
    assert kid_of(identity) == next_kid

    again = call_error(
        keys_stub(a).RevokeSigningKey,
        keys_pb2.RevokeSigningKeyRequest(kid=compromised),
        metadata=bearer(a.platform_key),
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION and error_reason(again) == "SIGNING_KEY_REVOKED"
    unknown = call_error(
        keys_stub(a).RevokeSigningKey, keys_pb2.RevokeSigningKeyRequest(kid="nope"), metadata=bearer(a.platform_key)
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND and error_reason(unknown) == "NOT_FOUND"
    empty = call_error(
        keys_stub(a).RevokeSigningKey, keys_pb2.RevokeSigningKeyRequest(), metadata=bearer(a.platform_key)
    )
    assert error_reason(empty) == "INVALID_ARGUMENT"
    owner = call_error(
        keys_stub(a).RevokeSigningKey, keys_pb2.RevokeSigningKeyRequest(kid=next_kid), metadata=bearer(fresh)
    )
    assert owner.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.postgres
@pytest.mark.redis
def test_revoking_the_only_key_makes_a_new_one_sign_at_once(server: RunningServer) -> None:
    compromised = server.app.keys.ring().active_kid
    assert compromised is not None
    token = server.login(server.create_tenant()).tokens.access_token
    signing = server.app.keys.revoke(compromised)
    assert signing.kid != compromised and signing.activates_at == signing.created_at
    assert list(server.app.keys.ring().keys) == [signing.kid]
    assert not token_is_valid(server, token)


def cli(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "tahoe_auth", "keys", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_embedded_default_picks_up_a_rotation_and_a_revocation_from_another_process(
    sqlite_url: str, tmp_path: Path
) -> None:
    """SQLite and no Redis: `tahoe-auth keys` in a shell has no channel to the running
    server; the server rereads the key rows by itself and activates on schedule."""
    env = {"TAHOE_DATABASE_URL": sqlite_url, "TAHOE_VAR_DIR": str(tmp_path / "var"), **STAGED_ENV}
    with running_server(env) as server:
        tenant = server.create_tenant()
        old_kid = server.app.keys.ring().active_kid
        before = server.login(tenant).tokens.access_token

        rotated = cli(env, "rotate")
        new_kid = str(rotated["next_kid"])
        assert rotated["active_kid"] == old_kid
        assert [k["state"] for k in rotated["keys"]] == ["active", "next"]  # type: ignore[attr-defined]
        wait_until(lambda: new_kid in server.app.keys.ring().keys, limit=4.0)
        wait_until(lambda: server.app.keys.ring().active_kid == new_kid, limit=4.0)
        after = server.login(tenant).tokens.access_token
        assert kid_of(after) == new_kid and token_is_valid(server, before) and token_is_valid(server, after)

        listed = cli(env, "list")
        assert {k["kid"]: k["state"] for k in listed["keys"]} == {  # type: ignore[attr-defined]
            new_kid: "active",
            old_kid: "retired",
        }
        revoked = cli(env, "revoke", new_kid)
        assert revoked["active_kid"] not in (old_kid, new_kid)
        wait_until(lambda: not token_is_valid(server, after), limit=4.0)
        assert token_is_valid(server, before)  # the retired key was not revoked
        assert kid_of(server.login(tenant).tokens.access_token) == revoked["active_kid"]


def test_activation_is_computed_from_the_rows_and_the_clock_without_io(sqlite_url: str, tmp_path: Path) -> None:
    """A fake clock past the activation time: the ring switches keys on its own, with
    no reload, no notification and no SQL."""
    clock = FakeClock(dt.datetime.now(dt.UTC))
    settings = Settings.from_env({"TAHOE_DATABASE_URL": sqlite_url, "TAHOE_VAR_DIR": str(tmp_path / "var")})
    app = build_app(settings, clock=clock)
    try:
        app.keys.ensure_active_key()
        old_kid = app.keys.ring().active_kid
        staged = app.keys.rotate()
        assert staged.activates_at == clock.now() + dt.timedelta(seconds=settings.signing_key_publish_delay)
        statements: list[str] = []
        event.listen(app.db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        clock.advance(settings.signing_key_publish_delay - 1)
        assert app.keys.ring().active_kid == old_kid
        clock.advance(1)
        assert app.keys.ring().active_kid == staged.kid
        assert app.keys.schedule().status(old_kid).state is KeyState.RETIRED  # type: ignore[arg-type, union-attr]
        clock.advance(app.keys.retention.total_seconds())
        assert list(app.keys.ring().keys) == [staged.kid]  # the retired key left the JWKS
        assert statements == []
    finally:
        app.close()
