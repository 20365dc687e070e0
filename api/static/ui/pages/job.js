// One job: its state, live training curves (the job's event log replayed from its start, then followed), and
// what its type has to show: metrics and confusion matrix, the error, a search's trials, an optimisation's
// comparison, a batch prediction's rows and output.

import { download, follow, get, post } from "../api.js";
import { heatmap, lineChart, scatterChart } from "../charts.js";
import { FINAL, confirmAction, fmtBytes, fmtDuration, fmtNumber, fmtTime, h, jobSeconds, notice, outdated,
  problemText, replace, statusBadge } from "../dom.js";

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-key": k }, v)]));
}

function metricsTable(metrics) {
  const scalars = Object.entries(metrics || {}).filter(([, v]) => typeof v === "number" || v === null);
  if (!scalars.length) return "";
  return h("table", { class: "table compact metrics" }, h("tbody", {},
    scalars.map(([k, v]) => h("tr", { "data-metric": k }, h("th", {}, k), h("td", {}, fmtNumber(v))))));
}

function errorBox(error) {
  if (!error) return "";
  return h("div", { class: "error-box", id: "job-error" },
    h("h3", {}, `Error: ${error.type}`), h("p", {}, error.message),
    (error.errors || []).length ? h("ul", {}, error.errors.map((e) =>
      h("li", {}, `${(e.loc || []).join(".")}: ${e.msg}`))) : "");
}

async function confusionMatrix(job, signal) {
  const matrix = job.result?.metrics?.confusion_matrix;
  if (!Array.isArray(matrix) || !job.result.version) return "";
  let classes = matrix.map((_, i) => i);
  try {
    const manifest = await get(`/v1/models/${encodeURIComponent(job.result.model)}/versions/${job.result.version}`,
      { signal });
    if (Array.isArray(manifest.classes)) classes = manifest.classes;
  } catch { /* the version may have been deleted since: label by index */ }
  return h("section", { class: "card" }, h("h2", {}, "Confusion matrix (test split)"), heatmap(matrix, classes));
}

// A search's progress event carries the trial that changed (`trial`), not the whole table (which the job record
// has): put that row in place of the one with its id, or add it.
function mergeProgress(shown, next) {
  if (!next) return shown;
  if (!next.trial) return shown?.trials && !next.trials ? { ...next, trials: shown.trials } : next;
  const rows = (shown?.trials || []).filter((t) => t.id !== next.trial.id);
  const at = (shown?.trials || []).findIndex((t) => t.id === next.trial.id);
  rows.splice(at < 0 ? rows.length : at, 0, next.trial);
  const { trial, ...rest } = next;
  return { ...rest, trials: rows };
}

function trialsSection(job) {
  const source = job.result?.trials ? job.result : (job.progress || {});
  const trials = source.trials || [];
  if (!trials.length) return "";
  const metric = source.metric || "score";
  const best = (job.result?.best || source.best || {}).trial;
  const table = h("table", { class: "table compact", id: "trials" }, h("thead", {}, h("tr", {},
    ["#", "algorithm", "params", "status", `${source.rank_by || ""} ${metric}`, "seconds"].map((c) => h("th", {}, c)))),
  h("tbody", {}, trials.map((t) => h("tr", { class: t.trial === best ? "best" : "" },
    h("td", {}, t.trial), h("td", {}, t.algorithm), h("td", { class: "mono" }, JSON.stringify(t.params || {})),
    h("td", {}, statusBadge(t.status || "queued")), h("td", {}, fmtNumber(t.score)),
    h("td", {}, t.duration_s == null ? "" : t.duration_s.toFixed(1))))));
  // One scatter plot per searched parameter: the metric against that parameter's values.
  const names = [...new Set(trials.flatMap((t) => Object.keys(t.params || {})))];
  const varied = names.filter((n) => new Set(trials.map((t) => JSON.stringify(t.params?.[n]))).size > 1);
  const charts = varied.map((name) => h("figure", { class: "small-chart" }, scatterChart(
    trials.filter((t) => t.score != null && t.params && name in t.params).map((t) => ({
      x: t.params[name], y: t.score, best: t.trial === best, label: `trial ${t.trial}: ${fmtNumber(t.score)}` })),
    { xLabel: name, yLabel: metric }), h("figcaption", {}, `${metric} vs ${name}`)));
  return h("section", { class: "card" }, h("h2", {}, `Trials (${source.trials_done ?? trials.length}/${trials.length})`),
    charts.length ? h("div", { class: "chart-row" }, charts) : "", table);
}

