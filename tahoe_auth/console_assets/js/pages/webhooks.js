// Webhooks: the tenant's endpoints (added with their signing secret shown once, edited,
// disabled and enabled, the secret rotated, deleted), a test event on request, and each
// endpoint's delivery log with what the receiver answered, where dead letters can be
// sent again.
import { call, tenantPath } from "../api.js";
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
  Page,
  Pager,
  Table,
  Time,
  formValues,
  markRendered,
  useAction,
  useLoad,
} from "../ui.js";
import {
  DurationField,
  IssuedSecret,
  durationJson,
  durationOf,
  humanDuration,
  usePages,
} from "./keys-common.js";

const MAX_TTL = 7 * 86400;
const POLL_MS = 3000;
const STATUSES = ["PENDING", "RETRYING", "SUCCEEDED", "DEAD"];

const endpointPath = (id, suffix = "") => tenantPath(`/webhookEndpoints/${encodeURIComponent(id)}${suffix}`);

function useEventTypes() {
  return useLoad((signal) => call("GET", "/webhookEventTypes", { signal }).then((r) => r.eventTypes || {}), []);
}

function EndpointForm({ endpoint, onSaved, onCancel }) {
  const types = useEventTypes();
  const known = types.data || {};
  const names = Object.keys(known).sort();
  const chosen = new Set(endpoint?.eventTypes || []);
  const others = (endpoint?.eventTypes || []).filter((t) => !(t in known));
  const save = useAction(async (body) => {
    if (endpoint) {
      return call("PATCH", endpointPath(endpoint.id), {
        query: { updateMask: "url,description,eventTypes" },
        body: { id: endpoint.id, ...body },
      });
    }
    return call("POST", tenantPath("/webhookEndpoints"), { body: { endpoint: body } });
  });
  const submit = async (event) => {
    event.preventDefault();
    const values = formValues(event.currentTarget);
    const extra = String(values.otherTypes || "").split(/[\s,]+/).filter(Boolean);
    const eventTypes = [...new Set([...(values.eventTypes || []), ...extra])].sort();
    const saved = await save.run({ url: values.url.trim(), description: values.description.trim(), eventTypes });
    if (saved) onSaved(saved);
  };
  return html`<form onSubmit=${submit} aria-label=${endpoint ? "Edit endpoint" : "New endpoint"}>
    <${ErrorNote} error=${save.error} />
    <${Field} label="URL" name="url" type="url" required defaultValue=${endpoint?.url || ""} placeholder="https://"
      hint="Where the events are POSTed. https, and a public address unless the deployment allows others." />
    <${Field} label="Description" name="description" defaultValue=${endpoint?.description || ""} maxlength="500" />
    <fieldset>
      <legend>Event types</legend>
      <p class="hint">None chosen: every event.</p>
      <${ErrorNote} error=${types.error} />
      ${types.loading
        ? html`<${Loading} what="Loading event types" />`
        : html`<div class="checks event-types">
            ${names.map(
              (name) => html`<label key=${name}>
                <input type="checkbox" name="eventTypes" value=${name} defaultChecked=${chosen.has(name)} />
                <span><code>${name}</code> <span class="small muted">${known[name]}</span></span>
              </label>`,
            )}
          </div>`}
      <${Field} label="Other event types or prefixes" name="otherTypes" defaultValue=${others.join(" ")}
        placeholder="user.*" hint="Separated by spaces or commas; a prefix such as user.* covers every user event." />
    </fieldset>
    <${FormButtons} label=${endpoint ? "Save changes" : "Add endpoint"} busyLabel="Saving…" pending=${save.pending}
      onCancel=${onCancel} />
  </form>`;
}

