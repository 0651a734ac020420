// PLACEHOLDER: replaced by the page's implementation.
import { html } from "../html.js";
import { Page } from "../ui.js";

export function UsersPage() {
  return html`<${Page} title="Users"><p>Not built yet.</p><//>`;
}
