// API keys: the tenant's keys (every user's for a manager, one's own otherwise), a new
// key whose secret is shown once, revoking (refused everywhere within a second), and
// rotating with a grace period during which the old secret still works.
import { call, tenantPath } from "../api.js";
import { html, useEffect, useState } from "../html.js";
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
  PermissionList,
  PermissionPicker,
  durationJson,
  durationOf,
  usePages,
  useRoles,
} from "./keys-common.js";

const MAX_GRACE = 7 * 86400;

/** revoked, expired, rotating (the old secret still works) or active. */
export function keyStatus(key, now = Date.now()) {
  if (key.revokeTime) return "REVOKED";
  if (key.expireTime && Date.parse(key.expireTime) <= now) return "EXPIRED";
  if (key.previousSecretExpireTime && Date.parse(key.previousSecretExpireTime) > now) return "ROTATING";
  return "ACTIVE";
}

function StatusCell({ apiKey }) {
  const status = keyStatus(apiKey);
  return html`<${Badge} value=${status} />
    ${status === "ROTATING"
      ? html`<p class="small muted">Old secret works until <${Time} value=${apiKey.previousSecretExpireTime} /></p>`
      : null}`;
}

function CreateKeyForm({ onCreated, onCancel }) {
  const roles = useRoles();
  const [scopes, setScopes] = useState([]);
  const create = useAction(async (body) => call("POST", tenantPath("/apiKeys"), { body }));
  const [problem, setProblem] = useState("");
  const submit = async (event) => {
    event.preventDefault();
    const values = formValues(event.currentTarget);
    if (!scopes.length) {
      setProblem("Choose at least one permission for the key.");
      return;
    }
    setProblem("");
    const body = { name: values.name.trim(), scopes };
    if (values.expires) body.expireTime = new Date(values.expires).toISOString();
    const created = await create.run(body);
    if (created) onCreated(created);
  };
  return html`<form onSubmit=${submit} aria-label="New API key">
    <${ErrorNote} error=${create.error} />
    <${Field} label="Name" name="name" required maxlength="200" autocomplete="off"
      hint="What uses the key, so you know what breaks if you revoke it." />
    <${PermissionPicker} legend="Permissions the key may use" roles=${roles.data} rolesError=${roles.error}
      selected=${scopes} onChange=${setScopes} />
    <${Field} label="Expires (optional)" name="expires" type="datetime-local"
      hint="Leave empty for a key that does not expire." />
    ${problem ? html`<p class="note error" role="alert">${problem}</p>` : null}
    <${FormButtons} label="Create key" busyLabel="Creating…" pending=${create.pending}
      onCancel=${onCancel} />
  </form>`;
}

function RotateKeyForm({ apiKey, onRotated, onCancel }) {
  const rotate = useAction(async (gracePeriod) =>
    call("POST", tenantPath(`/apiKeys/${encodeURIComponent(apiKey.id)}:rotate`), { body: { gracePeriod } }),
  );
  const [problem, setProblem] = useState("");
  const submit = async (event) => {
    event.preventDefault();
    const seconds = durationOf(formValues(event.currentTarget), "grace");
    if (seconds > MAX_GRACE) {
      setProblem("The grace period can be at most 7 days.");
      return;
    }
    setProblem("");
    const rotated = await rotate.run(durationJson(seconds));
    if (rotated) onRotated(rotated, seconds);
  };
  return html`<form onSubmit=${submit} aria-label="Rotate API key">
    <p>A new secret replaces the current one of <strong>${apiKey.name}</strong>
      (<code>${apiKey.prefix}…</code>).</p>
    <${ErrorNote} error=${rotate.error} />
    <${DurationField} label="The old secret keeps working for" name="grace" amount="1" unit="hours"
      units=${["seconds", "minutes", "hours", "days"]}
      hint="At most 7 days; 0 stops the old secret at once." />
    ${problem ? html`<p class="note error" role="alert">${problem}</p>` : null}
    <${FormButtons} label="Rotate key" busyLabel="Rotating…" pending=${rotate.pending}
      onCancel=${onCancel} />
  </form>`;
}

function owner(apiKey, session) {
  if (apiKey.userId && apiKey.userId === session?.userId) return "you";
  return html`<code>${apiKey.userId}</code>`;
}

