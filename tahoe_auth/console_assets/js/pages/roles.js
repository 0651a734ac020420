// Roles: the four built-in roles (read-only) and the tenant's own. A custom role is a
// set of `resource:action` permissions, picked from the ones the server checks (grouped
// by resource, `resource:*` for all of a resource's actions) or typed in.
import { call, tenantPath } from "../api.js";
import { html, useEffect, useState } from "../html.js";
import {
  ConfirmButton,
  Dialog,
  ErrorNote,
  Field,
  FormButtons,
  Loading,
  Notice,
  Page,
  Table,
  Time,
  formValues,
  markRendered,
  useAction,
  useLoad,
} from "../ui.js";
import { loadRoles } from "./invitations.js";

// The permissions the server checks (tahoe_auth/server.py and the upstream checks), by
// resource. There is no API that lists them; other strings can be typed in.
export const PERMISSIONS = [
  ["users", "Users", ["read", "create", "update", "disable", "delete", "reset_password"]],
  ["roles", "Roles", ["read", "create", "update", "delete", "assign"]],
  ["invitations", "Invitations", ["read", "create", "revoke"]],
  ["sessions", "Sessions", ["read", "revoke"]],
  ["apikeys", "API keys", ["read", "create", "rotate", "revoke"]],
  ["service_accounts", "Service accounts", ["read", "create", "update", "rotate", "revoke", "delete"]],
  ["webhooks", "Webhooks", ["read", "write"]],
  ["audit", "Audit log", ["read"]],
  ["usage", "Usage", ["read", "write"]],
  ["tenant", "Tenant settings", ["read", "write"]],
  ["transcription", "Transcription", ["read", "write"]],
];

const KNOWN = new Set(PERMISSIONS.flatMap(([resource, , verbs]) => [`${resource}:*`, ...verbs.map((v) => `${resource}:${v}`)]));
const SHAPE = /^(\*|[a-z][a-z0-9_.-]{0,62}):(\*|[a-z][a-z0-9_.-]{0,62})$/;

/** The typed-in permissions: separated by commas, spaces or lines. */
function typed(text) {
  return String(text || "")
    .split(/[\s,]+/)
    .map((p) => p.trim())
    .filter(Boolean);
}

function PermissionPicker({ initial }) {
  const [chosen, setChosen] = useState(() => new Set(initial));
  const toggle = (permission, on) =>
    setChosen((c) => {
      const next = new Set(c);
      if (on) next.add(permission);
      else next.delete(permission);
      return next;
    });
  const others = initial.filter((p) => !KNOWN.has(p));
  return html`<div class="roles-picker">
    ${PERMISSIONS.map(([resource, label, verbs]) => {
      const all = chosen.has(`${resource}:*`);
      return html`<fieldset key=${resource}>
        <legend>${label} <code class="muted small">${resource}</code></legend>
        <div class="checks">
          <label><input type="checkbox" name="permissions" value=${`${resource}:*`} checked=${chosen.has(`${resource}:*`)}
            onChange=${(e) => toggle(`${resource}:*`, e.currentTarget.checked)} />
            <span>all: <code>${resource}:*</code></span></label>
          ${verbs.map(
            (verb) => html`<label><input type="checkbox" name="permissions" value=${`${resource}:${verb}`}
                checked=${all || chosen.has(`${resource}:${verb}`)} disabled=${all}
                onChange=${(e) => toggle(`${resource}:${verb}`, e.currentTarget.checked)} />
              <code>${resource}:${verb}</code></label>`,
          )}
        </div>
      </fieldset>`;
    })}
    <${Field} label="Other permissions" name="custom" as="textarea" value=${others.join("\n")}
      hint="Any resource:action, one a line or separated by commas; * in either part is a wildcard (*:read is every read)." />
  </div>`;
}

/** The permissions a picker's form holds: the boxes ticked (a resource's * hides its actions) and the typed ones. */
function chosenPermissions(values) {
  const boxes = (values.permissions || []).filter((p) => {
    const [resource, action] = p.split(":");
    return action === "*" || !(values.permissions || []).includes(`${resource}:*`);
  });
  return [...new Set([...boxes, ...typed(values.custom)])].sort();
}

function RoleDialog({ role, open, onClose, onSaved }) {
  const editing = !!role;
  const [problem, setProblem] = useState("");
  const save = useAction(async (values) => {
    const permissions = chosenPermissions(values);
    const body = editing
      ? await call("PATCH", tenantPath(`/roles/${encodeURIComponent(role.name)}`), {
          query: { updateMask: "description,permissions" },
          body: { name: role.name, description: values.description, permissions },
        })
      : await call("POST", tenantPath("/roles"), {
          body: { role: { name: values.name.trim(), description: values.description, permissions } },
        });
    onSaved(body.role, editing);
  });
  const submit = (event) => {
    event.preventDefault();
    const values = formValues(event.currentTarget);
    const wrong = typed(values.custom).filter((p) => !SHAPE.test(p));
    if (wrong.length) {
      save.clear();
      setProblem(`These are not of the form resource:action: ${wrong.join(", ")}.`);
      return;
    }
    setProblem("");
    save.run(values);
  };
  const close = () => {
    save.clear();
    setProblem("");
    onClose();
  };
  return html`<${Dialog} title=${editing ? `Edit the role ${role.name}` : "Create a role"} open=${open} onClose=${close}>
    ${open
      ? html`<form onSubmit=${submit} aria-label=${editing ? "Edit the role" : "Create a role"}>
          <${ErrorNote} error=${save.error} />
          ${problem ? html`<div class="note error" role="alert"><p>${problem}</p></div>` : null}
          ${editing
            ? html`<p>Name: <code>${role.name}</code></p>`
            : html`<${Field} label="Name" name="name" required autocomplete="off"
                hint="1-63 lowercase letters, digits, _ or -, starting with a letter. It cannot change later." />`}
          <${Field} label="Description" name="description" value=${role?.description || ""} autocomplete="off" />
          <h3>Permissions</h3>
          <p class="hint">You can only grant permissions you hold yourself.</p>
          <${PermissionPicker} initial=${role?.permissions || []} />
          <${FormButtons} label=${editing ? "Save role" : "Create role"} busyLabel="Saving…" pending=${save.pending}
            onCancel=${close} />
        </form>`
      : null}
  <//>`;
}

