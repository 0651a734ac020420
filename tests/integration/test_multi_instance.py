"""Two server instances sharing PostgreSQL and Redis, as in production."""

from __future__ import annotations

import time

from tahoe_auth.v1 import auth_pb2
from tests.support import RunningServer, token_is_valid, wait_until


def seconds_until_refused(instance: RunningServer, token: str, limit: float = 3.0) -> float:
    started = time.monotonic()
    while token_is_valid(instance, token):
        assert time.monotonic() - started < limit, "still accepted"
        time.sleep(0.01)
    return time.monotonic() - started


def test_revocation_on_one_instance_is_enforced_by_the_other_within_a_second(
    pair: tuple[RunningServer, RunningServer],
) -> None:
    a, b = pair
    tenant = a.create_tenant()
    tokens = a.login(tenant).tokens
    assert token_is_valid(b, tokens.access_token)  # b has now cached the token and the session
    assert token_is_valid(b, tokens.access_token)
    assert b.app.authenticator.tokens.hits >= 1
    a.auth.RevokeSession(
        auth_pb2.RevokeSessionRequest(session_id=tokens.session_id),
        metadata=(("authorization", f"Bearer {tokens.access_token}"),),
    )
    assert seconds_until_refused(b, tokens.access_token) < 1.0


def test_a_rotated_key_is_published_everywhere_before_it_signs(pair: tuple[RunningServer, RunningServer]) -> None:
    """(The whole staged rotation, with a short delay: tests/integration/test_key_rotation.py.)"""
    a, b = pair
    tenant = a.create_tenant()
    old_token = a.login(tenant).tokens.access_token
    old_kid = a.app.keys.ring().active_kid
    new_kid = a.app.keys.rotate().kid
    assert new_kid != old_kid
    wait_until(lambda: new_kid in b.app.keys.ring().keys, limit=1.0)
    new_token = a.login(tenant).tokens.access_token  # still signed by the old key (delay 900 s)
    assert token_is_valid(b, new_token) and token_is_valid(a, new_token)
    assert token_is_valid(b, old_token) and token_is_valid(a, old_token)
    for instance in (a, b):
        ring = instance.app.keys.ring()
        assert ring.active_kid == old_kid
        assert {old_kid, new_kid} == set(ring.keys)
        assert {k["kid"] for k in ring.jwks()["keys"]} == set(ring.keys)


def test_tokens_of_an_unknown_kid_do_not_hammer_the_database(pair: tuple[RunningServer, RunningServer]) -> None:
    a, _ = pair
    a.app.keys.reload()
    before = a.app.keys.unknown_kid_reloads
    forged = "eyJhbGciOiJFUzI1NiIsImtpZCI6Im5vcGUiLCJ0eXAiOiJhdCtqd3QifQ.eyJzdWIiOiJ4In0.c2ln"
    for _ in range(20):
        assert not token_is_valid(a, forged)
    assert a.app.keys.unknown_kid_reloads == before  # (the refresh timer rereads the keys anyway)
