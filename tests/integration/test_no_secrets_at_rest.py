"""No password, refresh token, API key or private key is stored or logged in clear."""

from __future__ import annotations

import logging

import grpc
import pytest
from sqlalchemy import create_engine, inspect, pool, text

from tahoe_auth.v1 import auth_pb2
from tests.support import RunningServer


def dump_database(url: str) -> str:
    engine = create_engine(url, poolclass=pool.NullPool)
    chunks = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                chunks.append(repr(tuple(row)))
    engine.dispose()
    return "\n".join(chunks)


def test_secrets_never_appear_in_clear(
    server: RunningServer, pg_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = server.create_tenant(password="a very secret passphrase")
    first = server.login(tenant).tokens
    second = server.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token)).tokens
    wrong = auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password="wrong but secret pw")
    with pytest.raises(grpc.RpcError):  # only what the failure leaves behind matters
        server.auth.Login(wrong)
    secrets = [
        "a very secret passphrase",
        "wrong but secret pw",
        first.refresh_token,
        second.refresh_token,
        first.refresh_token.removeprefix("rt_"),
        server.platform_key,
        first.access_token,
    ]
    stored = dump_database(pg_env["TAHOE_DATABASE_URL"])
    assert "argon2id" in stored  # the dump did read the users table
    assert "BEGIN PRIVATE KEY" not in stored
    for secret in secrets:
        assert secret not in stored
        assert secret not in caplog.text
