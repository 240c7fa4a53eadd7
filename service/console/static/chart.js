// Stacked bar chart drawn as inline SVG: one bar per time bucket, one colour per series.

import { h, s, usd } from "./dom.js";

export const PALETTE = ["#3b5bdb", "#0ca678", "#f08c00", "#ae3ec9", "#e8590c", "#1098ad", "#d6336c", "#5c940d", "#868e96"];

const WIDTH = 1000;
const HEIGHT = 260;
const MARGIN = { top: 12, right: 12, bottom: 28, left: 70 };

// A round step near span/4 (1, 2 or 5 times a power of ten), so the grid lines read well.
function niceStep(span) {
  if (span <= 0) return 1;
  const raw = span / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10) * power;
}

function axisUsd(nano) {
  const dollars = nano / 1e9;
  if (dollars === 0) return "$0";
  if (dollars >= 1000) return `$${(dollars / 1000).toLocaleString("en-US", { maximumFractionDigits: 1 })}k`;
  if (dollars >= 1) return `$${dollars.toLocaleString("en-US", { maximumFractionDigits: 2 })}`;
  return `$${dollars.toPrecision(2).replace(/\.?0+$/, "")}`;
}

/**
 * buckets: [{key, label}]; series: [{label, color, values: nano per bucket}].
 * Heights are floats for drawing only; the tooltips and the data table print exact sums.
 */
export function stackedBars({ title, buckets, series }) {
  const totals = buckets.map((_, i) => series.reduce((sum, item) => sum + (item.values[i] || 0), 0));
  const top = Math.max(...totals, 0);
  const step = niceStep(top || 1e7);
  const yMax = Math.max(step, Math.ceil(top / step) * step);
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const y = (value) => MARGIN.top + plotH - (value / yMax) * plotH;
  const slot = plotW / Math.max(buckets.length, 1);
  const barW = Math.max(2, Math.min(44, slot * 0.7));

  const grid = [];
  for (let value = 0; value <= yMax + step / 2; value += step) {
    grid.push(s("line", { class: "grid", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value) }));
    grid.push(s("text", { x: MARGIN.left - 8, y: y(value) + 4, "text-anchor": "end" }, axisUsd(value)));
  }
  const every = Math.max(1, Math.ceil(buckets.length / 12));
  const bars = [];
  const labels = [];
  buckets.forEach((bucket, i) => {
    const x = MARGIN.left + slot * i + (slot - barW) / 2;
    let base = 0;
    for (const item of series) {
      const value = item.values[i] || 0;
      if (value <= 0) continue;
      const y0 = y(base);
      const y1 = y(base + value);
      bars.push(s("rect", { x, y: y1, width: barW, height: Math.max(1, y0 - y1), fill: item.color, "data-series": item.label },
        s("title", {}, `${bucket.label} · ${item.label}: ${usd(value)}`)));
      base += value;
    }
    if (i % every === 0) {
      labels.push(s("text", { x: x + barW / 2, y: HEIGHT - 8, "text-anchor": "middle" }, bucket.label));
    }
  });
  const axis = s("line", { class: "axis", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(0), y2: y(0) });
  const svg = s("svg", {
    class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": title, preserveAspectRatio: "xMidYMid meet",
  }, s("title", {}, title), grid, axis, bars, labels);

  const legend = h("ul", { class: "legend", "aria-label": "Series" },
    series.map((item) => h("li", {},
      h("span", { class: "swatch", style: { background: item.color }, "aria-hidden": "true" }),
      `${item.label} `, h("span", { class: "muted", text: usd(item.values.reduce((a, b) => a + b, 0)) }))));

  const data = h("details", { class: "data" }, h("summary", { text: "Show the numbers" }),
    h("div", { class: "table-wrap" }, h("table", {},
      h("caption", { class: "sr-only", text: title }),
      h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Period" }),
        series.map((item) => h("th", { scope: "col", class: "num", text: item.label })),
        h("th", { scope: "col", class: "num", text: "Total" }))),
      h("tbody", {}, buckets.map((bucket, i) => h("tr", {},
        h("th", { scope: "row", text: bucket.label }),
        series.map((item) => h("td", { class: "num", text: usd(item.values[i] || 0) })),
        h("td", { class: "num", text: usd(totals[i]) })))))));
  return h("div", { class: "chart-box" }, svg, legend, data);
}
