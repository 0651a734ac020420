// Invitations: who was invited with which role, until when, and what became of it;
// invite someone, send a fresh link (resend), or revoke. Nothing sends mail yet, so the
// accept link is shown once, for the inviter to pass on.
import { call, tenantPath } from "../api.js";
import { html, useEffect, useState } from "../html.js";
import { href } from "../router.js";
import {
  Badge,
  ConfirmButton,
  CopyButton,
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

const STATES = [
  ["", "All"],
  ["INVITATION_STATE_PENDING", "Pending"],
  ["INVITATION_STATE_ACCEPTED", "Accepted"],
  ["INVITATION_STATE_REVOKED", "Revoked"],
  ["INVITATION_STATE_EXPIRED", "Expired"],
];

const VALIDITY = [
  ["86400s", "1 day"],
  ["259200s", "3 days"],
  ["604800s", "7 days"],
  ["2592000s", "30 days"],
];

/** The link an invitee opens: the console's public accept page with the token. */
export function acceptLink(token) {
  return `${location.origin}/console/${href("/accept", { token })}`;
}

/** The accept link of a new (or resent) invitation, shown once with a copy button. */
export function InvitationLink({ email, token }) {
  const link = acceptLink(token);
  return html`<div class="secret" data-invitation-link>
    <p>
      <strong>Accept link for ${email}</strong>: send it to them yourself (no email is sent). It is
      shown only once; if it is lost, resend the invitation for a new one.
    </p>
    <div class="secret-row">
      <code class="secret-value" data-secret>${link}</code>
      <${CopyButton} text=${link} label="Copy link" />
    </div>
  </div>`;
}

/** The roles of the tenant, for pickers: [{ name, builtin, description }]. */
export async function loadRoles(signal) {
  const body = await call("GET", tenantPath("/roles"), { signal });
  return body.roles || [];
}

/**
 * Invite someone by email with one role. `onInvited(invitation, token)` runs after the
 * server made the invitation; the link is then shown here until the dialog closes.
 */
export function InviteDialog({ open, onClose, roles, onInvited }) {
  const [created, setCreated] = useState(null);
  const invite = useAction(async (values) => {
    const body = await call("POST", tenantPath("/invitations"), {
      body: { email: values.email.trim(), role: values.role, ttl: values.ttl },
    });
    setCreated({ email: body.invitation?.email || values.email.trim(), token: body.token });
    onInvited?.(body.invitation, body.token);
  });
  const close = () => {
    setCreated(null);
    invite.clear();
    onClose();
  };
  const submit = (event) => {
    event.preventDefault();
    invite.run(formValues(event.currentTarget));
  };
  return html`<${Dialog} title="Invite a user" open=${open} onClose=${close}>
    ${created
      ? html`<${Notice} kind="success">Invitation created for ${created.email}.<//>
          <${InvitationLink} email=${created.email} token=${created.token} />
          <div class="actions"><button type="button" class="primary" onClick=${close}>Done</button></div>`
      : html`<form onSubmit=${submit} aria-label="Invite a user">
          <${ErrorNote} error=${invite.error} />
          <${Field} label="Email" name="email" type="email" required autocomplete="off" />
          <${Field} label="Role" name="role" as="select" required
            hint="What the new user may do once they accept. You can change it later on the Users page.">
            ${(roles || []).map(
              (r) => html`<option value=${r.name} selected=${r.name === "member"}>
                ${r.name}${r.builtin ? " (built-in)" : ""}
              </option>`,
            )}
          <//>
          <${Field} label="Valid for" name="ttl" as="select">
            ${VALIDITY.map(([value, label]) => html`<option value=${value} selected=${value === "259200s"}>${label}</option>`)}
          <//>
          <${FormButtons} label="Create invitation" busyLabel="Inviting…" pending=${invite.pending}
            onCancel=${close} />
        </form>`}
  <//>`;
}

async function loadInvitations(signal, state, pageToken) {
  const [list, roles] = await Promise.all([
    call("GET", tenantPath("/invitations"), { query: { pageSize: 50, state, pageToken }, signal }),
    loadRoles(signal),
  ]);
  return { invitations: list.invitations || [], nextPageToken: list.nextPageToken || "", roles };
}

export function InvitationsPage() {
  const [state, setState] = useState("");
  const [tokens, setTokens] = useState([""]);
  const pageToken = tokens[tokens.length - 1];
  const { data, error, loading, reload } = useLoad((signal) => loadInvitations(signal, state, pageToken), [
    state,
    pageToken,
  ]);
  const [inviting, setInviting] = useState(false);
  const [resent, setResent] = useState(null);
  const [done, setDone] = useState("");
  useEffect(() => {
    if (data) markRendered("invitations");
  }, [data]);

  const resend = useAction(async (invitation) => {
    setDone("");
    const body = await call("POST", tenantPath(`/invitations/${encodeURIComponent(invitation.id)}:resend`), {
      body: {},
    });
    setResent({ email: invitation.email, token: body.token });
    reload();
  });
  const revoke = useAction(async (invitation) => {
    setResent(null);
    await call("POST", tenantPath(`/invitations/${encodeURIComponent(invitation.id)}:revoke`), { body: {} });
    setDone(`The invitation for ${invitation.email} is revoked: its link no longer works.`);
    reload();
  });

  const actions = html`<button type="button" class="primary" onClick=${() => setInviting(true)}>Invite a user</button>
    <button type="button" class="small" onClick=${reload}>Refresh</button>`;
  const pending = (i) => i.state === "INVITATION_STATE_PENDING" || i.state === "INVITATION_STATE_EXPIRED";
  return html`<${Page} title="Invitations" actions=${actions} busy=${loading}>
    <p class="lead">
      An invitation lets someone join this tenant with a role: they open the link, choose a password,
      and can sign in.
    </p>
    <div class="toolbar">
      <${Field} label="Status" as="select" value=${state}
        onChange=${(e) => {
          setState(e.currentTarget.value);
          setTokens([""]);
        }}>
        ${STATES.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
      <//>
    </div>
    <${ErrorNote} error=${resend.error || revoke.error} onDismiss=${() => (resend.clear(), revoke.clear())} />
    ${done ? html`<${Notice} kind="success">${done}<//>` : null}
    ${resent
      ? html`<${Notice} kind="success">A new link was made for ${resent.email}; the old one no longer works.<//>
          <${InvitationLink} email=${resent.email} token=${resent.token} />`
      : null}
    ${error ? html`<${ErrorNote} error=${error} />` : null}
    ${loading && !data ? html`<${Loading} />` : null}
    ${data
      ? html`<${Table} caption="Invitations" rows=${data.invitations} empty="No invitations."
            columns=${[
              { label: "Email", cell: (i) => i.email },
              { label: "Role", cell: (i) => html`<code>${i.role}</code>` },
              { label: "Status", cell: (i) => html`<${Badge} value=${i.state} />` },
              { label: "Created", cell: (i) => html`<${Time} value=${i.createTime} />` },
              {
                label: "Expires",
                cell: (i) =>
                  i.acceptTime
                    ? html`<span class="muted">accepted <${Time} value=${i.acceptTime} /></span>`
                    : i.revokeTime
                      ? html`<span class="muted">revoked <${Time} value=${i.revokeTime} /></span>`
                      : html`<${Time} value=${i.expireTime} />`,
              },
              {
                label: "Actions",
                cell: (i) =>
                  pending(i)
                    ? html`<div class="actions">
                        <button type="button" class="small" disabled=${resend.pending}
                          aria-label=${`Resend the invitation for ${i.email}`}
                          onClick=${() => resend.run(i)}>Resend</button>
                        ${i.state === "INVITATION_STATE_PENDING"
                          ? html`<${ConfirmButton} label="Revoke" confirmLabel="Revoke the invitation"
                              question=${`Revoke the invitation for ${i.email}? Its link will stop working.`}
                              onConfirm=${() => revoke.run(i)} />`
                          : null}
                      </div>`
                    : html`<span class="muted">—</span>`,
              },
            ]} />
          <nav class="pager" aria-label="Pages">
            ${tokens.length > 1
              ? html`<button type="button" class="small" onClick=${() => setTokens([""])}>First page</button>`
              : null}
            ${data.nextPageToken
              ? html`<button type="button" class="small"
                  onClick=${() => setTokens([...tokens, data.nextPageToken])}>Next page</button>`
              : null}
          </nav>`
      : null}
    <${InviteDialog} open=${inviting} roles=${data?.roles} onClose=${() => setInviting(false)}
      onInvited=${() => reload()} />
  <//>`;
}
