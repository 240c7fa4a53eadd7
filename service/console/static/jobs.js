// Fine-tuning: start a job, then follow every job live (status, progress events, estimate beside charge).

import { api, withQuery } from "./api.js";
import { badge, card, clear, h, int, meter, pct, poller, usd, when } from "./dom.js";

const POLL_MS = 2000;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const MODELS = [
  "gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "gpt-4.1-mini-2025-04-14", "gpt-4.1-2025-04-14", "gpt-3.5-turbo-0125",
];

// The newest metrics event's step/total_steps, if training has reported any.
function progressOf(events) {
  for (const event of events) {
    const data = event.data || {};
    if (Number.isFinite(data.step) && Number.isFinite(data.total_steps) && data.total_steps > 0) {
      return { ratio: data.step / data.total_steps, step: data.step, total: data.total_steps };
    }
  }
  return null;
}

// What one row shows: Farebox's record, overlaid with the live job while Farebox has not settled it.
function view(record, live, events, admin) {
  const status = (live && live.status) || record.status;
  const settled = Boolean(record.settled_at);
  const newest = events.length ? events[0] : null;
  let error = live && live.error && live.error.message ? live.error.message : null;
  if (!error && status === "failed") {
    const failed = events.find((e) => e.level === "error");
    error = failed ? failed.message : null;
  }
  return {
    id: record.id,
    admin,
    team: record.team_name || record.team_id,
    team_id: record.team_id,
    created_at: record.created_at,
    model: record.model,
    base_model: record.base_model,
    fine_tuned_model: (live && live.fine_tuned_model) || record.fine_tuned_model,
    status,
    settled,
    progress: progressOf(events),
    message: error || (newest ? newest.message : null),
    estimate_nano: record.estimate_nano,
    estimated_tokens: record.estimated_tokens,
    n_epochs: record.n_epochs,
    cost_nano: record.cost_nano,
    trained_tokens: record.trained_tokens,
    inference_nano: record.inference_nano,
    inference_requests: record.inference_requests,
  };
}

function progressCell(v) {
  let bar;
  if (v.status === "succeeded") bar = meter(1, { tone: "ok", label: `Job ${v.id} progress` });
  else if (v.progress) bar = meter(v.progress.ratio, { tone: v.status === "failed" ? "bad" : "", label: `Job ${v.id} progress` });
  else bar = TERMINAL.has(v.status) ? null : meter(0, { label: `Job ${v.id} progress` });
  const note = v.progress && !TERMINAL.has(v.status) ? `Step ${v.progress.step} of ${v.progress.total}` : v.message;
  return h("div", {}, bar, note ? h("div", { class: "progress-msg", text: note }) : null);
}

// How the charge compares with the estimate reserved at creation (display only, so a float is fine).
function versusEstimate(cost, estimate) {
  if (!estimate) return "";
  if (cost === estimate) return "as estimated";
  const off = Math.abs(cost - estimate) / estimate;
  const amount = off < 0.001 ? "<0.1%" : pct(off);
  return `${amount} ${cost < estimate ? "under" : "over"} estimate`;
}

function chargeCell(v) {
  if (v.cost_nano !== null && v.cost_nano !== undefined) {
    return h("div", { "data-charge": String(v.cost_nano) }, h("div", { text: usd(v.cost_nano) }),
      h("div", { class: "cell-sub", text: `${int(v.trained_tokens)} tokens trained` }),
      h("div", { class: "cell-sub", text: versusEstimate(v.cost_nano, v.estimate_nano) }));
  }
  const label = TERMINAL.has(v.status) ? "settling…" : "when it ends";
  return h("span", { class: "muted", text: label });
}

function modelCell(v) {
  return h("div", {},
    h("div", { class: "mono", text: v.model }),
    v.fine_tuned_model
      ? h("div", { class: "cell-sub" }, "→ ", h("span", { class: "mono", "data-role": "fine-tuned-model", text: v.fine_tuned_model }))
      : null);
}

