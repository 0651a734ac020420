// PLACEHOLDER: replaced by the page's implementation.
import { html } from "../html.js";
import { Page } from "../ui.js";

export function SessionsPage() {
  return html`<${Page} title="Sessions"><p>Not built yet.</p><//>`;
}
