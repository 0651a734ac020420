// PLACEHOLDER: replaced by the page's implementation.
import { html } from "../html.js";
import { Page } from "../ui.js";

export function UsagePage() {
  return html`<${Page} title="Live usage"><p>Not built yet.</p><//>`;
}
