"""docs/walkthrough-tenants.md, run as written: every `sh` block, in order, through the
real grpcurl binary against a real server; then grpcurl's JSON is checked step by step."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests import support
from tests.support import RunningServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "walkthrough-tenants.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def script() -> str:
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 6, "the walkthrough lost its shell blocks"
    return "\n".join(blocks)


def test_the_walkthrough_runs_as_documented(server: RunningServer, tmp_path: Path) -> None:
    grpcurl_dir = Path(sys.executable).parent
    assert (grpcurl_dir / "grpcurl").exists(), "grpcurl is installed into the virtualenv by make install"
    env = {
        **os.environ,
        "PATH": f"{grpcurl_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "ADDR": server.address,
        "PLATFORM_KEY": server.platform_key,
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"walkthrough failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "tahoe_auth.v1.TenantService" in result.stdout.split("\n### ")[0]
    steps = support.parse_steps(result.stdout)

    (acme,) = steps["create tenant acme"]
    assert acme["tenant"]["slug"] == "acme" and acme["owner_invitation"]["role"] == "owner"
    acme_id = acme["tenant"]["id"]
    (alice,) = steps["alice accepts"]
    assert alice["tenant_id"] == acme_id and alice["invitation"]["state"] == "INVITATION_STATE_ACCEPTED"
    (invitation,) = steps["alice invites bob"]
    assert invitation["invitation"]["role"] == "viewer" and invitation["token"].startswith("iv_")
    (bob,) = steps["bob accepts"]
    bob_id = bob["user_id"]
    (role,) = steps["alice creates the transcriber role"]
    assert role["role"]["permissions"] == ["transcription:read", "transcription:write"]
    (assigned,) = steps["alice gives bob the role"]
    assert assigned["user"]["id"] == bob_id and assigned["user"]["roles"] == ["transcriber", "viewer"]
    (key,) = steps["alice creates an API key for bob"]
    assert key["secret"].startswith("tahoe_sk_") and key["api_key"]["user_id"] == bob_id
    assert key["secret"] not in json.dumps(key["api_key"])
    (validated,) = steps["what the key may do"]
    principal = validated["principal"]
    assert principal["subject_type"] == "SUBJECT_TYPE_API_KEY" and principal["subject"] == key["api_key"]["id"]
    assert principal["tenant_id"] == acme_id and principal["permissions"] == ["transcription:write"]

    (globex,) = steps["create tenant globex with its owner"]
    globex_id = globex["tenant"]["id"]
    not_found = [{"error": "NotFound", "reason": "NOT_FOUND"}]
    assert steps["alice asks for globex"] == not_found
    assert steps["alice lists globex's users"] == not_found
    assert steps["alice asks for gina by id"] == not_found
    (own,) = steps["alice lists her own users"]
    assert sorted(u["email"] for u in own["users"]) == ["alice@acme.test", "bob@acme.test"]
    assert {u["tenant_id"] for u in own["users"]} == {acme_id}
    assert steps["bob's key lists users"] == [{"error": "PermissionDenied", "reason": "PERMISSION_DENIED"}]
    after_globex = result.stdout.split("### alice asks for globex")[1]
    assert globex_id not in after_globex and "gina@globex.test" not in after_globex
