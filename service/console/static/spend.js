// Spend: each budget this period with its pace, spend over time by model and kind, the last requests.

import { api, withQuery } from "./api.js";
import { PALETTE, stackedBars } from "./chart.js";
import { badge, card, clear, h, int, meter, poller, table, tile, usd, when } from "./dom.js";

const REFRESH_MS = 15000;
const MAX_SERIES = 8;
const RANGES = {
  "24h": { label: "Last 24 hours, hourly", span: "last 24 hours", granularity: "hour" },
  "30d": { label: "Last 30 days, daily", span: "last 30 days", granularity: "day" },
  "12m": { label: "Last 12 months, monthly", span: "last 12 months", granularity: "month" },
};
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const PERIODS = { daily: "Daily", weekly: "Weekly", monthly: "Monthly", total: "Total" };

const pad = (n) => String(n).padStart(2, "0");
const day = (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;

// The buckets of a range in UTC, oldest first, keyed as the spend report writes period_start.
export function rangeBuckets(range, now = new Date()) {
  const buckets = [];
  if (range === "24h") {
    const start = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate(), now.getUTCHours()) - 23 * 3600e3;
    for (let i = 0; i < 24; i += 1) {
      const d = new Date(start + i * 3600e3);
      buckets.push({ key: `${day(d)}T${pad(d.getUTCHours())}:00:00Z`, label: `${pad(d.getHours())}:00` });
    }
    return { since: buckets[0].key, buckets };
  }
  if (range === "12m") {
    for (let i = 11; i >= 0; i -= 1) {
      const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - i, 1));
      buckets.push({ key: day(d), label: `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCFullYear()).slice(2)}` });
    }
    return { since: buckets[0].key.slice(0, 7), buckets };
  }
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  for (let i = 29; i >= 0; i -= 1) {
    const d = new Date(today - i * 86400e3);
    buckets.push({ key: day(d), label: `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}` });
  }
  return { since: buckets[0].key, buckets };
}

// Report rows (period_start, model, kind, cost_nano) to chart series, the largest first, the tail as "Other".
export function toSeries(rows, buckets) {
  const index = new Map(buckets.map((b, i) => [b.key, i]));
  const byName = new Map();
  for (const row of rows) {
    const i = index.get(row.period_start);
    if (i === undefined) continue;
    const name = `${row.model} · ${row.kind}`;
    if (!byName.has(name)) byName.set(name, new Array(buckets.length).fill(0));
    byName.get(name)[i] += Number(row.cost_nano);
  }
  const all = [...byName.entries()]
    .map(([label, values]) => ({ label, values, total: values.reduce((a, b) => a + b, 0) }))
    .sort((a, b) => b.total - a.total || a.label.localeCompare(b.label));
  const shown = all.slice(0, MAX_SERIES);
  const rest = all.slice(MAX_SERIES);
  if (rest.length) {
    shown.push({ label: `Other (${rest.length})`, values: buckets.map((_, i) => rest.reduce((a, r) => a + r.values[i], 0)) });
  }
  return shown.map((item, i) => ({ ...item, color: PALETTE[i % PALETTE.length] }));
}

function outlookCell(b) {
  if (b.outlook === "exhausted") return badge("exhausted", "Exhausted");
  if (b.outlook === "runs_out") return h("div", {}, badge("runs_out", "Runs out"), " ", when(b.runs_out_at));
  if (b.outlook === "lasts") return badge("lasts", b.period_end ? "Lasts the period" : "Lasts");
  if (b.outlook === "idle") return h("span", { class: "muted", text: "No spend yet" });
  return h("span", { class: "muted", text: "—" });
}

export function budgetColumns(withTeam) {
  return [
    withTeam && { label: "Team", cell: (b) => b.team_name || b.team_id },
    {
      label: "Budget",
      cell: (b) => h("div", {}, h("div", { class: "cell-title", text: b.name || b.budget_id }),
        h("div", { class: "cell-sub" }, PERIODS[b.period] || b.period,
          b.period_end ? [" · resets ", when(b.period_end)] : null)),
    },
    { label: "Limit", num: true, cell: (b) => usd(b.limit_nano) },
    { label: "Spent", num: true, cell: (b) => usd(b.spent_nano) },
    { label: "Reserved", num: true, cell: (b) => usd(b.reserved_nano) },
    { label: "Remaining", num: true, cell: (b) => usd(b.remaining_nano) },
    { label: "Used", cell: (b) => meter(b.utilisation, { label: `${b.name || b.budget_id} used` }) },
    { label: "Burn rate", num: true, cell: (b) => (b.burn_nano_per_day === null ? "—" : `${usd(b.burn_nano_per_day)}/day`) },
    { label: "Runs out", cell: outlookCell },
  ].filter(Boolean);
}