function RotateSecretForm({ endpoint, onRotated, onCancel }) {
  const rotate = useAction(async (previousSecretTtl) =>
    call("POST", endpointPath(endpoint.id, ":rotateSecret"), { body: { previousSecretTtl } }),
  );
  const [problem, setProblem] = useState("");
  const submit = async (event) => {
    event.preventDefault();
    const seconds = durationOf(formValues(event.currentTarget), "ttl");
    if (seconds > MAX_TTL) {
      setProblem("Previous secrets can keep signing for at most 7 days.");
      return;
    }
    setProblem("");
    const rotated = await rotate.run(durationJson(seconds));
    if (rotated) onRotated(rotated, seconds);
  };
  return html`<form onSubmit=${submit} aria-label="Rotate signing secret">
    <p>A new signing secret for <code>${endpoint.url}</code>. While the previous one keeps signing too, each
      message carries both signatures, so the receiver can switch over without losing any.</p>
    <${ErrorNote} error=${rotate.error} />
    <${DurationField} label="The previous secret keeps signing for" name="ttl" amount="24" unit="hours"
      units=${["seconds", "minutes", "hours", "days"]} hint="At most 7 days; 0 stops it at once." />
    ${problem ? html`<p class="note error" role="alert">${problem}</p>` : null}
    <${FormButtons} label="Rotate secret" busyLabel="Rotating…" pending=${rotate.pending}
      onCancel=${onCancel} />
  </form>`;
}

function EndpointStatus({ endpoint }) {
  return html`<${Badge} value=${endpoint.enabled ? "ENABLED" : "DISABLED"} />
    ${!endpoint.enabled && endpoint.disabledReason
      ? html`<p class="small muted">${endpoint.disabledReason}</p>`
      : null}`;
}

function Deliveries({ endpoint, generation, onClose }) {
  const [status, setStatus] = useState("");
  const pages = usePages();
  const list = useLoad(
    (signal) =>
      call("GET", tenantPath("/webhookDeliveries"), {
        signal,
        query: {
          endpointId: endpoint.id,
          status: status ? `WEBHOOK_DELIVERY_STATUS_${status}` : "",
          pageSize: 50,
          pageToken: pages.token,
        },
      }),
    [endpoint.id, status, pages.token, generation],
  );
  const [done, setDone] = useState("");
  const replay = useAction(async (body, what) => {
    setDone("");
    const replayed = await call("POST", tenantPath("/webhookDeliveries:replay"), { body });
    const count = (replayed.deliveries || []).length;
    setDone(count ? `${what}: ${count} ${count === 1 ? "delivery" : "deliveries"} queued to be sent again.` : `${what}: nothing to send again.`);
    list.reload();
  });
  const rows = list.data?.deliveries || [];
  // While a delivery is on its way the log is read again now and then: the worker
  // sends in the background, and its outcome is what the reader waits to see.
  const inFlight = rows.some((d) => !d.finishTime);
  useEffect(() => {
    if (!inFlight || list.loading) return undefined;
    const timer = setTimeout(list.reload, POLL_MS);
    return () => clearTimeout(timer);
  }, [inFlight, list.loading, list.data]);
  const columns = [
    { label: "Event", cell: (d) => html`<code>${d.eventType}</code><p class="small muted"><code>${d.eventId}</code></p>` },
    { label: "Status", cell: (d) => html`<span data-delivery-status><${Badge} value=${d.status} /></span>` },
    { label: "Attempts", cell: (d) => String(d.attempts || 0), className: "num" },
    {
      label: "Response",
      cell: (d) => html`${d.lastResponseCode ? html`<span data-response-code>${d.lastResponseCode}</span>` : html`<span class="muted">—</span>`}
        ${d.lastError ? html`<p class="small muted">${d.lastError}</p>` : null}`,
    },
    { label: "Created", cell: (d) => html`<${Time} value=${d.createTime} />` },
    { label: "Last attempt", cell: (d) => html`<${Time} value=${d.lastAttemptTime} />` },
    { label: "Next attempt", cell: (d) => html`<${Time} value=${d.finishTime ? "" : d.nextAttemptTime} />` },
    { label: "Finished", cell: (d) => html`<${Time} value=${d.finishTime} />` },
    {
      label: "Actions",
      cell: (d) =>
        d.finishTime
          ? html`<button type="button" class="small" disabled=${replay.pending}
              aria-label=${`Send again ${d.eventType} ${d.eventId}`}
              onClick=${() => replay.run({ deliveryId: d.id }, "Sent again")}>Send again</button>`
          : html`<span class="muted">—</span>`,
    },
  ];
  return html`<section aria-labelledby="deliveries-heading" class="deliveries">
    <h2 id="deliveries-heading">Deliveries to <code>${endpoint.url}</code></h2>
    <div class="toolbar">
      <${Field} label="Status" as="select" value=${status}
        onChange=${(e) => { pages.first(); setStatus(e.currentTarget.value); }}>
        <option value="">Any</option>
        ${STATUSES.map((s) => html`<option value=${s}>${s.toLowerCase()}</option>`)}
      <//>
      <button type="button" class="small" onClick=${list.reload}>Refresh deliveries</button>
      <${ConfirmButton} label="Replay dead deliveries" confirmLabel="Replay them" danger=${false}
        question=${`Send every dead delivery to ${endpoint.url} again, with the same webhook-id? Attempts and the retry window start over.${endpoint.enabled ? "" : " The endpoint is disabled: enable it first, or they stay queued."}`}
        onConfirm=${() => replay.run({ endpointId: endpoint.id }, "Replayed dead deliveries")} />
      <button type="button" class="small link" onClick=${onClose}>Close deliveries</button>
    </div>
    ${done ? html`<p class="note success" role="status">${done}</p>` : null}
    <${ErrorNote} error=${replay.error} onDismiss=${replay.clear} />
    ${list.error ? html`<${ErrorNote} error=${list.error} />` : null}
    ${list.loading && !list.data
      ? html`<${Loading} what="Loading deliveries" />`
      : html`<${Table} caption="Deliveries" rows=${rows} columns=${columns}
          empty=${status ? `No ${status.toLowerCase()} deliveries.` : "No deliveries yet."} />`}
    <${Pager} nextPageToken=${list.data?.nextPageToken} atFirst=${pages.atFirst}
      onNext=${() => pages.next(list.data.nextPageToken)} onFirst=${pages.first} />
  </section>`;
}

