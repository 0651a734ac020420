// PLACEHOLDER: replaced by the page's implementation.
import { html } from "../html.js";

export function AcceptInvitation() {
  return html`<main id="main"><h1>Accept an invitation</h1><p>Not built yet.</p></main>`;
}
