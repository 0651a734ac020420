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
