// PLACEHOLDER: replaced by the page's implementation.
import { html } from "../html.js";
import { Page } from "../ui.js";

export function AuditPage() {
  return html`<${Page} title="Audit log"><p>Not built yet.</p><//>`;
}
