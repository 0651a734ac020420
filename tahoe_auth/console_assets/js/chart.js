// Charts: uPlot (vendored) for time series, <meter> for quota gauges. Each chart has a
// text alternative (its caption and latest values), so it is not a picture only.
import uPlot from "../vendor/uplot.js";
import { html, useEffect, useRef } from "./html.js";
import { formatNumber } from "./ui.js";

const PALETTE = ["#1d4ed8", "#b45309", "#047857", "#9333ea", "#be123c", "#0e7490"];

/**
 * A time series chart: `times` in seconds since the epoch, `series` [{ label, values }]
 * (values aligned with times). Redraws in place when the data change, and follows the
 * width of its container (zoom, narrow windows).
 */
export function TimeChart({ caption, times, series, height = 220, kind = "line" }) {
  const box = useRef(null);
  const plot = useRef(null);
  const shape = series.map((s) => s.label).join("\u0000") + kind;
  useEffect(() => {
    const element = box.current;
    const bars = kind === "bars" ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined;
    plot.current = new uPlot(
      {
        width: Math.max(240, element.clientWidth),
        height,
        legend: { show: true },
        scales: { x: { time: true } },
        axes: [{}, { values: (u, ticks) => ticks.map((t) => formatNumber(t)) }],
        series: [
          {},
          ...series.map((s, i) => ({
            label: s.label,
            stroke: PALETTE[i % PALETTE.length],
            fill: kind === "bars" ? `${PALETTE[i % PALETTE.length]}55` : undefined,
            width: 2,
            paths: bars,
            points: { show: times.length < 40 },
          })),
        ],
      },
      [times, ...series.map((s) => s.values)],
      element,
    );
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(240, element.clientWidth), height }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [shape, height]);
  useEffect(() => {
    plot.current?.setData([times, ...series.map((s) => s.values)]);
  }, [times, series]);
  const latest = series
    .map((s) => `${s.label}: ${formatNumber(s.values.length ? s.values[s.values.length - 1] : 0)}`)
    .join(", ");
  return html`<figure class="chart">
    <figcaption>${caption}</figcaption>
    <div ref=${box} class="chart-canvas" role="img" aria-label=${`${caption}. Latest: ${latest || "no data"}`}></div>
  </figure>`;
}

/** Used of a limit, as a gauge with its figures in words (a limit of 0 means none). */
export function Gauge({ label, used, limit, unit = "" }) {
  const value = Number(used || 0);
  const max = Number(limit || 0);
  const share = max > 0 ? Math.min(1, value / max) : 0;
  const words = max > 0 ? `${formatNumber(value)} of ${formatNumber(max)}${unit}` : `${formatNumber(value)}${unit}, no limit`;
  return html`<div class="gauge">
    <div class="gauge-label"><span>${label}</span><span class="gauge-figure" data-gauge-figure>${words}</span></div>
    ${max > 0
      ? html`<meter min="0" max=${max} value=${value} low=${max * 0.75} high=${max * 0.9} optimum="0"
          aria-label=${`${label}: ${words}`}>${Math.round(share * 100)}%</meter>`
      : null}
  </div>`;
}
