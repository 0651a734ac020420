"""The console's Live usage page in a real browser: totals that follow RecordUsage
within 2 s through the WatchUsage stream, quota gauges, the period selector, the
breakdown by route and by credential, CSV downloads, a dropped stream reconnecting,
and 200% zoom."""

from __future__ import annotations

import csv
import datetime as dt
import io
import secrets
import time
from collections.abc import Mapping
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from playwright.sync_api import expect

from tahoe_auth.v1 import usage_pb2, usage_pb2_grpc
from tests.e2e import stack as e2e
from tests.e2e.console.conftest import Console
from tests.support import Tenant, bearer

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser]

# The test stack runs no background rollups: a test rolls up with roll_up(). The page
# reads breakdowns and series again once the live totals have been still for 4 s.
ROLLED_UP = 30_000

# Records, in the page, when each [data-usage-total] figure last changed (Date.now(),
# the same clock as the test's time.time() on this machine).
WATCH_FIGURES = """() => {
  window.__usageChanges = {};
  new MutationObserver(() => {
    for (const el of document.querySelectorAll("[data-usage-total]")) {
      const name = el.getAttribute("data-usage-total");
      const seen = window.__usageChanges[name];
      if (!seen || seen.text !== el.textContent) window.__usageChanges[name] = { text: el.textContent, at: Date.now() };
    }
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""


def record(
    live: e2e.Stack,
    token: str,
    metric: str,
    quantity: float,
    dimensions: Mapping[str, str] | None = None,
    when: dt.datetime | None = None,
) -> float:
    """RecordUsage over gRPC as the tenant's owner; the wall-clock time (ms) it returned."""
    event = usage_pb2.UsageEvent(metric=metric, quantity=quantity, dimensions=dict(dimensions or {}))
    if when is not None:
        stamp = Timestamp()
        stamp.FromDatetime(when)
        event.time.CopyFrom(stamp)
    usage_pb2_grpc.UsageServiceStub(live.auth.channel).RecordUsage(
        usage_pb2.RecordUsageRequest(event=event), metadata=bearer(token)
    )
    return time.time() * 1000


def roll_up(live: e2e.Stack) -> None:
    """What the usage pipeline does every 2 s in a serving instance."""
    live.auth.app.usage_pipeline.run_once()


def assign_plan(live: e2e.Stack, tenant: Tenant, quotas: dict[str, float]) -> None:
    stub = usage_pb2_grpc.UsageServiceStub(live.auth.channel)
    platform = bearer(live.auth.platform_key)
    name = f"console-{secrets.token_hex(3)}"
    plan = usage_pb2.Plan(
        name=name,
        display_name="Console test",
        quotas=[
            usage_pb2.MetricQuota(metric=m, included=n, limit=usage_pb2.LIMIT_KIND_SOFT) for m, n in quotas.items()
        ],
    )
    stub.UpsertPlan(usage_pb2.UpsertPlanRequest(plan=plan), metadata=platform)
    stub.AssignPlan(usage_pb2.AssignPlanRequest(tenant_id=tenant.id, plan=name), metadata=platform)


def open_usage(console: Console, tenant: Tenant) -> None:
    console.sign_in(tenant)
    console.go("Live usage")
    expect(console.page.get_by_text("live", exact=True)).to_be_visible(timeout=10_000)


def total_in(region: Any, value: str) -> Any:
    """The Total cell of a breakdown table's row for `value`."""
    return region.get_by_role("row", name=value).locator("td.num")


def read_download(download: Any) -> list[dict[str, str]]:
    with open(download.path(), newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(io.StringIO(handle.read())))


