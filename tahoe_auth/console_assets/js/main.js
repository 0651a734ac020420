// The console's shell: sign-in when there is no session, else the navigation and the
// page the hash names. A session that ends (expired, revoked, signed out elsewhere)
// brings back the sign-in page, with the reason.
import { call, completeStepUp, currentSession, onSession, onStepUpNeeded, resume, signOut, tenantPath } from "./api.js";
import { html, render, useEffect, useState } from "./html.js";
import { PLATFORM_ROUTES, TENANT_ROUTES, NotFound, routeFor } from "./routes.js";
import { href, navigate, useRoute } from "./router.js";
import { SignIn } from "./pages/signin.js";
import { AcceptInvitation } from "./pages/accept.js";
import { ResetPassword, VerifyEmail } from "./pages/recovery.js";
import { ChallengeForm } from "./mfa.js";
import { Dialog, ErrorNote, Loading, Notice, useLoad } from "./ui.js";

function useSession() {
  const [state, setState] = useState({ session: currentSession(), why: "" });
  useEffect(() => onSession((session, why) => setState({ session, why })), []);
  return state;
}

function Navigation({ session, path }) {
  const tenantRoutes = session.tenantId ? TENANT_ROUTES : [];
  const platformRoutes = session.kind === "platform" ? PLATFORM_ROUTES : [];
  const link = (route) => html`<li>
    <a href=${href(route.path)} aria-current=${path === route.path ? "page" : undefined}>${route.title}</a>
  </li>`;
  return html`<nav class="sidebar" aria-label="Console">
    ${platformRoutes.length ? html`<h2 class="nav-heading">Platform</h2><ul>${platformRoutes.map(link)}</ul>` : null}
    ${tenantRoutes.length ? html`<h2 class="nav-heading">Tenant</h2><ul>${tenantRoutes.map(link)}</ul>` : null}
  </nav>`;
}

/** Who is signed in, in words: the user's email and the tenant's name. */
function useIdentity(session) {
  const [identity, setIdentity] = useState({ email: "", tenant: "" });
  useEffect(() => {
    let current = true;
    const user = session.userId ? call("GET", tenantPath(`/users/${session.userId}`)) : Promise.resolve({});
    const tenant = session.tenantId ? call("GET", tenantPath()) : Promise.resolve({});
    Promise.all([user.catch(() => ({})), tenant.catch(() => ({}))]).then(([u, t]) => {
      const { displayName = "", slug = "" } = t.tenant || {};
      const tenant = displayName && displayName !== slug ? `${displayName} (${slug})` : slug;
      if (current) setIdentity({ email: u.user?.email || "", tenant });
    });
    return () => {
      current = false;
    };
  }, [session.userId, session.tenantId]);
  return identity;
}

function Shell({ session }) {
  const identity = useIdentity(session);
  const route = useRoute();
  const found = routeFor(route.path, session);
  useEffect(() => {
    if (route.path === "/" || !found) navigate(session.kind === "platform" && !session.tenantId ? "/platform" : "/overview");
  }, [route.path, found, session.kind, session.tenantId]);
  const Page = found ? found.page : NotFound;
  return html`<a class="skip" href="#main" onClick=${(e) => {
      e.preventDefault();
      document.getElementById("main")?.focus();
    }}>Skip to content</a>
    <header class="topbar">
      <a class="brand" href=${href("/")}>Tahoe Auth</a>
      <span class="who" data-who>
        ${session.kind === "platform" ? "Platform administrator" : identity.email || "Signed in"}
        ${session.tenantId ? html` · ${identity.tenant || html`<code>${session.tenantId}</code>`}` : null}
      </span>
      <button type="button" class="small" onClick=${() => signOut()}>Sign out</button>
    </header>
    <div class="layout">
      <${Navigation} session=${session} path=${route.path} />
      <main id="main" tabindex="-1">
        <${Page} key=${route.path + (session.tenantId || "")} query=${route.query} session=${session} />
      </main>
    </div>`;
}

/**
 * Answers MFA_REQUIRED for every page in one place: a dialog asks for the second
 * factor, then the refused call is sent again (api.js). Closing it gives up.
 */
function StepUp() {
  const [asked, setAsked] = useState(null);
  useEffect(
    () => onStepUpNeeded(() => new Promise((resolve, reject) => setAsked({ resolve, reject }))),
    [],
  );
  const challenge = useLoad(
    (signal) => (asked ? call("POST", "/mfa/challenges", { body: {}, signal }) : Promise.resolve(null)),
    [asked],
  );
  const done = () => {
    asked?.resolve();
    setAsked(null);
  };
  const cancelled = () => {
    asked?.reject(new Error("step-up cancelled"));
    setAsked(null);
  };
  const current = challenge.data?.challenge;
  return html`<${Dialog} title="Confirm it is you" open=${Boolean(asked)} onClose=${cancelled}>
    <p>This change needs a recent check of your second factor.</p>
    <${ErrorNote} error=${challenge.error} />
    ${challenge.loading ? html`<${Loading} />` : null}
    ${current
      ? html`<${ChallengeForm} key=${current.challenge} challenge=${current} submitLabel="Confirm"
          onAnswer=${(answer) => completeStepUp(current.challenge, answer).then(done)} />`
      : null}
  <//>`;
}

const FAREWELL = {
  expired: "Your session has ended. Sign in again to continue.",
  "signed-out": "You are signed out.",
};

function App() {
  const { session, why } = useSession();
  const route = useRoute();
  const [resuming, setResuming] = useState(!currentSession());
  useEffect(() => {
    if (!resuming) return;
    resume().finally(() => setResuming(false));
  }, []);
  if (route.path === "/accept") return html`<${AcceptInvitation} query=${route.query} />`;
  if (route.path === "/reset-password") return html`<${ResetPassword} query=${route.query} />`;
  if (route.path === "/verify-email") return html`<${VerifyEmail} query=${route.query} />`;
  if (resuming) return html`<p class="loading" role="status">Loading the console…</p>`;
  if (!session) {
    return html`<${SignIn}>
      ${FAREWELL[why] ? html`<${Notice} kind=${why === "expired" ? "warning" : "info"}>${FAREWELL[why]}<//>` : null}
    <//>`;
  }
  return html`<${Shell} session=${session} /><${StepUp} />`;
}

const root = document.getElementById("app");
// The static "Loading" line is not Preact's: a first render that is not that same <p>
// (the public accept page) would leave it standing under the page.
root.replaceChildren();
root.dataset.started = "true"; // js/watchdog.js: the module graph loaded
render(html`<${App} />`, root);
