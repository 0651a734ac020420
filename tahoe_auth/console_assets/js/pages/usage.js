// Live usage: this billing period's totals and quota gauges, kept current by the
// WatchUsage stream; each metric's series over a chosen period (history from GetUsage,
// its newest bucket moved on by the live totals); usage by route and by credential
// (GetUsageBreakdown); CSV downloads of the series, the breakdown and the invoice export.
import { call, stream, tenantPath } from "../api.js";
import { html, useEffect, useMemo, useRef, useState } from "../html.js";
import { Gauge, TimeChart } from "../chart.js";
import { navigate } from "../router.js";
import {
  ErrorNote,
  Field,
  Loading,
  Notice,
  Page,
  Table,
  formatNumber,
  formatTime,
  markRendered,
  saveText,
  toCsv,
  useAction,
  useLoad,
} from "../ui.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const PERIODS = [
  { id: "current", label: "Current billing period", granularity: "GRANULARITY_DAY" },
  { id: "24h", label: "Last 24 hours", span: DAY, granularity: "GRANULARITY_HOUR" },
  { id: "7d", label: "Last 7 days", span: 7 * DAY, granularity: "GRANULARITY_DAY" },
  { id: "30d", label: "Last 30 days", span: 30 * DAY, granularity: "GRANULARITY_DAY" },
];
const DIMENSIONS = [
  { id: "USAGE_DIMENSION_ROUTE", key: "route", label: "Route" },
  { id: "USAGE_DIMENSION_CREDENTIAL", key: "credential", label: "Credential" },
];
const BACKOFF_MS = [1_000, 2_000, 4_000, 8_000, 15_000, 30_000];
// Keep the live line to the last half hour or so at one point per change.
const LIVE_POINTS = 600;
// Breakdowns and series come from rollups that lag the live counters by a couple of
// seconds: read them again once the live totals have been still for this long.
const HISTORY_SETTLE_MS = 4_000;

function periodOf(id) {
  return PERIODS.find((p) => p.id === id) || PERIODS[0];
}

/** [start, end] of a period choice; the billing period's own bounds come from the summary. */
function rangeOf(period, summary) {
  if (period.span) {
    const end = new Date();
    return { start: new Date(end.getTime() - period.span), end };
  }
  const end = new Date();
  const monthStart = new Date(Date.UTC(end.getUTCFullYear(), end.getUTCMonth(), 1));
  return { start: summary?.periodStartTime ? new Date(summary.periodStartTime) : monthStart, end };
}

/**
 * The WatchUsage stream while the page is shown: { totals, updated, connected,
 * retryIn, error }. A stream that ends or fails is opened again after a growing pause;
 * an abort (the page goes away) stops it for good.
 */