function comparisonSection(job) {
  const c = job.result?.comparison;
  if (!c) return "";
  const rows = [
    ["version", c.parent?.version, c.child?.version],
    ["artifact", fmtBytes(c.parent?.artifact_bytes), fmtBytes(c.child?.artifact_bytes)],
    ...Object.keys(c.parent?.latency_ms || {}).map((n) => [`latency, ${n} row(s) (ms)`,
      fmtNumber(c.parent.latency_ms[n]), fmtNumber(c.child?.latency_ms?.[n])]),
    ...Object.keys(c.parent?.model_latency_ms || {}).map((n) => [`model latency, ${n} row(s) (ms)`,
      fmtNumber(c.parent.model_latency_ms[n]), fmtNumber(c.child?.model_latency_ms?.[n])]),
    ...Object.keys(c.parent?.metrics || {}).filter((m) => typeof c.parent.metrics[m] === "number").map((m) =>
      [m, fmtNumber(c.parent.metrics[m]), fmtNumber(c.child?.metrics?.[m])]),
  ];
  return h("section", { class: "card" }, h("h2", {}, `Optimisation: ${job.result.method}`),
    h("table", { class: "table compact", id: "comparison" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "parent"), h("th", {}, "child"))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((v, i) => (i ? h("td", {}, v ?? "") : h("th", {}, v))))))),
    kv(Object.entries(c.ratios || {}).map(([k, v]) => [k, `${fmtNumber(v, 3)}×`])));
}

function batchSection(job) {
  if (job.type !== "batch_predict") return "";
  const p = job.progress || {};
  const r = job.result || {};
  const out = r.output;
  return h("section", { class: "card" }, h("h2", {}, "Batch prediction"), kv([
    ["rows done", `${fmtNumber(r.rows_scored ?? p.rows_done ?? 0)} / ${fmtNumber(r.rows ?? p.rows_total ?? 0)}`],
    ["rows failed", fmtNumber(r.rows_failed ?? p.rows_failed)],
    ["rate", p.rows_per_s ? `${fmtNumber(p.rows_per_s)} rows/s` : ""],
    ["eta", p.eta_s != null && !FINAL.includes(job.status) ? fmtDuration(p.eta_s) : ""],
    ["first error", r.first_error ? `row ${r.first_error.row}: ${r.first_error.error}` : ""],
  ]), out ? h("button", { class: "primary", id: "download-output", onclick: () =>
    download(out.url, out.filename).catch((err) => notice(problemText(err))) },
  `Download ${out.format} (${fmtBytes(out.size_bytes)})`) : "");
}

