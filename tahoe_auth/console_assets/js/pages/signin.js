// Sign in: a tenant's user with tenant, email and password (the refresh token goes to
// an HttpOnly cookie), or a platform administrator with a platform key (kept in memory).
import { signIn, signInWithPlatformKey } from "../api.js";
import { html, useEffect, useRef, useState } from "../html.js";
import { ErrorNote, Field, formValues, useAction } from "../ui.js";

export function SignIn({ children }) {
  const [platform, setPlatform] = useState(false);
  const heading = useRef(null);
  const user = useAction((values) => signIn(values));
  const admin = useAction((key) => signInWithPlatformKey(key));
  useEffect(() => {
    document.title = "Sign in · Tahoe Auth console";
    heading.current?.focus();
  }, []);
  const submitUser = (event) => {
    event.preventDefault();
    const { tenant, email, password } = formValues(event.currentTarget);
    user.run({ tenant: tenant.trim(), email: email.trim(), password });
  };
  const submitKey = (event) => {
    event.preventDefault();
    admin.run(formValues(event.currentTarget).key.trim());
  };
  return html`<main id="main" class="signin">
    <div class="card">
      <h1 tabindex="-1" ref=${heading}>Sign in to Tahoe Auth</h1>
      ${children}
      ${platform
        ? html`<form onSubmit=${submitKey} aria-label="Sign in with a platform key">
            <${ErrorNote} error=${admin.error} />
            <${Field} label="Platform administrator key" name="key" type="password" required
              autocomplete="off" hint="Created by tahoe-auth bootstrap. Kept in this tab's memory only." />
            <button type="submit" class="primary" disabled=${admin.pending}>
              ${admin.pending ? "Signing in…" : "Sign in"}
            </button>
            <button type="button" class="link" onClick=${() => setPlatform(false)}>Sign in as a tenant user</button>
          </form>`
        : html`<form onSubmit=${submitUser} aria-label="Sign in">
            <${ErrorNote} error=${user.error} />
            <${Field} label="Tenant" name="tenant" required autocomplete="organization"
              hint="The tenant's short name (slug) or id." />
            <${Field} label="Email" name="email" type="email" required autocomplete="username" />
            <${Field} label="Password" name="password" type="password" required autocomplete="current-password" />
            <button type="submit" class="primary" disabled=${user.pending}>
              ${user.pending ? "Signing in…" : "Sign in"}
            </button>
            <button type="button" class="link" onClick=${() => setPlatform(true)}>
              Platform administrator? Sign in with a key
            </button>
          </form>`}
    </div>
  </main>`;
}
