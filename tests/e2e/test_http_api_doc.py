"""docs/http-api.md, run as written: every `sh` block, in order, with the real curl
against a real server behind the committed Envoy config, then each step's JSON (and
HTTP status, where the block prints it) is checked."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import support
from tests.e2e import stack as e2e

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]

DOC = Path(__file__).resolve().parents[2] / "docs" / "http-api.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
STATUS = re.compile(r"^status: (\d{3})$", re.M)


@pytest.fixture(scope="module")
def transport() -> str:
    """Check's transport does not matter here: the JSON API bypasses Check."""
    return "http"


def statuses(output: str) -> dict[str, list[int]]:
    """The `status: NNN` lines each step printed (curl's -w), by step title."""
    found = {}
    for chunk in output.split("\n### ")[1:]:
        title, _, body = chunk.partition("\n")
        found[title.strip()] = [int(s) for s in STATUS.findall(body)]
    return found


def reason(error: dict[str, object]) -> str:
    details = error["details"]
    assert isinstance(details, list)
    (info,) = [d for d in details if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert info["domain"] == "tahoe.auth"
    text: str = info["reason"]
    return text


def test_the_http_api_doc_runs_as_documented(live: e2e.Stack, tmp_path: Path) -> None:
    assert shutil.which("curl"), "curl is needed to run docs/http-api.md"
    tenant = live.auth.create_tenant()
    viewer_email = f"viewer@{tenant.slug}.test"
    viewer_id, _ = live.auth.add_user(tenant, ["viewer"], email=viewer_email)
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 7, "docs/http-api.md lost its shell blocks"
    env = {
        **os.environ,
        "BASE": f"http://127.0.0.1:{live.port}",
        "TENANT": tenant.slug,
        "EMAIL": tenant.owner_email,
        "PASSWORD": tenant.owner_password,
        "VIEWER_EMAIL": viewer_email,
        "VIEWER_PASSWORD": support.OWNER_PASSWORD,
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(blocks)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"the doc's blocks failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    steps = support.parse_steps(result.stdout)
    codes = statuses(result.stdout)

    (openapi,) = steps["openapi"]
    assert openapi["openapi"] == "3.1.0"
    documented = {"/auth/v1/login", "/auth/v1/tokens:validate", "/auth/v1/tenants/{tenant_id}"}
    assert documented | {"/auth/v1/tenants/{tenant_id}/users"} <= set(openapi["paths"])

    (login,) = steps["login"]
    assert login["tenantId"] == tenant.id and login["userId"] == tenant.owner_id
    assert login["tokens"]["tokenType"] == "Bearer" and isinstance(login["tokens"]["expiresIn"], str)
    (validated,) = steps["validate the token"]
    assert validated["principal"]["subject"] == tenant.owner_id
    assert validated["principal"]["tenantId"] == tenant.id
    assert validated["principal"]["subjectType"] == "SUBJECT_TYPE_USER"  # enums by name
    (own,) = steps["the tenant"]
    assert own["tenant"]["id"] == tenant.id and own["tenant"]["slug"] == tenant.slug
    (users,) = steps["list users"]
    assert {u["id"] for u in users["users"]} == {tenant.owner_id, viewer_id}
    assert {u["state"] for u in users["users"]} == {"USER_STATE_ACTIVE"}

    assert steps["record usage"] == [{"duplicate": False}]
    assert steps["record it again"] == [{"duplicate": True}]  # the same idempotency key
    first, update, *_ = steps["watch usage"]
    assert first["tenantId"] == update["tenantId"] == tenant.id
    assert first["totals"] == {"api.requests": 3} and update["totals"] == {"api.requests": 5}

    (anonymous,) = steps["no credential"]
    assert codes["no credential"] == [401] and reason(anonymous) == "UNAUTHENTICATED"
    assert anonymous["code"] == 16  # the gRPC code's number
    (refused,) = steps["wrong password"]
    assert codes["wrong password"] == [401] and reason(refused) == "INVALID_CREDENTIALS"
    assert refused["message"] == "invalid tenant, email or password"
    (denied,) = steps["not allowed"]
    assert codes["not allowed"] == [403] and reason(denied) == "PERMISSION_DENIED"
    (info,) = [d for d in denied["details"] if d["@type"].endswith("ErrorInfo")]
    assert info["metadata"]["permission"] == "usage:write"
    assert json.dumps(denied)  # plain JSON, printable as the doc shows it
