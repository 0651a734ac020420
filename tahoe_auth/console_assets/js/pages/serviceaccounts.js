// Service accounts: machine clients that exchange a client id and secret for short-lived
// tokens (IssueServiceToken). Created with permissions (the secret shown once), their
// permissions changed, the secret rotated (shown once) or revoked, the account deleted.
import { call, tenantPath } from "../api.js";
import { html, useEffect, useState } from "../html.js";
import {
  Badge,
  ConfirmButton,
  CopyButton,
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

const accountPath = (account, suffix = "") => tenantPath(`/serviceAccounts/${encodeURIComponent(account.id)}${suffix}`);

function AccountForm({ account, onSaved, onCancel }) {
  const roles = useRoles();
  const [permissions, setPermissions] = useState(account?.permissions || []);
  const save = useAction(async (values) => {
    if (account) {
      return call("PATCH", accountPath(account), {
        query: { updateMask: "description,permissions" },
        body: { id: account.id, description: values.description.trim(), permissions },
      });
    }
    return call("POST", tenantPath("/serviceAccounts"), {
      body: { serviceAccount: { name: values.name.trim(), description: values.description.trim(), permissions } },
    });
  });
  const submit = async (event) => {
    event.preventDefault();
    const saved = await save.run(formValues(event.currentTarget));
    if (saved) onSaved(saved);
  };
  return html`<form onSubmit=${submit} aria-label=${account ? "Edit service account" : "New service account"}>
    <${ErrorNote} error=${save.error} />
    ${account
      ? html`<p>Account <strong>${account.name}</strong> (client id <code>${account.id}</code>).</p>`
      : html`<${Field} label="Name" name="name" required maxlength="200" autocomplete="off"
          hint="Unique in the tenant: the service that uses it." />`}
    <${Field} label="Description" name="description" as="textarea" defaultValue=${account?.description || ""} />
    <${PermissionPicker} legend="Permissions of its tokens" roles=${roles.data} rolesError=${roles.error}
      selected=${permissions} onChange=${setPermissions} />
    <p class="hint">Tokens issued from now on carry the new permissions; tokens already issued keep theirs until they expire.</p>
    <${FormButtons} label=${account ? "Save changes" : "Create service account"} busyLabel="Saving…"
      pending=${save.pending} onCancel=${onCancel} />
  </form>`;
}

function RotateSecretForm({ account, onRotated, onCancel }) {
  const rotate = useAction(async (gracePeriod) => call("POST", accountPath(account, ":rotateSecret"), { body: { gracePeriod } }));
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
  return html`<form onSubmit=${submit} aria-label="Rotate client secret">
    <p>A new client secret replaces the current one of <strong>${account.name}</strong>.</p>
    <${ErrorNote} error=${rotate.error} />
    <${DurationField} label="The old secret keeps working for" name="grace" amount="0" unit="minutes"
      units=${["seconds", "minutes", "hours", "days"]} hint="At most 7 days; 0 stops the old secret at once." />
    ${problem ? html`<p class="note error" role="alert">${problem}</p>` : null}
    <${FormButtons} label="Rotate secret" busyLabel="Rotating…" pending=${rotate.pending}
      onCancel=${onCancel} />
  </form>`;
}

function SecretCell({ account }) {
  if (account.secretRevoked) return html`<${Badge} value="REVOKED" /> <p class="small muted">Rotate to issue a new secret.</p>`;
  const until = account.previousSecretExpireTime;
  return html`<code>${account.secretPrefix}…</code>
    <p class="small muted">Issued <${Time} value=${account.secretRotateTime} /></p>
    ${until && Date.parse(until) > Date.now()
      ? html`<p class="small muted">Old secret works until <${Time} value=${until} /></p>`
      : null}`;
}

export function ServiceAccountsPage() {
  const pages = usePages();
  const list = useLoad(
    (signal) => call("GET", tenantPath("/serviceAccounts"), { signal, query: { pageSize: 50, pageToken: pages.token } }),
    [pages.token],
  );
  const [creating, setCreating] = useState(false);
  const [editing, setEditing] = useState(null);
  const [rotating, setRotating] = useState(null);
  const [issued, setIssued] = useState(null);
  const [saved, setSaved] = useState("");
  const act = useAction(async (work) => {
    await work();
    list.reload();
  });
  useEffect(() => {
    if (list.data) markRendered("service-accounts");
  }, [list.data]);

  const created = (response) => {
    setCreating(false);
    setSaved("");
    setIssued({
      title: `Service account “${response.serviceAccount.name}” created`,
      details: html`<p>Client id: <code data-client-id>${response.clientId}</code> <${CopyButton} text=${response.clientId}
        label="Copy client id" /></p>
        <p>Exchange the client id and secret for a token at <code>POST /auth/v1/serviceTokens</code>.</p>`,
      secrets: [{ label: "Client secret", value: response.clientSecret }],
    });
    list.reload();
  };
  const edited = (response) => {
    setEditing(null);
    setSaved(`Saved “${response.serviceAccount.name}”.`);
    list.reload();
  };
  const rotated = (response, grace) => {
    setRotating(null);
    setSaved("");
    const until = response.serviceAccount.previousSecretExpireTime;
    setIssued({
      title: `New client secret for “${response.serviceAccount.name}”`,
      details:
        grace > 0 && until
          ? html`<p>The old secret keeps working until <${Time} value=${until} />.</p>`
          : html`<p>The old secret stopped working now.</p>`,
      secrets: [{ label: "Client secret", value: response.clientSecret }],
    });
    list.reload();
  };

  const accounts = list.data?.serviceAccounts || [];
  const columns = [
    {
      label: "Name",
      cell: (a) => html`<strong>${a.name}</strong>${a.description ? html`<p class="small muted">${a.description}</p>` : null}`,
    },
    { label: "Client id", cell: (a) => html`<code>${a.id}</code>` },
    { label: "Permissions", cell: (a) => html`<${PermissionList} permissions=${a.permissions} />` },
    { label: "Secret", cell: (a) => html`<${SecretCell} account=${a} />` },
    { label: "Created", cell: (a) => html`<${Time} value=${a.createTime} />` },
    { label: "Updated", cell: (a) => html`<${Time} value=${a.updateTime} />` },
    {
      label: "Actions",
      cell: (a) => html`<div class="actions">
        <button type="button" class="small" aria-label=${`Edit ${a.name}`} onClick=${() => setEditing(a)}>Edit</button>
        <button type="button" class="small" aria-label=${`Rotate secret of ${a.name}`} onClick=${() => setRotating(a)}>
          Rotate secret
        </button>
        <${ConfirmButton} label="Revoke secret" confirmLabel="Revoke secret" disabled=${a.secretRevoked}
          question=${`Revoke every secret of “${a.name}”? Its tokens stop working within a second; rotate afterwards to issue a new secret.`}
          onConfirm=${() => act.run(() => call("POST", accountPath(a, ":revokeSecret"), { body: {} }))} />
        <${ConfirmButton} label="Delete" confirmLabel="Delete service account"
          question=${`Delete “${a.name}”? Its tokens stop working within a second. This cannot be undone.`}
          onConfirm=${() => act.run(() => call("DELETE", accountPath(a)))} />
      </div>`,
    },
  ];
  const actions = html`<button type="button" class="primary" onClick=${() => setCreating(true)}>New service account</button>
    <button type="button" class="small" onClick=${list.reload}>Refresh</button>`;

  return html`<${Page} title="Service accounts" actions=${actions} busy=${list.loading}>
    <${IssuedSecret} issued=${issued} onDismiss=${() => setIssued(null)} />
    ${saved ? html`<p class="note success" role="status">${saved}</p>` : null}
    <${ErrorNote} error=${act.error} onDismiss=${act.clear} />
    ${list.error ? html`<${ErrorNote} error=${list.error} />` : null}
    ${list.loading && !list.data
      ? html`<${Loading} />`
      : html`<${Table} caption="Service accounts" rows=${accounts} columns=${columns} empty="No service accounts." />`}
    <${Pager} nextPageToken=${list.data?.nextPageToken} atFirst=${pages.atFirst}
      onNext=${() => pages.next(list.data.nextPageToken)} onFirst=${pages.first} />
    <${Dialog} title="New service account" open=${creating} onClose=${() => setCreating(false)}>
      <${AccountForm} onSaved=${created} onCancel=${() => setCreating(false)} />
    <//>
    <${Dialog} title="Edit service account" open=${!!editing} onClose=${() => setEditing(null)}>
      ${editing ? html`<${AccountForm} key=${editing.id} account=${editing} onSaved=${edited} onCancel=${() => setEditing(null)} />` : null}
    <//>
    <${Dialog} title="Rotate client secret" open=${!!rotating} onClose=${() => setRotating(null)}>
      ${rotating ? html`<${RotateSecretForm} account=${rotating} onRotated=${rotated} onCancel=${() => setRotating(null)} />` : null}
    <//>
  <//>`;
}
