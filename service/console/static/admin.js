// Admin: teams ranked by spend, budgets near their limit, recent alerts and the reconciliation status.

import { api, withQuery } from "./api.js";
import { badge, card, clear, h, int, meter, poller, table, tile, usd, when } from "./dom.js";
import { budgetColumns } from "./spend.js";

const REFRESH_MS = 30000;
const NEAR = 0.8;

function thisMonth(now = new Date()) {
  return `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
}

// Every team with its spend this month, the biggest spender first; teams without spend at the end.
export function rankTeams(teams, rows) {
  const spend = new Map(rows.map((r) => [r.team_id, r]));
  return teams
    .map((t) => {
      const r = spend.get(t.id) || {};
      return { id: t.id, name: t.name, cost_nano: Number(r.cost_nano || 0), requests: r.requests || 0, tokens: r.tokens || 0 };
    })
    .sort((a, b) => b.cost_nano - a.cost_nano || a.name.localeCompare(b.name));
}

export function nearLimit(budgets) {
  return budgets
    .filter((b) => b.utilisation >= NEAR || b.outlook === "exhausted" || b.outlook === "runs_out")
    .sort((a, b) => b.utilisation - a.utilisation);
}

function reconSummary(rec) {
  if (!rec) return h("span", { class: "muted", text: "Not checked yet" });
  if (!rec.budgets.length) return badge("idle", "No budgets to check");
  return rec.mismatches
    ? badge("mismatch", `${rec.mismatches} of ${rec.budgets.length} budgets differ`)
    : badge("ok", `All ${rec.budgets.length} budgets match the ledger`);
}

export function mountAdmin(root, ctx) {
  const status = h("p", { class: "status-line", role: "status" });
  const tiles = h("div", { class: "tiles" });
  const ranking = h("div", {}, h("p", { class: "muted", text: "Loading teams…" }));
  const near = h("div", {}, h("p", { class: "muted", text: "Loading budgets…" }));
  const alerts = h("div", {}, h("p", { class: "muted", text: "Loading alerts…" }));
  const recon = h("div", {}, h("p", { class: "muted", text: "Reconciling…" }));
  const reconButton = h("button", { type: "button", class: "button small", text: "Reconcile now" });
  let reconciliation = null;
  let snapshot = null;

  const reconCard = card("Reconciliation", recon);
  reconCard.querySelector(".card-head").append(h("span", { class: "spacer" }), reconButton);
  clear(root).append(
    h("div", { class: "page-head" }, h("h1", { text: "Admin" }),
      h("span", { class: "muted", text: `Every team, this month (UTC ${thisMonth()})` })),
    tiles,
    card("Teams ranked by spend", ranking),
    h("div", { class: "grid2" }, card("Budgets near their limit", near), card("Recent alerts", alerts)),
    reconCard,
    status);

  function drawTiles() {
    if (!snapshot) return;
    const { ranked, standing } = snapshot;
    const total = ranked.reduce((sum, t) => sum + t.cost_nano, 0);
    clear(tiles).append(
      tile("Teams", String(ranked.length)),
      tile("Spend this month", usd(total)),
      tile("Budgets near their limit", String(nearLimit(standing.budgets).length), `of ${standing.budgets.length} budgets`),
      tile("Reconciliation", reconSummary(reconciliation),
        reconciliation ? ["checked ", when(reconciliation.at, { clock: true })] : null));
  }

  function drawRecon() {
    const rec = reconciliation;
    const names = snapshot ? snapshot.names : new Map();
    const lines = [...rec.budgets].sort((a, b) => (a.status === b.status ? 0 : a.status === "mismatch" ? -1 : 1));
    clear(recon).append(
      h("p", {}, reconSummary(rec), " ", h("span", { class: "muted" },
        "at ", when(rec.at), ` · ${int(rec.drained)} pending charges written to the ledger first`)),
      table({
        caption: "Budget counters against the ledger",
        columns: [
          { label: "Team", cell: (b) => names.get(b.team_id) || b.team_id },
          { label: "Budget", cell: (b) => b.name || b.budget_id },
          { label: "Period", cell: (b) => b.period },
          { label: "Counter", num: true, cell: (b) => usd(b.counter_nano) },
          { label: "Ledger", num: true, cell: (b) => usd(b.ledger_nano) },
          { label: "Difference", num: true, cell: (b) => usd(b.difference_nano) },
          { label: "Status", cell: (b) => badge(b.status) },
        ],
        rows: lines,
        empty: "No budgets to reconcile.",
      }));
    drawTiles();
  }

  async function reconcile() {
    reconButton.disabled = true;
    try {
      reconciliation = await api("/admin/reports/reconciliation");
      drawRecon();
    } catch (err) {
      clear(recon).append(h("p", { class: "error", text: err.message }));
    } finally {
      reconButton.disabled = false;
    }
  }
  reconButton.addEventListener("click", reconcile);

  async function refresh() {
    try {
      const [teams, spend, standing, sent] = await Promise.all([
        api("/admin/teams"),
        api(withQuery("/admin/reports/spend", { group_by: "team", granularity: "none", since: thisMonth() })),
        api("/console/api/standing"),
        api(withQuery("/admin/alerts", { limit: 20 })),
      ]);
      const names = new Map(teams.map((t) => [t.id, t.name]));
      const budgetNames = new Map(standing.budgets.map((b) => [b.budget_id, b.name || b.budget_id]));
      const ranked = rankTeams(teams, spend.rows);
      const total = ranked.reduce((sum, t) => sum + t.cost_nano, 0);
      snapshot = { ranked, standing, names };
      clear(ranking).append(table({
        caption: "Teams ranked by spend this month",
        columns: [
          { label: "#", cell: (t) => String(ranked.indexOf(t) + 1) },
          { label: "Team", cell: (t) => h("a", { href: `#/spend?${new URLSearchParams({ team: t.id })}`, text: t.name }) },
          { label: "Requests", num: true, cell: (t) => int(t.requests) },
          { label: "Tokens", num: true, cell: (t) => int(t.tokens) },
          { label: "Spend", num: true, cell: (t) => usd(t.cost_nano) },
          { label: "Share", cell: (t) => meter(total ? t.cost_nano / total : 0, { tone: "ok", label: `${t.name} share of spend` }) },
        ],
        rows: ranked,
        empty: "No teams yet.",
        key: (t) => t.id,
      }));
      clear(near).append(table({
        caption: "Budgets near their limit",
        columns: budgetColumns(true).filter((c) => !["Reserved", "Limit"].includes(c.label)),
        rows: nearLimit(standing.budgets),
        empty: "No budget is near its limit or on course to run out this period.",
        key: (b) => b.budget_id,
      }));
      clear(alerts).append(table({
        caption: "Recent alerts",
        columns: [
          { label: "Time", className: "nowrap", cell: (a) => when(a.created_at) },
          { label: "Team", cell: (a) => names.get(a.team_id) || a.team_id },
          { label: "Budget", cell: (a) => budgetNames.get(a.budget_id) || a.budget_id },
          { label: "Crossed", num: true, cell: (a) => `${a.threshold}%` },
          { label: "Spent / limit", num: true, cell: (a) => `${usd(a.spent_nano)} / ${usd(a.limit_nano)}` },
          { label: "Delivery", cell: (a) => h("span", { title: a.last_error || "" }, badge(a.status, null), a.attempts > 1 ? ` ×${a.attempts}` : "") },
        ],
        rows: (sent && sent.data) || [],
        empty: "No alerts sent.",
        key: (a) => String(a.id),
      }));
      drawTiles();
      if (reconciliation) drawRecon();
      status.className = "status-line";
      status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      status.className = "status-line bad";
      status.textContent = err.message;
    }
  }

  const poll = poller(refresh, REFRESH_MS);
  reconcile();
  return { unmount: () => poll.stop() };
}
