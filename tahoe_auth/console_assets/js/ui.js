// The pieces every page is made of: a page frame that takes focus on arrival, error
// notes in plain words, tables, form fields, dialogs, copy buttons, and hooks for
// loading data and running actions. Native elements first (<dialog>, <button>,
// <label>), so the keyboard and screen readers work without extra code.
import { html, useCallback, useEffect, useLayoutEffect, useRef, useState } from "./html.js";
import { saveBlob } from "./api.js";
import { plainWords } from "./errors.js";

/** The frame of a page: its title (document title too), actions, and content. */
export function Page({ title, actions, children, busy = false }) {
  const heading = useRef(null);
  useEffect(() => {
    document.title = `${title} · Tahoe Auth console`;
    // Arriving on a page moves focus to its heading: a keyboard or screen-reader user
    // starts reading there instead of at the top of the navigation.
    heading.current?.focus({ preventScroll: true });
  }, [title]);
  return html`<section class="page" aria-busy=${busy ? "true" : "false"}>
    <header class="page-header">
      <h1 tabindex="-1" ref=${heading}>${title}</h1>
      ${actions ? html`<div class="page-actions">${actions}</div>` : null}
    </header>
    ${children}
  </section>`;
}

/** An error (or null): announced to screen readers, in plain words. */
export function ErrorNote({ error, onDismiss }) {
  if (!error) return null;
  return html`<div class="note error" role="alert">
    <p>${plainWords(error)}</p>
    ${error.reason ? html`<p class="muted small">Reason: <code>${error.reason}</code></p>` : null}
    ${onDismiss ? html`<button type="button" class="link" onClick=${onDismiss}>Dismiss</button>` : null}
  </div>`;
}

export function Notice({ children, kind = "info" }) {
  return html`<div class=${`note ${kind}`} role="status">${children}</div>`;
}

export function Loading({ what = "Loading" }) {
  return html`<p class="muted" role="status">${what}…</p>`;
}

/**
 * Loads data when `deps` change: { data, error, loading, reload }. `load` gets an
 * AbortSignal; a result that arrives after the page moved on is dropped.
 */
export function useLoad(load, deps = []) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    const controller = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    load(controller.signal).then(
      (data) => controller.signal.aborted || setState({ data, error: null, loading: false }),
      (error) => controller.signal.aborted || setState({ data: null, error, loading: false }),
    );
    return () => controller.abort();
  }, [...deps, generation]);
  const reload = useCallback(() => setGeneration((g) => g + 1), []);
  return { ...state, reload };
}

/** An action a button or form starts: { run, pending, error, clear }; run returns its result or undefined. */
export function useAction(action) {
  const [pending, setPending] = useState(false);
  const [error, setError] = useState(null);
  const run = useCallback(
    async (...args) => {
      setPending(true);
      setError(null);
      try {
        return await action(...args);
      } catch (caught) {
        setError(caught);
        return undefined;
      } finally {
        setPending(false);
      }
    },
    [action],
  );
  return { run, pending, error, clear: () => setError(null) };
}

/** A data table: columns [{ label, cell: (row) => content, className }], rows, a caption. */
export function Table({ caption, columns, rows, empty = "Nothing here yet.", rowKey = (row) => row.id }) {
  if (!rows || rows.length === 0) return html`<p class="muted empty">${empty}</p>`;
  return html`<div class="table-wrap" role="region" aria-label=${caption} tabindex="0">
    <table>
      <caption class="visually-hidden">${caption}</caption>
      <thead>
        <tr>
          ${columns.map((c) => html`<th scope="col" class=${c.className || ""}>${c.label}</th>`)}
        </tr>
      </thead>
      <tbody>
        ${rows.map(
          (row) => html`<tr key=${rowKey(row)}>
            ${columns.map((c) => html`<td class=${c.className || ""}>${c.cell(row)}</td>`)}
          </tr>`,
        )}
      </tbody>
    </table>
  </div>`;
}

let fieldCounter = 0;

/** A labelled input; `hint` is read with it (aria-describedby). Extra props go to the input. */
export function Field({ label, hint, id, as = "input", children, ...input }) {
  const [own] = useState(() => id || `field-${++fieldCounter}`);
  const hintId = hint ? `${own}-hint` : undefined;
  let control;
  if (as === "select") {
    control = html`<select id=${own} aria-describedby=${hintId} ...${input}>${children}</select>`;
  } else if (as === "textarea") {
    control = html`<textarea id=${own} aria-describedby=${hintId} ...${input}></textarea>`;
  } else {
    control = html`<input id=${own} aria-describedby=${hintId} ...${input} />`;
  }
  return html`<div class="field">
    <label for=${own}>${label}</label>
    ${control}
    ${hint ? html`<p class="hint" id=${hintId}>${hint}</p>` : null}
  </div>`;
}

/** The values of a form's named controls (checkbox groups as arrays). */
export function formValues(form) {
  const values = {};
  for (const element of form.elements) {
    if (!element.name) continue;
    if (element.type === "checkbox") {
      values[element.name] ??= [];
      if (element.checked) values[element.name].push(element.value);
    } else {
      values[element.name] = element.value;
    }
  }
  return values;
}

/**
 * A modal dialog (native <dialog>: focus stays inside, Escape closes it, focus returns
 * to what opened it). Rendered while `open`; onClose when it closes either way.
 */
let dialogCounter = 0;

