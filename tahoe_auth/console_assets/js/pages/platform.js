// The platform administrator's pages: the platform at a glance (tenants by plan and
// status, the largest tenants by a usage metric), and the tenants themselves (create,
// suspend, reactivate, assign a plan, open one to use the tenant pages as its admin).
import { call, viewTenant } from "../api.js";
import { html, useEffect, useState } from "../html.js";
import { href, navigate } from "../router.js";
import {
  Badge,
  ConfirmButton,
  Dialog,
  ErrorNote,
  Field,
  FormButtons,
  Loading,
  Notice,
  Page,
  Pager,
  SecretOnce,
  Table,
  Time,
  formValues,
  formatNumber,
  markRendered,
  useAction,
  useLoad,
} from "../ui.js";

const DEFAULT_METRIC = "api.requests";
const TOP = 10;
const PAGE_SIZE = 50;

function openTenant(id) {
  viewTenant(id);
  navigate("/overview");
}

function Stat({ label, value }) {
  return html`<div class="stat"><dt>${label}</dt><dd data-stat=${label}>${formatNumber(value)}</dd></div>`;
}

/** Metrics to rank by: the plans' metered ones, and whatever the overview reports. */
async function loadMetrics(signal) {
  const { plans = [] } = await call("GET", "/plans", { signal });
  const names = new Set([DEFAULT_METRIC]);
  for (const plan of plans) for (const quota of plan.quotas || []) if (quota.metric) names.add(quota.metric);
  return [...names].sort();
}

export function PlatformPage() {
  const [metric, setMetric] = useState(DEFAULT_METRIC);
  const metrics = useLoad(loadMetrics);
  const { data, error, loading, reload } = useLoad(
    (signal) => call("GET", "/platform/overview", { signal, query: { metric, top: TOP } }),
    [metric],
  );
  useEffect(() => {
    if (data) markRendered("platform");
  }, [data]);
  const byPlan = data?.tenantsByPlanStatus || [];
  const suspended = byPlan.filter((r) => /SUSPENDED/i.test(r.status)).reduce((n, r) => n + Number(r.count || 0), 0);
  const options = metrics.data || [DEFAULT_METRIC];
  return html`<${Page} title="Platform overview" busy=${loading}
      actions=${html`<a href=${href("/platform/tenants")}>Manage tenants</a>
        <button type="button" class="small" onClick=${reload}>Refresh</button>`}>
    <${ErrorNote} error=${error || metrics.error} />
    ${loading && !data
      ? html`<${Loading} />`
      : data
        ? html`<p class="lead">Billing period <strong>${data.period}</strong></p>
            <dl class="stats">
              <${Stat} label="Tenants" value=${data.tenants} />
              <${Stat} label="Suspended tenants" value=${suspended} />
              <${Stat} label="Plans in use" value=${new Set(byPlan.map((r) => r.plan)).size} />
            </dl>
            <div class="grid two">
              <section aria-labelledby="plans-heading">
                <h2 id="plans-heading">Tenants by plan and status</h2>
                <${Table} caption="Tenants by plan and status" rows=${byPlan} rowKey=${(r) => `${r.plan}/${r.status}`}
                  empty="No tenants yet."
                  columns=${[
                    { label: "Plan", cell: (r) => r.plan || html`<span class="muted">none</span>` },
                    { label: "Status", cell: (r) => html`<${Badge} value=${r.status} />` },
                    { label: "Tenants", cell: (r) => formatNumber(r.count), className: "num" },
                  ]} />
              </section>
              <section aria-labelledby="top-heading">
                <h2 id="top-heading">Top tenants by usage</h2>
                <div class="toolbar">
                  <${Field} label="Metric" as="select" value=${metric} onChange=${(e) => setMetric(e.currentTarget.value)}>
                    ${options.map((m) => html`<option value=${m}>${m}</option>`)}
                  <//>
                </div>
                <${Table} caption=${`Top tenants by ${data.metric || metric}`} rows=${data.topTenants || []}
                  rowKey=${(r) => r.tenantId} empty="No usage of this metric this period."
                  columns=${[
                    { label: "Tenant", cell: (r) => html`<code>${r.slug || r.tenantId}</code>` },
                    { label: "Plan", cell: (r) => r.plan || html`<span class="muted">none</span>` },
                    { label: data.metric || metric, cell: (r) => formatNumber(r.quantity), className: "num" },
                    {
                      label: "Actions",
                      cell: (r) => html`<button type="button" class="small" onClick=${() => openTenant(r.tenantId)}
                        aria-label=${`Open ${r.slug || r.tenantId}`}>Open</button>`,
                    },
                  ]} />
              </section>
            </div>`
        : null}
  <//>`;
}

