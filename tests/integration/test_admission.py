"""AdmissionControl: what Check will call per request (quota, rate limits, metering)."""

from __future__ import annotations

import json
import time

from tahoe_auth.domain.principal import PLATFORM, Principal
from tahoe_auth.domain.usage import QuotaRule
from tahoe_auth.services.context import CallContext
from tests import support

OPERATOR = Principal(tenant_id="", subject="ops", subject_type=PLATFORM, platform_admin=True)


def test_rate_limit_then_quota_then_metering(server: support.RunningServer) -> None:
    app = server.app
    tenant = server.create_tenant()
    with app.db.unit_of_work(tenant.id) as uow:
        uow.tenants.get(tenant.id).settings = {"rate_limits": {"per_api_key": {"limit": 3, "period": 60}}}
        uow.commit()
    ctx = CallContext(principal=OPERATOR)
    app.usage.upsert_plan(ctx, "small", "Small", {"api.requests": QuotaRule("api.requests", 5.0, hard=True)})
    app.usage.assign_plan(ctx, tenant.id, "small")

    def admit(key: str = "key-1"):  # type: ignore[no-untyped-def]
        return app.admission.admit(
            tenant_id=tenant.id, client_address="10.0.0.9", subject_type="api_key", subject_id=key, route="/v1/jobs"
        )

    deadline = time.monotonic() + 5
    while not app.quotas.check(tenant.id).has_quota:  # the first sight loads the tenant's state
        assert time.monotonic() < deadline, "quota state never loaded"
        time.sleep(0.02)

    first = [admit() for _ in range(4)]
    assert [a.http_status for a in first] == [200, 200, 200, 429]
    assert dict(first[0].headers)["ratelimit-limit"] == "3" and dict(first[0].headers)["ratelimit-remaining"] == "2"
    denied = first[3]
    assert denied.reason == "rate_limited" and denied.body is not None and denied.body["error"] == "rate_limited"
    assert dict(denied.headers)["retry-after"] == "20"  # 60 s / 3
    assert json.dumps(denied.body)

    assert admit("key-2").allowed and admit("key-2").allowed  # 5 allowed in all: the quota is used up
    app.usage_recorder.flush()
    deadline, attempt = time.monotonic() + 5, 0
    while (blocked := admit(f"other-{attempt}")).allowed:  # usage is seen within ~2 s
        assert time.monotonic() < deadline, "the hard quota never applied"
        attempt += 1
        time.sleep(0.05)
        app.usage_recorder.flush()
    assert blocked.reason == "quota_exceeded" and blocked.http_status == 429
    assert blocked.body is not None and "quota" in blocked.body["message"]
    headers = dict(blocked.headers)
    assert (
        headers["ratelimit-limit"] == "5" and headers["ratelimit-remaining"] == "0" and int(headers["retry-after"]) > 0
    )

    app.usage_recorder.flush()
    summary = app.usage.summary(ctx, tenant.id, "")
    # Allowed requests only: 3 + 2, and those admitted before the usage reached the quota.
    assert [(line.metric, line.quantity) for line in summary.lines] == [("api.requests", 5.0 + attempt)]


def test_check_turns_a_flood_of_bad_credentials_from_one_address_into_429(pg_env: dict[str, str]) -> None:
    """The admission hook in Check: refused credentials still count against the
    per-address limit, so guessing from one address is slowed down at Envoy."""
    from tests.integration.test_ext_authz import check, check_request, denial

    env = {**pg_env, "TAHOE_RATE_LIMITS": json.dumps({"per_address": {"limit": 3, "period": 60}})}
    with support.running_server(env) as server:
        request = check_request("Bearer tahoe_sk_guessed")
        request.attributes.source.address.socket_address.address = "203.0.113.7"
        answers = [denial(check(server, request)) for _ in range(4)]
    assert [code for code, _, _ in answers] == [401, 401, 401, 429]
    _, headers, body = answers[-1]
    assert body["error"] == "rate_limited" and int(headers["retry-after"]) >= 1
    assert answers[0][1]["ratelimit-limit"] == "3"


def test_every_answer_check_decides_is_counted_and_says_so(pg_env: dict[str, str]) -> None:
    """200, 401, 403, 404 and 429 alike carry the `ratelimit-*` headers of the limit
    that counted them: here one address's, which each of them takes from."""
    from tests.integration.test_ext_authz import check, check_request, denial
    from tests.scenarios import user_with_role

    env = {**pg_env, "TAHOE_RATE_LIMITS": json.dumps({"per_address": {"limit": 5, "period": 60}})}
    with support.running_server(env) as server:
        mine, theirs = server.create_tenant(), server.create_tenant()
        owner = f"Bearer {server.login(mine).tokens.access_token}"
        viewer = f"Bearer {user_with_role(server, mine, 'viewer')}"
        requests = {
            "allowed": check_request(owner),
            "forbidden": check_request(viewer, required_permission="transcription:write"),
            "another tenant": check_request(
                owner, path=f"/v1/tenants/{theirs.id}/jobs", tenant_path_prefix="/v1/tenants/"
            ),
            "bad credential": check_request("Bearer tahoe_sk_guessed"),
            "allowed again": check_request(owner),
            "over the limit": check_request(owner),
        }
        answers: dict[str, tuple[int, dict[str, str]]] = {}
        for name, request in requests.items():
            request.attributes.source.address.socket_address.address = "198.51.100.4"
            response = check(server, request)
            if response.HasField("ok_response"):
                headers = {h.header.key: h.header.value for h in response.ok_response.response_headers_to_add}
                answers[name] = (200, headers)
            else:
                code, headers, _ = denial(response)
                answers[name] = (code, headers)
    assert [code for code, _ in answers.values()] == [200, 403, 404, 401, 200, 429]
    assert [headers.get("ratelimit-limit") for _, headers in answers.values()] == ["5"] * 6
    assert [headers.get("ratelimit-remaining") for _, headers in answers.values()] == ["4", "3", "2", "1", "0", "0"]
    assert all(int(headers["ratelimit-reset"]) > 0 for _, headers in answers.values())
    assert "retry-after" in answers["over the limit"][1]
