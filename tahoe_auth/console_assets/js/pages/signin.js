// Sign in: a tenant's user with tenant, email and password (the refresh token goes to
// an HttpOnly cookie), then a second factor when the account has one, or a guided
// setup when the tenant requires one; a passkey alone (passwordless); or a platform
// administrator with a platform key (kept in memory).
import { beginPasskeySignIn, completeSignIn, signIn, signInWithPlatformKey } from "../api.js";
import { html, useEffect, useRef, useState } from "../html.js";
import { ChallengeForm, FactorSetup } from "../mfa.js";
import { ErrorNote, Field, formValues, useAction } from "../ui.js";
import { passkeysSupported, usePasskey } from "../webauthn.js";
import { ForgotPassword } from "./recovery.js";

/** Answers a sign-in's challenge; `onSignedIn` once the session is there. */
export function SecondStep({ challenge, onRestart, onSignedIn }) {
  const heading = useRef(null);
  useEffect(() => heading.current?.focus(), []);
  return html`<section aria-labelledby="second-step">
    <h2 id="second-step" tabindex="-1" ref=${heading}>Second step</h2>
    <p>Confirm it is you with your second factor.</p>
    <${ChallengeForm} challenge=${challenge} onAnswer=${(answer) => completeSignIn(challenge.challenge, answer).then(onSignedIn)} />
    <button type="button" class="link" onClick=${onRestart}>Start again</button>
  </section>`;
}

/** Sets up the second factor the tenant requires, then completes the sign-in. */
export function RequiredEnrollment({ challenge, onRestart, onSignedIn }) {
  const heading = useRef(null);
  const finish = useAction(() => completeSignIn(challenge.challenge, {}).then(onSignedIn));
  useEffect(() => heading.current?.focus(), []);
  return html`<section aria-labelledby="enroll-step">
    <h2 id="enroll-step" tabindex="-1" ref=${heading}>Set up a second factor</h2>
    <p>
      Your tenant requires a second factor for your account. Set one up now to finish signing in: an
      authenticator app on your phone, or a passkey.
    </p>
    <${ErrorNote} error=${finish.error} />
    <${FactorSetup} enrollmentToken=${challenge.enrollmentToken} onDone=${() => finish.run()} />
    <button type="button" class="link" onClick=${onRestart}>Start again</button>
  </section>`;
}

export function SignIn({ children }) {
  const [platform, setPlatform] = useState(false);
  const [challenge, setChallenge] = useState(null);
  const [forgot, setForgot] = useState(null);
  const heading = useRef(null);
  const form = useRef(null);
  const user = useAction(async (values) => setChallenge(await signIn(values)));
  const passkey = useAction(async (tenant) => {
    const started = await beginPasskeySignIn(tenant);
    const credential = await usePasskey(started.passkeyRequestOptionsJson);
    await completeSignIn(started.challenge, { passkeyCredentialJson: credential });
  });
  const admin = useAction((key) => signInWithPlatformKey(key));
  useEffect(() => {
    document.title = "Sign in · Tahoe Auth console";
    heading.current?.focus();
  }, []);
  const submitUser = (event) => {
    event.preventDefault();
    passkey.clear();
    const { tenant, email, password } = formValues(event.currentTarget);
    user.run({ tenant: tenant.trim(), email: email.trim(), password });
  };
  const withPasskey = () => {
    user.clear();
    const tenant = form.current?.elements.tenant;
    if (!tenant.value.trim()) {
      tenant.reportValidity();
      tenant.focus();
      return;
    }
    passkey.run(tenant.value.trim());
  };
  const submitKey = (event) => {
    event.preventDefault();
    admin.run(formValues(event.currentTarget).key.trim());
  };
  const restart = () => setChallenge(null);
  let body;
  if (platform) {
    body = html`<form onSubmit=${submitKey} aria-label="Sign in with a platform key">
      <${ErrorNote} error=${admin.error} />
      <${Field} label="Platform administrator key" name="key" type="password" required
        autocomplete="off" hint="Created by tahoe-auth bootstrap. Kept in this tab's memory only." />
      <button type="submit" class="primary" disabled=${admin.pending}>
        ${admin.pending ? "Signing in…" : "Sign in"}
      </button>
      <button type="button" class="link" onClick=${() => setPlatform(false)}>Sign in as a tenant user</button>
    </form>`;
  } else if (forgot) {
    body = html`<${ForgotPassword} tenant=${forgot.tenant} onBack=${() => setForgot(null)} />`;
  } else if (challenge?.enrollmentRequired) {
    body = html`<${RequiredEnrollment} challenge=${challenge} onRestart=${restart} />`;
  } else if (challenge) {
    body = html`<${SecondStep} challenge=${challenge} onRestart=${restart} />`;
  } else {
    body = html`<form onSubmit=${submitUser} aria-label="Sign in" ref=${form}>
      <${ErrorNote} error=${user.error || passkey.error} />
      <${Field} label="Tenant" name="tenant" required autocomplete="organization"
        hint="The tenant's short name (slug) or id." />
      <${Field} label="Email" name="email" type="email" required autocomplete="username webauthn" />
      <${Field} label="Password" name="password" type="password" required autocomplete="current-password" />
      <button type="submit" class="primary" disabled=${user.pending || passkey.pending}>
        ${user.pending ? "Signing in…" : "Sign in"}
      </button>
      ${passkeysSupported()
        ? html`<button type="button" onClick=${withPasskey} disabled=${user.pending || passkey.pending}>
            ${passkey.pending ? "Waiting for the passkey…" : "Sign in with a passkey"}
          </button>`
        : null}
      <button type="button" class="link" onClick=${() => setForgot({ tenant: form.current?.elements.tenant.value.trim() || "" })}>
        Forgot your password?
      </button>
      <button type="button" class="link" onClick=${() => setPlatform(true)}>
        Platform administrator? Sign in with a key
      </button>
    </form>`;
  }
  return html`<main id="main" class="signin">
    <div class="card">
      <h1 tabindex="-1" ref=${heading}>Sign in to Tahoe Auth</h1>
      ${challenge || forgot ? null : children}
      ${body}
    </div>
  </main>`;
}
