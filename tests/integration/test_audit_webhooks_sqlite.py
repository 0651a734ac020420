"""The embedded default (SQLite): audit chain, append-only trigger and webhook delivery."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, pool, text
from sqlalchemy.exc import DBAPIError

from tahoe_auth.v1 import auth_pb2, webhooks_pb2, webhooks_pb2_grpc
from tests import support
from tests.support import bearer
from tests.webhook_receiver import receiver


def test_embedded_audit_and_webhooks(sqlite_url: str, tmp_path: Path) -> None:
    env = {"TAHOE_DATABASE_URL": sqlite_url, "TAHOE_VAR_DIR": str(tmp_path / "var")}
    local = {"webhook_allowed_networks": ("127.0.0.0/8",), "webhook_allow_http": True}
    with support.running_server(env, **local) as server, receiver() as sink:
        tenant = server.create_tenant()
        token = server.login(tenant).tokens.access_token
        created = webhooks_pb2_grpc.WebhookServiceStub(server.channel).CreateWebhookEndpoint(
            webhooks_pb2.CreateWebhookEndpointRequest(endpoint=webhooks_pb2.WebhookEndpoint(url=sink.url)),
            metadata=bearer(token),
        )
        server.auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(token))
        server.app.webhook_worker.drain()
        (message,) = sink.wait_for(1)
        assert message.verify(created.secret)["type"] == "session.revoked"
        checked, problems = server.app.audit_verifier.verify()
        # The first signing key (platform chain); tenant created, login, endpoint created, logout.
        assert problems == [] and checked == 5
    engine = create_engine(sqlite_url, poolclass=pool.NullPool)
    try:
        for statement in ["UPDATE audit_events SET outcome = 'x'", "DELETE FROM audit_events"]:
            with engine.begin() as conn, pytest.raises(DBAPIError, match="append-only"):
                conn.execute(text(statement))
        with engine.begin() as conn, pytest.raises(DBAPIError, match="only advance"):
            conn.execute(text("UPDATE audit_heads SET last_sequence = 1"))
    finally:
        engine.dispose()
