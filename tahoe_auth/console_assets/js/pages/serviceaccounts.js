// PLACEHOLDER: replaced by the page's implementation.
import { html } from "../html.js";
import { Page } from "../ui.js";

export function ServiceAccountsPage() {
  return html`<${Page} title="Service accounts"><p>Not built yet.</p><//>`;
}
