// Pieces the credential pages share (API keys, service accounts, webhooks): choosing
// permissions, a length of time in the unit people think in, and one secret panel at
// a time.
import { call, tenantPath } from "../api.js";
import { html, useEffect, useRef, useState } from "../html.js";
import { ErrorNote, SecretOnce, useLoad } from "../ui.js";

/** The tenant's roles; the permission picker offers what they grant. */
export function useRoles() {
  return useLoad((signal) => call("GET", tenantPath("/roles"), { signal }).then((r) => r.roles || []), []);
}

let pickers = 0;
const PERMISSION = /^(\*|[a-z][a-z0-9_.-]{0,62}):(\*|[a-z][a-z0-9_.-]{0,62})$/;

/**
 * Permissions as checkboxes (every permission the tenant's roles name, plus those
 * chosen), a role's whole set in one step, and any other `resource:action` typed in.
 * Controlled: `selected` is an array, `onChange` gets the next one.
 */
export function PermissionPicker({ legend = "Permissions", roles, rolesError, selected, onChange }) {
  const [other, setOther] = useState("");
  const [role, setRole] = useState("");
  const [problem, setProblem] = useState("");
  const [ids] = useState(() => ++pickers);
  const known = new Set(selected);
  for (const r of roles || []) for (const p of r.permissions || []) known.add(p);
  const all = [...known].sort();
  const chosen = new Set(selected);
  const toggle = (permission, on) => {
    const next = new Set(chosen);
    if (on) next.add(permission);
    else next.delete(permission);
    onChange([...next].sort());
  };
  const addRole = () => {
    const found = (roles || []).find((r) => r.name === role);
    if (found) onChange([...new Set([...selected, ...(found.permissions || [])])].sort());
  };
  const addOther = () => {
    const typed = other.split(/[\s,]+/).filter(Boolean);
    const bad = typed.filter((p) => !PERMISSION.test(p));
    if (bad.length) {
      setProblem(`Not of the form resource:action: ${bad.join(", ")}`);
      return;
    }
    setProblem("");
    setOther("");
    onChange([...new Set([...selected, ...typed])].sort());
  };
  // Enter in the text box adds the permission instead of submitting the whole form.
  const onKey = (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      addOther();
    }
  };
  return html`<fieldset class="permission-picker">
    <legend>${legend}</legend>
    <${ErrorNote} error=${rolesError} />
    ${all.length
      ? html`<div class="checks">
          ${all.map(
            (p) => html`<label key=${p}>
              <input type="checkbox" name="permission" value=${p} checked=${chosen.has(p)}
                onChange=${(e) => toggle(p, e.currentTarget.checked)} />
              <code>${p}</code>
            </label>`,
          )}
        </div>`
      : html`<p class="muted">No permissions chosen yet.</p>`}
    <div class="toolbar">
      ${(roles || []).length
        ? html`<div class="field">
              <label for=${`picker-role-${ids}`}>Add a role's permissions</label>
              <select id=${`picker-role-${ids}`} value=${role} onChange=${(e) => setRole(e.currentTarget.value)}>
                <option value="">Choose a role</option>
                ${roles.map((r) => html`<option value=${r.name}>${r.name}</option>`)}
              </select>
            </div>
            <button type="button" class="small" disabled=${!role} onClick=${addRole}>Add role's permissions</button>`
        : null}
      <div class="field">
        <label for=${`picker-other-${ids}`}>Other permission</label>
        <input id=${`picker-other-${ids}`} value=${other} placeholder="resource:action" aria-describedby=${`picker-other-hint-${ids}`}
          onInput=${(e) => setOther(e.currentTarget.value)} onKeyDown=${onKey} />
        <p class="hint" id=${`picker-other-hint-${ids}`}>For example <code>transcription:read</code>; <code>*</code> is a wildcard.</p>
      </div>
      <button type="button" class="small" disabled=${!other.trim()} onClick=${addOther}>Add permission</button>
    </div>
    ${problem ? html`<p class="note error" role="alert">${problem}</p>` : null}
  </fieldset>`;
}

const UNITS = { seconds: 1, minutes: 60, hours: 3600, days: 86400 };

/** A length of time: a number and a unit; `durationOf(values, name)` reads it back in seconds. */
export function DurationField({ label, name, hint, amount = "1", unit = "hours", units = ["seconds", "minutes", "hours"] }) {
  const id = `duration-${name}`;
  return html`<fieldset class="duration">
    <legend>${label}</legend>
    <div class="toolbar">
      <div class="field">
        <label for=${`${id}-amount`}>Amount</label>
        <input id=${`${id}-amount`} name=${`${name}Amount`} type="number" min="0" step="1" required defaultValue=${amount}
          aria-describedby=${hint ? `${id}-hint` : undefined} />
      </div>
      <div class="field">
        <label for=${`${id}-unit`}>Unit</label>
        <select id=${`${id}-unit`} name=${`${name}Unit`}>
          ${units.map((u) => html`<option value=${u} selected=${u === unit}>${u}</option>`)}
        </select>
      </div>
    </div>
    ${hint ? html`<p class="hint" id=${`${id}-hint`}>${hint}</p>` : null}
  </fieldset>`;
}

export function durationOf(values, name) {
  const amount = Number(values[`${name}Amount`] || 0);
  return Math.max(0, Math.round(amount * (UNITS[values[`${name}Unit`]] || 1)));
}

/** Seconds for people: "90 minutes", "2 days". */
export function humanDuration(seconds) {
  for (const [unit, size] of [["days", 86400], ["hours", 3600], ["minutes", 60]]) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size} ${seconds === size ? unit.slice(0, -1) : unit}`;
  }
  return `${seconds} ${seconds === 1 ? "second" : "seconds"}`;
}

/** A protobuf Duration as the JSON API writes it ("3600s"). */
export function durationJson(seconds) {
  return `${seconds}s`;
}

/**
 * The secret just issued, with what it belongs to: shown on the page (not in a dialog
 * that could be closed by accident) until dismissed; kept only in this component's
 * state, so a reload or another page never shows it again.
 */
export function IssuedSecret({ issued, onDismiss }) {
  const heading = useRef(null);
  // Focus moves to the new secret so that a keyboard or screen-reader user finds it.
  useEffect(() => heading.current?.focus(), [issued]);
  if (!issued) return null;
  return html`<section class="issued" aria-labelledby="issued-heading">
    <h2 id="issued-heading" tabindex="-1" ref=${heading}>${issued.title}</h2>
    ${issued.details || null}
    ${issued.secrets.map((s) => html`<${SecretOnce} key=${s.label} label=${s.label} value=${s.value} />`)}
    <div class="actions">
      <button type="button" onClick=${onDismiss}>I have saved it</button>
    </div>
  </section>`;
}

/** Permissions, one a line, for a table cell. */
export function PermissionList({ permissions }) {
  const list = permissions || [];
  if (!list.length) return html`<span class="muted">none</span>`;
  return html`<ul class="plain-list">
    ${list.map((p) => html`<li key=${p}><code>${p}</code></li>`)}
  </ul>`;
}

/** Page tokens of a list: the current one, the next, and back to the first. */
export function usePages() {
  const [tokens, setTokens] = useState([""]);
  return {
    token: tokens[tokens.length - 1],
    atFirst: tokens.length === 1,
    next: (token) => setTokens((all) => [...all, token]),
    first: () => setTokens([""]),
  };
}
