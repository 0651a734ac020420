// Security: your own second factors (authenticator apps, passkeys), recovery codes, and,
// for those who may change the tenant (tenant:write), its security policy (who must
// have a second factor, the step-up window, the minimum password length) and its mail
// (the sender name and language of invitations and password mails).
import { call, tenantPath } from "../api.js";
import { html, useEffect, useState } from "../html.js";
import { FACTOR_TYPES, PasskeySetup, RecoveryCodes, TotpSetup } from "../mfa.js";
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

const REQUIREMENTS = [
  ["MFA_REQUIREMENT_OPTIONAL", "Optional: each user decides"],
  ["MFA_REQUIREMENT_ADMINS", "Required for owners and administrators"],
  ["MFA_REQUIREMENT_ALL_USERS", "Required for every user"],
];

function AddFactor({ kind, onAdded }) {
  const [open, setOpen] = useState(false);
  const title = kind === "totp" ? "Add an authenticator app" : "Add a passkey";
  const Setup = kind === "totp" ? TotpSetup : PasskeySetup;
  const close = () => setOpen(false);
  return html`<button type="button" class=${kind === "totp" ? "primary" : ""} onClick=${() => setOpen(true)}>${title}</button>
    <${Dialog} title=${title} open=${open} onClose=${close}>
      ${open
        ? html`<${Setup} onCancel=${close} onDone=${() => {
            close();
            onAdded();
          }} />`
        : null}
    <//>`;
}

