"""docs/operations.md's recipes, run as written: every `sh` block, in order, through the
real grpcurl binary against a real server, then each step's JSON is checked. Blocks
marked `<!-- requires: SERVICE -->` run when the server offers that service."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tahoe_auth.domain.webhooks import RetryPolicy
from tahoe_auth.services.webhook_delivery import WebhookWorker, WorkerConfig
from tahoe_auth.v1 import auth_pb2, webhooks_pb2, webhooks_pb2_grpc
from tahoe_auth.webhooks.sender import EgressPolicy
from tests import support
from tests.support import RunningServer, bearer
from tests.webhook_receiver import Receiver, Reply, receiver

pytestmark = [pytest.mark.postgres]

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
BLOCK = re.compile(r"(?:<!-- requires: ([\w.]+) -->\n)?^```sh\n(.*?)^```", re.S | re.M)
GRPCURL = Path(sys.executable).parent / "grpcurl"


def blocks() -> list[tuple[str, str]]:
    found = [(required or "", body) for required, body in BLOCK.findall(DOC.read_text())]
    assert len(found) >= 6, "docs/operations.md lost its shell blocks"
    return found


@pytest.fixture
def stage(pg_env: dict[str, str]) -> Iterator[tuple[RunningServer, Receiver, dict[str, str]]]:
    local = {"webhook_allowed_networks": ("127.0.0.0/8",), "webhook_allow_http": True}
    with support.running_server(pg_env, **local) as server, receiver() as sink:
        tenant = server.create_tenant()
        logins = [server.login(tenant) for _ in range(4)]
        with pytest.raises(Exception, match=r"INVALID_CREDENTIALS|Unauthenticated|invalid"):
            server.auth.Login(auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password="nope" * 4))
        for _ in range(7):
            server.app.denials.record(tenant.id, "permission_denied", "transcription-write")
        server.app.denials.flush(everything=True)
        token = logins[-1].tokens.access_token
        webhooks_pb2_grpc.WebhookServiceStub(server.channel).CreateWebhookEndpoint(
            webhooks_pb2.CreateWebhookEndpointRequest(endpoint=webhooks_pb2.WebhookEndpoint(url=sink.url)),
            metadata=bearer(token),
        )
        for login in logins[:2]:  # two session.revoked events; the receiver is down for both
            server.auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(login.tokens.access_token))
        sink.default = Reply(503)
        app = server.app
        config = WorkerConfig(retry=RetryPolicy(horizon=0.0), timeout=2.0, lease=5.0)
        dead_letters = WebhookWorker(
            app.db, app.webhooks.box, EgressPolicy.parse(["127.0.0.0/8"], True), app.audit, app.clock, config
        )
        dead_letters.drain()
        dead_letters.stop()
        sink.wait_for(2)
        sink.default = Reply(200)
        env = {
            "ADDR": server.address,
            "PLATFORM_KEY": server.platform_key,
            "TENANT_ID": tenant.id,
            "CREDENTIAL": logins[2].tokens.access_token,
            "OWNER_ID": logins[0].user_id,
        }
        yield server, sink, env


def test_operations_recipes_run_as_documented(
    stage: tuple[RunningServer, Receiver, dict[str, str]], tmp_path: Path
) -> None:
    server, sink, values = stage
    assert GRPCURL.exists(), "grpcurl is installed into the virtualenv by make install"
    listed = subprocess.run(
        [str(GRPCURL), "-plaintext", server.address, "list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    runnable = [body for required, body in blocks() if not required or required in listed]
    skipped = [required for required, _ in blocks() if required and required not in listed]
    assert set(skipped) <= {"tahoe_auth.v1.TenantService", "tahoe_auth.v1.DecisionService"}
    kid_before = server.app.keys.ring().active_kid
    env = {**os.environ, **values, "PATH": f"{GRPCURL.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(runnable)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"recipes failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    head = result.stdout.split("\n### ")[0]
    for service in ("AuditService", "WebhookService", "KeyService", "AuthService"):
        assert f"tahoe_auth.v1.{service}" in head
    steps = support.parse_steps(result.stdout)

    (logins,) = steps["recent logins"]
    assert {e["actor"] for e in logins["events"]} == {values["OWNER_ID"]}
    assert all(e["action"] == "auth.login" and e["outcome"] == "AUDIT_OUTCOME_SUCCESS" for e in logins["events"])
    (sessions,) = steps["their sessions"]
    assert len(sessions["sessions"]) == 2  # two of the four logins were logged out
    (revoked,) = steps["revoke one"]
    assert revoked["session"]["revoke_reason"] == "revoked" and revoked["session"]["revoke_time"]
    (rest,) = steps["revoke the rest"]
    assert rest["revoked_count"] == 1

    (denials,) = steps["denials in the audit log"]
    (denial,) = denials["events"]
    assert denial["details"]["count"] == 7 and denial["outcome"] == "AUDIT_OUTCOME_DENIED"

    (rotated,) = steps["rotate"]
    assert rotated["active_kid"] == kid_before != rotated["next_kid"]  # staged: the current key keeps signing
    (published,) = steps["published keys"]
    first, staged = published["keys"]
    assert first["kid"] == kid_before and first["active"] and first["state"] == "SIGNING_KEY_STATE_ACTIVE"
    assert staged["kid"] == rotated["next_kid"] and staged["state"] == "SIGNING_KEY_STATE_NEXT"
    assert staged["published"] and staged["activate_time"] == rotated["activate_time"]
    (revoked,) = steps["revoke the key that signs now"]
    assert revoked["active_kid"] == rotated["next_kid"] == server.app.keys.ring().active_kid  # promoted at once
    states = {k["kid"]: k["state"] for k in revoked["keys"]}
    assert states == {kid_before: "SIGNING_KEY_STATE_REVOKED", rotated["next_kid"]: "SIGNING_KEY_STATE_ACTIVE"}

    (dead,) = steps["dead deliveries"]
    assert len(dead["deliveries"]) == 2
    assert all(d["status"] == "WEBHOOK_DELIVERY_STATUS_DEAD" for d in dead["deliveries"])
    (one,) = steps["replay one"]
    assert [d["status"] for d in one["deliveries"]] == ["WEBHOOK_DELIVERY_STATUS_PENDING"]
    (rest_of_them,) = steps["replay every dead delivery of the endpoint"]
    assert len(rest_of_them["deliveries"]) == 1
    (test_event,) = steps["send a test event"]
    assert test_event["delivery"]["event_type"] == "webhook.test"

    (failures,) = steps["failures in the last hour"]
    assert [e["details"]["reason"] for e in failures["events"]] == ["bad_credentials"]
    assert "entries" in result.stdout.split("### export")[1]
    exported = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert json.loads(exported[0])["sequence"] == 1 and json.loads(exported[-1])["action"] == "audit.export"

    server.app.webhook_worker.drain()
    received = sink.wait_for(5)  # 2 dead-lettered attempts, then 2 replays and the test event
    assert {r.id for r in received[2:]} >= {r.id for r in received[:2]}
