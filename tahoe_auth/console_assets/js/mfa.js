// Second factors in the console: answering a challenge (authenticator code, recovery
// code or passkey), setting up an authenticator app or a passkey, and showing recovery
// codes once. Used by the sign-in page (second step, required enrollment), the
// step-up dialog and the Security page.
import { call, publicCall } from "./api.js";
import { html, useEffect, useMemo, useRef, useState } from "./html.js";
import { CopyButton, ErrorNote, Field, formValues, saveText, useAction } from "./ui.js";
import { encode } from "../vendor/uqr.js";
import { createPasskey, passkeysSupported, usePasskey } from "./webauthn.js";

export const TOTP = "MFA_METHOD_TOTP";
export const RECOVERY_CODE = "MFA_METHOD_RECOVERY_CODE";
export const PASSKEY = "MFA_METHOD_PASSKEY";

export const FACTOR_TYPES = { MFA_FACTOR_TYPE_TOTP: "Authenticator app", MFA_FACTOR_TYPE_PASSKEY: "Passkey" };

/**
 * The MFA API as the current session, or as a restricted enrollment token (a user
 * whose tenant requires a second factor sets one up before the sign-in completes).
 */
function mfaApi(enrollmentToken) {
  if (!enrollmentToken) return (method, path, options) => call(method, path, options);
  return (method, path, options = {}) => publicCall(method, path, { ...options, token: enrollmentToken });
}

/** A QR code drawn as SVG squares (no markup from strings), for an authenticator app to scan. */
export function QrCode({ text, label }) {
  const modules = useMemo(() => encode(text, { ecc: "M", border: 4 }), [text]);
  const path = [];
  modules.data.forEach((row, y) =>
    row.forEach((dark, x) => {
      if (dark) path.push(`M${x} ${y}h1v1h-1z`);
    }),
  );
  return html`<svg class="qr" role="img" aria-label=${label} viewBox=${`0 0 ${modules.size} ${modules.size}`}
      shape-rendering="crispEdges" data-qr-size=${modules.size}>
    <rect width="100%" height="100%" fill="#fff" />
    <path d=${path.join("")} fill="#000" />
  </svg>`;
}

/** Recovery codes, shown once: copy or download them; `onDone` when they are saved. */
export function RecoveryCodes({ codes, onDone, doneLabel = "I have saved them" }) {
  const heading = useRef(null);
  useEffect(() => heading.current?.focus(), []);
  const text = `${codes.join("\n")}\n`;
  return html`<div class="secret recovery-codes">
    <h2 tabindex="-1" ref=${heading}>Your recovery codes</h2>
    <p>
      Each code signs you in once if you lose your authenticator or passkey. Keep them somewhere safe:
      they are shown only now and cannot be shown again.
    </p>
    <ol class="codes" data-recovery-codes>
      ${codes.map((code) => html`<li><code>${code}</code></li>`)}
    </ol>
    <div class="actions">
      <${CopyButton} text=${text} label="Copy the codes" />
      <button type="button" class="small" onClick=${() => saveText("tahoe-recovery-codes.txt", text, "text/plain")}>
        Download as a file
      </button>
    </div>
    ${onDone ? html`<div class="actions"><button type="button" class="primary" onClick=${onDone}>${doneLabel}</button></div>` : null}
  </div>`;
}

/**
 * The form that answers a challenge: a passkey if the account has one, else (or
 * instead) a code from the authenticator app, or a recovery code. `onAnswer(answer)`
 * sends it and throws on a refusal, which is shown here.
 */
