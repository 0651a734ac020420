"""End-to-end fixtures: one stack (auth server + Envoy + demo upstream) per module,
on the real PostgreSQL and Redis. Tests create their own tenants (random slugs), so
they share the stack without interfering."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
from collections.abc import Iterator

import pytest

from tests import harness, support
from tests.e2e import stack as e2e

pytestmark = pytest.mark.envoy


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    """The envoy executable; without one, e2e tests skip (fail under CI=true)."""
    try:
        return harness.find_binary("envoy")
    except FileNotFoundError as exc:
        missing = str(exc)
    support.unavailable(f"envoy is not installed ({missing}; make install provides it)")


@pytest.fixture(scope="module", params=sorted(e2e.TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> str:
    """Check's transport: every test on the `live` stack runs over both, alike."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def module_env(
    envoy_binary: str, pg_url: str, redis_url: str, transport: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    # A clean database and Redis for the module and transport (its master key is new);
    # the tests then share them, each with its own tenants.
    support.truncate_all(pg_url)
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    return {
        "TAHOE_DATABASE_URL": pg_url,
        "TAHOE_DATABASE_ROLE": "tahoe_app",  # row-level security applies, as in production
        "TAHOE_REDIS_URL": redis_url,
        "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "TAHOE_VAR_DIR": str(tmp_path_factory.mktemp("var")),
        # Every request comes from 127.0.0.1: the per-address default (100/min) would
        # make these functional tests about rate limits (test_limits_through_envoy is).
        "TAHOE_RATE_LIMITS": json.dumps({"per_address": {"limit": 100_000, "period": 60}}),
    }


@pytest.fixture(scope="module")
def live(module_env: dict[str, str], transport: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e.Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    with e2e.stack(module_env, tmp, transport=transport) as running:
        yield running
    shutil.rmtree(tmp, ignore_errors=True)