function inferenceCell(v) {
  if (!v.fine_tuned_model) return h("span", { class: "muted", text: "—" });
  const params = new URLSearchParams({ model: v.fine_tuned_model });
  if (v.admin) params.set("team", v.team_id);
  return h("a", { href: `#/spend?${params}`, "aria-label": `Inference spend of ${v.fine_tuned_model}` },
    usd(v.inference_nano), h("span", { class: "cell-sub", text: ` · ${int(v.inference_requests)} req.` }));
}

function renderRow(v, expanded, actions) {
  return h("tr", { "data-job-id": v.id },
    v.admin ? h("td", {}, v.team) : null,
    h("td", {}, h("div", { class: "mono cell-title", text: v.id }), h("div", { class: "cell-sub" }, when(v.created_at))),
    h("td", {}, modelCell(v)),
    h("td", { "data-role": "status" }, badge(v.status)),
    h("td", {}, progressCell(v)),
    h("td", { class: "num", "data-role": "estimate" }, h("div", { text: usd(v.estimate_nano) }),
      h("div", { class: "cell-sub", text: `${int(v.estimated_tokens)} tokens · ${v.n_epochs ?? "auto"} ep.` })),
    h("td", { class: "num", "data-role": "charge" }, chargeCell(v)),
    h("td", { class: "num" }, inferenceCell(v)),
    v.admin ? null : h("td", { class: "nowrap" },
      h("button", {
        type: "button", class: "button small", "data-action": "events", "aria-expanded": expanded ? "true" : "false",
        "aria-controls": `events-${v.id}`, onclick: () => actions.toggle(v.id), text: expanded ? "Hide events" : "Events",
      }),
      TERMINAL.has(v.status) ? null : [" ", h("button", {
        type: "button", class: "button small", "data-action": "cancel", onclick: () => actions.cancel(v.id), text: "Cancel",
      })]));
}

function renderEvents(id, events, columns) {
  const list = events.length
    ? h("ul", { class: "events", "aria-label": `Events of ${id}, newest first` }, events.map((e) => h("li", {},
      when(e.created_at, { clock: true }), h("span", { class: `lvl-${e.level}`, text: e.level }), h("span", { text: e.message }))))
    : h("p", { class: "muted", text: "No events yet." });
  return h("tr", { class: "detail", id: `events-${id}` }, h("td", { colspan: String(columns) }, list));
}