export function ApiKeysPage({ session }) {
  const [showEnded, setShowEnded] = useState(false);
  const pages = usePages();
  const list = useLoad(
    (signal) =>
      call("GET", tenantPath("/apiKeys"), {
        signal,
        query: { pageSize: 50, pageToken: pages.token, showEnded: showEnded ? "true" : "" },
      }),
    [pages.token, showEnded],
  );
  const [creating, setCreating] = useState(false);
  const [rotating, setRotating] = useState(null);
  const [issued, setIssued] = useState(null);
  const revoke = useAction(async (apiKey) => {
    await call("POST", tenantPath(`/apiKeys/${encodeURIComponent(apiKey.id)}:revoke`), { body: {} });
    list.reload();
  });
  useEffect(() => {
    if (list.data) markRendered("api-keys");
  }, [list.data]);

  const created = (response) => {
    setCreating(false);
    setIssued({
      title: `API key “${response.apiKey.name}” created`,
      details: html`<p>Send it as <code>${"authorization: Bearer <key>"}</code>. ${
        `Its permissions: ${(response.apiKey.scopes || []).join(", ")}.`}</p>`,
      secrets: [{ label: "API key", value: response.secret }],
    });
    list.reload();
  };
  const rotated = (response, grace) => {
    setRotating(null);
    const until = response.apiKey.previousSecretExpireTime;
    setIssued({
      title: `New secret for “${response.apiKey.name}”`,
      details:
        grace > 0 && until
          ? html`<p data-old-secret-until=${until}>The old secret keeps working until <${Time} value=${until} />.</p>`
          : html`<p>The old secret stopped working now.</p>`,
      secrets: [{ label: "New API key secret", value: response.secret }],
    });
    list.reload();
  };

  const keys = list.data?.apiKeys || [];
  const columns = [
    { label: "Name", cell: (k) => html`<strong>${k.name}</strong>` },
    { label: "Prefix", cell: (k) => html`<code>${k.prefix}…</code>` },
    { label: "Permissions", cell: (k) => html`<${PermissionList} permissions=${k.scopes} />` },
    { label: "Owner", cell: (k) => owner(k, session) },
    { label: "Created", cell: (k) => html`<${Time} value=${k.createTime} />` },
    { label: "Last used", cell: (k) => html`<${Time} value=${k.lastUsedTime} />` },
    { label: "Expires", cell: (k) => (k.expireTime ? html`<${Time} value=${k.expireTime} />` : "never") },
    { label: "Status", cell: (k) => html`<${StatusCell} apiKey=${k} />` },
    {
      label: "Actions",
      cell: (k) =>
        keyStatus(k) === "REVOKED" || keyStatus(k) === "EXPIRED"
          ? html`<span class="muted">—</span>`
          : html`<div class="actions">
              <button type="button" class="small" aria-label=${`Rotate ${k.name}`} onClick=${() => setRotating(k)}>
                Rotate
              </button>
              <${ConfirmButton} label="Revoke" confirmLabel="Revoke key"
                question=${`Revoke the key “${k.name}” (${k.prefix}…)? Everything that uses it is refused within a second. This cannot be undone.`}
                onConfirm=${() => revoke.run(k)} />
            </div>`,
    },
  ];
  const actions = html`<button type="button" class="primary" onClick=${() => setCreating(true)}>New API key</button>
    <button type="button" class="small" onClick=${list.reload}>Refresh</button>`;

  return html`<${Page} title="API keys" actions=${actions} busy=${list.loading}>
    <${IssuedSecret} issued=${issued} onDismiss=${() => setIssued(null)} />
    <${ErrorNote} error=${revoke.error} onDismiss=${revoke.clear} />
    <div class="toolbar">
      <label class="inline-check">
        <input type="checkbox" checked=${showEnded} onChange=${(e) => { pages.first(); setShowEnded(e.currentTarget.checked); }} />
        Show revoked and expired keys
      </label>
    </div>
    ${list.error ? html`<${ErrorNote} error=${list.error} />` : null}
    ${list.loading && !list.data
      ? html`<${Loading} />`
      : html`<${Table} caption="API keys" rows=${keys} columns=${columns}
          empty=${showEnded ? "No API keys." : "No active API keys."} />`}
    <${Pager} nextPageToken=${list.data?.nextPageToken} atFirst=${pages.atFirst}
      onNext=${() => pages.next(list.data.nextPageToken)} onFirst=${pages.first} />
    <${Dialog} title="New API key" open=${creating} onClose=${() => setCreating(false)}>
      <${CreateKeyForm} onCreated=${created} onCancel=${() => setCreating(false)} />
    <//>
    <${Dialog} title="Rotate API key" open=${!!rotating} onClose=${() => setRotating(null)}>
      ${rotating ? html`<${RotateKeyForm} apiKey=${rotating} onRotated=${rotated} onCancel=${() => setRotating(null)} />` : null}
    <//>
  <//>`;
}