export function ChallengeForm({ challenge, onAnswer, submitLabel = "Verify" }) {
  const methods = challenge.methods || [];
  const hasPasskey = methods.includes(PASSKEY) && challenge.passkeyRequestOptionsJson;
  const hasCode = methods.includes(TOTP);
  const [useRecovery, setUseRecovery] = useState(!hasCode && !hasPasskey);
  const answer = useAction(async (produce) => onAnswer(await produce()));
  const codeField = useRef(null);
  const passkey = async () => {
    await answer.run(async () => ({ passkeyCredentialJson: await usePasskey(challenge.passkeyRequestOptionsJson) }));
  };
  const submit = async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const { code } = formValues(form);
    const value = code.replace(/\s+/g, "");
    await answer.run(() => (useRecovery ? { recoveryCode: value } : { totpCode: value }));
    // A wrong code is cleared for the next try; the field keeps focus.
    if (form.isConnected) {
      form.reset();
      codeField.current?.querySelector("input")?.focus();
    }
  };
  return html`<div class="challenge">
    <${ErrorNote} error=${answer.error} />
    ${hasPasskey && passkeysSupported()
      ? html`<div class="actions">
          <button type="button" class="primary" onClick=${passkey} disabled=${answer.pending}>Use a passkey</button>
        </div>`
      : null}
    ${hasCode || useRecovery || methods.includes(RECOVERY_CODE)
      ? html`<form onSubmit=${submit} aria-label=${useRecovery ? "Answer with a recovery code" : "Answer with an authenticator code"}>
          <div ref=${codeField}>
            ${useRecovery
              ? html`<${Field} key="recovery" label="Recovery code" name="code" required autocomplete="off"
                  spellcheck=${false} autocapitalize="off" hint="One of the ten codes you saved, like abcde-12345. Each works once." />`
              : html`<${Field} key="totp" label="Code from your authenticator app" name="code" required
                  inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]{6,7}" maxlength="7"
                  hint="The 6-digit code the app shows now." />`}
          </div>
          <div class="actions">
            <button type="submit" class=${hasPasskey ? "" : "primary"} disabled=${answer.pending}>
              ${answer.pending ? "Checking…" : submitLabel}
            </button>
            ${hasCode && methods.includes(RECOVERY_CODE)
              ? html`<button type="button" class="link" onClick=${() => setUseRecovery(!useRecovery)}>
                  ${useRecovery ? "Use the authenticator app instead" : "Use a recovery code instead"}
                </button>`
              : null}
          </div>
        </form>`
      : null}
  </div>`;
}

/** A secret in groups of four, easier to type into an app that cannot scan. */
function grouped(secret) {
  return secret.replace(/(.{4})/g, "$1 ").trim();
}

/**
 * Adds an authenticator app: scan the QR code (or type the key), enter a code to
 * confirm, then the recovery codes if this is the first factor. `onDone(factor)`.
 */
export function TotpSetup({ enrollmentToken, onDone, onCancel }) {
  const api = mfaApi(enrollmentToken);
  const [started, setStarted] = useState(null);
  const [confirmed, setConfirmed] = useState(null);
  const begin = useAction((name) => api("POST", "/mfa/totp:begin", { body: { name } }).then(setStarted));
  const confirm = useAction((code) =>
    api("POST", "/mfa/totp:confirm", { body: { factorId: started.factorId, code } }).then(setConfirmed),
  );
  if (confirmed) {
    const codes = confirmed.recoveryCodes || [];
    if (codes.length) return html`<${RecoveryCodes} codes=${codes} onDone=${() => onDone(confirmed.factor)} />`;
    return html`<${AddedNote} what="The authenticator app" onDone=${() => onDone(confirmed.factor)} />`;
  }
  if (!started) {
    return html`<form aria-label="Name the authenticator app" onSubmit=${(event) => {
        event.preventDefault();
        begin.run(formValues(event.currentTarget).name.trim());
      }}>
      <${ErrorNote} error=${begin.error} />
      <${Field} label="Name" name="name" defaultValue="Authenticator app" maxlength="100"
        hint="So you can tell your factors apart, like the phone it is on." />
      <div class="actions">
        <button type="submit" class="primary" disabled=${begin.pending}>Continue</button>
        ${onCancel ? html`<button type="button" onClick=${onCancel}>Cancel</button>` : null}
      </div>
    </form>`;
  }
  return html`<div class="totp-setup">
    <p>Scan this code with an authenticator app (Google Authenticator, 1Password, Authy, …).</p>
    <${QrCode} text=${started.otpauthUri} label="QR code of the authenticator app's setup link" />
    <details>
      <summary>Cannot scan? Type the key instead</summary>
      <p>Key (time-based, 6 digits, every 30 seconds):</p>
      <div class="secret-row">
        <code class="secret-value" data-totp-secret=${started.secret}>${grouped(started.secret)}</code>
        <${CopyButton} text=${started.secret} label="Copy the key" />
      </div>
    </details>
    <form aria-label="Confirm the authenticator app" onSubmit=${(event) => {
        event.preventDefault();
        confirm.run(formValues(event.currentTarget).code.replace(/\s+/g, ""));
      }}>
      <${ErrorNote} error=${confirm.error} />
      <${Field} label="Code from the app" name="code" required inputmode="numeric" autocomplete="one-time-code"
        pattern="[0-9 ]{6,7}" maxlength="7" hint="Enter the code the app shows, to prove it is set up." />
      <div class="actions">
        <button type="submit" class="primary" disabled=${confirm.pending}>
          ${confirm.pending ? "Checking…" : "Confirm"}
        </button>
        ${onCancel ? html`<button type="button" onClick=${onCancel}>Cancel</button>` : null}
      </div>
    </form>
  </div>`;
}

