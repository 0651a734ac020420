// Sessions: your own (this one marked), revoking one, signing out everywhere; and, for
// administrators (sessions:read / sessions:revoke), any user's sessions in the tenant.
import { call, currentSession, signOut, tenantPath } from "../api.js";
import { html, useEffect, useState } from "../html.js";
import {
  Badge,
  ConfirmButton,
  ErrorNote,
  Field,
  Loading,
  Notice,
  Page,
  Pager,
  Table,
  Time,
  markRendered,
  useAction,
  useLoad,
} from "../ui.js";

const PAGE_SIZE = 50;

function status(s) {
  if (s.revokeTime) return "REVOKED";
  const ends = [s.expireTime, s.idleExpireTime].filter(Boolean).map((t) => Date.parse(t));
  return ends.some((t) => t <= Date.now()) ? "EXPIRED" : "ACTIVE";
}

/** One user's sessions (the caller's when userId is ""), with revoke buttons. */
function SessionList({ userId, caption, onSignedOut }) {
  const session = currentSession();
  const [showEnded, setShowEnded] = useState(false);
  const [tokens, setTokens] = useState([""]);
  const [notice, setNotice] = useState("");
  const pageToken = tokens[tokens.length - 1];
  const { data, error, loading, reload } = useLoad(
    (signal) =>
      call("GET", "/sessions", {
        signal,
        query: { userId, tenantId: session?.tenantId, pageSize: PAGE_SIZE, pageToken, showEnded: showEnded || undefined },
      }),
    [userId, showEnded, pageToken],
  );
  useEffect(() => {
    if (data && !userId) markRendered("sessions");
  }, [data]);
  const revoke = useAction(async (s) => {
    await call("POST", `/sessions/${encodeURIComponent(s.id)}:revoke`, { body: { tenantId: session?.tenantId } });
    setNotice(`Session ${s.id} was revoked.`);
    if (s.current) {
      await onSignedOut?.();
      return;
    }
    reload();
  });
  const columns = [
    {
      label: "Session",
      cell: (s) => html`<code>${s.id}</code>${s.current ? html` <strong class="badge badge-current">this session</strong>` : null}`,
    },
    { label: "Status", cell: (s) => html`<${Badge} value=${status(s)} />` },
    { label: "Started", cell: (s) => html`<${Time} value=${s.createTime} />` },
    { label: "Last active", cell: (s) => html`<${Time} value=${s.lastActiveTime} />` },
    { label: "Ends if unused", cell: (s) => html`<${Time} value=${s.idleExpireTime} />` },
    { label: "Ends at the latest", cell: (s) => html`<${Time} value=${s.expireTime} />` },
    { label: "Address", cell: (s) => (s.clientAddress ? html`<code>${s.clientAddress}</code>` : html`<span class="muted">—</span>`) },
    { label: "Browser or client", cell: (s) => s.userAgent || html`<span class="muted">—</span>` },
    {
      label: "Actions",
      cell: (s) =>
        s.revokeTime
          ? html`<span class="muted small">${s.revokeReason || "revoked"}</span>`
          : html`<${ConfirmButton} label="Revoke" confirmLabel="Revoke the session"
              question=${s.current
                ? "This is the session you are using: revoking it signs you out of the console."
                : "The device using this session is signed out at its next request."}
              onConfirm=${() => revoke.run(s)} />`,
    },
  ];
  return html`<div>
    <label class="checks-inline"><input type="checkbox" checked=${showEnded}
      onChange=${(e) => { setShowEnded(e.currentTarget.checked); setTokens([""]); }} /> Include ended sessions</label>
    <${ErrorNote} error=${revoke.error || error} />
    ${notice ? html`<${Notice} kind="success">${notice}<//>` : null}
    ${loading && !data
      ? html`<${Loading} />`
      : html`<${Table} caption=${caption} rows=${data?.sessions || []} columns=${columns}
            empty=${showEnded ? "No sessions." : "No active sessions."} />
          <${Pager} nextPageToken=${data?.nextPageToken} atFirst=${tokens.length === 1}
            onFirst=${() => setTokens([""])} onNext=${() => setTokens([...tokens, data.nextPageToken])} />`}
  </div>`;
}

async function loadUsers(signal, tenantId) {
  // Reading the users is not enough: others' sessions need sessions:read, decided by the
  // server for the caller's own credential (what Check would answer).
  const decision = await call("POST", "/decisions:explain", {
    signal,
    body: { requiredPermission: "sessions:read", resourceTenantId: tenantId },
  });
  if (!decision.allowed) return { allowed: false, users: [], more: false };
  const users = [];
  let pageToken = "";
  // A tenant's users for the picker: a few pages at most, the picker says when it stops.
  for (let page = 0; page < 10; page += 1) {
    const body = await call("GET", tenantPath("/users"), { signal, query: { pageSize: 100, pageToken } });
    users.push(...(body.users || []));
    pageToken = body.nextPageToken || "";
    if (!pageToken) break;
  }
  return { allowed: true, users, more: Boolean(pageToken) };
}

function OtherUsers({ session }) {
  const { data, error, loading } = useLoad((signal) => loadUsers(signal, session.tenantId), [session.tenantId]);
  const [userId, setUserId] = useState("");
  if (loading && !data) return html`<${Loading} what="Loading the tenant's users" />`;
  if (error) return html`<${ErrorNote} error=${error} />`;
  if (!data.allowed) {
    return html`<p class="muted">You can see only your own sessions: others' need the sessions:read permission (an administrator role).</p>`;
  }
  const others = data.users.filter((u) => u.id !== session.userId);
  if (others.length === 0) return html`<p class="muted">There are no other users in this tenant.</p>`;
  const picked = others.find((u) => u.id === userId);
  return html`<div>
    <${Field} label="User" as="select" value=${userId} onChange=${(e) => setUserId(e.currentTarget.value)}
      hint=${data.more ? "The first 1,000 users are listed." : undefined}>
      <option value="">Choose a user…</option>
      ${others.map((u) => html`<option value=${u.id}>${u.email}${u.displayName ? ` (${u.displayName})` : ""}</option>`)}
    <//>
    ${picked
      ? html`<${SessionList} key=${picked.id} userId=${picked.id} caption=${`Sessions of ${picked.email}`} />`
      : null}
  </div>`;
}

export function SessionsPage({ session }) {
  const everywhere = useAction(async () => {
    await call("POST", "/logoutAll", { body: {} });
    await signOut();
  });
  const isUser = session.kind === "user";
  return html`<${Page} title="Sessions">
    ${isUser
      ? html`<section aria-labelledby="mine-heading">
          <h2 id="mine-heading">Your sessions</h2>
          <p class="muted small">Each sign-in (console, API client, device) is a session until it is revoked or ends.</p>
          <${SessionList} userId="" caption="Your sessions" onSignedOut=${() => signOut()} />
          <div class="actions">
            <${ConfirmButton} label="Sign out everywhere" confirmLabel="Sign out everywhere"
              question="Every one of your sessions is revoked, this one too: you will need to sign in again on every device."
              onConfirm=${() => everywhere.run()} />
          </div>
          <${ErrorNote} error=${everywhere.error} />
        </section>`
      : null}
    <section aria-labelledby="others-heading">
      <h2 id="others-heading">${isUser ? "Other users' sessions" : "Users' sessions"}</h2>
      <${OtherUsers} session=${session} />
    </section>
  <//>`;
}