function createForm(status, onCreated) {
  const fileSelect = h("select", { id: "job-file", required: true }, h("option", { value: "", text: "Loading files…" }));
  const modelInput = h("input", { id: "job-model", list: "job-models", value: MODELS[0], required: true, spellcheck: "false" });
  const epochs = h("input", { id: "job-epochs", type: "number", min: "1", max: "50", placeholder: "auto", inputmode: "numeric" });
  const suffix = h("input", { id: "job-suffix", maxlength: "64", placeholder: "optional", spellcheck: "false" });
  const upload = h("input", { id: "upload-file", type: "file", accept: ".jsonl,application/jsonl,application/json" });
  const estimate = h("p", { class: "status-line", id: "job-estimate", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "button primary", id: "job-start", text: "Start job" });

  async function loadFiles(select) {
    const files = (await api("/v1/files")).data.filter((f) => f.purpose === "fine-tune");
    clear(fileSelect).append(...(files.length
      ? files.map((f) => h("option", { value: f.id, selected: f.id === select, text: `${f.filename || f.id} (${f.id})` }))
      : [h("option", { value: "", text: "No training files yet: upload one" })]));
    await showEstimate();
  }

  let asked = 0;
  async function showEstimate() {
    const file = fileSelect.value;
    const model = modelInput.value.trim();
    const ticket = ++asked;
    if (!file || !model) {
      estimate.textContent = "";
      return;
    }
    try {
      const est = await api(withQuery(`/v1/files/${encodeURIComponent(file)}/estimate`, { model, n_epochs: epochs.value || "auto" }));
      if (ticket !== asked) return;
      estimate.className = "status-line";
      estimate.textContent = `Estimate: ${usd(est.cost_nano)} for ${int(est.trained_tokens)} tokens `
        + `(${int(est.tokens_per_epoch)} × ${est.n_epochs} epochs${est.n_epochs_auto ? ", auto" : ""}); `
        + "Farebox reserves this from your budgets when the job starts.";
    } catch (err) {
      if (ticket !== asked) return;
      estimate.className = "status-line bad";
      estimate.textContent = err.message;
    }
  }

  async function onUpload() {
    const file = upload.files && upload.files[0];
    if (!file) {
      status.className = "status-line bad";
      status.textContent = "Choose a JSONL file to upload.";
      return;
    }
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", file, file.name);
    status.className = "status-line";
    status.textContent = `Uploading ${file.name}…`;
    try {
      const created = await api("/v1/files", { method: "POST", form });
      status.className = "status-line good";
      status.textContent = `Uploaded ${file.name} as ${created.id}.`;
      upload.value = "";
      await loadFiles(created.id);
    } catch (err) {
      status.className = "status-line bad";
      status.textContent = err.message;
    }
  }

  async function onSubmit(event) {
    event.preventDefault();
    const body = { model: modelInput.value.trim(), training_file: fileSelect.value };
    if (epochs.value) body.hyperparameters = { n_epochs: Number(epochs.value) };
    if (suffix.value.trim()) body.suffix = suffix.value.trim();
    submit.disabled = true;
    status.className = "status-line";
    status.textContent = "Starting the job…";
    try {
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: body });
      status.className = "status-line good";
      status.textContent = `Started ${job.id}.`;
      onCreated(job);
    } catch (err) {
      status.className = "status-line bad";
      status.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  }

  for (const input of [fileSelect, modelInput, epochs]) input.addEventListener("change", showEstimate);
  const form = h("form", { id: "job-form", onsubmit: onSubmit, "aria-label": "New fine-tuning job" },
    h("div", { class: "form-row" },
      h("div", { class: "field wide" }, h("label", { for: "job-file", text: "Training file" }), fileSelect),
      h("div", { class: "field" }, h("label", { for: "job-model", text: "Base model" }), modelInput,
        h("datalist", { id: "job-models" }, MODELS.map((m) => h("option", { value: m })))),
      h("div", { class: "field" }, h("label", { for: "job-epochs", text: "Epochs" }), epochs),
      h("div", { class: "field" }, h("label", { for: "job-suffix", text: "Suffix" }), suffix),
      submit),
    estimate);
  const uploader = h("div", { class: "form-row" },
    h("div", { class: "field" }, h("label", { for: "upload-file", text: "Upload a training file (JSONL)" }), upload),
    h("button", { type: "button", class: "button", id: "upload-start", onclick: onUpload, text: "Upload" }));
  return { element: h("div", { class: "stack" }, uploader, form), loadFiles };
}

