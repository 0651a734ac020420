// Accept an invitation (public: the invitee has no session yet). The token from the
// link, a password (and a name) make the account; then the browser signs in with the
// same password, so the session is the console's usual one (the refresh token in the
// HttpOnly cookie), not the tokens the accept call returns.
import { ApiError, publicCall, signIn } from "../api.js";
import { html, useEffect, useRef, useState } from "../html.js";
import { href, navigate } from "../router.js";
import { ErrorNote, Field, Notice, formValues, useAction } from "../ui.js";
import { RequiredEnrollment, SecondStep } from "./signin.js";

export function AcceptInvitation({ query = {} }) {
  const heading = useRef(null);
  const token = query.token || "";
  const [accepted, setAccepted] = useState(null);
  const [signedIn, setSignedIn] = useState(false);
  const run = useAction(async (values) => {
    if (values.password !== values.confirm) {
      throw new ApiError({ message: "The two passwords are not the same." });
    }
    const body = await publicCall("POST", "/invitations:accept", {
      body: { token, password: values.password, displayName: values.displayName.trim() },
    });
    const email = body.invitation?.email || "";
    let signInError = null;
    let challenge = null;
    try {
      // An account with a second factor (or a tenant that requires one) answers it first.
      challenge = await signIn({ tenant: body.tenantId, email, password: values.password });
      // The accept call opened a session of its own; the console keeps only its cookie's.
      const spare = body.tokens?.accessToken;
      if (spare) await publicCall("POST", "/logout", { body: {}, token: spare }).catch(() => undefined);
    } catch (caught) {
      signInError = caught;
    }
    setAccepted({ email, signInError, challenge });
  });
  useEffect(() => {
    document.title = "Accept an invitation · Tahoe Auth console";
    heading.current?.focus();
  }, [accepted]);
  const submit = (event) => {
    event.preventDefault();
    run.run(formValues(event.currentTarget));
  };
  let content;
  if (!token) {
    content = html`<${Notice} kind="warning">
        This link has no invitation token. Open the link from your invitation exactly as you received it.
      <//>
      <p><a href=${href("/")}>Go to sign in</a></p>`;
  } else if (accepted) {
    content = html`<${Notice} kind="success">
        Welcome${accepted.email ? html`, ${accepted.email}` : ""}: the invitation is accepted.
      <//>
      ${accepted.signInError
        ? html`<${ErrorNote} error=${accepted.signInError} />
            <p><a href=${href("/")}>Sign in</a> with your email and the password you chose.</p>`
        : accepted.challenge && !signedIn
          ? accepted.challenge.enrollmentRequired
            ? html`<${RequiredEnrollment} challenge=${accepted.challenge} onSignedIn=${() => setSignedIn(true)}
                onRestart=${() => navigate("/")} />`
            : html`<${SecondStep} challenge=${accepted.challenge} onSignedIn=${() => setSignedIn(true)}
                onRestart=${() => navigate("/")} />`
          : html`<p>You are signed in.</p>
              <p><a href=${href("/")}>Open the console</a></p>`}`;
  } else {
    content = html`<p>Choose a password to join the tenant. If you already have an account in it, enter
        your current password instead.</p>
      <form onSubmit=${submit} aria-label="Accept the invitation">
        <${ErrorNote} error=${run.error} />
        <${Field} label="Name" name="displayName" autocomplete="name" hint="Optional: how others see you." />
        <${Field} label="Password" name="password" type="password" required minlength="8"
          autocomplete="new-password" hint="At least 8 characters." />
        <${Field} label="Password again" name="confirm" type="password" required minlength="8"
          autocomplete="new-password" />
        <button type="submit" class="primary" disabled=${run.pending}>
          ${run.pending ? "Accepting…" : "Accept the invitation"}
        </button>
      </form>
      <p class="small"><a href=${href("/")}>Already a member? Sign in</a></p>`;
  }
  return html`<main id="main" class="signin">
    <div class="card">
      <h1 tabindex="-1" ref=${heading}>${accepted ? "Invitation accepted" : "Accept an invitation"}</h1>
      ${content}
    </div>
  </main>`;
}
