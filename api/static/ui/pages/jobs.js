// Jobs: a live table of the tenant's jobs. The first page comes from GET /v1/jobs, later pages from its cursor;
// the tenant's event stream (GET /v1/events) updates rows in place and adds new jobs at the top, without reloads.

import { follow, get, post, query } from "../api.js";
import { FINAL, confirmAction, fmtDuration, fmtTime, h, jobSeconds, notice, outdated, problemText, replace,
  statusBadge } from "../dom.js";

const PAGE = 50;
const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled", "expired"];
const TYPES = ["", "train", "search", "optimize", "batch_predict", "predict"];

function select(name, values, value) {
  return h("select", { name, "aria-label": name },
    values.map((v) => h("option", { value: v, selected: v === value }, v || `any ${name}`)));
}

export async function jobsPage(view, signal) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const filters = { status: params.get("status") || "", type: params.get("type") || "",
    model: params.get("model") || "" };
  const rows = new Map(); // job id -> {job, tr}
  const tbody = h("tbody");
  const more = h("button", { class: "more", hidden: true }, "Load more");
  const empty = h("p", { class: "muted", hidden: true }, "No jobs yet. Upload a dataset and train a model.");
  let cursor = null;

  const form = h("form", { class: "filters", onchange: () => applyFilters(), onsubmit: (e) => {
    e.preventDefault(); applyFilters();
  } }, select("status", STATUSES, filters.status), select("type", TYPES, filters.type),
  h("input", { name: "model", placeholder: "model", value: filters.model, "aria-label": "model" }),
  h("button", { type: "submit" }, "Filter"));

  function applyFilters() {
    const data = new FormData(form);
    const q = query({ status: data.get("status"), type: data.get("type"), model: data.get("model").trim() });
    location.hash = `#/jobs${q}`;
  }

  replace(view, h("section", { class: "page jobs" },
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"), form),
    h("table", { class: "table", id: "jobs-table" }, h("thead", {}, h("tr", {},
      ["id", "status", "type", "model", "progress", "created", "duration", "attempts", "worker", ""]
        .map((c) => h("th", {}, c)))),
    tbody), empty, more));

  const matches = (job) => (!filters.status || job.status === filters.status)
    && (!filters.type || job.type === filters.type) && (!filters.model || job.model === filters.model);

  // A row is built once; updates rewrite its cells' contents, so a button under the pointer is not replaced by
  // every progress event (a click landing between two events would be lost).
  function render(job) {
    const tr = h("tr", { "data-job": job.id },
      h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id)),
      h("td", { class: "status-cell" }),
      h("td", {}, job.type),
      h("td", { class: "model", title: job.model || "" },
        job.model ? h("a", { href: `#/models/${encodeURIComponent(job.model)}` }, job.model) : ""),
      h("td", { class: "progress-td" }),
      h("td", {}, fmtTime(job.created_at)),
      h("td", { class: "duration" }),
      h("td", { class: "attempts" }),
      h("td", { class: "worker muted" }),
      h("td", { class: "actions" }));
    return tr;
  }

  function update(tr, job, before) {
    const message = job.progress?.message || (job.error ? job.error.message : "");
    const fraction = job.status === "succeeded" ? 1 : (job.progress?.fraction ?? 0);
    tr.dataset.status = job.status;
    const progress = tr.querySelector(".progress-td");
    progress.title = message;
    replace(progress, h("div", { class: "progress-cell" }, h("progress", { max: 1, value: fraction }),
      h("span", { class: "muted" }, message)));
    tr.querySelector(".duration").textContent = fmtDuration(jobSeconds(job));
    tr.querySelector(".attempts").textContent = job.attempts;
    tr.querySelector(".worker").textContent = job.worker || "";
    tr.querySelector(".worker").title = job.worker || "";
    if (before && before.status === job.status) return;
    replace(tr.querySelector(".status-cell"), statusBadge(job.status));
    const active = !FINAL.includes(job.status) && job.type !== "predict";
    replace(tr.querySelector(".actions"), active ? h("button", { class: "small", "data-action": "cancel",
      onclick: () => cancelJob(rows.get(job.id).job) }, "Cancel") : "");
  }

  function put(job, { atTop = false } = {}) {
    const known = rows.get(job.id);
    if (known && outdated(known.job, job)) return;
    const tr = known ? known.tr : render(job);
    update(tr, job, known?.job);
    if (!known) {
      if (atTop) tbody.prepend(tr); else tbody.append(tr);
    }
    rows.set(job.id, { job, tr });
    empty.hidden = rows.size > 0;
  }

  async function cancelJob(job) {
    if (!(await confirmAction(`Cancel ${job.type} job ${job.id}${job.model ? ` (${job.model})` : ""}?`,
      "Cancel job"))) return;
    try {
      put(await post(`/v1/jobs/${encodeURIComponent(job.id)}/cancel`));
    } catch (err) {
      notice(problemText(err));
    }
  }

  async function loadPage() {
    const page = await get(`/v1/jobs${query({ ...filters, limit: PAGE, cursor })}`, { signal });
    page.items.forEach((job) => { if (!rows.has(job.id)) put(job); });
    cursor = page.next_cursor;
    more.hidden = !cursor;
    empty.hidden = rows.size > 0;
  }
  more.addEventListener("click", () => loadPage().catch((err) => notice(problemText(err))));

  // An event carries status and progress, applied at once; the timestamps and attempts come with the job itself,
  // so a change of status also re-reads the job (one GET). A change while a read is on its way reads once more
  // after it: that read may have left before the change (a cancel lands within milliseconds of cancel_requested).
  const refetching = new Map(); // job id -> whether another read is due when the one on its way is back
  async function refetch(id, atTop) {
    if (refetching.has(id)) {
      refetching.set(id, true);
      return;
    }
    try {
      do {
        refetching.set(id, false);
        const job = await get(`/v1/jobs/${encodeURIComponent(id)}`, { signal });
        if (matches(job) || rows.has(job.id)) put(job, { atTop });
      } while (refetching.get(id));
    } catch { /* gone or aborted: the next event or a reload shows it */ } finally {
      refetching.delete(id);
    }
  }
  function onEvent({ data }) {
    const known = rows.get(data.id);
    if (known) put({ ...known.job, status: data.status, progress: data.progress ?? known.job.progress });
    if (data.event !== "progress" && (known || matches(data))) refetch(data.id, !known);
  }

  // Open the stream first and list once it is open: an event that happens while the list loads is not lost.
  let pending = [];
  let listed = false;
  const opened = new Promise((resolve) => {
    follow("/v1/events", { signal, onOpen: resolve, onEvent: (ev) => (listed ? onEvent(ev) : pending.push(ev)) })
      .catch((err) => notice(problemText(err)));
    // A stream refused for now (429: too many open) must not hide the list; it keeps retrying on its own.
    setTimeout(resolve, 5000);
  });
  await opened;
  await loadPage();
  listed = true;
  pending.forEach(onEvent);
  pending = [];

  const tick = setInterval(() => {
    for (const { job, tr } of rows.values()) {
      if (job.status === "running") tr.querySelector(".duration").textContent = fmtDuration(jobSeconds(job));
    }
  }, 1000);
  signal.addEventListener("abort", () => clearInterval(tick));
}
