"""The web console in a real browser over a tenant with a million usage events.

    TAHOE_TEST_PORTS=25000-25999 .venv/bin/python bench/console_bench.py \\
        [--events 1000000] [--loads 10] [--samples 20] [--metric api.requests]

Needs PostgreSQL, Redis, Envoy (`make install`) and chromium (/usr/bin/chromium, or
TAHOE_CHROMIUM). Uses the database `tahoe_console_bench` (dropped and re-created;
TAHOE_BENCH_DATABASE_URL) and Redis DB 6 (flushed; TAHOE_BENCH_REDIS_URL);
TAHOE_TEST_PORTS confines the ports it listens on.

Starts the whole stack as the console tests do (tests/e2e/stack.py: the auth server as
`tahoe_app` with row-level security, its side port serving the console, Envoy), makes
two tenants and loads, with bench/dashboard_bench.py's seeding, `--events` raw usage
events for the "big" one (over the last 7 days, 20 routes, 3 subject types, 200
credentials) and `--small-events` for the "small" one, and 30 days of sign-in
rollups for both (so that only the usage events differ), then runs the rollup job and
VACUUM ANALYZE and starts the rollup pipeline as `tahoe-auth serve` does.

1. Time to first render. Each tenant's owner signs in once in its own browser context;
   every measured load is then a fresh navigation in a new tab (the previous one
   closed), so the console resumes the session from its refresh cookie and loads the page.
   The figure is the user-timing mark `tahoe:rendered:<page>` that the page makes
   when it first shows its data (`markRendered` in console_assets/js/ui.js), in ms
   since navigation start; the navigation's responseEnd and domContentLoadedEventEnd
   (the modules have run: the same work for every tenant), the mark less the latter
   ("DCL->mark": session refresh and the page's data),
   the refresh call and the page's slowest JSON API call (Resource Timing) are printed
   alongside (a server stream's own entry only appears when it ends, so a streamed
   page's "api max" is its other calls). Live usage marks itself rendered when the
   live totals arrive; its series and breakdowns follow, and "all data" is when the
   first breakdown row shows (the last thing it loads). One unmeasured load per page
   and tenant first, then `--loads` rounds, big and small interleaved (the machine is
   shared: read the ratios of one run).
2. Update latency on Live usage: with the big tenant's page open, a MutationObserver
   in the page records `Date.now()` whenever the text of
   `[data-usage-total="<metric>"]` changes; t0 is taken just before RecordUsage (gRPC,
   as a platform service account with `usage:write`, as the demo service reports
   usage), latency = change time - t0 (same machine clock). `--samples` events, each
   after the previous one reached the screen and a random pause. Target: 2 s.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from bench.dashboard_bench import dimension_rows, load_events, roll_up
from tahoe_auth.v1 import auth_pb2, tenant_pb2, usage_pb2, usage_pb2_grpc
from tests import support
from tests.conftest import APP_ROLE
from tests.e2e import stack as e2e
from tests.e2e.console.conftest import VIEWPORT, Console, chromium_path
from tests.support import Tenant

PG_URL = os.environ.get("TAHOE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_console_bench")
REDIS_URL = os.environ.get("TAHOE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
PAGES = {"overview": "/overview", "usage": "/usage"}  # markRendered name -> route
# The mark of Live usage is the live totals (the WatchUsage stream); the series and the
# breakdown by route (GetUsage, GetUsageBreakdown over the rollups) come after them,
# the breakdown last: its first row is when the page has all its data.
COMPLETE = {"usage": "[data-breakdown-value]"}
TIMEOUT_MS = 60_000
STUCK_MS = 30_000
STUCK: list[str] = []  # loads that never showed their data (tried again)
# What a stuck page can still fetch: a console file, and the refresh call it waits for.
PROBE = """async () => {
  const within = (p) => Promise.race([p.then((r) => r.status, (e) => String(e)),
                                      new Promise((r) => setTimeout(() => r("no answer in 5 s"), 5000))]);
  const file = await within(fetch("/console/favicon.svg", { cache: "no-store" }));
  const refresh = await within(fetch("/auth/v1/browser/refresh", { method: "POST", body: "{}",
    headers: { "x-csrf-protection": "1", "content-type": "application/json" } }));
  return { file, refresh };
}"""  # a loaded 2-core machine

READ_TIMINGS = """([name, complete]) => {
  const mark = performance.getEntriesByName(name)[0];
  const until = complete ?? mark.startTime;
  const nav = performance.getEntriesByType("navigation")[0];
  const api = performance.getEntriesByType("resource").filter((r) => r.name.includes("/auth/v1/"));
  const refresh = api.filter((r) => r.name.includes("/browser/refresh"));
  const others = api.filter((r) => !r.name.includes("/browser/") && r.startTime < until);
  return {
    rendered: mark.startTime,
    complete,
    responseEnd: nav.responseEnd,
    domContentLoaded: nav.domContentLoadedEventEnd,
    refresh: refresh.length ? refresh[0].duration : null,
    slowestApi: others.length ? Math.max(...others.map((r) => r.responseEnd - r.startTime)) : null,
  };
}"""

# Records each change of the metric's figure; the element may be replaced or appear
# later (a re-render), so the whole document is observed and the element looked up anew.
OBSERVE_TOTAL = """metric => {
  const selector = `[data-usage-total="${CSS.escape(metric)}"]`;
  const read = () => document.querySelector(selector)?.textContent ?? null;
  window.__tahoeTotals = [];
  let last = read();
  new MutationObserver(() => {
    const now = read();
    if (now !== last) {
      last = now;
      window.__tahoeTotals.push({ at: Date.now(), text: now });
    }
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
  return last;
}"""


def pick(samples: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (p90 of 10 samples: the 9th)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(samples: Sequence[float]) -> str:
    return f"{statistics.median(samples):8.0f} {pick(samples, 0.9):8.0f} {max(samples):8.0f}"


def median_of(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r[key] is not None]
    return f"{statistics.median(values):8.0f}" if values else f"{'-':>8}"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def watch(console: Console, page: Any) -> None:
    page.on("console", lambda m: m.type == "error" and "Refused to" in m.text and console.problems.append(m.text))
    page.on("pageerror", lambda error: console.problems.append(f"script error: {error}"))


def open_console(browser: Any, base: str, tenant: Tenant) -> Console:
    """A browser context signed in as `tenant`'s owner (its refresh cookie kept)."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console = Console(page, base, Path(tempfile.gettempdir()))
    watch(console, page)
    console.sign_in(tenant)
    return console


def follow(page: Any) -> list[str]:
    """What went wrong in the page's requests, and what became of its refresh call:
    told for a load that stalls."""
    seen: list[str] = []
    name = lambda r: r.url.rsplit("/", 1)[-1][:40]  # noqa: E731
    page.on("request", lambda r: "/browser/refresh" in r.url and seen.append("refresh sent"))
    page.on(
        "response", lambda r: ("/browser/refresh" in r.url or r.status >= 400) and seen.append(f"{name(r)} {r.status}")
    )
    page.on("requestfailed", lambda r: seen.append(f"{name(r)} failed {r.failure}"))
    return seen


def timed_load(console: Console, name: str) -> dict[str, Any]:
    """Page `name` in a new tab of the signed-in context (the previous tab closed, and
    with it its requests and streams): its timings once it has shown its data. A load
    that does not show it within STUCK_MS is noted in STUCK and tried again."""
    mark = f"tahoe:rendered:{name}"
    for _ in range(3):
        context = console.page.context
        console.page.close()
        console.page = page = context.new_page()
        watch(console, page)
        requests = follow(page)
        page.goto(console.url(PAGES[name]), wait_until="commit")
        try:
            page.wait_for_function("n => performance.getEntriesByName(n).length > 0", arg=mark, timeout=STUCK_MS)
        except PlaywrightTimeout:
            shown = " ".join(page.inner_text("body").split())[:120]
            STUCK.append(
                f"{name}: {shown!r} after {STUCK_MS} ms; its requests: {list(requests) or 'no refresh sent'}; "
                f"a fetch from the page then: {page.evaluate(PROBE)}"
            )
            continue
        complete: float | None = None
        if name in COMPLETE:  # checked every animation frame: within a frame of its showing
            shown_at = page.wait_for_function(f"() => document.querySelector({COMPLETE[name]!r}) && performance.now()")
            complete = shown_at.json_value()
        timings: dict[str, Any] = page.evaluate(READ_TIMINGS, [mark, complete])
        return timings
    raise SystemExit(f"{name}: three loads in a row did not show the page: {STUCK[-3:]}")


Results = dict[tuple[str, str], list[dict[str, Any]]]  # (page, tenant) -> one timings dict per load


def bench_first_render(consoles: dict[str, Console], loads: int, metric: str) -> Results:
    results: Results = {}
    for name in PAGES:
        for label, console in consoles.items():
            timed_load(console, name)  # warm: the server's statements and caches, the HTTP cache
            if name == "overview":  # the seeded usage is what the page shows
                console.page.get_by_text(metric, exact=True).first.wait_for(timeout=TIMEOUT_MS)
            results[(name, label)] = []
    for round_ in range(loads):
        for name in PAGES:
            order = list(consoles.items())
            if round_ % 2:
                order.reverse()
            for label, console in order:
                results[(name, label)].append(timed_load(console, name))
    return results


def print_first_render(results: Results, labels: list[str], loads: int) -> None:
    print(f"\nTime to first render, ms since navigation start ({loads} fresh loads each, cookie sign-in)")
    print(
        f"{'page':<10} {'tenant':<22} {'p50':>8} {'p90':>8} {'max':>8}   "
        f"{'respEnd':>8} {'DCL':>8} {'DCL->mark':>9} {'refresh':>8} {'api max':>8} {'all data':>8}  (medians)"
    )
    for name in PAGES:
        for label in labels:
            rows = results[(name, label)]
            rendered = [r["rendered"] for r in rows]
            for r in rows:
                r["afterDcl"] = r["rendered"] - r["domContentLoaded"]
            print(
                f"{name:<10} {label:<22} {summary(rendered)}   {median_of(rows, 'responseEnd')} "
                f"{median_of(rows, 'domContentLoaded')} {median_of(rows, 'afterDcl'):>9} "
                f"{median_of(rows, 'refresh')} {median_of(rows, 'slowestApi')} {median_of(rows, 'complete')}"
            )
        big, small = (statistics.median(r["rendered"] for r in results[(name, label)]) for label in labels)
        big_data, small_data = (statistics.median(r["afterDcl"] for r in results[(name, label)]) for label in labels)
        ratio = f"{big / small:8.2f} {'':>8} {'':>8}   {'':>8} {'':>8} {big_data / small_data:9.2f}"
        print(f"{name:<10} {'ratio p50 big / small':<22} {ratio}")


def service_token(live: e2e.Stack) -> str:
    """A platform-wide service account with `usage:write` (as the demo service reports
    usage, tests/e2e/stack.py's usage_credentials), and a token from its credentials."""
    created = live.auth.tenants.CreateServiceAccount(
        tenant_pb2.CreateServiceAccountRequest(
            service_account=tenant_pb2.ServiceAccount(name="console-bench", permissions=["usage:write"])
        ),
        metadata=support.bearer(live.auth.platform_key),
    )
    issued = live.auth.auth.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(client_id=created.client_id, client_secret=created.client_secret)
    )
    token: str = issued.access_token
    return token


def bench_update_latency(console: Console, live: e2e.Stack, tenant: Tenant, metric: str, samples: int) -> None:
    timed_load(console, "usage")
    page = console.page
    total = page.locator(f'[data-usage-total="{metric}"]')
    total.wait_for(state="visible", timeout=TIMEOUT_MS)
    first = page.evaluate(OBSERVE_TOTAL, metric)
    stub = usage_pb2_grpc.UsageServiceStub(live.auth.channel)
    metadata = support.bearer(service_token(live))
    request = usage_pb2.RecordUsageRequest(tenant_id=tenant.id, event=usage_pb2.UsageEvent(metric=metric, quantity=1))
    latencies, calls = [], []
    for _ in range(samples):
        seen = page.evaluate("() => window.__tahoeTotals.length")
        t0 = time.time() * 1000
        stub.RecordUsage(request, metadata=metadata, timeout=10)
        calls.append(time.time() * 1000 - t0)
        try:
            page.wait_for_function("n => window.__tahoeTotals.length > n", arg=seen, timeout=TIMEOUT_MS)
        except Exception:
            raise SystemExit(f"usage: {metric}'s figure did not change within {TIMEOUT_MS} ms of RecordUsage") from None
        changes = page.evaluate("n => window.__tahoeTotals.slice(n)", seen)
        latencies.append(changes[0]["at"] - t0)
        time.sleep(random.uniform(0.5, 1.0))  # separate samples, not in step with any poll
        if page.evaluate("() => window.__tahoeTotals.length") != seen + 1:
            print(f"  note: more than one change after one event: {changes}", file=sys.stderr)
    last = page.evaluate("() => window.__tahoeTotals.at(-1).text")
    print(
        f"\nUpdate latency, RecordUsage (gRPC) -> [data-usage-total={metric!r}] on Live usage, ms "
        f"({samples} events; figure {first} -> {last})"
    )
    print(f"{'':<33} {'p50':>8} {'p90':>8} {'max':>8}")
    print(f"{'RecordUsage -> figure on screen':<33} {summary(latencies)}   (target 2000)")
    print(f"{'RecordUsage call itself':<33} {summary(calls)}")
    within = sum(1 for latency in latencies if latency <= 2000)
    print(f"within 2 s: {within} of {samples}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000, help="usage events of the big tenant")
    parser.add_argument("--small-events", type=int, default=10, help="usage events of the small tenant")
    parser.add_argument("--loads", type=int, default=10, help="measured loads per page and tenant")
    parser.add_argument("--samples", type=int, default=20, help="RecordUsage events timed to the screen")
    parser.add_argument("--metric", default="api.requests", help="the metric recorded (the seeded one)")
    parser.add_argument("--skip-usage", action="store_true", help="the overview only")
    args = parser.parse_args()
    if args.skip_usage:
        PAGES.pop("usage")

    print(f"start: {load_average()}", flush=True)
    support.create_database(PG_URL)
    support.reset_schema(PG_URL)
    redis.Redis.from_url(REDIS_URL).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    env = {
        "TAHOE_DATABASE_URL": PG_URL,
        "TAHOE_DATABASE_ROLE": APP_ROLE,  # row-level security applies, as in production
        "TAHOE_REDIS_URL": REDIS_URL,
        "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "TAHOE_VAR_DIR": str(tmp / "var"),
        "TAHOE_LOG_LEVEL": "WARNING",
        # All from 127.0.0.1, as in the console tests: Envoy is trusted to say who the
        # browser is, and the per-address limit is not what is measured.
        "TAHOE_TRUSTED_PROXIES": "127.0.0.1/32,::1",
        "TAHOE_RATE_LIMITS": json.dumps({"per_address": {"limit": 100_000, "period": 60}}),
    }
    try:
        with e2e.stack(env, tmp) as live, sync_playwright() as playwright:
            big, small = live.auth.create_tenant(), live.auth.create_tenant()
            loaded = load_events(PG_URL, big.id, [], args.events, logins=True)
            load_events(PG_URL, small.id, [], args.small_events, logins=True)
            rolled, rollup, vacuum = roll_up(live.auth.app, PG_URL)
            live.auth.app.usage_pipeline.start()  # as `tahoe-auth serve` runs it
            print(
                f"loaded {args.events:,} raw events for the big tenant in {loaded:.1f} s "
                f"({args.small_events} for the small one); rollup of {rolled:,} in {rollup:.1f} s; "
                f"VACUUM ANALYZE {vacuum:.1f} s; usage_dimension_rollups rows: {dimension_rows(PG_URL):,}",
                flush=True,
            )
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
            base = f"http://127.0.0.1:{live.port}"
            labels = [f"big ({args.events:,} ev)", f"small ({args.small_events} ev)"]
            consoles = {labels[0]: open_console(browser, base, big), labels[1]: open_console(browser, base, small)}
            results = bench_first_render(consoles, args.loads, args.metric)
            print_first_render(results, labels, args.loads)
            if not args.skip_usage:
                bench_update_latency(consoles[labels[0]], live, big, args.metric, args.samples)
            problems = [p for c in consoles.values() for p in c.problems]
            browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nend: {load_average()}")
    for stuck in STUCK:
        print(f"stuck load (tried again): {stuck}")
    if problems:
        print(f"problems in the pages: {problems}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
