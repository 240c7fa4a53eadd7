// Small DOM builders and display formatters. Text always goes in as text nodes, never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") el.textContent = String(value);
    else if (name === "style") Object.assign(el.style, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// Money: nano-USD integers shown as dollars; whole dollars to the cent, small sums with every digit that matters.
export function usd(nano) {
  if (nano === null || nano === undefined || nano === "") return "—";
  let n = typeof nano === "number" ? BigInt(Math.round(nano)) : BigInt(nano);
  const negative = n < 0n;
  if (negative) n = -n;
  const places = n >= 1_000_000_000n ? 2 : n >= 10_000_000n ? 4 : 9;
  const unit = 10n ** BigInt(9 - places);
  const rounded = (n + unit / 2n) / unit;
  const scale = 10n ** BigInt(places);
  let fraction = (rounded % scale).toString().padStart(places, "0").replace(/0+$/, "");
  if (fraction.length < 2) fraction = fraction.padEnd(2, "0");
  const whole = (rounded / scale).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${negative ? "-" : ""}$${whole}.${fraction}`;
}

export function int(value) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString("en-US");
}

export function pct(ratio) {
  if (ratio === null || ratio === undefined || Number.isNaN(ratio)) return "—";
  const value = ratio * 100;
  return `${value >= 10 || value === 0 ? Math.round(value) : value.toFixed(1)}%`;
}

// A Date from an ISO string or from Unix seconds (OpenAI's created_at).
export function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  return typeof value === "number" ? new Date(value * 1000) : new Date(value);
}

const DATE_TIME = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const DATE_ONLY = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" });
const CLOCK = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

export function when(value, { dateOnly = false, clock = false } = {}) {
  const date = toDate(value);
  if (!date || Number.isNaN(date.getTime())) return h("span", { class: "muted", text: "—" });
  const format = clock ? CLOCK : dateOnly ? DATE_ONLY : DATE_TIME;
  return h("time", { datetime: date.toISOString(), title: date.toISOString(), text: format.format(date) });
}

const TONES = {
  succeeded: "ok", ok: "ok", delivered: "ok", lasts: "ok",
  running: "info", validating_files: "info", queued: "info", pending: "info", settling: "info",
  failed: "bad", mismatch: "bad", exhausted: "bad", upstream_error: "bad", stream_broken: "bad",
  runs_out: "warn", cancelled: "warn", paused: "warn", no_webhook: "idle", idle: "idle", unknown: "idle",
};
const LIVE = new Set(["running", "validating_files", "queued", "pending", "settling"]);

export function badge(status, label) {
  const tone = TONES[status] || "idle";
  const text = label || String(status || "unknown").replaceAll("_", " ");
  return h("span", { class: `badge ${tone}${LIVE.has(status) ? " live" : ""}`, "data-status": status, text });
}

// A bar from 0 to 1 with its percentage; the tone turns amber past 80% and red at 100%.
export function meter(ratio, { label, tone } = {}) {
  const value = Math.max(0, Math.min(1, Number(ratio) || 0));
  const shade = tone || (ratio >= 1 ? "bad" : ratio >= 0.8 ? "warn" : "");
  return h("div", { class: "meter" },
    h("div", {
      class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-valuenow": String(Math.round(value * 100)), "aria-label": label || "Progress",
    }, h("div", { class: `fill ${shade}`, style: { width: `${(value * 100).toFixed(1)}%` } })),
    h("span", { class: "pct", text: pct(ratio) }));
}

// A table from column specs {label, num, cell(row)}; `key(row)` names rows for in-place updates.
export function table({ caption, columns, rows, empty = "Nothing yet.", key }) {
  const body = h("tbody");
  const tableEl = h("table", {},
    caption ? h("caption", { class: "sr-only", text: caption }) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null, text: c.label })))),
    body);
  fillRows(body, columns, rows, empty, key);
  return h("div", { class: "table-wrap" }, tableEl);
}

export function fillRows(body, columns, rows, empty, key) {
  clear(body);
  if (!rows.length) {
    body.append(h("tr", {}, h("td", { class: "empty", colspan: String(columns.length), text: empty })));
    return;
  }
  for (const row of rows) {
    body.append(h("tr", { "data-key": key ? key(row) : null },
      columns.map((c) => h("td", { class: c.num ? "num" : c.className || null }, c.cell(row)))));
  }
}

export function tile(label, value, sub) {
  return h("div", { class: "tile" },
    h("div", { class: "label", text: label }),
    h("div", { class: "value" }, value),
    sub ? h("div", { class: "sub" }, sub) : null);
}

export function card(title, ...children) {
  const id = `card-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { class: "card", "aria-labelledby": id },
    h("div", { class: "card-head" }, h("h2", { id, text: title })),
    children);
}

// setTimeout-chained polling that pauses while the tab is hidden and never overlaps itself.
export function poller(task, intervalMs) {
  let timer = null;
  let stopped = false;
  let running = false;
  async function tick() {
    timer = null;
    if (stopped) return;
    if (document.hidden) {
      timer = setTimeout(tick, intervalMs);
      return;
    }
    running = true;
    try {
      await task();
    } finally {
      running = false;
      if (!stopped) timer = setTimeout(tick, intervalMs);
    }
  }
  function onVisible() {
    if (!document.hidden && timer !== null && !running) {
      clearTimeout(timer);
      tick();
    }
  }
  document.addEventListener("visibilitychange", onVisible);
  tick();
  return {
    now() {
      if (!running && timer !== null) {
        clearTimeout(timer);
        tick();
      }
    },
    stop() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisible);
    },
  };
}
