"""Shared fixtures. Real PostgreSQL and Redis come from TAHOE_TEST_DATABASE_URL and
TAHOE_TEST_REDIS_URL (defaults: local ones). Outside CI a missing one skips the tests
that need it; in CI (CI=true) it fails them."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tahoe_auth import migrate
from tests import support
from tests.servers import OwnPostgres, RedisProcess, redis_server

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
APP_ROLE = "tahoe_app"


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """The CLI, run in-process, points the root logger at the sys.stderr of its test
    (pytest's capture file, closed after that test); later tests' log lines would hit
    the closed file."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("TAHOE_TEST_DATABASE_URL", DEFAULT_PG)
    try:
        support.create_database(url)
        support.reset_schema(url)
    except Exception as exc:  # any failure to reach or prepare it
        support.unavailable(f"PostgreSQL is not reachable ({type(exc).__name__}: {exc})")
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("TAHOE_TEST_REDIS_URL", DEFAULT_REDIS)
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        support.unavailable(f"Redis is not reachable ({exc})")
    return url


@pytest.fixture
def clean_pg(pg_url: str) -> str:
    support.truncate_all(pg_url)
    return pg_url


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


@pytest.fixture
def master_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'tahoe.db'}"
    from tahoe_auth import migrate

    migrate.upgrade(url)
    return url


@pytest.fixture
def pg_env(clean_pg: str, clean_redis: str, master_key: bytes, tmp_path: Path) -> dict[str, str]:
    """Environment for a production-like instance: PostgreSQL + Redis, the app running
    as the `tahoe_app` role so that row-level security applies as in production."""
    return {
        "TAHOE_DATABASE_URL": clean_pg,
        "TAHOE_DATABASE_ROLE": APP_ROLE,
        "TAHOE_REDIS_URL": clean_redis,
        "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(master_key).decode(),
        "TAHOE_VAR_DIR": str(tmp_path / "var"),
    }


@pytest.fixture
def server(pg_env: dict[str, str]) -> Iterator[support.RunningServer]:
    with support.running_server(pg_env) as running:
        yield running


@pytest.fixture
def embedded_server(sqlite_url: str, tmp_path: Path) -> Iterator[support.RunningServer]:
    env = {"TAHOE_DATABASE_URL": sqlite_url, "TAHOE_VAR_DIR": str(tmp_path / "var")}
    with support.running_server(env) as running:
        yield running


@pytest.fixture
def pair(pg_env: dict[str, str]) -> Iterator[tuple[support.RunningServer, support.RunningServer]]:
    """Two instances sharing PostgreSQL and Redis, both listening for changes."""
    with support.running_server(pg_env) as a, support.running_server(pg_env) as b:
        for instance in (a, b):
            assert instance.app.store.subscribed.wait(5)  # type: ignore[attr-defined]
        yield a, b


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    """A private, migrated PostgreSQL cluster that the test may stop and start."""
    postgres = OwnPostgres()
    postgres.init()
    postgres.start()
    migrate.upgrade(postgres.url)
    try:
        yield postgres
    finally:
        with contextlib.suppress(Exception):  # already stopped by the test
            postgres.stop()
        postgres.remove()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private redis-server that the test may stop, kill or pause."""
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
def own_redis_env(pg_env: dict[str, str], own_redis: RedisProcess) -> dict[str, str]:
    """pg_env with the instance on `own_redis` instead of the shared Redis."""
    return {**pg_env, "TAHOE_REDIS_URL": own_redis.url}
