// PLACEHOLDER: replaced by the page's implementation.
import { html } from "../html.js";
import { Page } from "../ui.js";

export function InvitationsPage() {
  return html`<${Page} title="Invitations"><p>Not built yet.</p><//>`;
}
