// Users: the tenant's people with their status and roles. Filter by status or role
// (the server's filters) and search by email or name (over the users loaded so far,
// since the API has no text search); invite or create a user; disable, enable, delete;
// reset a password; assign and remove roles; remove a user's second factors (someone
// who lost their phone).
import { call, currentSession, tenantPath } from "../api.js";
import { html, useEffect, useMemo, useState } from "../html.js";
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
  SecretOnce,
  Table,
  Time,
  formValues,
  markRendered,
  useAction,
  useLoad,
} from "../ui.js";
import { InviteDialog, loadRoles } from "./invitations.js";
import { FACTOR_TYPES } from "../mfa.js";

const PAGE_SIZE = 100;
const STATES = [
  ["", "All"],
  ["USER_STATE_ACTIVE", "Active"],
  ["USER_STATE_DISABLED", "Disabled"],
];

function userPath(user, suffix = "") {
  return tenantPath(`/users/${encodeURIComponent(user.id)}${suffix}`);
}

function who(user) {
  return user.displayName ? `${user.displayName} (${user.email})` : user.email;
}

/** Create a user directly, with an optional password and roles. */
function CreateUserDialog({ open, onClose, roles, onCreated }) {
  const create = useAction(async (values) => {
    const body = await call("POST", tenantPath("/users"), {
      body: {
        user: { email: values.email.trim(), displayName: values.displayName.trim() },
        password: values.password,
        roles: values.roles || [],
      },
    });
    onCreated(body.user);
  });
  const submit = (event) => {
    event.preventDefault();
    create.run(formValues(event.currentTarget));
  };
  const close = () => {
    create.clear();
    onClose();
  };
  return html`<${Dialog} title="Create a user" open=${open} onClose=${close}>
    <form onSubmit=${submit} aria-label="Create a user">
      <${ErrorNote} error=${create.error} />
      <${Field} label="Email" name="email" type="email" required autocomplete="off" />
      <${Field} label="Name" name="displayName" autocomplete="off" />
      <${Field} label="Password" name="password" type="password" autocomplete="new-password" minlength="8"
        hint="At least 8 characters. Leave empty for a user who cannot sign in until their password is reset." />
      <fieldset>
        <legend>Roles</legend>
        <div class="checks">
          ${(roles || []).map(
            (r) => html`<label><input type="checkbox" name="roles" value=${r.name} checked=${r.name === "member"} />
              ${r.name}</label>`,
          )}
        </div>
      </fieldset>
      <${FormButtons} label="Create user" busyLabel="Creating…" pending=${create.pending}
        onCancel=${close} />
    </form>
  <//>`;
}

/** A user's roles: remove one, or pick another of the tenant's roles and assign it. */
function RolesDialog({ user, roles, onClose, onChanged }) {
  const change = useAction(async (verb, role) => {
    const body = await call("POST", userPath(user, verb === "assign" ? ":assignRole" : ":removeRole"), {
      body: { role },
    });
    onChanged(body.user);
  });
  const held = user?.roles || [];
  const others = (roles || []).filter((r) => !held.includes(r.name));
  const submit = (event) => {
    event.preventDefault();
    const { role } = formValues(event.currentTarget);
    if (role) change.run("assign", role);
  };
  return html`<${Dialog} title=${user ? `Roles of ${user.email}` : "Roles"} open=${!!user} onClose=${onClose}>
    ${user
      ? html`<${ErrorNote} error=${change.error} onDismiss=${change.clear} />
          <h3>Held roles</h3>
          ${held.length === 0
            ? html`<p class="muted">No roles: this user can do nothing in the tenant.</p>`
            : html`<ul class="people-roles" aria-label="Held roles">
                ${held.map(
                  (role) => html`<li key=${role}>
                    <code>${role}</code>
                    <button type="button" class="small danger" disabled=${change.pending}
                      aria-label=${`Remove the role ${role}`} onClick=${() => change.run("remove", role)}>Remove</button>
                  </li>`,
                )}
              </ul>`}
          ${others.length
            ? html`<form onSubmit=${submit} aria-label="Assign a role" class="toolbar">
                <${Field} label="Role to assign" name="role" as="select">
                  ${others.map((r) => html`<option value=${r.name}>${r.name}${r.builtin ? " (built-in)" : ""}</option>`)}
                <//>
                <button type="submit" class="primary" disabled=${change.pending}>Assign</button>
              </form>`
            : html`<p class="muted">This user holds every role of the tenant.</p>`}
          <div class="actions"><button type="button" onClick=${onClose}>Done</button></div>`
      : null}
  <//>`;
}