function Factors({ policyVersion }) {
  const { data, error, loading, reload } = useLoad((signal) => call("GET", "/mfa/factors", { signal }), [policyVersion]);
  const [codes, setCodes] = useState(null);
  const [notice, setNotice] = useState("");
  useEffect(() => {
    if (data) markRendered("security");
  }, [data]);
  const remove = useAction(async (factor) => {
    await call("POST", `/mfa/factors/${encodeURIComponent(factor.id)}:delete`, { body: {} });
    setNotice(`${factor.name} was removed.`);
    reload();
  });
  const regenerate = useAction(async () => {
    const body = await call("POST", "/mfa/recoveryCodes:regenerate", { body: {} });
    setCodes(body.recoveryCodes || []);
    reload();
  });
  if (loading && !data) return html`<${Loading} />`;
  const factors = data?.factors || [];
  const columns = [
    { label: "Name", cell: (f) => f.name },
    { label: "Kind", cell: (f) => FACTOR_TYPES[f.type] || f.type },
    { label: "Added", cell: (f) => html`<${Time} value=${f.createTime} />` },
    { label: "Last used", cell: (f) => html`<${Time} value=${f.lastUsedTime} />` },
    {
      label: "Actions",
      cell: (f) => html`<${ConfirmButton} label="Remove" confirmLabel=${`Remove ${f.name}`}
        question=${factors.length === 1
          ? "This is your only second factor: without it, signing in needs only your password, and your recovery codes stop working."
          : "You will no longer be able to sign in with it."}
        onConfirm=${() => remove.run(f)} />`,
    },
  ];
  return html`<div>
    <${ErrorNote} error=${error || remove.error || regenerate.error} />
    ${notice ? html`<${Notice} kind="success">${notice}<//>` : null}
    ${data?.mfaRequired && factors.length === 0
      ? html`<${Notice} kind="warning">Your tenant requires a second factor for your account: add one.<//>`
      : null}
    <${Table} caption="Your second factors" rows=${factors} columns=${columns}
      empty="No second factor yet: signing in needs only your password." />
    <div class="actions">
      <${AddFactor} kind="totp" onAdded=${() => { setNotice("The authenticator app was added."); reload(); }} />
      <${AddFactor} kind="passkey" onAdded=${() => { setNotice("The passkey was added."); reload(); }} />
    </div>
    ${factors.length
      ? html`<section aria-labelledby="codes-heading">
          <h2 id="codes-heading">Recovery codes</h2>
          <p data-codes-remaining>${data.recoveryCodesRemaining} of 10 recovery codes left.</p>
          ${codes
            ? html`<${RecoveryCodes} codes=${codes} onDone=${() => setCodes(null)} doneLabel="Done" />`
            : html`<${ConfirmButton} label="Make new recovery codes" danger=${false}
                confirmLabel="Make new codes" question="Your current recovery codes stop working, and ten new ones are shown once."
                onConfirm=${() => regenerate.run()} />`}
        </section>`
      : null}
  </div>`;
}

/**
 * One part of the tenant's settings (`pick`), its name, and whether the caller may
 * change them (tenant:write, as the server decides for the caller's own credential).
 */
async function tenantSettings(signal, tenantId, pick) {
  const decision = await call("POST", "/decisions:explain", {
    signal,
    body: { requiredPermission: "tenant:write", resourceTenantId: tenantId },
  });
  const { tenant } = await call("GET", tenantPath(), { signal });
  return { allowed: decision.allowed, part: pick(tenant.settings || {}) || {}, name: tenant.displayName };
}

function TenantPolicy({ session, onSaved }) {
  const { data, error, loading, reload } = useLoad(
    (signal) => tenantSettings(signal, session.tenantId, (s) => s.security),
    [session.tenantId],
  );
  const [saved, setSaved] = useState(false);
  const save = useAction(async (values) => {
    setSaved(false);
    await call("PATCH", tenantPath(), {
      query: { updateMask: "settings.security" },
      body: {
        id: session.tenantId,
        settings: {
          security: {
            mfaRequirement: values.mfaRequirement,
            stepUpMinutes: Number(values.stepUpMinutes || 0),
            passwordMinLength: Number(values.passwordMinLength || 0),
          },
        },
      },
    });
    setSaved(true);
    reload();
    onSaved();
  });
  if (loading && !data) return html`<${Loading} />`;
  if (error) return html`<${ErrorNote} error=${error} />`;
  const policy = data.part;
  const requirement = policy.mfaRequirement && policy.mfaRequirement !== "MFA_REQUIREMENT_UNSPECIFIED"
    ? policy.mfaRequirement
    : "MFA_REQUIREMENT_OPTIONAL";
  if (!data.allowed) {
    const words = REQUIREMENTS.find(([value]) => value === requirement)?.[1] || requirement;
    return html`<p>Second factor: ${words}. Only an owner can change the tenant's security policy.</p>`;
  }
  return html`<form aria-label="Tenant security policy" onSubmit=${(event) => {
      event.preventDefault();
      save.run(formValues(event.currentTarget));
    }}>
    <${ErrorNote} error=${save.error} />
    ${saved ? html`<${Notice} kind="success">The security policy was saved.<//>` : null}
    <${Field} as="select" label="Second factor" name="mfaRequirement" value=${requirement}
      hint="A user who must have one and has none sets it up at their next sign-in.">
      ${REQUIREMENTS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
    <//>
    <${Field} label="Step-up window (minutes)" name="stepUpMinutes" type="number" min="0" max="1440"
      value=${String(policy.stepUpMinutes || "")} placeholder="15"
      hint="How recent the second factor must be for sensitive changes (API keys, roles, deleting users). Empty: 15." />
    <${Field} label="Minimum password length" name="passwordMinLength" type="number" min="0" max="128"
      value=${String(policy.passwordMinLength || "")} placeholder="8"
      hint="Applies when a password is set or changed; existing passwords keep working. Empty: 8." />
    <${FormButtons} label="Save the policy" busyLabel="Saving…" pending=${save.pending} onCancel=${reload} />
  </form>`;
}

/** The tenant's mail: the From name and the templates' language. */
function TenantMail({ session }) {
  const { data, error, loading, reload } = useLoad(
    (signal) => tenantSettings(signal, session.tenantId, (s) => s.mail),
    [session.tenantId],
  );
  const [saved, setSaved] = useState(false);
  const save = useAction(async (values) => {
    setSaved(false);
    await call("PATCH", tenantPath(), {
      query: { updateMask: "settings.mail" },
      body: { id: session.tenantId, settings: { mail: { senderName: values.senderName.trim(), locale: values.locale.trim() } } },
    });
    setSaved(true);
    reload();
  });
  if (loading && !data) return html`<${Loading} />`;
  if (error) return html`<${ErrorNote} error=${error} />`;
  if (!data.allowed) {
    return html`<p>Mail from this tenant comes from “${data.part.senderName || data.name}”.</p>`;
  }
  return html`<form aria-label="Tenant mail" onSubmit=${(event) => {
      event.preventDefault();
      save.run(formValues(event.currentTarget));
    }}>
    <${ErrorNote} error=${save.error} />
    ${saved ? html`<${Notice} kind="success">The mail settings were saved.<//>` : null}
    <${Field} label="Sender name" name="senderName" maxlength="100" defaultValue=${data.part.senderName || ""}
      placeholder=${data.name} hint="The name invitations and password mails come from. Empty: the tenant's name." />
    <${Field} label="Language" name="locale" maxlength="16" defaultValue=${data.part.locale || ""} placeholder="en"
      hint="The mails' language, like en or pt-BR. A language without templates gets English." />
    <${FormButtons} label="Save the mail settings" busyLabel="Saving…" pending=${save.pending} onCancel=${reload} />
  </form>`;
}

export function SecurityPage({ session }) {
  const isUser = session.kind === "user";
  // A saved policy can change whether the user must have a factor: the list says so.
  const [policyVersion, setPolicyVersion] = useState(0);
  return html`<${Page} title="Security">
    ${isUser
      ? html`<section aria-labelledby="factors-heading">
          <h2 id="factors-heading">Your second factors</h2>
          <p class="muted small">
            A second factor protects your account if your password leaks: an authenticator app's
            codes, or a passkey on this device or a security key.
          </p>
          <${Factors} policyVersion=${policyVersion} />
        </section>`
      : null}
    <section aria-labelledby="policy-heading">
      <h2 id="policy-heading">Tenant security policy</h2>
      <${TenantPolicy} session=${session} onSaved=${() => setPolicyVersion((v) => v + 1)} />
    </section>
    <section aria-labelledby="mail-heading">
      <h2 id="mail-heading">Tenant mail</h2>
      <${TenantMail} session=${session} />
    </section>
  <//>`;
}
