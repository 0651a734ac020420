// PLACEHOLDER: replaced by the page's implementation.
import { html } from "../html.js";
import { Page } from "../ui.js";

export function PlatformPage() {
  return html`<${Page} title="Platform overview"><p>Not built yet.</p><//>`;
}

export function TenantsPage() {
  return html`<${Page} title="Tenants"><p>Not built yet.</p><//>`;
}