function useLiveTotals() {
  const [state, setState] = useState({
    totals: null,
    updated: null,
    connected: false,
    retryIn: 0,
    error: null,
    history: [],
  });
  useEffect(() => {
    const controller = new AbortController();
    const { signal } = controller;
    let timer = null;
    let attempt = 0;
    const pause = (ms) =>
      new Promise((resolve) => {
        timer = setTimeout(resolve, ms);
        signal.addEventListener("abort", resolve, { once: true });
      });
    (async () => {
      while (!signal.aborted) {
        let failure = null;
        try {
          await stream(tenantPath("/usage:watch"), {
            signal,
            onMessage: (message) => {
              attempt = 0;
              const totals = {};
              for (const [metric, value] of Object.entries(message.totals || {})) totals[metric] = Number(value);
              const at = message.updateTime ? Date.parse(message.updateTime) : Date.now();
              setState((s) => ({
                totals,
                updated: message.updateTime || new Date().toISOString(),
                period: message.period,
                connected: true,
                retryIn: 0,
                error: null,
                // Heartbeats repeat the last totals: the line gets a point per change only.
                history:
                  s.history.length && JSON.stringify(s.history[s.history.length - 1].totals) === JSON.stringify(totals)
                    ? s.history
                    : [...s.history, { at, totals }].slice(-LIVE_POINTS),
              }));
            },
          });
        } catch (error) {
          failure = error;
        }
        if (signal.aborted) return;
        // Not allowed or no such tenant: retrying cannot help.
        if (failure && (failure.status === 403 || failure.status === 404)) {
          setState((s) => ({ ...s, connected: false, retryIn: 0, error: failure }));
          return;
        }
        const wait = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
        attempt += 1;
        setState((s) => ({ ...s, connected: false, retryIn: wait, error: failure }));
        await pause(wait);
      }
    })();
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, []);
  return state;
}

async function loadHistory(signal, period, metrics) {
  const summary = await call("GET", tenantPath("/usage:summary"), { signal });
  const { start, end } = rangeOf(period, summary);
  const range = { startTime: start.toISOString(), endTime: end.toISOString(), granularity: period.granularity };
  const names = [...new Set([...(summary.metrics || []).map((m) => m.metric), ...metrics])].sort();
  const series = await Promise.all(
    names.map((metric) =>
      call("GET", tenantPath("/usage"), { signal, query: { metric, ...range } }).catch((error) => ({ metric, error })),
    ),
  );
  return { summary, start, end, series: series.map((s, i) => ({ ...s, metric: names[i] })) };
}

async function loadBreakdown(signal, period, metric, start, end) {
  const query = { metric, startTime: start.toISOString(), endTime: end.toISOString(), top: 20 };
  query.granularity = period.granularity === "GRANULARITY_HOUR" ? "GRANULARITY_HOUR" : "GRANULARITY_DAY";
  const answers = await Promise.all(
    DIMENSIONS.map((d) =>
      call("GET", tenantPath("/usage:breakdown"), { signal, query: { ...query, dimension: d.id } }).catch((error) => ({
        error,
      })),
    ),
  );
  return Object.fromEntries(DIMENSIONS.map((d, i) => [d.key, answers[i]]));
}

function Totals({ metrics, totals }) {
  return html`<dl class="stats usage-totals">
    ${metrics.map(
      (metric) => html`<div class="stat" key=${metric}>
        <dt><code>${metric}</code></dt>
        <dd data-usage-total=${metric}>${formatNumber(totals[metric] || 0)}</dd>
      </div>`,
    )}
  </dl>`;
}

function LiveState({ live }) {
  if (live.connected) {
    return html`<p class="muted small usage-live" role="status">
      <span class="badge badge-active">live</span> Updated ${formatTime(live.updated)}
    </p>`;
  }
  if (live.retryIn) {
    return html`<${Notice} kind="warning">
      <p>Live updates interrupted: reconnecting in ${Math.round(live.retryIn / 1000)} s…</p>
    <//>`;
  }
  return live.error ? null : html`<p class="muted small" role="status">Connecting to live updates…</p>`;
}

/** A history series with its newest bucket moved on by what the live totals added since it was read. */
function withLive(points, liveNow, liveAtLoad) {
  const times = points.map((p) => Date.parse(p.startTime) / 1000);
  const values = points.map((p) => Number(p.quantity || 0));
  const added = liveNow !== undefined && liveAtLoad !== undefined ? Math.max(0, liveNow - liveAtLoad) : 0;
  if (added) {
    const now = Date.now() / 1000;
    let index = times.length - 1;
    while (index > 0 && times[index] > now) index -= 1;
    if (index >= 0) values[index] += added;
  }
  return { times, values };
}

function ShareBar({ value, total, label }) {
  if (!total) return null;
  return html`<meter class="usage-share" min="0" max=${total} value=${value}
    aria-label=${`${label}: ${Math.round((value / total) * 100)}%`}>${Math.round((value / total) * 100)}%</meter>`;
}

function breakdownRows(answer) {
  if (!answer || answer.error) return [];
  const rows = (answer.values || []).map((v) => ({ value: v.value, total: Number(v.total || 0) }));
  if (answer.other) rows.push({ value: answer.other.value || "(other)", total: Number(answer.other.total || 0) });
  return rows;
}

function Breakdown({ dimension, answer }) {
  if (answer?.error) return html`<${ErrorNote} error=${answer.error} />`;
  const rows = breakdownRows(answer);
  const total = Number(answer?.total || 0);
  return html`<${Table} caption=${`Usage by ${dimension.label.toLowerCase()}`} rows=${rows} rowKey=${(r) => r.value}
    empty=${`No usage by ${dimension.label.toLowerCase()} in this period.`}
    columns=${[
      { label: dimension.label, cell: (r) => html`<code data-breakdown-value=${dimension.key}>${r.value}</code>` },
      { label: "Total", cell: (r) => formatNumber(r.total), className: "num" },
      {
        label: "Share",
        cell: (r) => html`<${ShareBar} value=${r.total} total=${total} label=${r.value} />`,
        className: "usage-share-cell",
      },
    ]} />`;
}

function csvName(what, period) {
  return `usage-${what}-${period.id}-${new Date().toISOString().slice(0, 10)}.csv`;
}

export function UsagePage({ query = {} }) {
  const period = periodOf(query.period);
  const live = useLiveTotals();
  const liveMetrics = Object.keys(live.totals || {}).sort().join(",");
  const [settled, setSettled] = useState(0);
  const liveAtLoad = useRef({});

  useEffect(() => {
    if (live.totals) markRendered("usage");
  }, [live.totals !== null]);

  // The history follows the live totals: read it again once they stop changing.
  const lastTotals = JSON.stringify(live.totals || {});
  const firstTotals = useRef(null);
  useEffect(() => {
    if (!live.totals) return undefined;
    if (firstTotals.current === null) {
      firstTotals.current = lastTotals;
      return undefined;
    }
    if (firstTotals.current === lastTotals) return undefined;
    const timer = setTimeout(() => setSettled((n) => n + 1), HISTORY_SETTLE_MS);
    return () => clearTimeout(timer);
  }, [lastTotals]);

  const history = useLoad(
    async (signal) => {
      const snapshot = { ...(live.totals || {}) };
      const loaded = await loadHistory(signal, period, liveMetrics ? liveMetrics.split(",") : []);
      liveAtLoad.current = snapshot;
      return loaded;
    },
    [period.id, liveMetrics, settled],
  );
  const quotas = useLoad((signal) => call("GET", tenantPath("/quotaStatus"), { signal }), []);

  const metrics = useMemo(() => {
    const names = new Set(Object.keys(live.totals || {}));
    for (const q of quotas.data?.quotas || []) names.add(q.metric);
    for (const s of history.data?.series || []) names.add(s.metric);
    return [...names].sort();
  }, [live.totals, quotas.data, history.data]);

  const [chosenMetric, setChosenMetric] = useState("");
  const fallbackMetric = metrics.includes("api.requests") ? "api.requests" : metrics[0] || "api.requests";
  const breakdownMetric = chosenMetric || fallbackMetric;
  const range = history.data ? { start: history.data.start, end: history.data.end } : null;
  const breakdown = useLoad(
    (signal) =>
      range ? loadBreakdown(signal, period, breakdownMetric, range.start, range.end) : Promise.resolve(null),
    [period.id, breakdownMetric, range?.start?.getTime(), range?.end?.getTime()],
  );

  const exported = useAction(async () => {
    const answer = await call("GET", tenantPath("/usage:export"), { query: { format: "EXPORT_FORMAT_CSV" } });
    const bytes = Uint8Array.from(atob(answer.content || ""), (c) => c.charCodeAt(0));
    saveText(answer.filename || "usage.csv", new TextDecoder().decode(bytes), answer.contentType || "text/csv");
  });

  const charts = (history.data?.series || []).map((s) => {
    if (s.error) return { metric: s.metric, error: s.error };
    const liveNow = live.totals?.[s.metric];
    // The live totals are this billing period's: they only extend a range that ends now.
    // A metric new since the read adds nothing here: its arrival reads the history again.
    const { times, values } = withLive(s.points || [], liveNow, liveAtLoad.current[s.metric]);
    return { metric: s.metric, times, values };
  });

  const saveSeries = () => {
    const rows = [];
    for (const c of charts) {
      if (c.error) continue;
      c.times.forEach((t, i) =>
        rows.push({ metric: c.metric, start: new Date(t * 1000).toISOString(), quantity: c.values[i] }),
      );
    }
    saveText(
      csvName("series", period),
      toCsv(
        [
          { label: "metric", value: (r) => r.metric },
          { label: "bucket_start", value: (r) => r.start },
          { label: "quantity", value: (r) => r.quantity },
        ],
        rows,
      ),
    );
  };
  const saveBreakdown = () => {
    const rows = [];
    for (const d of DIMENSIONS) {
      for (const r of breakdownRows(breakdown.data?.[d.key])) rows.push({ dimension: d.key, ...r });
    }
    saveText(
      csvName("breakdown", period),
      toCsv(
        [
          { label: "metric", value: () => breakdownMetric },
          { label: "dimension", value: (r) => r.dimension },
          { label: "value", value: (r) => r.value },
          { label: "total", value: (r) => r.total },
        ],
        rows,
      ),
    );
  };

  const liveSeries = useMemo(() => {
    const names = Object.keys(live.totals || {}).sort();
    return {
      times: live.history.map((h) => h.at / 1000),
      series: names.map((m) => ({ label: m, values: live.history.map((h) => h.totals[m] || 0) })),
    };
  }, [live.history]);

  const refresh = () => {
    history.reload();
    quotas.reload();
  };
  const actions = html`
    <button type="button" class="small" onClick=${refresh}>Refresh</button>
    <button type="button" class="small" disabled=${exported.pending} onClick=${exported.run}>
      Invoice export (CSV)
    </button>
  `;
  const quotaList = quotas.data?.quotas || [];

  return html`<${Page} title="Live usage" actions=${actions} busy=${!live.totals}>
    <${ErrorNote} error=${exported.error} onDismiss=${exported.clear} />
    <section aria-labelledby="usage-now-heading">
      <h2 id="usage-now-heading">
        This billing period${live.period ? html` (<span data-usage-period>${live.period}</span>)` : null}
      </h2>
      <${LiveState} live=${live} />
      <${ErrorNote} error=${live.error} />
      ${live.totals === null
        ? live.error ? null : html`<${Loading} what="Waiting for live totals" />`
        : metrics.length === 0
          ? html`<p class="muted">No usage recorded this period.</p>`
          : html`<${Totals} metrics=${metrics} totals=${live.totals} />`}
    </section>

    <div class="grid two">
      <section aria-labelledby="quota-heading">
        <h2 id="quota-heading">Quotas</h2>
        ${quotas.error
          ? html`<${ErrorNote} error=${quotas.error} />`
          : quotas.loading && !quotas.data
            ? html`<${Loading} />`
            : quotaList.length === 0
              ? html`<p class="muted">
                  The plan ${quotas.data?.plan ? html`<strong>${quotas.data.plan}</strong> ` : ""}sets no quotas.
                </p>`
              : quotaList.map(
                  (q) => html`<${Gauge} key=${q.metric} label=${q.metric}
                    used=${live.totals?.[q.metric] ?? q.used} limit=${q.included} />`,
                )}
      </section>
      <section aria-labelledby="live-heading">
        <h2 id="live-heading">Since this page opened</h2>
        ${liveSeries.times.length > 1 && liveSeries.series.length
          ? html`<${TimeChart} caption="Live totals this period" height=${180}
              times=${liveSeries.times} series=${liveSeries.series} />`
          : html`<p class="muted">The line starts with the next change.</p>`}
      </section>
    </div>

    <section aria-labelledby="history-heading">
      <h2 id="history-heading">Over time</h2>
      <div class="toolbar">
        <${Field} label="Period" as="select" value=${period.id}
          onChange=${(e) => navigate("/usage", { ...query, period: e.currentTarget.value })}>
          ${PERIODS.map((p) => html`<option value=${p.id}>${p.label}</option>`)}
        <//>
        <button type="button" class="small" disabled=${!history.data} onClick=${saveSeries}>
          Download series (CSV)
        </button>
      </div>
      ${history.data
        ? html`<p class="muted small" data-usage-range>
            ${period.label}: ${formatTime(history.data.start.toISOString())}
            to ${formatTime(history.data.end.toISOString())}
          </p>`
        : null}
      ${history.error
        ? html`<${ErrorNote} error=${history.error} />`
        : !history.data
          ? html`<${Loading} />`
          : charts.length === 0
            ? html`<p class="muted">No usage in this period.</p>`
            : html`<div class="grid two">
                ${charts.map((c) =>
                  c.error
                    ? html`<${ErrorNote} key=${c.metric} error=${c.error} />`
                    : html`<${TimeChart} key=${c.metric} caption=${c.metric} kind="bars" times=${c.times}
                        series=${[{ label: c.metric, values: c.values }]} height=${180} />`,
                )}
              </div>`}
    </section>

    <section aria-labelledby="breakdown-heading">
      <h2 id="breakdown-heading">Breakdown</h2>
      <div class="toolbar">
        <${Field} label="Metric" as="select" value=${breakdownMetric}
          onChange=${(e) => setChosenMetric(e.currentTarget.value)}>
          ${(metrics.includes(breakdownMetric) ? metrics : [breakdownMetric, ...metrics]).map(
            (m) => html`<option value=${m}>${m}</option>`,
          )}
        <//>
        <button type="button" class="small" disabled=${!breakdown.data} onClick=${saveBreakdown}>
          Download breakdown (CSV)
        </button>
      </div>
      ${breakdown.error ? html`<${ErrorNote} error=${breakdown.error} />` : null}
      <div class="grid two">
        ${DIMENSIONS.map(
          (d) => html`<section key=${d.key} aria-labelledby=${`breakdown-${d.key}`}>
            <h3 id=${`breakdown-${d.key}`}>By ${d.label.toLowerCase()}</h3>
            ${breakdown.data
              ? html`<${Breakdown} dimension=${d} answer=${breakdown.data[d.key]} />`
              : history.error
                ? null
                : html`<${Loading} />`}
          </section>`,
        )}
      </div>
    </section>
  <//>`;
}
