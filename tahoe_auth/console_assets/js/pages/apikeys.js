// PLACEHOLDER: replaced by the page's implementation.
import { html } from "../html.js";
import { Page } from "../ui.js";

export function ApiKeysPage() {
  return html`<${Page} title="API keys"><p>Not built yet.</p><//>`;
}
