// PLACEHOLDER: replaced by the page's implementation.
import { html } from "../html.js";
import { Page } from "../ui.js";

export function WebhooksPage() {
  return html`<${Page} title="Webhooks"><p>Not built yet.</p><//>`;
}