def test_totals_and_gauges_follow_recorded_usage_within_two_seconds(
    console: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    assign_plan(live, tenant, {"jobs.run": 100})
    token = live.auth.owner_token(tenant)
    open_usage(console, tenant)
    page = console.page
    total = page.locator('[data-usage-total="jobs.run"]')
    # The plan's quota makes the metric show before any use, at 0.
    expect(total).to_have_text("0")
    assert page.evaluate("() => performance.getEntriesByName('tahoe:rendered:usage').length") == 1
    page.evaluate(WATCH_FIGURES)

    delays = []
    expected = 0.0
    for quantity in (5, 3, 1.5, 40, 0.5):
        expected += quantity
        figure = f"{expected:,.1f}".rstrip("0").rstrip(".")
        returned = record(live, token, "jobs.run", quantity)
        expect(total).to_have_text(figure, timeout=2_000)
        change = page.evaluate("() => window.__usageChanges['jobs.run']")
        assert change["text"] == figure
        delays.append(change["at"] - returned)
    print(f"RecordUsage -> screen (ms): {[round(d) for d in delays]}")
    assert max(delays) < 2_000

    # The gauge shows the same total against the plan's 100.
    expect(page.locator(".gauge", has_text="jobs.run").locator("[data-gauge-figure]")).to_have_text("50 of 100")
    # What the screen says is what the API says.
    answer = live.call("GET", f"/auth/v1/tenants/{tenant.id}/quotaStatus", token=token)
    (quota,) = answer.body["quotas"]
    assert quota["metric"] == "jobs.run" and quota["used"] == 50

    # A metric not seen before appears on its own.
    record(live, token, "audio.seconds", 7)
    expect(page.locator('[data-usage-total="audio.seconds"]')).to_have_text("7", timeout=2_000)


def test_period_selector_breakdown_csv_and_zoom(console: Console, live: e2e.Stack, tenant: Tenant) -> None:
    token = live.auth.owner_token(tenant)
    now = dt.datetime.now(dt.UTC)
    record(live, token, "calls.made", 4, {"route": "/v1/now", "credential": "api key tk_now1"})
    record(live, token, "calls.made", 2, {"route": "/v1/now", "credential": "api key tk_two2"})
    # Three days back: inside the last 7 days, not the last 24 hours.
    earlier = {"route": "/v1/earlier", "credential": "api key tk_old3"}
    record(live, token, "calls.made", 9, earlier, now - dt.timedelta(days=3))
    roll_up(live)
    open_usage(console, tenant)
    page = console.page
    page.get_by_label("Metric", exact=True).select_option("calls.made")

    by_route = page.get_by_role("region", name="Usage by route")
    by_credential = page.get_by_role("region", name="Usage by credential")
    page.get_by_label("Period", exact=True).select_option("24h")
    assert page.url.endswith("#/usage?period=24h")
    expect(total_in(by_route, "/v1/now")).to_have_text("6", timeout=ROLLED_UP)
    expect(by_route.get_by_text("/v1/earlier")).to_have_count(0)
    expect(total_in(by_credential, "api key tk_now1")).to_have_text("4")
    expect(total_in(by_credential, "api key tk_two2")).to_have_text("2")
    expect(page.locator("[data-usage-range]")).to_contain_text("Last 24 hours")

    page.get_by_label("Period", exact=True).select_option("7d")
    expect(total_in(by_route, "/v1/earlier")).to_have_text("9", timeout=ROLLED_UP)
    expect(total_in(by_credential, "api key tk_old3")).to_have_text("9")
    # The API agrees with the table.
    start = (now - dt.timedelta(days=7)).isoformat().replace("+00:00", "Z")
    answer = live.call(
        "GET",
        f"/auth/v1/tenants/{tenant.id}/usage:breakdown"
        f"?metric=calls.made&dimension=USAGE_DIMENSION_ROUTE&startTime={start}",
        token=token,
    )
    assert {v["value"]: v["total"] for v in answer.body["values"]} == {"/v1/earlier": 9, "/v1/now": 6}

    # Usage recorded while the page is open reaches the breakdown once rolled up.
    record(live, token, "calls.made", 1, {"route": "/v1/now", "credential": "api key tk_now1"})
    roll_up(live)
    expect(total_in(by_route, "/v1/now")).to_have_text("7", timeout=ROLLED_UP)
    expect(total_in(by_credential, "api key tk_now1")).to_have_text("5")

    with page.expect_download() as downloaded:
        page.get_by_role("button", name="Download breakdown (CSV)").click()
    assert downloaded.value.suggested_filename.startswith("usage-breakdown-7d-")
    rows = {(r["dimension"], r["value"]): float(r["total"]) for r in read_download(downloaded.value)}
    assert rows == {
        ("route", "/v1/earlier"): 9,
        ("route", "/v1/now"): 7,
        ("credential", "api key tk_old3"): 9,
        ("credential", "api key tk_now1"): 5,
        ("credential", "api key tk_two2"): 2,
    }
    with page.expect_download() as downloaded:
        page.get_by_role("button", name="Download series (CSV)").click()
    series = [r for r in read_download(downloaded.value) if r["metric"] == "calls.made"]
    assert sum(float(r["quantity"]) for r in series) == 16
    assert len(series) in (7, 8)  # one per day, the partial first day included

    with page.expect_download() as downloaded:
        page.get_by_role("button", name="Invoice export (CSV)").click()
    invoice = read_download(downloaded.value)
    assert any("calls.made" in r.values() for r in invoice), invoice

    console.screenshot("usage")
    assert console.sideways_overflow_at_200_percent() <= 0


def test_a_dropped_stream_reconnects_and_leaving_the_page_stops_it(
    console: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    page = console.page
    refused = []

    def drop_first(route: Any) -> None:
        if not refused:
            refused.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/usage:watch*", drop_first)
    console.sign_in(tenant)
    console.go("Live usage")
    expect(page.get_by_text("reconnecting")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("NETWORK")
    expect(page.get_by_text("live", exact=True)).to_be_visible(timeout=10_000)
    expect(page.get_by_text("reconnecting")).to_have_count(0)
    expect(page.get_by_role("alert")).to_have_count(0)
    assert len(refused) == 1
    record(live, live.auth.owner_token(tenant), "jobs.run", 2)
    expect(page.locator('[data-usage-total="jobs.run"]')).to_have_text("2", timeout=2_000)

    # Leaving the page aborts its stream.
    with page.expect_event("requestfailed", predicate=lambda r: "usage:watch" in r.url) as failed:
        console.go("Overview")
    assert "ABORTED" in (failed.value.failure or "").upper()
