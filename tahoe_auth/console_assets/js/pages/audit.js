// The audit log: the tenant's hash-chained record, newest first, filtered by action,
// actor, outcome and time; an export of what the filters select (JSON Lines or CSV);
// and whether the chain is intact, checked by the server as `tahoe-auth audit verify`.
import { ApiError, call, saveBlob, stream, tenantPath } from "../api.js";
import { html, useEffect, useState } from "../html.js";
import {
  Badge,
  ErrorNote,
  Field,
  Loading,
  Notice,
  Page,
  Pager,
  Table,
  Time,
  formatNumber,
  markRendered,
  useAction,
  useLoad,
} from "../ui.js";

const PAGE_SIZE = 50;
const OUTCOMES = [
  ["", "Any outcome"],
  ["AUDIT_OUTCOME_SUCCESS", "Success"],
  ["AUDIT_OUTCOME_FAILURE", "Failure"],
  ["AUDIT_OUTCOME_DENIED", "Denied"],
];
const NO_FILTERS = { action: "", actor: "", outcome: "", from: "", to: "" };

/** datetime-local (the browser's local time) to RFC 3339; "" stays "". */
function instant(local) {
  if (!local) return "";
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

function filterQuery(filters) {
  return {
    action: filters.action.trim(),
    actor: filters.actor.trim(),
    startTime: instant(filters.from),
    endTime: instant(filters.to),
  };
}

function Filters({ filters, onApply }) {
  const [draft, setDraft] = useState(filters);
  const bind = (name) => ({ name, value: draft[name], onInput: (e) => setDraft({ ...draft, [name]: e.currentTarget.value }) });
  const submit = (event) => {
    event.preventDefault();
    onApply(draft);
  };
  const clear = () => {
    setDraft(NO_FILTERS);
    onApply(NO_FILTERS);
  };
  return html`<form class="toolbar" aria-label="Filter the audit log" onSubmit=${submit}>
    <${Field} label="Action" placeholder="auth.*" hint="Exact, or a prefix ending in *." ...${bind("action")} />
    <${Field} label="Actor id" hint="A user, key or service account id." ...${bind("actor")} />
    <${Field} label="Outcome" as="select" ...${bind("outcome")}
      onChange=${(e) => setDraft({ ...draft, outcome: e.currentTarget.value })}>
      ${OUTCOMES.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
    <//>
    <${Field} label="From" type="datetime-local" ...${bind("from")} />
    <${Field} label="Until" type="datetime-local" ...${bind("to")} />
    <div class="actions audit-filter-actions">
      <button type="submit" class="primary">Apply filters</button>
      <button type="button" onClick=${clear}>Clear</button>
    </div>
  </form>`;
}

/** The chain's state in words: intact with a count, or where and how it breaks. */
function ChainStatus() {
  const { data, error, loading, reload } = useLoad((signal) => call("GET", tenantPath("/auditEvents:verify"), { signal }));
  const again = html`<button type="button" class="small" onClick=${reload} disabled=${loading}>Verify again</button>`;
  if (loading && !data) return html`<div data-chain><${Loading} what="Verifying the audit chain" /></div>`;
  if (error) return html`<div data-chain><${ErrorNote} error=${error} />${again}</div>`;
  const checked = Number(data.entriesChecked || 0);
  if (data.intact) {
    return html`<div data-chain="intact"><${Notice} kind="success">
      <p><strong>Chain verified: ${formatNumber(checked)} ${checked === 1 ? "entry" : "entries"} intact.</strong>${" "}
        Every entry's hash and link to the one before it match, and none is missing.</p>
      ${again}
    <//></div>`;
  }
  const problem = data.firstProblem || {};
  return html`<div data-chain="broken" role="alert" class="note error">
    <p><strong>The audit chain is broken at entry ${problem.sequence || "?"}: ${problem.problem || "unknown problem"}.</strong></p>
    <p>An entry was changed or removed outside the service; the check stopped there, after
      ${formatNumber(checked)} ${checked === 1 ? "entry" : "entries"}. Treat the log from that entry on as
      untrustworthy until this is investigated.</p>
    ${again}
  </div>`;
}

function Details({ value }) {
  const keys = Object.keys(value || {});
  if (keys.length === 0) return html`<span class="muted">—</span>`;
  return html`<details class="audit-details">
    <summary>${keys.length} ${keys.length === 1 ? "field" : "fields"}</summary>
    <pre>${JSON.stringify(value, null, 2)}</pre>
  </details>`;
}

const COLUMNS = [
  { label: "#", cell: (e) => Number(e.sequence), className: "num" },
  { label: "Time", cell: (e) => html`<${Time} value=${e.time} />` },
  {
    label: "Actor",
    cell: (e) =>
      e.actor
        ? html`<code>${e.actor}</code> <span class="muted small">${e.actorType}</span>`
        : html`<span class="muted">${e.actorType || "anonymous"}</span>`,
  },
  { label: "Action", cell: (e) => html`<code>${e.action}</code>`, className: "audit-action" },
  { label: "Target", cell: (e) => (e.target ? html`<code>${e.target}</code>` : html`<span class="muted">—</span>`) },
  { label: "Outcome", cell: (e) => html`<${Badge} value=${e.outcome} />` },
  { label: "Request id", cell: (e) => (e.requestId ? html`<code>${e.requestId}</code>` : html`<span class="muted">—</span>`) },
  { label: "Details", cell: (e) => html`<${Details} value=${e.details} />` },
];

function base64Bytes(text) {
  const raw = atob(text || "");
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** The export is a server stream of byte chunks (base64 in JSON): joined into one file. */
async function exportEvents(filters, format, session) {
  const csv = format === "csv";
  const chunks = [];
  await stream(tenantPath("/auditEvents:export"), {
    query: { ...filterQuery(filters), format: csv ? "AUDIT_EXPORT_FORMAT_CSV" : "AUDIT_EXPORT_FORMAT_JSON_LINES" },
    onMessage: (message) => chunks.push(base64Bytes(message.content)),
  });
  const type = csv ? "text/csv" : "application/x-ndjson";
  const day = new Date().toISOString().slice(0, 10);
  const filename = `audit-${session?.tenantId || "tenant"}-${day}.${csv ? "csv" : "jsonl"}`;
  saveBlob(filename, new Blob(chunks, { type }));
  return filename;
}

function Export({ filters, session }) {
  const [format, setFormat] = useState("jsonl");
  const [saved, setSaved] = useState("");
  const action = useAction(async () => {
    setSaved("");
    setSaved(await exportEvents(filters, format, session));
  });
  return html`<section aria-labelledby="export-heading">
    <h2 id="export-heading">Export</h2>
    <p class="muted small">Oldest first, with the hashes (a JSON Lines export can be verified offline). The
      action, actor and time filters apply; the export is itself audited.</p>
    <div class="toolbar">
      <${Field} label="Format" as="select" value=${format} onChange=${(e) => setFormat(e.currentTarget.value)}>
        <option value="jsonl">JSON Lines</option>
        <option value="csv">CSV</option>
      <//>
      <button type="button" onClick=${() => action.run()} disabled=${action.pending}>
        ${action.pending ? "Exporting…" : "Export"}
      </button>
    </div>
    <${ErrorNote} error=${action.error} />
    ${saved ? html`<${Notice} kind="success">Saved <code>${saved}</code>.<//>` : null}
  </section>`;
}

export function AuditPage({ session }) {
  const [filters, setFilters] = useState(NO_FILTERS);
  const [filterError, setFilterError] = useState(null);
  // Tokens of the pages seen so far: the last one is the page shown.
  const [tokens, setTokens] = useState([""]);
  const pageToken = tokens[tokens.length - 1];
  const { data, error, loading, reload } = useLoad(
    (signal) =>
      call("GET", tenantPath("/auditEvents"), {
        signal,
        query: { ...filterQuery(filters), outcome: filters.outcome, pageSize: PAGE_SIZE, pageToken },
      }),
    [filters, pageToken],
  );
  useEffect(() => {
    if (data) markRendered("audit");
  }, [data]);
  const apply = (next) => {
    if (next.from && next.to && instant(next.to) <= instant(next.from)) {
      setFilterError(new ApiError({ status: 400, message: "the end of the time range must be after its start" }));
      return;
    }
    setFilterError(null);
    setFilters(next);
    setTokens([""]);
  };
  const events = data?.events || [];
  const filtered = Object.values(filters).some(Boolean);
  return html`<${Page} title="Audit log" busy=${loading}
      actions=${html`<button type="button" class="small" onClick=${reload}>Refresh</button>`}>
    <${ChainStatus} />
    <${Filters} filters=${filters} onApply=${apply} />
    <${ErrorNote} error=${filterError || error} />
    ${loading && !data
      ? html`<${Loading} />`
      : html`<p class="muted small" role="status">
            ${formatNumber(events.length)} ${events.length === 1 ? "entry" : "entries"} on this page, newest first${filtered ? ", filtered" : ""}.
          </p>
          <${Table} caption="Audit log entries" rows=${events} rowKey=${(e) => e.sequence} columns=${COLUMNS}
            empty=${filtered ? "No entries match these filters." : "No audit entries yet."} />
          <${Pager} nextPageToken=${data?.nextPageToken} atFirst=${tokens.length === 1}
            onFirst=${() => setTokens([""])} onNext=${() => setTokens([...tokens, data.nextPageToken])} />`}
    <${Export} filters=${filters} session=${session} />
  <//>`;
}