function CreateTenant({ plans, onCreated }) {
  const [open, setOpen] = useState(false);
  const [created, setCreated] = useState(null);
  const create = useAction(async (values) => {
    const tenant = { slug: values.slug.trim(), displayName: values.displayName.trim() };
    if (values.plan) tenant.plan = values.plan;
    const body = await call("POST", "/tenants", { body: { tenant, ownerEmail: values.ownerEmail.trim() } });
    setCreated(body);
    setOpen(false);
    onCreated();
  });
  const submit = (event) => {
    event.preventDefault();
    create.run(formValues(event.currentTarget));
  };
  return html`<div>
    <button type="button" class="primary" onClick=${() => { create.clear(); setOpen(true); }}>Create tenant</button>
    ${created
      ? html`<${Notice} kind="success">
          <p>Tenant <strong>${created.tenant?.slug}</strong> was created (id <code>${created.tenant?.id}</code>).</p>
          ${created.ownerInvitationToken
            ? html`<p>Send its owner the invitation link:
                  <a href=${href("/accept", { token: created.ownerInvitationToken })}>accept the invitation</a>.</p>
                <${SecretOnce} label="Owner invitation token" value=${created.ownerInvitationToken} />`
            : html`<p>It has no owner yet: open it and invite one from its Invitations page.</p>`}
        <//>`
      : null}
    <${Dialog} title="Create tenant" open=${open} onClose=${() => setOpen(false)}>
      <form onSubmit=${submit} aria-label="Create tenant">
        <${ErrorNote} error=${create.error} />
        <${Field} label="Slug" name="slug" required maxlength="63" autocomplete="off"
          hint="1-63 lowercase letters, digits or dashes; users type it to sign in." />
        <${Field} label="Name" name="displayName" autocomplete="off" hint="Defaults to the slug." />
        <${Field} label="Plan" name="plan" as="select">
          <option value="">Default (free)</option>
          ${plans.map((p) => html`<option value=${p.name}>${p.displayName || p.name}</option>`)}
        <//>
        <${Field} label="Owner email" name="ownerEmail" type="email" autocomplete="off"
          hint="Optional: this address is invited as the tenant's first owner and sets its own password." />
        <${FormButtons} label="Create" busyLabel="Creating…" pending=${create.pending} onCancel=${() => setOpen(false)} />
      </form>
    <//>
  </div>`;
}

function AssignPlan({ tenant, plans, onDone }) {
  const [plan, setPlan] = useState(tenant.plan || "");
  const assign = useAction(async () => {
    await call("POST", `/tenants/${encodeURIComponent(tenant.id)}:assignPlan`, { body: { plan } });
    onDone(`Tenant ${tenant.slug} is now on plan ${plan}.`);
  });
  const submit = (event) => {
    event.preventDefault();
    assign.run();
  };
  return html`<form class="inline-form" onSubmit=${submit}>
    <label class="visually-hidden" for=${`plan-${tenant.id}`}>Plan of ${tenant.slug}</label>
    <select id=${`plan-${tenant.id}`} value=${plan} onChange=${(e) => setPlan(e.currentTarget.value)}>
      ${plans.some((p) => p.name === tenant.plan) ? null : html`<option value=${tenant.plan || ""}>${tenant.plan || "none"}</option>`}
      ${plans.map((p) => html`<option value=${p.name}>${p.displayName || p.name}</option>`)}
    </select>
    <button type="submit" class="small" disabled=${assign.pending || !plan || plan === tenant.plan}>Assign plan</button>
    <${ErrorNote} error=${assign.error} />
  </form>`;
}

const SEARCH_PAGES = 20;

/** ListTenants has no text search: a search walks the pages (up to 2,000 tenants) here. */
async function searchTenants(signal, state, needle) {
  const found = [];
  let pageToken = "";
  for (let page = 0; page < SEARCH_PAGES; page += 1) {
    const body = await call("GET", "/tenants", { signal, query: { state, pageSize: 100, pageToken } });
    found.push(...(body.tenants || []).filter((t) => matches(t, needle)));
    pageToken = body.nextPageToken || "";
    if (!pageToken) break;
  }
  return { tenants: found, truncated: Boolean(pageToken) };
}

function matches(tenant, needle) {
  return [tenant.id, tenant.slug, tenant.displayName].some((v) => String(v || "").toLowerCase().includes(needle));
}

const STATES = [
  ["", "All states"],
  ["TENANT_STATE_ACTIVE", "Active"],
  ["TENANT_STATE_SUSPENDED", "Suspended"],
];

export function TenantsPage() {
  const [state, setState] = useState("");
  const [search, setSearch] = useState("");
  const [needle, setNeedle] = useState("");
  const [tokens, setTokens] = useState([""]);
  const [notice, setNotice] = useState("");
  const pageToken = tokens[tokens.length - 1];
  const plans = useLoad((signal) => call("GET", "/plans", { signal }));
  const { data, error, loading, reload } = useLoad(
    (signal) =>
      needle
        ? searchTenants(signal, state, needle)
        : call("GET", "/tenants", { signal, query: { state, pageSize: PAGE_SIZE, pageToken } }),
    [state, pageToken, needle],
  );
  useEffect(() => {
    if (data) markRendered("tenants");
  }, [data]);
  const act = useAction(async (fn, message) => {
    await fn();
    setNotice(message);
    reload();
  });
  const done = (message) => {
    setNotice(message);
    reload();
  };
  const planList = plans.data?.plans || [];
  const rows = data?.tenants || [];
  const submitSearch = (event) => {
    event.preventDefault();
    setNeedle(search.trim().toLowerCase());
    setTokens([""]);
  };
  const columns = [
    {
      label: "Tenant",
      cell: (t) => html`<strong>${t.displayName || t.slug}</strong><br /><code>${t.slug}</code>
        <span class="muted small"> · <code>${t.id}</code></span>`,
    },
    {
      label: "Status",
      cell: (t) => html`<${Badge} value=${t.state} />${t.suspendReason ? html`<br /><span class="muted small">${t.suspendReason}</span>` : null}`,
    },
    { label: "Plan", cell: (t) => html`<${AssignPlan} key=${`${t.id}/${t.plan}`} tenant=${t} plans=${planList} onDone=${done} />` },
    { label: "Created", cell: (t) => html`<${Time} value=${t.createTime} />` },
    {
      label: "Actions",
      cell: (t) => html`<div class="actions">
        <button type="button" class="small" onClick=${() => openTenant(t.id)} aria-label=${`Open ${t.slug}`}>Open</button>
        ${t.state === "TENANT_STATE_SUSPENDED"
          ? html`<${ConfirmButton} label="Reactivate" danger=${false} confirmLabel=${`Reactivate ${t.slug}`}
              question=${`Tenant ${t.slug}'s users, keys and service accounts work again.`}
              onConfirm=${() => act.run(() => call("POST", `/tenants/${encodeURIComponent(t.id)}:reactivate`, { body: {} }), `Tenant ${t.slug} is active again.`)} />`
          : html`<${ConfirmButton} label="Suspend" confirmLabel=${`Suspend ${t.slug}`}
              question=${`Every credential of tenant ${t.slug} is refused until it is reactivated: its users cannot sign in and its keys stop working.`}
              onConfirm=${() => act.run(() => call("POST", `/tenants/${encodeURIComponent(t.id)}:suspend`, { body: { reason: "suspended in the console" } }), `Tenant ${t.slug} is suspended.`)} />`}
      </div>`,
    },
  ];
  return html`<${Page} title="Tenants" busy=${loading}
      actions=${html`<button type="button" class="small" onClick=${reload}>Refresh</button>`}>
    <${CreateTenant} plans=${planList} onCreated=${() => { setTokens([""]); reload(); }} />
    <form class="toolbar" role="search" aria-label="Find tenants" onSubmit=${submitSearch}>
      <${Field} label="Search" type="search" value=${search} onInput=${(e) => setSearch(e.currentTarget.value)}
        hint="Part of a slug, name or id." />
      <${Field} label="State" as="select" value=${state}
        onChange=${(e) => { setState(e.currentTarget.value); setTokens([""]); }}>
        ${STATES.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
      <//>
      <div class="actions inline-form">
        <button type="submit">Search</button>
        ${needle ? html`<button type="button" onClick=${() => { setSearch(""); setNeedle(""); }}>Show all</button>` : null}
      </div>
    </form>
    <${ErrorNote} error=${error || plans.error || act.error} />
    ${notice ? html`<${Notice} kind="success">${notice}<//>` : null}
    ${loading && !data
      ? html`<${Loading} />`
      : html`<${Table} caption="Tenants" rows=${rows} columns=${columns}
            empty=${needle ? "No tenant matches." : "No tenants."} />
          ${data?.truncated ? html`<p class="muted small">Only the first 2,000 tenants were searched.</p>` : null}
          <${Pager} nextPageToken=${data?.nextPageToken} atFirst=${tokens.length === 1}
            onFirst=${() => setTokens([""])} onNext=${() => setTokens([...tokens, data.nextPageToken])} />`}
  <//>`;
}
