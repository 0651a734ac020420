"""Pure parts of the Check path: credentials from headers, route tenants, upstream
facts, denial responses, sampled logging."""

from __future__ import annotations

import json
import logging

import pytest

from tahoe_auth.api import ext_authz as api
from tahoe_auth.authz import upstream
from tahoe_auth.authz.access import bearer_credential
from tahoe_auth.authz.check import CheckOutcome, resource_tenant
from tahoe_auth.domain import decision
from tahoe_auth.domain.permissions import PermissionSet
from tahoe_auth.domain.principal import Principal
from tahoe_auth.kernel.logs import SampledLog


@pytest.mark.parametrize(
    ("header", "credential"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Bearer", ""),
        ("Bearer ", ""),
        ("Basic abc", ""),
        ("", ""),
        ("abc", ""),
    ],
)
def test_bearer_credential(header: str, credential: str) -> None:
    assert bearer_credential(header) == credential


@pytest.mark.parametrize(
    ("path", "prefix", "tenant"),
    [
        ("/v1/tenants/t1/jobs", "/v1/tenants/", "t1"),
        ("/v1/tenants/t1", "/v1/tenants/", "t1"),
        ("/v1/tenants/t1?x=1", "/v1/tenants/", "t1"),
        ("/v1/jobs", "/v1/tenants/", ""),
        ("/v1/tenants/t1/jobs", "", ""),
    ],
)
def test_resource_tenant(path: str, prefix: str, tenant: str) -> None:
    assert resource_tenant(path, prefix) == tenant


def principal(**kwargs: object) -> Principal:
    base: dict[str, object] = {
        "tenant_id": "t1",
        "subject": "u1",
        "subject_type": "user",
        "permissions": PermissionSet.of(["transcription:*", "users:read"]),
    }
    return Principal(**{**base, **kwargs})  # type: ignore[arg-type]


def test_upstream_permissions_are_the_grants_the_decision_rested_on() -> None:
    facts = upstream.facts_for(decision.decide(principal(), "transcription:write"))
    assert facts.headers() == {
        "x-tahoe-tenant-id": "t1",
        "x-tahoe-subject": "u1",
        "x-tahoe-subject-type": "user",
        "x-tahoe-permissions": "transcription:*",
    }


def test_routes_without_a_permission_pass_every_grant() -> None:
    facts = upstream.facts_for(decision.decide(principal()))
    assert facts.permissions == ("transcription:*", "users:read")


def test_platform_admins_act_in_the_routes_tenant_with_the_checked_permission() -> None:
    admin = principal(tenant_id="", subject_type="platform", platform_admin=True, permissions=PermissionSet.of([]))
    outcome = decision.decide(admin, "transcription:read", "t9", tenant_required=True)
    facts = upstream.facts_for(outcome, "t9")
    assert (facts.tenant_id, facts.permissions) == ("t9", ("transcription:read",))
    assert decision.decide(admin, "transcription:read", tenant_required=True).reason == decision.TENANT_REQUIRED


@pytest.mark.parametrize(
    ("reason", "status", "error", "challenge"),
    [
        (decision.NO_CREDENTIAL, 401, "missing_credential", 'Bearer realm="tahoe"'),
        (decision.INVALID_TOKEN, 401, "invalid_token", 'Bearer realm="tahoe", error="invalid_token"'),
        (
            decision.PERMISSION_DENIED,
            403,
            "permission_denied",
            'Bearer realm="tahoe", error="insufficient_scope", scope="a:b"',
        ),
        (decision.TENANT_SUSPENDED, 403, "tenant_suspended", None),
        (decision.SUBJECT_DISABLED, 403, "subject_disabled", None),
        (decision.NOT_FOUND, 404, "not_found", None),
        (decision.UNAVAILABLE, 503, "unavailable", None),
    ],
)
def test_denied_responses(reason: str, status: int, error: str, challenge: str | None) -> None:
    d = decision.Decision(False, reason, "why", permission="a:b")
    response = api.denied_response(CheckOutcome(d))
    headers = {h.header.key: h.header.value for h in response.denied_response.headers}
    assert response.denied_response.status.code == status
    assert json.loads(response.denied_response.body) == {"error": error, "message": "why"}
    assert headers.get("www-authenticate") == challenge
    assert headers["content-type"] == "application/json"
    assert ("retry-after" in headers) == (status == 503)


def test_extra_denial_headers_do_not_leak_into_the_shared_responses() -> None:
    d = decision.Decision(False, decision.PERMISSION_DENIED, "why")
    extended = api.denied_response(CheckOutcome(d, {"x-extra": "1"}))
    plain = api.denied_response(CheckOutcome(d))
    assert "x-extra" in {h.header.key for h in extended.denied_response.headers}
    assert "x-extra" not in {h.header.key for h in plain.denied_response.headers}


def test_sampled_log_limits_lines_per_key_and_summarises(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    sampled = SampledLog(logging.getLogger("t.sampled"), per_second=2, summary_every=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "t.sampled"):
        logged = [sampled.log(logging.INFO, "a", "denied %s", i) for i in range(5)]
        assert logged == [True, True, False, False, False]
        assert sampled.log(logging.INFO, "b", "other key")
        now[0] = 1.5
        assert sampled.log(logging.INFO, "a", "next second")
        now[0] = 11.0
        sampled.log(logging.INFO, "a", "later")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:4] == ["denied 0", "denied 1", "other key", "next second"]
    assert "3 more not logged (rate-limited): a=3" in messages