export async function jobPage(view, id, signal) {
  let job = await get(`/v1/jobs/${encodeURIComponent(id)}`, { signal });
  const points = new Map(); // epoch -> {loss, val_loss}
  const head = h("div", { class: "page-head" });
  const curve = h("section", { class: "card", id: "curves", hidden: true });
  const body = h("div", { class: "job-body" });
  replace(view, h("section", { class: "page job" }, head, curve, body));

  function drawCurve() {
    if (!points.size) return;
    const epochs = [...points.keys()].sort((a, b) => a - b);
    const series = ["loss", "val_loss"].map((name) => ({ name,
      points: epochs.filter((e) => points.get(e)[name] != null).map((e) => [e, points.get(e)[name]]) }));
    curve.hidden = false;
    replace(curve, h("h2", {}, "Training curves"),
      h("p", { class: "muted", id: "epochs" }, `${epochs.length} epoch(s)`
        + (job.progress?.epochs ? ` of ${job.progress.epochs}` : "")),
      lineChart(series.filter((se) => se.points.length), { xLabel: "epoch", yLabel: "loss" }));
  }

  function addPoint(progress) {
    if (!progress || progress.epoch == null || (progress.loss == null && progress.val_loss == null)) return false;
    points.set(progress.epoch, { loss: progress.loss, val_loss: progress.val_loss });
    return true;
  }

  function settle(answer) {
    if (!outdated(job, answer)) job = answer;
  }

  let renderedFinal = false;
  function renderHead() {
    const active = !FINAL.includes(job.status);
    replace(head, h("h1", {}, `${job.type} `, h("span", { class: "mono" }, job.id)), statusBadge(job.status),
      active ? h("button", { "data-action": "cancel", onclick: async () => {
        if (!(await confirmAction(`Cancel job ${job.id}?`, "Cancel job"))) return;
        try { settle(await post(`/v1/jobs/${encodeURIComponent(job.id)}/cancel`)); renderHead(); } catch (err) {
          notice(problemText(err));
        }
      } }, "Cancel") : "",
      kv([["model", job.model ? h("a", { href: `#/models/${encodeURIComponent(job.model)}` }, job.model) : ""],
        ["created", fmtTime(job.created_at)], ["started", fmtTime(job.started_at)],
        ["finished", fmtTime(job.finished_at)], ["duration", fmtDuration(jobSeconds(job))],
        ["attempts", job.attempts], ["progress", job.progress?.message || ""]]));
  }

  async function renderBody() {
    const final = FINAL.includes(job.status);
    if (final && renderedFinal) return;
    const r = job.result || {};
    const parts = [
      errorBox(job.error),
      r.version ? h("section", { class: "card" }, h("h2", {}, "Result"), kv([
        [job.type === "batch_predict" ? "scored with" : "registered",
          h("a", { href: `#/models/${encodeURIComponent(r.model)}/${r.version}` }, `${r.model} version ${r.version}`)],
        ["epochs run", r.epochs_run], ["duration", fmtDuration(r.duration_s)]]), metricsTable(r.metrics)) : "",
      job.type === "search" ? trialsSection(job) : "",
      comparisonSection(job),
      batchSection(job),
    ];
    if (final) {
      renderedFinal = true;
      parts.splice(2, 0, await confusionMatrix(job, signal));
    }
    replace(body, parts);
  }

  renderHead();
  await renderBody();
  // Replay the job's event log from its start ("0-0"): every epoch so far, then each new one as it comes.
  follow(`/v1/jobs/${encodeURIComponent(id)}/events`, { signal, from: "0-0", endsByItself: true,
    onEvent: async ({ data }) => {
      if (data.progress && addPoint(data.progress)) drawCurve();
      if (data.event === "snapshot") return;
      const before = job.status;
      if (data.links) {
        job = data; // the final event: the whole job, with its result or error
      } else {
        job = { ...job, status: data.status, progress: mergeProgress(job.progress, data.progress) };
        // A change of status (running, a requeue, cancel_requested) carries no timestamps: read the job again.
        if (data.event !== "progress") {
          settle(await get(`/v1/jobs/${encodeURIComponent(id)}`, { signal }).catch(() => job));
        }
      }
      // Progress rewrites one cell: rebuilding the header every epoch would swap the Cancel button under the pointer.
      const cell = head.querySelector('[data-key="progress"]');
      if (job.status !== before || data.event !== "progress" || !cell) renderHead();
      else cell.textContent = job.progress?.message || "";
      // A training's body changes only when it ends; a search's trials and a batch's rows change with progress.
      if (data.event !== "progress" || job.type !== "train") renderBody();
    } }).catch((err) => notice(problemText(err)));

  // A running job's duration ticks; everything else changes only with its events.
  const tick = setInterval(() => {
    const cell = head.querySelector('[data-key="duration"]');
    if (job.status === "running" && cell) cell.textContent = fmtDuration(jobSeconds(job));
  }, 1000);
  signal.addEventListener("abort", () => clearInterval(tick));
}