function Permissions({ role }) {
  const list = role.permissions || [];
  if (!list.length) return html`<span class="muted">none</span>`;
  return html`<ul class="roles-permissions">${list.map((p) => html`<li><code>${p}</code></li>`)}</ul>`;
}

export function RolesPage() {
  const { data, error, loading, reload } = useLoad((signal) => loadRoles(signal), []);
  const [dialog, setDialog] = useState({ open: false, role: null });
  const [done, setDone] = useState("");
  const [inUse, setInUse] = useState(null);
  useEffect(() => {
    if (data) markRendered("roles");
  }, [data]);
  const remove = useAction(async (role, force) => {
    setDone("");
    setInUse(null);
    try {
      const body = await call("DELETE", tenantPath(`/roles/${encodeURIComponent(role.name)}`), {
        query: force ? { force: true } : {},
      });
      const n = Number(body.removedBindingCount || 0);
      setDone(
        force && n
          ? `The role ${role.name} is deleted; ${n === 1 ? "1 user" : `${n} users`} lost it.`
          : `The role ${role.name} is deleted.`,
      );
      reload();
    } catch (caught) {
      if (caught.reason === "ROLE_IN_USE") setInUse(role);
      throw caught;
    }
  });
  const builtin = (data || []).filter((r) => r.builtin);
  const custom = (data || []).filter((r) => !r.builtin);
  const actions = html`<button type="button" class="primary" onClick=${() => setDialog({ open: true, role: null })}>
      Create a role
    </button>
    <button type="button" class="small" onClick=${reload}>Refresh</button>`;
  return html`<${Page} title="Roles" actions=${actions} busy=${loading}>
    <p class="lead">A role is a set of permissions; users hold roles. Built-in roles cannot change.</p>
    <${ErrorNote} error=${remove.error} onDismiss=${() => (remove.clear(), setInUse(null))} />
    ${inUse
      ? html`<div class="actions">
          <${ConfirmButton} label=${`Remove ${inUse.name} from its users and delete it`}
            confirmLabel="Remove and delete"
            question=${`Every user holding ${inUse.name} loses it, then the role is deleted. This cannot be undone.`}
            onConfirm=${() => remove.run(inUse, true)} />
        </div>`
      : null}
    ${done ? html`<${Notice} kind="success">${done}<//>` : null}
    ${error ? html`<${ErrorNote} error=${error} />` : null}
    ${loading && !data ? html`<${Loading} />` : null}
    ${data
      ? html`<section>
            <h2 id="custom-roles">Custom roles</h2>
            <${Table} caption="Custom roles" rows=${custom} rowKey=${(r) => r.name}
              empty="No custom roles yet. Create one to grant exactly the permissions a job needs."
              columns=${[
                { label: "Name", cell: (r) => html`<code>${r.name}</code>`, className: "roles-name" },
                { label: "Description", cell: (r) => r.description || html`<span class="muted">—</span>` },
                { label: "Permissions", cell: (r) => html`<${Permissions} role=${r} />` },
                { label: "Updated", cell: (r) => html`<${Time} value=${r.updateTime || r.createTime} />` },
                {
                  label: "Actions",
                  cell: (r) => html`<div class="actions">
                    <button type="button" class="small" aria-label=${`Edit the role ${r.name}`}
                      onClick=${() => setDialog({ open: true, role: r })}>Edit</button>
                    <${ConfirmButton} label="Delete" confirmLabel=${`Delete ${r.name}`}
                      question=${`Delete the role ${r.name}? This cannot be undone.`}
                      onConfirm=${() => remove.run(r, false)} />
                  </div>`,
                },
              ]} />
          </section>
          <section>
            <h2 id="builtin-roles">Built-in roles</h2>
            <${Table} caption="Built-in roles" rows=${builtin} rowKey=${(r) => r.name}
              columns=${[
                { label: "Name", cell: (r) => html`<code>${r.name}</code>`, className: "roles-name" },
                { label: "Description", cell: (r) => r.description || html`<span class="muted">—</span>` },
                { label: "Permissions", cell: (r) => html`<${Permissions} role=${r} />` },
              ]} />
          </section>`
      : null}
    <${RoleDialog} open=${dialog.open} role=${dialog.role} onClose=${() => setDialog({ open: false, role: null })}
      onSaved=${(role, edited) => {
        setDialog({ open: false, role: null });
        setDone(edited ? `The role ${role.name} is saved.` : `The role ${role.name} is created.`);
        reload();
      }} />
  <//>`;
}