function AddedNote({ what, onDone }) {
  const button = useRef(null);
  useEffect(() => button.current?.focus(), []);
  return html`<div class="note success" role="status">
    <p>${what} is added. Your recovery codes stay as they were.</p>
    <div class="actions"><button type="button" class="primary" ref=${button} onClick=${onDone}>Done</button></div>
  </div>`;
}

/** Adds a passkey on this device (or a security key): `onDone(factor)`. */
export function PasskeySetup({ enrollmentToken, onDone, onCancel }) {
  const api = mfaApi(enrollmentToken);
  const [finished, setFinished] = useState(null);
  const add = useAction(async (name) => {
    const started = await api("POST", "/mfa/passkeys:begin", { body: { name } });
    const credentialJson = await createPasskey(started.creationOptionsJson);
    setFinished(
      await api("POST", "/mfa/passkeys:finish", {
        body: { registrationId: started.registrationId, credentialJson, name },
      }),
    );
  });
  if (!passkeysSupported()) {
    return html`<div class="note warning" role="status"><p>This browser cannot create passkeys.</p></div>`;
  }
  if (finished) {
    const codes = finished.recoveryCodes || [];
    if (codes.length) return html`<${RecoveryCodes} codes=${codes} onDone=${() => onDone(finished.factor)} />`;
    return html`<${AddedNote} what="The passkey" onDone=${() => onDone(finished.factor)} />`;
  }
  return html`<form aria-label="Add a passkey" onSubmit=${(event) => {
      event.preventDefault();
      add.run(formValues(event.currentTarget).name.trim() || "Passkey");
    }}>
    <${ErrorNote} error=${add.error} />
    <p>Your browser asks you to create a passkey with this device's screen lock, or with a security key.</p>
    <${Field} label="Name" name="name" defaultValue="Passkey" maxlength="100" hint="Like the device or key it is on." />
    <div class="actions">
      <button type="submit" class="primary" disabled=${add.pending}>${add.pending ? "Waiting for the passkey…" : "Create a passkey"}</button>
      ${onCancel ? html`<button type="button" onClick=${onCancel}>Cancel</button>` : null}
    </div>
  </form>`;
}

/** A choice between the two kinds of factor, then its setup. */
export function FactorSetup({ enrollmentToken, onDone, onCancel }) {
  const [kind, setKind] = useState("");
  if (kind === "totp") return html`<${TotpSetup} enrollmentToken=${enrollmentToken} onDone=${onDone} onCancel=${() => setKind("")} />`;
  if (kind === "passkey") {
    return html`<${PasskeySetup} enrollmentToken=${enrollmentToken} onDone=${onDone} onCancel=${() => setKind("")} />`;
  }
  return html`<div class="factor-choice">
    <div class="actions">
      <button type="button" class="primary" onClick=${() => setKind("totp")}>Use an authenticator app</button>
      ${passkeysSupported() ? html`<button type="button" onClick=${() => setKind("passkey")}>Use a passkey</button>` : null}
      ${onCancel ? html`<button type="button" class="link" onClick=${onCancel}>Cancel</button>` : null}
    </div>
  </div>`;
}