export function Dialog({ title, open, onClose, children }) {
  const ref = useRef(null);
  const opener = useRef(null);
  // Its own id: two dialogs can be open at once (a step-up over the form it interrupted).
  const [titleId] = useState(() => `dialog-title-${++dialogCounter}`);
  // Opened and closed as the DOM is committed, before the page's effects run: a page
  // that moves focus as the dialog closes (to a secret just issued) keeps it there,
  // rather than the browser putting it back on the opener afterwards.
  useLayoutEffect(() => {
    const dialog = ref.current;
    if (!dialog) return undefined;
    if (open && !dialog.open) {
      opener.current = document.activeElement;
      dialog.showModal();
    } else if (!open && dialog.open) {
      dialog.close();
    }
    return undefined;
  }, [open]);
  const closed = () => {
    // The browser returns focus to the opener itself; only if it did not (focus fell
    // to the body) is it done here, so focus placed elsewhere on purpose stays.
    if (document.activeElement === document.body) opener.current?.focus?.();
    onClose?.();
  };
  return html`<dialog ref=${ref} onClose=${closed} aria-labelledby=${titleId}>
    ${open
      ? html`<div class="dialog-body">
          <header class="dialog-header">
            <h2 id=${titleId}>${title}</h2>
            <button type="button" class="icon" aria-label="Close" onClick=${() => ref.current?.close()}>×</button>
          </header>
          ${children}
        </div>`
      : null}
  </dialog>`;
}

/** A dialog form's submit and Cancel buttons; the submit one says when it is busy. */
export function FormButtons({ label, busyLabel, pending, onCancel, danger = false }) {
  return html`<div class="actions">
    <button type="submit" class=${danger ? "danger" : "primary"} disabled=${pending}>
      ${pending ? busyLabel : label}
    </button>
    <button type="button" onClick=${onCancel}>Cancel</button>
  </div>`;
}

/** Asks before something that cannot be undone: resolves on the confirm button. */
export function ConfirmButton({ label, question, confirmLabel = label, onConfirm, danger = true, disabled }) {
  const [open, setOpen] = useState(false);
  const [pending, setPending] = useState(false);
  const confirm = async () => {
    setPending(true);
    try {
      await onConfirm();
    } finally {
      setPending(false);
      setOpen(false);
    }
  };
  return html`<button type="button" class=${danger ? "danger small" : "small"} disabled=${disabled}
      onClick=${() => setOpen(true)}>${label}</button>
    <${Dialog} title=${label} open=${open} onClose=${() => setOpen(false)}>
      <p>${question}</p>
      <div class="actions">
        <button type="button" class=${danger ? "danger" : "primary"} disabled=${pending} onClick=${confirm}>
          ${confirmLabel}
        </button>
        <button type="button" onClick=${() => setOpen(false)}>Cancel</button>
      </div>
    <//>`;
}

/** A secret shown once, with a copy button and a warning that it will not be shown again. */
export function SecretOnce({ label, value }) {
  return html`<div class="secret">
    <p><strong>${label}</strong>: copy it now. It is shown only once and cannot be recovered.</p>
    <div class="secret-row">
      <code class="secret-value" data-secret>${value}</code>
      <${CopyButton} text=${value} />
    </div>
  </div>`;
}

export function CopyButton({ text, label = "Copy" }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setDone(true);
      setTimeout(() => setDone(false), 2000);
    } catch {
      setDone(false);
    }
  };
  return html`<button type="button" class="small" onClick=${copy} aria-live="polite">
    ${done ? "Copied" : label}
  </button>`;
}

/** Page through a list API: `load(pageToken)` returns { items, nextPageToken }. */
export function Pager({ nextPageToken, onNext, onFirst, atFirst }) {
  if (!nextPageToken && atFirst) return null;
  return html`<nav class="pager" aria-label="Pages">
    <button type="button" class="small" disabled=${atFirst} onClick=${onFirst}>First page</button>
    <button type="button" class="small" disabled=${!nextPageToken} onClick=${onNext}>Next page</button>
  </nav>`;
}

const numberFormat = new Intl.NumberFormat();
const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function formatNumber(value) {
  return numberFormat.format(Number(value || 0));
}

/** An RFC 3339 timestamp (as the JSON API writes them) for people; "" stays "—". */
export function formatTime(value) {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : timeFormat.format(date);
}

export function Time({ value }) {
  return value ? html`<time datetime=${value}>${formatTime(value)}</time>` : html`<span class="muted">—</span>`;
}

/** A status word as a badge (ACTIVE, DISABLED, ...), readable without colour. */
export function Badge({ value }) {
  const text = String(value || "").replace(/^[A-Z_]+?_(?=[A-Z]+$)/, "");
  const word = text.toLowerCase().replaceAll("_", " ");
  return html`<span class=${`badge badge-${word.replaceAll(" ", "-")}`}>${word}</span>`;
}

/**
 * Marks the moment a page first showed its data (the Performance API's user timing),
 * once per page load: bench/console_bench.py reads these marks.
 */
const marked = new Set();
export function markRendered(name) {
  if (marked.has(name)) return;
  marked.add(name);
  requestAnimationFrame(() => performance.mark(`tahoe:rendered:${name}`));
}

/** A text file (CSV, JSON lines) made in the browser, handed to it to save. */
export function saveText(filename, text, type = "text/csv") {
  saveBlob(filename, new Blob([text], { type }));
}

/** Rows as CSV (RFC 4180 quoting); `columns` [{ label, value: (row) => text }]. */
export function toCsv(columns, rows) {
  const quote = (value) => {
    const text = value === undefined || value === null ? "" : String(value);
    return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  const lines = [columns.map((c) => quote(c.label)).join(",")];
  for (const row of rows) lines.push(columns.map((c) => quote(c.value(row))).join(","));
  return `${lines.join("\r\n")}\r\n`;
}
