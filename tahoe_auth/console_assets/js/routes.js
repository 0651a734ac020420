// Every page of the console: its hash path, its title in the navigation, and who sees
// it (tenant pages need a tenant: a user's own, or the one a platform administrator
// opened; platform pages need a platform administrator's key).
import { html } from "./html.js";
import { Page } from "./ui.js";
import { OverviewPage } from "./pages/overview.js";
import { UsagePage } from "./pages/usage.js";
import { UsersPage } from "./pages/users.js";
import { RolesPage } from "./pages/roles.js";
import { ApiKeysPage } from "./pages/apikeys.js";
import { ServiceAccountsPage } from "./pages/serviceaccounts.js";
import { InvitationsPage } from "./pages/invitations.js";
import { WebhooksPage } from "./pages/webhooks.js";
import { AuditPage } from "./pages/audit.js";
import { SessionsPage } from "./pages/sessions.js";
import { SecurityPage } from "./pages/security.js";
import { PlatformPage, TenantsPage } from "./pages/platform.js";

export const TENANT_ROUTES = [
  { path: "/overview", title: "Overview", page: OverviewPage },
  { path: "/usage", title: "Live usage", page: UsagePage },
  { path: "/users", title: "Users", page: UsersPage },
  { path: "/roles", title: "Roles", page: RolesPage },
  { path: "/api-keys", title: "API keys", page: ApiKeysPage },
  { path: "/service-accounts", title: "Service accounts", page: ServiceAccountsPage },
  { path: "/invitations", title: "Invitations", page: InvitationsPage },
  { path: "/webhooks", title: "Webhooks", page: WebhooksPage },
  { path: "/audit", title: "Audit log", page: AuditPage },
  { path: "/sessions", title: "Sessions", page: SessionsPage },
  { path: "/security", title: "Security", page: SecurityPage },
];

export const PLATFORM_ROUTES = [
  { path: "/platform", title: "Platform overview", page: PlatformPage },
  { path: "/platform/tenants", title: "Tenants", page: TenantsPage },
];

export function routeFor(path, session) {
  if (session.kind === "platform" && PLATFORM_ROUTES.some((r) => r.path === path)) {
    return PLATFORM_ROUTES.find((r) => r.path === path);
  }
  return session.tenantId ? TENANT_ROUTES.find((r) => r.path === path) : undefined;
}

export function NotFound() {
  return html`<${Page} title="Page not found"><p>There is no such page.</p><//>`;
}