/** Reset a user's password: one chosen here, or one the server makes and shows once. */
function ResetPasswordDialog({ user, onClose }) {
  const [result, setResult] = useState(null);
  const [choose, setChoose] = useState(false);
  const reset = useAction(async (values) => {
    const body = await call("POST", userPath(user, ":resetPassword"), {
      body: { newPassword: choose ? values.newPassword : "" },
    });
    setResult({
      generated: body.generatedPassword || "",
      ended: Number(body.endedSessionCount || 0),
    });
  });
  const close = () => {
    setResult(null);
    setChoose(false);
    reset.clear();
    onClose();
  };
  const submit = (event) => {
    event.preventDefault();
    reset.run(formValues(event.currentTarget));
  };
  return html`<${Dialog} title=${user ? `Reset the password of ${user.email}` : "Reset password"} open=${!!user}
      onClose=${close}>
    ${result
      ? html`<${Notice} kind="success">
            The password is reset. ${result.ended === 1 ? "1 session was" : `${result.ended} sessions were`} ended.
          <//>
          ${result.generated ? html`<${SecretOnce} label="New password" value=${result.generated} />` : null}
          <div class="actions"><button type="button" class="primary" onClick=${close}>Done</button></div>`
      : html`<form onSubmit=${submit} aria-label="Reset the password">
          <${ErrorNote} error=${reset.error} />
          <p>The user's sessions end, and they sign in again with the new password.</p>
          <fieldset>
            <legend>New password</legend>
            <label class="people-choice"><input type="radio" name="how" value="generate" checked=${!choose}
              onChange=${() => setChoose(false)} /> Generate one (shown once)</label>
            <label class="people-choice"><input type="radio" name="how" value="choose" checked=${choose}
              onChange=${() => setChoose(true)} /> Choose one</label>
          </fieldset>
          ${choose
            ? html`<${Field} label="New password" name="newPassword" type="password" required minlength="8"
                autocomplete="new-password" hint="At least 8 characters." />`
            : null}
          <${FormButtons} label="Reset password" busyLabel="Resetting…" pending=${reset.pending} danger
            onCancel=${close} />
        </form>`}
  <//>`;
}

/** A user's second factors, for an administrator (users:reset_mfa) to remove. */
function FactorsDialog({ user, onClose }) {
  const session = currentSession();
  const query = { userId: user?.id, tenantId: session?.tenantId };
  const { data, error, loading, reload } = useLoad(
    (signal) => (user ? call("GET", "/mfa/factors", { signal, query }) : Promise.resolve(null)),
    [user?.id],
  );
  const [removed, setRemoved] = useState("");
  const remove = useAction(async (factor) => {
    await call("POST", `/mfa/factors/${encodeURIComponent(factor.id)}:delete`, { body: query });
    setRemoved(`${factor.name} was removed.`);
    reload();
  });
  const factors = data?.factors || [];
  return html`<${Dialog} title=${user ? `Second factors of ${user.email}` : "Second factors"} open=${!!user}
      onClose=${() => {
        setRemoved("");
        onClose();
      }}>
    ${user
      ? html`<${ErrorNote} error=${error || remove.error} />
          ${removed ? html`<${Notice} kind="success">${removed}<//>` : null}
          ${loading && !data
            ? html`<${Loading} />`
            : html`<${Table} caption=${`Second factors of ${user.email}`} rows=${factors}
                empty="No second factor: they sign in with their password alone."
                columns=${[
                  { label: "Name", cell: (f) => f.name },
                  { label: "Kind", cell: (f) => FACTOR_TYPES[f.type] || f.type },
                  { label: "Last used", cell: (f) => html`<${Time} value=${f.lastUsedTime} />` },
                  {
                    label: "Actions",
                    cell: (f) => html`<button type="button" class="danger small" disabled=${remove.pending}
                      aria-label=${`Remove ${f.name}`} onClick=${() => remove.run(f)}>Remove</button>`,
                  },
                ]} />
              ${data
                ? html`<p class="small muted">${data.recoveryCodesRemaining} recovery codes left.
                    ${data.mfaRequired ? " The tenant requires a factor of them: with none left they set one up at their next sign-in." : ""}</p>`
                : null}`}`
      : null}
  <//>`;
}

