// The tenant at a glance: plan and status, users by status, sessions, keys, this
// period's usage against the quotas, sign-ins and denials of the last 24 hours, the
// webhook endpoints' health, and sign-ins per day as a chart.
import { call, tenantPath } from "../api.js";
import { html, useEffect } from "../html.js";
import { Gauge, TimeChart } from "../chart.js";
import { Badge, ErrorNote, Loading, Page, Table, Time, formatNumber, markRendered, useLoad } from "../ui.js";

const DAY = 86_400_000;

function Stat({ label, value }) {
  return html`<div class="stat"><dt>${label}</dt><dd data-stat=${label}>${formatNumber(value)}</dd></div>`;
}

async function loadOverview(signal) {
  const end = new Date();
  const start = new Date(end.getTime() - 30 * DAY);
  const [overview, logins] = await Promise.all([
    call("GET", tenantPath("/overview"), { signal }),
    call("GET", tenantPath("/logins:analytics"), {
      query: { startTime: start.toISOString(), endTime: end.toISOString() },
    }).catch((error) => ({ error })),
  ]);
  return { overview, logins };
}

export function OverviewPage() {
  const { data, error, loading, reload } = useLoad(loadOverview);
  useEffect(() => {
    if (data) markRendered("overview");
  }, [data]);
  const actions = html`<button type="button" class="small" onClick=${reload}>Refresh</button>`;
  if (loading && !data) return html`<${Page} title="Overview" busy><${Loading} /><//>`;
  if (error) return html`<${Page} title="Overview" actions=${actions}><${ErrorNote} error=${error} /><//>`;
  const { overview, logins } = data;
  const users = overview.users || [];
  const totalUsers = users.reduce((sum, u) => sum + Number(u.count || 0), 0);
  const days = logins.days || [];
  return html`<${Page} title="Overview" actions=${actions}>
    <p class="lead">
      Plan <strong>${overview.plan || "none"}</strong> · status <${Badge} value=${overview.status} /> · period${" "}
      <strong>${overview.period}</strong>
    </p>
    <dl class="stats">
      <${Stat} label="Users" value=${totalUsers} />
      <${Stat} label="Active sessions" value=${overview.activeSessions} />
      <${Stat} label="Active API keys" value=${overview.activeApiKeys} />
      <${Stat} label="Service accounts" value=${overview.serviceAccounts} />
      <${Stat} label="Sign-ins (24 h)" value=${overview.loginSuccesses24h} />
      <${Stat} label="Failed sign-ins (24 h)" value=${overview.loginFailures24h} />
      <${Stat} label="Throttled sign-ins (24 h)" value=${overview.loginThrottled24h} />
      <${Stat} label="Denied requests (24 h)" value=${overview.denials24h} />
    </dl>
    <div class="grid two">
      <section aria-labelledby="usage-heading">
        <h2 id="usage-heading">Usage this period</h2>
        ${(overview.usage || []).length === 0
          ? html`<p class="muted">No usage recorded this period.</p>`
          : overview.usage.map(
              (u) => html`<${Gauge} label=${u.metric} used=${u.used} limit=${u.hasQuota ? u.included : 0} />`,
            )}
      </section>
      <section aria-labelledby="users-heading">
        <h2 id="users-heading">Users by status</h2>
        <${Table} caption="Users by status" rowKey=${(r) => r.status} rows=${users}
          columns=${[
            { label: "Status", cell: (r) => html`<${Badge} value=${r.status} />` },
            { label: "Users", cell: (r) => formatNumber(r.count), className: "num" },
          ]} />
      </section>
    </div>
    <section aria-labelledby="logins-heading">
      <h2 id="logins-heading">Sign-ins, last 30 days</h2>
      ${logins.error
        ? html`<${ErrorNote} error=${logins.error} />`
        : html`<${TimeChart} caption="Sign-ins per day" kind="bars"
            times=${days.map((d) => Date.parse(d.day) / 1000)}
            series=${[
              { label: "Successful", values: days.map((d) => Number(d.successes || 0)) },
              { label: "Failed", values: days.map((d) => Number(d.failures || 0)) },
              { label: "Throttled", values: days.map((d) => Number(d.throttled || 0)) },
            ]} />`}
    </section>
    <section aria-labelledby="webhooks-heading">
      <h2 id="webhooks-heading">Webhook endpoints</h2>
      <${Table} caption="Webhook endpoints" rowKey=${(r) => r.endpointId} rows=${overview.webhooks || []}
        empty="No webhook endpoints."
        columns=${[
          { label: "URL", cell: (r) => html`<code>${r.url}</code>` },
          { label: "Status", cell: (r) => html`<${Badge} value=${r.status} />` },
          { label: "Health", cell: (r) => html`<${Badge} value=${r.health} />` },
          { label: "Recent failures", cell: (r) => formatNumber(r.recentFailures), className: "num" },
          { label: "Last success", cell: (r) => html`<${Time} value=${r.lastSuccessTime} />` },
        ]} />
    </section>
    <p class="muted small">Generated <${Time} value=${overview.generateTime} />.</p>
  <//>`;
}