export function mountJobs(root, ctx) {
  const admin = ctx.caller.role === "admin";
  const status = h("p", { class: "status-line", role: "status", id: "jobs-status" });
  const columns = [admin && "Team", "Job", "Model", "Status", "Progress", "Estimate", "Charged", "Inference", !admin && "Actions"]
    .filter(Boolean);
  const body = h("tbody", { id: "jobs-body" });
  const jobsTable = h("div", { class: "table-wrap" }, h("table", { id: "jobs-table" },
    h("caption", { class: "sr-only", text: "Fine-tuning jobs" }),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {
      scope: "col", class: ["Estimate", "Charged", "Inference"].includes(c) ? "num" : null, text: c,
    })))),
    body));

  const rows = new Map(); // job id -> {row, detail, signature}
  const live = new Map(); // job id -> the upstream's job while Farebox has not settled it
  const events = new Map(); // job id -> events, newest first
  const final = new Set(); // jobs whose events can no longer change
  const expanded = new Set();
  let poll = null;

  const actions = {
    toggle(id) {
      if (expanded.has(id)) expanded.delete(id);
      else expanded.add(id);
      poll.now();
      render(lastRecords);
    },
    async cancel(id) {
      if (!window.confirm(`Cancel ${id}? Farebox charges what was trained so far.`)) return;
      try {
        await api(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST", json: {} });
        poll.now();
      } catch (err) {
        status.className = "status-line bad";
        status.textContent = err.message;
      }
    },
  };

  let lastRecords = [];
  function render(records) {
    lastRecords = records;
    if (!records.length) {
      rows.clear();
      clear(body).append(h("tr", {}, h("td", { class: "empty", colspan: String(columns.length),
        text: admin ? "No team has started a fine-tuning job yet." : "No fine-tuning jobs yet: start one above." })));
      return;
    }
    const focused = document.activeElement;
    const focusJob = focused && focused.closest ? focused.closest("tr[data-job-id]") : null;
    const focusAction = focused && focused.getAttribute ? focused.getAttribute("data-action") : null;
    const wanted = [];
    for (const record of records) {
      const v = view(record, live.get(record.id), events.get(record.id) || [], admin);
      const open = expanded.has(record.id);
      const signature = JSON.stringify([v, open, open ? events.get(record.id) : null]);
      let entry = rows.get(record.id);
      if (!entry || entry.signature !== signature) {
        const row = renderRow(v, open, actions);
        const detail = open ? renderEvents(record.id, events.get(record.id) || [], columns.length) : null;
        if (entry) {
          entry.row.replaceWith(row);
          if (entry.detail) entry.detail.remove();
        }
        entry = { row, detail, signature };
        rows.set(record.id, entry);
        if (focusJob && focusJob.getAttribute("data-job-id") === record.id && focusAction) {
          const again = row.querySelector(`[data-action="${focusAction}"]`);
          if (again) queueMicrotask(() => again.focus());
        }
      }
      wanted.push(entry.row);
      if (entry.detail) wanted.push(entry.detail);
    }
    const ids = new Set(records.map((r) => r.id));
    for (const id of [...rows.keys()]) if (!ids.has(id)) rows.delete(id);
    const current = [...body.children];
    if (current.length !== wanted.length || current.some((el, i) => el !== wanted[i])) {
      body.replaceChildren(...wanted);
    }
  }

  async function follow(record) {
    const id = encodeURIComponent(record.id);
    const unsettled = !record.settled_at;
    const tasks = [];
    if (unsettled) {
      // Retrieving an ended job also makes Farebox settle it now rather than at its next poll.
      tasks.push(api(`/v1/fine_tuning/jobs/${id}`).then((job) => live.set(record.id, job)));
    } else {
      live.delete(record.id);
    }
    const wantEvents = unsettled || (expanded.has(record.id) && !final.has(record.id))
      || (record.status === "failed" && !events.has(record.id)); // the reason it failed
    if (wantEvents) {
      tasks.push(api(withQuery(`/v1/fine_tuning/jobs/${id}/events`, { limit: 100 })).then((page) => {
        events.set(record.id, page.data);
        if (!unsettled) final.add(record.id);
      }));
    }
    await Promise.all(tasks);
  }

  async function refresh() {
    try {
      const records = (await api(withQuery("/console/api/jobs", { limit: 100 }))).data;
      if (!admin) await Promise.all(records.map((r) => follow(r).catch(() => {})));
      render(records);
      status.className = "status-line";
      const active = records.filter((r) => !r.settled_at).length;
      status.textContent = `${records.length} job${records.length === 1 ? "" : "s"}, ${active} open · updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      status.className = "status-line bad";
      status.textContent = err.message;
    }
  }

  const parts = [h("div", { class: "page-head" }, h("h1", { text: "Fine-tuning" }),
    h("span", { class: "muted", text: admin ? "Every team's jobs as Farebox records them" : "Status updates live every 2 s" }))];
  let form = null;
  if (!admin) {
    const formStatus = h("p", { class: "status-line", role: "status", id: "job-form-status" });
    form = createForm(formStatus, () => poll.now());
    parts.push(card("New fine-tuning job", form.element, formStatus));
  }
  parts.push(card("Jobs", jobsTable, status));
  clear(root).append(...parts);
  if (form) form.loadFiles().catch((err) => { status.textContent = err.message; });
  poll = poller(refresh, POLL_MS);
  return { unmount: () => poll.stop() };
}
