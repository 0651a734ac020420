// PLACEHOLDER: replaced by the page's implementation.
import { html } from "../html.js";
import { Page } from "../ui.js";

export function RolesPage() {
  return html`<${Page} title="Roles"><p>Not built yet.</p><//>`;
}
