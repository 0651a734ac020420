// The pages a mailed link opens, and "forgot password": public (the person has no
// session, or not this one). The token comes from the link's fragment, which the
// browser never sends to a server.
import { ApiError, publicCall } from "../api.js";
import { html, useEffect, useRef, useState } from "../html.js";
import { href } from "../router.js";
import { ErrorNote, Field, Loading, Notice, formValues, useAction } from "../ui.js";

function PublicCard({ title, children }) {
  const heading = useRef(null);
  useEffect(() => {
    document.title = `${title} · Tahoe Auth console`;
    heading.current?.focus();
  }, [title]);
  return html`<main id="main" class="signin">
    <div class="card">
      <h1 tabindex="-1" ref=${heading}>${title}</h1>
      ${children}
    </div>
  </main>`;
}

/** "Forgot your password?": the same answer whether or not the account exists. */
export function ForgotPassword({ tenant = "", onBack }) {
  const [sent, setSent] = useState(false);
  const request = useAction(async (values) => {
    await publicCall("POST", "/passwordResets", { body: { tenant: values.tenant.trim(), email: values.email.trim() } });
    setSent(true);
  });
  if (sent) {
    return html`<section aria-labelledby="forgot-heading">
      <h2 id="forgot-heading">Check your mail</h2>
      <${Notice} kind="success">
        If that tenant has an account with that email, a link to choose a new password is on its way. It
        works once, for 30 minutes.
      <//>
      <button type="button" class="link" onClick=${onBack}>Back to sign in</button>
    </section>`;
  }
  return html`<section aria-labelledby="forgot-heading">
    <h2 id="forgot-heading">Forgot your password?</h2>
    <p>We mail you a link to choose a new one.</p>
    <form aria-label="Reset your password" onSubmit=${(event) => {
        event.preventDefault();
        request.run(formValues(event.currentTarget));
      }}>
      <${ErrorNote} error=${request.error} />
      <${Field} label="Tenant" name="tenant" required autocomplete="organization" defaultValue=${tenant} />
      <${Field} label="Email" name="email" type="email" required autocomplete="username" />
      <button type="submit" class="primary" disabled=${request.pending}>
        ${request.pending ? "Sending…" : "Mail me a link"}
      </button>
      <button type="button" class="link" onClick=${onBack}>Back to sign in</button>
    </form>
  </section>`;
}

/** #/reset-password?token=…: a new password; every session of the account ends. */
export function ResetPassword({ query = {} }) {
  const token = query.token || "";
  const [done, setDone] = useState(null);
  const reset = useAction(async (values) => {
    if (values.password !== values.confirm) throw new ApiError({ message: "The two passwords are not the same." });
    setDone(await publicCall("POST", "/passwordResets:complete", { body: { token, newPassword: values.password } }));
  });
  let content;
  if (!token) {
    content = html`<${Notice} kind="warning">This link has no token. Open the link from the mail exactly as you received it.<//>`;
  } else if (done) {
    content = html`<${Notice} kind="success">
        Your password is changed${done.email ? html` for ${done.email}` : ""}. Every session of the account was
        signed out.
      <//>
      <p><a href=${href("/")}>Sign in with the new password</a></p>`;
  } else {
    content = html`<form aria-label="Choose a new password" onSubmit=${(event) => {
        event.preventDefault();
        reset.run(formValues(event.currentTarget));
      }}>
      <${ErrorNote} error=${reset.error} />
      <${Field} label="New password" name="password" type="password" required minlength="8"
        autocomplete="new-password" hint="At least 8 characters; not a common password, nor your email." />
      <${Field} label="New password again" name="confirm" type="password" required minlength="8"
        autocomplete="new-password" />
      <button type="submit" class="primary" disabled=${reset.pending}>
        ${reset.pending ? "Saving…" : "Set the new password"}
      </button>
    </form>`;
  }
  return html`<${PublicCard} title="Choose a new password">${content}<//>`;
}

/** #/verify-email?token=…: confirms the address as the page opens. */
export function VerifyEmail({ query = {} }) {
  const token = query.token || "";
  const [state, setState] = useState({ loading: Boolean(token), result: null, error: null });
  useEffect(() => {
    if (!token) return;
    publicCall("POST", "/emailVerifications:verify", { body: { token } }).then(
      (result) => setState({ loading: false, result, error: null }),
      (error) => setState({ loading: false, result: null, error }),
    );
  }, [token]);
  let content;
  if (!token) {
    content = html`<${Notice} kind="warning">This link has no token. Open the link from the mail exactly as you received it.<//>`;
  } else if (state.loading) {
    content = html`<${Loading} what="Confirming your address" />`;
  } else if (state.error) {
    content = html`<${ErrorNote} error=${state.error} />
      <p>Signed in, you can ask for a new link on the Users page or from an administrator.</p>`;
  } else {
    content = html`<${Notice} kind="success">Your email address ${state.result.email} is confirmed.<//>`;
  }
  return html`<${PublicCard} title="Confirm your email address">
    ${content}
    <p><a href=${href("/")}>Go to the console</a></p>
  <//>`;
}
