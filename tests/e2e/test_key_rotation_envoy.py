"""A real Envoy `jwt_authn` filter with a long-cached JWKS (remote_jwks, cache_duration
600 s, from our side port) across a staged rotation: no token is rejected.

Two providers with the same JWKS URI keep separate caches: `before` fetched its JWKS
before the rotation (the case of the original report: tokens issued right after a
rotation were refused), `staged` fetched it during the publication window. The
publication delay is 2 s here; in production it is longer than any verifier's cache
(TAHOE_SIGNING_KEY_PUBLISH_DELAY 900 s > 600 s), so every verifier is a `staged` one by
the time the next key signs.
"""

from __future__ import annotations

import contextlib
import http.client
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from tahoe_auth.http_side import SideServer
from tahoe_auth.v1 import auth_pb2, keys_pb2, keys_pb2_grpc
from tests import harness
from tests.support import RunningServer, bearer, running_server, wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]

STAGED = {"signing_key_publish_delay": 2, "jwks_max_age": 1, "signing_key_refresh_interval": 1}
PROVIDERS = ("before", "staged")


def jwt_authn_config(listener_port: int, admin_port: int, jwks_port: int, issuer: str, audience: str) -> dict[str, Any]:
    def provider() -> dict[str, Any]:
        return {
            "issuer": issuer,
            "audiences": [audience],
            "remote_jwks": {
                "http_uri": {
                    "uri": f"http://127.0.0.1:{jwks_port}/.well-known/jwks.json",
                    "cluster": "jwks",
                    "timeout": "2s",
                },
                "cache_duration": "600s",
            },
        }

    jwt_filter = harness._typed(
        "envoy.filters.http.jwt_authn",
        "extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        providers={name: provider() for name in PROVIDERS},
        rules=[{"match": {"prefix": f"/{name}"}, "requires": {"provider_name": name}} for name in PROVIDERS],
    )
    router = harness._typed("envoy.filters.http.router", "extensions.filters.http.router.v3.Router")
    return {
        "admin": {"address": harness._address(admin_port)},
        "static_resources": {
            "listeners": [harness._listener(listener_port, [jwt_filter, router], harness._route(None, "ok"))],
            "clusters": [harness._cluster("jwks", [jwks_port])],
        },
    }


def status_through(envoy: harness.Envoy, provider: str, token: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", envoy.listener_port, timeout=10)
    try:
        conn.request("GET", f"/{provider}/x", headers={"authorization": f"Bearer {token}"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@contextlib.contextmanager
def side_port(server: RunningServer) -> Iterator[int]:
    side = SideServer(server.app, types.SimpleNamespace(ready=True), "127.0.0.1:0")  # type: ignore[arg-type]
    side.start()
    try:
        yield int(side.address.rpartition(":")[2])
    finally:
        side.stop()


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def test_envoy_with_a_long_cached_jwks_rejects_no_token_across_a_rotation(
    pg_env: dict[str, str], tmp_path: Path
) -> None:
    harness.find_binary("envoy")  # fails (does not skip) when Envoy is missing
    with running_server(pg_env, **STAGED) as server, side_port(server) as jwks_port:
        settings = server.app.settings
        config = jwt_authn_config(
            harness.free_port(), harness.free_port(), jwks_port, settings.issuer, settings.audience
        )
        with harness.run_envoy(config, tmp_path) as envoy:
            tokens = server.login(server.create_tenant()).tokens
            refresh = tokens.refresh_token

            def fresh_token() -> str:  # by refresh: no password hash, fast inside the 2 s window
                nonlocal refresh
                issued = server.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=refresh)).tokens
                refresh = issued.refresh_token
                return issued.access_token

            old_kid = server.app.keys.ring().active_kid
            before = tokens.access_token
            assert status_through(envoy, "before", before) == 200  # `before` caches a JWKS with the old key only

            rotated = keys_pb2_grpc.KeyServiceStub(server.channel).RotateSigningKey(
                keys_pb2.RotateSigningKeyRequest(), metadata=bearer(server.platform_key)
            )
            new_kid = rotated.next_kid
            just_after = fresh_token()
            assert kid_of(just_after) == old_kid  # the reported failure: refused by a pre-rotation cache
            assert status_through(envoy, "before", just_after) == 200
            for token in (before, just_after):  # `staged` caches a JWKS with both keys
                assert status_through(envoy, "staged", token) == 200

            wait_until(lambda: server.app.keys.ring().active_kid == new_kid, limit=5.0)
            after = fresh_token()
            assert kid_of(after) == new_kid
            for token in (before, just_after, after):
                assert status_through(envoy, "staged", token) == 200
            assert status_through(envoy, "before", before) == 200

            # The same 600 s cache, one fetch per provider, held across the activation.
            fetched = harness.envoy_stats(envoy.admin_port, r"jwks_fetch")
            assert sum(v for k, v in fetched.items() if k.endswith("jwks_fetch_success")) == len(PROVIDERS), fetched
            # (Why the delay must exceed every verifier's cache: `before` fetched ahead of a
            # rotation whose delay, here, is shorter than its cache. Production's 900 s is not.)
            assert status_through(envoy, "before", after) == 401