function requestColumns(withTeam) {
  return [
    { label: "Time", className: "nowrap", cell: (r) => when(r.started_at) },
    withTeam && { label: "Team", cell: (r) => r.team_name || r.team_id },
    { label: "Model", cell: (r) => h("span", { class: "mono", text: r.model }) },
    { label: "Kind", cell: (r) => r.kind },
    { label: "Endpoint", cell: (r) => h("span", { class: "mono", text: r.endpoint }) },
    { label: "Status", cell: (r) => badge(r.status) },
    { label: "Prompt", num: true, cell: (r) => int(r.prompt_tokens) },
    { label: "Completion", num: true, cell: (r) => int(r.completion_tokens) },
    { label: "Trained", num: true, cell: (r) => int(r.trained_tokens) },
    { label: "Cost", num: true, cell: (r) => usd(r.cost_nano) },
  ].filter(Boolean);
}

export function mountSpend(root, ctx, params) {
  const admin = ctx.caller.role === "admin";
  const team = admin ? params.get("team") || "" : "";
  const model = params.get("model") || "";
  const range = RANGES[params.get("range")] ? params.get("range") : "30d";
  const go = (changes) => {
    const next = new URLSearchParams(params);
    for (const [name, value] of Object.entries(changes)) {
      if (value) next.set(name, value);
      else next.delete(name);
    }
    ctx.navigate("spend", next);
  };

  const teamSelect = admin ? h("select", { id: "spend-team", onchange: (e) => go({ team: e.target.value }) },
    h("option", { value: "", text: "All teams" })) : null;
  const rangeSelect = h("select", { id: "spend-range", onchange: (e) => go({ range: e.target.value }) },
    Object.entries(RANGES).map(([value, r]) => h("option", { value, selected: value === range, text: r.label })));
  const status = h("p", { class: "status-line", role: "status" });
  const tiles = h("div", { class: "tiles" });
  const budgets = h("div", {}, h("p", { class: "muted", text: "Loading budgets…" }));
  const chart = h("div", {}, h("p", { class: "muted", text: "Loading spend…" }));
  const requests = h("div", {}, h("p", { class: "muted", text: "Loading requests…" }));

  clear(root).append(
    h("div", { class: "page-head" },
      h("h1", { text: "Spend" }),
      model ? h("span", { class: "chip" }, "Model: ", h("span", { class: "mono", text: model }),
        h("button", { type: "button", "aria-label": "Show every model", onclick: () => go({ model: "" }), text: "×" })) : null),
    h("div", { class: "card" }, h("div", { class: "form-row" },
      admin ? h("div", { class: "field" }, h("label", { for: "spend-team", text: "Team" }), teamSelect) : null,
      h("div", { class: "field" }, h("label", { for: "spend-range", text: "Range" }), rangeSelect),
      h("button", { type: "button", class: "button", onclick: () => poll.now(), text: "Refresh" })), status),
    tiles,
    card("Budgets this period", budgets),
    card("Spend over time by model and kind", chart),
    card("Last requests", requests));

  if (admin) {
    api("/admin/teams").then((teams) => {
      for (const t of teams.sort((a, b) => a.name.localeCompare(b.name))) {
        teamSelect.append(h("option", { value: t.id, selected: t.id === team, text: t.name }));
      }
    }).catch((err) => { status.textContent = err.message; });
  }

  async function refresh() {
    const { since, buckets } = rangeBuckets(range);
    const report = { group_by: "model,kind", granularity: RANGES[range].granularity, since, model };
    const spendPath = admin ? withQuery("/admin/reports/spend", { ...report, team }) : withQuery("/v1/farebox/spend", report);
    const scope = admin ? { team } : {};
    try {
      const [standing, spend, recent] = await Promise.all([
        api(withQuery("/console/api/standing", scope)),
        api(spendPath),
        api(withQuery("/console/api/requests", { ...scope, model, limit: 25 })),
      ]);
      const totals = spend.totals;
      clear(tiles).append(
        tile(`Spend, ${RANGES[range].span}`, usd(totals.cost_nano)),
        tile("Requests", int(totals.requests)),
        tile("Tokens", int(totals.tokens), `${int(totals.trained_tokens)} trained`),
        tile("Budgets", String(standing.budgets.length),
          `${standing.budgets.filter((b) => b.utilisation >= 0.8).length} at 80% or more`));
      clear(budgets).append(table({
        caption: "Budgets this period", columns: budgetColumns(admin && !team), rows: standing.budgets,
        empty: "No budgets: spending is not limited.", key: (b) => b.budget_id,
      }));
      const series = toSeries(spend.rows, buckets);
      clear(chart).append(series.length
        ? stackedBars({ title: `Spend by model and kind, ${RANGES[range].span}`, buckets, series })
        : h("p", { class: "empty", text: "No spend in this range." }));
      clear(requests).append(table({
        caption: "Last requests", columns: requestColumns(admin && !team), rows: recent.data,
        empty: "No requests yet.", key: (r) => r.request_id,
      }));
      status.className = "status-line";
      status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      status.className = "status-line bad";
      status.textContent = err.message;
    }
  }

  const poll = poller(refresh, REFRESH_MS);
  return { unmount: () => poll.stop() };
}