async function loadFirst(signal, state, role) {
  const [list, roles] = await Promise.all([
    call("GET", tenantPath("/users"), { query: { pageSize: PAGE_SIZE, state, role }, signal }),
    loadRoles(signal),
  ]);
  return { users: list.users || [], nextPageToken: list.nextPageToken || "", roles };
}

export function UsersPage({ query = {} }) {
  const [state, setState] = useState("");
  const [role, setRole] = useState("");
  const [search, setSearch] = useState(query.q || "");
  const { data, error, loading, reload } = useLoad((signal) => loadFirst(signal, state, role), [state, role]);
  // Users of later pages and users changed here, over what the first load brought.
  const [more, setMore] = useState({ users: [], nextPageToken: null });
  const [changed, setChanged] = useState({});
  const [removed, setRemoved] = useState({});
  const [done, setDone] = useState("");
  const [dialog, setDialog] = useState({ kind: "", user: null });
  useEffect(() => {
    setMore({ users: [], nextPageToken: null });
    setChanged({});
    setRemoved({});
    if (data) markRendered("users");
  }, [data]);

  const loadMore = useAction(async () => {
    const body = await call("GET", tenantPath("/users"), {
      query: { pageSize: PAGE_SIZE, state, role, pageToken: more.nextPageToken ?? data.nextPageToken },
    });
    setMore({ users: [...more.users, ...(body.users || [])], nextPageToken: body.nextPageToken || "" });
  });
  const nextPageToken = more.nextPageToken ?? data?.nextPageToken ?? "";

  const update = (user) => setChanged((c) => ({ ...c, [user.id]: user }));
  const act = useAction(async (verb, user) => {
    setDone("");
    if (verb === "verify") {
      await call("POST", userPath(user, ":sendVerificationEmail"), { body: {} });
      setDone(`A confirmation link is on its way to ${user.email}.`);
      return;
    }
    if (verb === "delete") {
      await call("DELETE", userPath(user));
      setRemoved((r) => ({ ...r, [user.id]: true }));
      setDone(`${user.email} is deleted.`);
      return;
    }
    const body = await call("POST", userPath(user, verb === "disable" ? ":disable" : ":enable"), { body: {} });
    update(body.user);
    setDone(
      verb === "disable"
        ? `${user.email} is disabled: they cannot sign in, and their sessions and API keys stop working.`
        : `${user.email} is enabled again.`,
    );
  });

  const users = useMemo(() => {
    const all = [...(data?.users || []), ...more.users]
      .filter((u) => !removed[u.id])
      .map((u) => changed[u.id] || u);
    const words = search.trim().toLowerCase();
    if (!words) return all;
    return all.filter((u) => `${u.email} ${u.displayName || ""}`.toLowerCase().includes(words));
  }, [data, more, changed, removed, search]);

  const self = currentSession()?.userId;
  const roles = data?.roles || [];
  const close = () => setDialog({ kind: "", user: null });
  const actions = html`<button type="button" class="primary" onClick=${() => setDialog({ kind: "invite" })}>
      Invite a user
    </button>
    <button type="button" onClick=${() => setDialog({ kind: "create" })}>Create a user</button>
    <button type="button" class="small" onClick=${reload}>Refresh</button>`;

  return html`<${Page} title="Users" actions=${actions} busy=${loading}>
    <form class="toolbar" role="search" aria-label="Find users" onSubmit=${(e) => e.preventDefault()}>
      <${Field} label="Search" type="search" value=${search} autocomplete="off"
        hint=${nextPageToken ? "Searches the users loaded so far; load more to search further." : "Email or name."}
        onInput=${(e) => setSearch(e.currentTarget.value)} />
      <${Field} label="Status" as="select" value=${state} onChange=${(e) => setState(e.currentTarget.value)}>
        ${STATES.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
      <//>
      <${Field} label="Role" as="select" value=${role} onChange=${(e) => setRole(e.currentTarget.value)}>
        <option value="">Any</option>
        ${roles.map((r) => html`<option value=${r.name}>${r.name}</option>`)}
      <//>
    </form>
    <${ErrorNote} error=${act.error} onDismiss=${act.clear} />
    ${done ? html`<${Notice} kind="success">${done}<//>` : null}
    ${error ? html`<${ErrorNote} error=${error} />` : null}
    ${loading && !data ? html`<${Loading} />` : null}
    ${data
      ? html`<p class="muted small" role="status">
            ${users.length === 1 ? "1 user" : `${users.length} users`}${search.trim() ? ` ${users.length === 1 ? "matches" : "match"} “${search.trim()}”` : ""}.
          </p>
          <${Table} caption="Users" rows=${users}
            empty=${search.trim() ? "No user matches the search." : "No users."}
            columns=${[
              {
                label: "User",
                cell: (u) => html`<div>${u.email}</div>
                  ${u.displayName ? html`<div class="muted small">${u.displayName}</div>` : null}
                  ${u.hasPassword === false ? html`<div class="muted small">No password yet</div>` : null}
                  <div class="small" data-email-verified=${u.emailVerified ? "true" : "false"}>
                    ${u.emailVerified
                      ? html`<span class="muted">Email confirmed</span>`
                      : html`<span class="muted">Email not confirmed</span>
                          <button type="button" class="link small" disabled=${act.pending}
                            aria-label=${`Send a confirmation link to ${u.email}`}
                            onClick=${() => act.run("verify", u)}>Send a link</button>`}
                  </div>`,
              },
              { label: "Status", cell: (u) => html`<${Badge} value=${u.state} />` },
              {
                label: "Roles",
                cell: (u) =>
                  (u.roles || []).length
                    ? html`<span class="people-role-list">${u.roles.map((r) => html`<code>${r}</code> `)}</span>`
                    : html`<span class="muted">none</span>`,
              },
              { label: "Created", cell: (u) => html`<${Time} value=${u.createTime} />` },
              {
                label: "Actions",
                cell: (u) => html`<div class="actions">
                  <button type="button" class="small" aria-label=${`Roles of ${u.email}`}
                    onClick=${() => setDialog({ kind: "roles", user: u })}>Roles</button>
                  <button type="button" class="small" aria-label=${`Reset password of ${u.email}`}
                    onClick=${() => setDialog({ kind: "reset", user: u })}>Reset password</button>
                  <button type="button" class="small" aria-label=${`Second factors of ${u.email}`}
                    onClick=${() => setDialog({ kind: "factors", user: u })}>Second factors</button>
                  ${u.state === "USER_STATE_DISABLED"
                    ? html`<button type="button" class="small" disabled=${act.pending}
                        aria-label=${`Enable ${u.email}`} onClick=${() => act.run("enable", u)}>Enable</button>`
                    : html`<${ConfirmButton} label="Disable" confirmLabel=${`Disable ${u.email}`}
                        disabled=${u.id === self}
                        question=${`Disable ${who(u)}? They cannot sign in until enabled again; their sessions and API keys stop working.`}
                        onConfirm=${() => act.run("disable", u)} />`}
                  <${ConfirmButton} label="Delete" confirmLabel=${`Delete ${u.email}`} disabled=${u.id === self}
                    question=${`Delete ${who(u)}? This cannot be undone.`}
                    onConfirm=${() => act.run("delete", u)} />
                </div>`,
              },
            ]} />
          ${nextPageToken
            ? html`<nav class="pager" aria-label="Pages">
                <${ErrorNote} error=${loadMore.error} />
                <button type="button" class="small" disabled=${loadMore.pending} onClick=${() => loadMore.run()}>
                  ${loadMore.pending ? "Loading…" : "Load more users"}
                </button>
              </nav>`
            : null}`
      : null}
    <${InviteDialog} open=${dialog.kind === "invite"} roles=${roles} onClose=${close} />
    <${CreateUserDialog} open=${dialog.kind === "create"} roles=${roles} onClose=${close}
      onCreated=${(user) => {
        close();
        setDone(`${user.email} is created.`);
        reload();
      }} />
    <${RolesDialog} user=${dialog.kind === "roles" ? changed[dialog.user.id] || dialog.user : null} roles=${roles}
      onClose=${close}
      onChanged=${(user) => {
        update(user);
      }} />
    <${ResetPasswordDialog} user=${dialog.kind === "reset" ? dialog.user : null} onClose=${close} />
    <${FactorsDialog} user=${dialog.kind === "factors" ? dialog.user : null} onClose=${close} />
  <//>`;
}