export function WebhooksPage({ query }) {
  const pages = usePages();
  const list = useLoad(
    (signal) => call("GET", tenantPath("/webhookEndpoints"), { signal, query: { pageSize: 50, pageToken: pages.token } }),
    [pages.token],
  );
  const [creating, setCreating] = useState(false);
  const [editing, setEditing] = useState(null);
  const [rotating, setRotating] = useState(null);
  const [issued, setIssued] = useState(null);
  const [done, setDone] = useState("");
  // Bumped when something here adds a delivery (a test event), so the log reads it.
  const [deliveriesGeneration, setDeliveriesGeneration] = useState(0);
  const act = useAction(async (work, message) => {
    setDone("");
    await work();
    if (message) setDone(message);
    list.reload();
  });
  useEffect(() => {
    if (list.data) markRendered("webhooks");
  }, [list.data]);

  const endpoints = list.data?.endpoints || [];
  const selected = query?.endpoint ? endpoints.find((e) => e.id === query.endpoint) : null;

  const created = (response) => {
    setCreating(false);
    setDone("");
    setIssued({
      title: `Endpoint added: ${response.endpoint.url}`,
      details: html`<p>Receivers verify each message's <code>webhook-signature</code> with this secret
        (Standard Webhooks).</p>`,
      secrets: [{ label: "Signing secret", value: response.secret }],
    });
    list.reload();
  };
  const edited = (response) => {
    setEditing(null);
    setDone(`Saved ${response.endpoint.url}.`);
    list.reload();
  };
  const rotated = (response, ttl) => {
    setRotating(null);
    setDone("");
    setIssued({
      title: `New signing secret for ${response.endpoint.url}`,
      details:
        ttl > 0
          ? html`<p>Messages are signed with the previous secret too for the next ${humanDuration(ttl)}.</p>`
          : html`<p>The previous secret no longer signs messages.</p>`,
      secrets: [{ label: "Signing secret", value: response.secret }],
    });
    list.reload();
  };
  const sendTest = (endpoint) =>
    act.run(async () => {
      const sent = await call("POST", endpointPath(endpoint.id, ":sendTestEvent"), { body: {} });
      navigate("/webhooks", { endpoint: endpoint.id });
      setDeliveriesGeneration((g) => g + 1);
      return sent;
    }, `Test event queued for ${endpoint.url}.`);
  const setEnabled = (endpoint, enabled) =>
    act.run(
      () => call("PATCH", endpointPath(endpoint.id), { query: { updateMask: "enabled" }, body: { id: endpoint.id, enabled } }),
      `${enabled ? "Enabled" : "Disabled"} ${endpoint.url}.`,
    );

  const columns = [
    {
      label: "URL",
      cell: (e) => html`<code>${e.url}</code>${e.description ? html`<p class="small muted">${e.description}</p>` : null}`,
    },
    {
      label: "Events",
      cell: (e) =>
        (e.eventTypes || []).length
          ? html`<ul class="plain-list">${e.eventTypes.map((t) => html`<li key=${t}><code>${t}</code></li>`)}</ul>`
          : html`<span class="muted">every event</span>`,
    },
    { label: "Status", cell: (e) => html`<${EndpointStatus} endpoint=${e} />` },
    { label: "Secrets", cell: (e) => String(e.secretsInForce || 0), className: "num" },
    { label: "Created", cell: (e) => html`<${Time} value=${e.createTime} />` },
    {
      label: "Actions",
      cell: (e) => html`<div class="actions">
        <a class="button-link small" href=${href("/webhooks", { endpoint: e.id })}
          aria-current=${query?.endpoint === e.id ? "true" : undefined}>Deliveries</a>
        <button type="button" class="small" disabled=${act.pending} onClick=${() => sendTest(e)}>Send test event</button>
        <button type="button" class="small" onClick=${() => setEditing(e)}>Edit</button>
        ${e.enabled
          ? html`<button type="button" class="small" disabled=${act.pending} onClick=${() => setEnabled(e, false)}>Disable</button>`
          : html`<button type="button" class="small" disabled=${act.pending} onClick=${() => setEnabled(e, true)}>Enable</button>`}
        <button type="button" class="small" onClick=${() => setRotating(e)}>Rotate secret</button>
        <${ConfirmButton} label="Delete" confirmLabel="Delete endpoint"
          question=${`Delete the endpoint ${e.url} and its delivery log? This cannot be undone.`}
          onConfirm=${() =>
            act.run(async () => {
              await call("DELETE", endpointPath(e.id));
              if (query?.endpoint === e.id) navigate("/webhooks");
            }, `Deleted ${e.url}.`)} />
      </div>`,
    },
  ];
  const actions = html`<button type="button" class="primary" onClick=${() => setCreating(true)}>New endpoint</button>
    <button type="button" class="small" onClick=${list.reload}>Refresh</button>`;

  return html`<${Page} title="Webhooks" actions=${actions} busy=${list.loading}>
    <${IssuedSecret} issued=${issued} onDismiss=${() => setIssued(null)} />
    ${done ? html`<p class="note success" role="status">${done}</p>` : null}
    <${ErrorNote} error=${act.error} onDismiss=${act.clear} />
    ${list.error ? html`<${ErrorNote} error=${list.error} />` : null}
    ${list.loading && !list.data
      ? html`<${Loading} />`
      : html`<${Table} caption="Webhook endpoints" rows=${endpoints} columns=${columns} empty="No webhook endpoints." />`}
    <${Pager} nextPageToken=${list.data?.nextPageToken} atFirst=${pages.atFirst}
      onNext=${() => pages.next(list.data.nextPageToken)} onFirst=${pages.first} />
    ${selected
      ? html`<${Deliveries} key=${selected.id} endpoint=${selected} generation=${deliveriesGeneration} onClose=${() => navigate("/webhooks")} />`
      : query?.endpoint && list.data
        ? html`<p class="note warning" role="status">That endpoint is not on this page of the list (it may have been deleted).</p>`
        : null}
    <${Dialog} title="New endpoint" open=${creating} onClose=${() => setCreating(false)}>
      <${EndpointForm} onSaved=${created} onCancel=${() => setCreating(false)} />
    <//>
    <${Dialog} title="Edit endpoint" open=${!!editing} onClose=${() => setEditing(null)}>
      ${editing ? html`<${EndpointForm} key=${editing.id} endpoint=${editing} onSaved=${edited} onCancel=${() => setEditing(null)} />` : null}
    <//>
    <${Dialog} title="Rotate signing secret" open=${!!rotating} onClose=${() => setRotating(null)}>
      ${rotating ? html`<${RotateSecretForm} endpoint=${rotating} onRotated=${rotated} onCancel=${() => setRotating(null)} />` : null}
    <//>
  <//>`;
}
