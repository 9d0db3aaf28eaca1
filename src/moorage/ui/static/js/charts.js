// Time-series charts over `GET /v1/metrics/query`, drawn by uPlot (vendored in static/vendor).

import { every, optional } from "./api.js";
import { bytes, empty, failure, h, replace } from "./dom.js";

const COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#ca8a04"];
const REFRESH = 15000; // ms; agents report every 10 s
const STEP = "10s"; // one point per collection: 360 an hour
const HEIGHT = 200;

// What each chart on the page shows, for people reading the console and for the browser test.
export const charts = {};

const missing = (v) => v === null || v === undefined;
// Decimals that tell ticks `incr` apart.
const decimals = (incr) => Math.max(0, Math.min(3, -Math.floor(Math.log10(incr || 1))));
const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

// How a chart writes its values: one value (the legend) and an axis' ticks (with their step).
export const formats = {
  percent: {
    value: (v) => (missing(v) ? "-" : `${v.toFixed(v < 10 ? 2 : 1)}%`),
    ticks: (splits, incr) => splits.map((v) => `${v.toFixed(decimals(incr))}%`),
  },
  bytes: {
    value: (v) => (missing(v) ? "-" : bytes(v)),
    ticks: (splits, incr) => {
      const top = Math.max(...splits.map(Math.abs));
      const k = Math.max(0, Math.min(UNITS.length - 1, Math.floor(Math.log(top || 1) / Math.log(1024))));
      const unit = 1024 ** k;
      return splits.map((v) => `${(v / unit).toFixed(decimals(incr / unit))} ${UNITS[k]}`);
    },
  },
};

// A chart of one metric over the last hour, one line per series, refreshed until `signal`
// aborts. `labels` are the query's matchers; `legend(series)` names a line.
export function metricChart({ name, title, metric, labels, format, legend }, signal) {
  const body = h("div", { class: "chart-body" }, empty("Loading…"));
  const box = h("div", { class: "chart", dataset: { chart: name } }, h("h3", null, title), body);
  const query = new URLSearchParams({ metric, ...labels, from: "-1h", step: STEP, agg: "avg" });
  const state = { plot: null, shape: "" };
  const observer = new ResizeObserver(() => {
    if (state.plot && body.clientWidth) state.plot.setSize({ width: body.clientWidth, height: HEIGHT });
  });
  observer.observe(body);
  signal.addEventListener("abort", () => {
    observer.disconnect();
    state.plot?.destroy();
    delete charts[name];
  });
  every(REFRESH, signal, async () => {
    try {
      const series = await optional(`/v1/metrics/query?${query}`, { signal });
      if (!signal.aborted) show(name, box, body, state, series, { format, legend });
    } catch (error) {
      if (!signal.aborted) replace(body, failure(error));
    }
  });
  return box;
}

function show(name, box, body, state, series, { format, legend }) {
  const lines = (series || []).filter((s) => s.points && s.points.length);
  const points = lines.reduce((n, s) => n + s.points.length, 0);
  charts[name] = {
    available: series !== null,
    series: lines.map((s) => ({ label: legend(s), points: s.points.length })),
    drawn: false,
  };
  box.dataset.series = String(lines.length);
  box.dataset.points = String(points);
  if (!lines.length) {
    state.plot?.destroy();
    state.plot = null;
    state.shape = "";
    replace(
      body,
      empty(
        series === null
          ? "Metrics are not available on this server."
          : "No samples in the last hour yet (agents report every 10 s).",
      ),
    );
    return;
  }
  const data = window.uPlot.join(lines.map((s) => [s.points.map((p) => p[0]), s.points.map((p) => p[1])]));
  const shape = lines.map(legend).join("\n");
  if (state.plot && state.shape === shape) {
    state.plot.setData(data);
  } else {
    state.plot?.destroy();
    replace(body);
    state.plot = new window.uPlot(options(lines, body, format, legend), data, body);
    state.shape = shape;
  }
  charts[name].drawn = true;
}

function options(lines, body, format, legend) {
  return {
    width: Math.max(body.clientWidth, 320),
    height: HEIGHT,
    scales: { x: { time: true } },
    axes: [{}, { size: 80, values: (u, splits, axis, space, incr) => format.ticks(splits, incr) }],
    series: [
      {},
      ...lines.map((s, i) => ({
        label: legend(s),
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        spanGaps: true,
        value: (u, v) => format.value(v),
      })),
    ],
  };
}
