// Models: every model with its latest version and aliases; a model's versions with their metrics side by side
// and promotion to an alias; a version's manifest, features, importances, dataset and artifact download.

import { download, get, put } from "../api.js";
import { barChart } from "../charts.js";
import { trafficPanel } from "./traffic.js";
import { confirmAction, fmtBytes, fmtNumber, fmtTime, h, notice, problemText, replace } from "../dom.js";
import { driftCard } from "./drift.js";

// An export (ONNX, TorchScript) is a file to download, never served: it says so wherever a version is shown.
function isExport(v) { return v.kind === "export" || (v.export && typeof v.export === "object"); }
function algorithmCell(v) {
  if (!isExport(v)) return v.algorithm || "";
  const fmt = v.export?.format || v.model_kind || "file";
  return h("span", {}, h("span", { class: "badge export", title: "a file to download; not served" }, `export · ${fmt}`),
    v.parent ? ` of v${v.parent}` : "");
}

const VERSIONS_PAGE = 25;

function aliasBadges(aliases, version) {
  return Object.entries(aliases).filter(([, v]) => version === undefined || v === version)
    .map(([name, v]) => h("span", { class: "alias", "data-alias": name }, version === undefined ? `${name} → v${v}` : name));
}

export async function modelsPage(view, signal) {
  const { items } = await get("/v1/models", { signal });
  replace(view, h("section", { class: "page models" }, h("div", { class: "page-head" }, h("h1", {}, "Models")),
    items.length ? h("table", { class: "table", id: "models-table" },
      h("thead", {}, h("tr", {}, ["model", "latest version", "aliases"].map((c) => h("th", {}, c)))),
      h("tbody", {}, items.map((m) => h("tr", { "data-model": m.name },
        h("td", {}, h("a", { href: `#/models/${encodeURIComponent(m.name)}` }, m.name)),
        h("td", {}, h("a", { href: `#/models/${encodeURIComponent(m.name)}/${m.latest_version}` }, `v${m.latest_version}`)),
        h("td", {}, aliasBadges(m.aliases))))))
      : h("p", { class: "muted" }, "No models yet: a training that succeeds registers one.")));
}

// The serving policy (PUT /v1/models/{name}/serving): the model's effective batching and queue cap, then each
// alias whose own settings differ.
function servingText(serving) {
  if (!serving) return "";
  const say = (p) => `batches of up to ${p.max_batch_size} rows held up to ${p.max_queue_delay_ms} ms, ` +
    (p.max_queued ? `at most ${p.max_queued} queued` : "no queue cap");
  const aliases = Object.keys(serving.aliases || {}).map((a) => `; ${a}: ${say(serving.effective[a])}`);
  return `Serving: ${say(serving.effective.model)}${aliases.join("")}`;
}

export async function modelPage(view, name, signal) {
  let model = await get(`/v1/models/${encodeURIComponent(name)}`, { signal });
  const versions = [...model.versions].reverse(); // newest first
  // The metrics every version has a number for, as columns; a search or optimise adds no columns of its own.
  const metricNames = [...new Set(versions.flatMap((v) => Object.entries(v.metrics || {})
    .filter(([, x]) => typeof x === "number").map(([k]) => k)))];
  const best = Object.fromEntries(metricNames.map((m) => {
    const values = versions.map((v) => v.metrics?.[m]).filter((x) => typeof x === "number");
    const lower = ["rmse", "mae", "log_loss"].includes(m);
    return [m, lower ? Math.min(...values) : Math.max(...values)];
  }));
  // Pattern attributes are compiled with the "v" flag, where a bare "-" at the end of a class is a syntax error.
  const aliasInput = h("input", { id: "alias-name", value: "production", list: "alias-names", size: 12,
    "aria-label": "alias", pattern: "[a-z0-9][a-z0-9._\\-]{0,62}" });
  const tbody = h("tbody");
  const more = h("button", { class: "more", hidden: true }, "Show more versions");
  let shown = 0;

  function row(v) {
    return h("tr", { "data-version": v.version },
      h("td", {}, h("a", { href: `#/models/${encodeURIComponent(name)}/${v.version}` }, `v${v.version}`)),
      h("td", { class: "aliases" }, aliasBadges(model.aliases, v.version)),
      h("td", {}, algorithmCell(v)),
      h("td", {}, fmtTime(v.created_at)),
      metricNames.map((m) => h("td", { class: v.metrics?.[m] === best[m] ? "num best" : "num" }, fmtNumber(v.metrics?.[m]))),
      h("td", {}, isExport(v) ? "" : h("button", { class: "small", "data-action": "promote",
        onclick: () => promote(v.version) }, "Promote")));
  }

  function showMore() {
    versions.slice(shown, shown + VERSIONS_PAGE).forEach((v) => tbody.append(row(v)));
    shown = Math.min(versions.length, shown + VERSIONS_PAGE);
    more.hidden = shown >= versions.length;
  }
  more.addEventListener("click", showMore);

  function redrawAliases() {
    for (const tr of tbody.querySelectorAll("tr")) {
      replace(tr.querySelector(".aliases"), aliasBadges(model.aliases, Number(tr.dataset.version)));
    }
    replace(document.getElementById("model-aliases"), aliasBadges(model.aliases));
  }

  async function promote(version) {
    const alias = aliasInput.value.trim();
    if (!aliasInput.checkValidity() || !alias) { notice("An alias is lower case letters, digits, '.', '_' or '-'."); return; }
    const now = model.aliases[alias];
    const text = `Point ${name}'s alias "${alias}" at version ${version}?`
      + (now ? ` It points at version ${now} now.` : " The alias is new.")
      + " Workers that serve this alias switch to it.";
    if (!(await confirmAction(text, "Promote"))) return;
    try {
      const summary = await put(`/v1/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}`,
        { version });
      model = { ...model, aliases: summary.aliases };
      notice("");
      redrawAliases();
    } catch (err) {
      notice(problemText(err));
    }
  }

  replace(view, h("section", { class: "page model" },
    h("div", { class: "page-head" }, h("h1", {}, name), h("span", { id: "model-aliases" }, aliasBadges(model.aliases)),
      h("a", { href: `#/jobs?model=${encodeURIComponent(name)}` }, "jobs of this model")),
    h("p", { class: "toolbar" }, h("label", { for: "alias-name" }, "Promote to alias "), aliasInput,
      h("datalist", { id: "alias-names" }, ["production", "staging", ...Object.keys(model.aliases)]
        .filter((a, i, all) => all.indexOf(a) === i).map((a) => h("option", { value: a }))),
      h("span", { class: "muted" }, ` ${versions.length} version(s); best value of each metric in bold`)),
    h("p", { class: "muted", id: "model-serving" }, servingText(model.serving)),
    h("div", { class: "scroll" }, h("table", { class: "table", id: "versions-table" },
      h("thead", {}, h("tr", {}, ["version", "aliases", "algorithm", "created"].map((c) => h("th", {}, c)),
        metricNames.map((c) => h("th", { class: "num" }, c)), h("th", {}))), tbody)), more,
    trafficPanel(name, signal)));
  showMore();
}

export async function versionPage(view, name, version, signal) {
  const m = await get(`/v1/models/${encodeURIComponent(name)}/versions/${version}`, { signal });
  const importance = m.feature_importance?.features || [];
  const kv = (pairs) => h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  replace(view, h("section", { class: "page version" },
    h("div", { class: "page-head" }, h("h1", {}, h("a", { href: `#/models/${encodeURIComponent(name)}` }, name),
      ` v${m.version}`), h("button", { class: "primary", id: "download-artifact", onclick: () =>
      download(`/v1/models/${encodeURIComponent(name)}/versions/${version}/artifact`, `${name}-v${version}.tar.gz`)
        .catch((err) => notice(problemText(err))) }, `Download artifact (${fmtBytes(m.artifact?.size_bytes)})`)),
    h("div", { class: "grid2" },
      h("section", { class: "card" }, h("h2", {}, "Manifest"), kv([
        ["algorithm", algorithmCell(m)], ["task", m.task], ["created", fmtTime(m.created_at)],
        ["job", m.job_id ? h("a", { href: `#/jobs/${encodeURIComponent(m.job_id)}` }, m.job_id) : ""],
        ["dataset", m.dataset?.id ? h("span", { class: "mono" }, m.dataset.id) : "(trained from a local file)"],
        ["dataset sha256", m.dataset?.sha256 ? h("span", { class: "mono" }, m.dataset.sha256.slice(0, 16) + "…") : ""],
        ["classes", (m.classes || []).join(", ")],
        ["parent", m.parent ? h("a", { href: `#/models/${encodeURIComponent(name)}/${m.parent}` }, `v${m.parent}`) : ""],
        ["artifact", m.artifact ? `${m.artifact.format}, ${fmtBytes(m.artifact.size_bytes)}` : ""],
        ["params", h("span", { class: "mono" }, JSON.stringify(m.params || {}))]]),
      h("h3", {}, "Metrics"), h("table", { class: "table compact" }, h("tbody", {},
        Object.entries(m.metrics || {}).filter(([, v]) => typeof v === "number")
          .map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, fmtNumber(v))))))),
      h("section", { class: "card" }, h("h2", {}, "Top feature importances"),
        importance.length ? [h("p", { class: "muted" }, `${m.feature_importance.method}: drop in `
          + `${m.feature_importance.metric} when a column is shuffled (test split)`),
        barChart(importance.slice(0, 10).map((f) => ({ name: f.name, value: f.importance })))]
          : h("p", { class: "muted" }, m.feature_importance?.skipped || "not recorded for this version"),
        h("h3", {}, `Features (${(m.features || []).length})`),
        h("table", { class: "table compact", id: "features" }, h("tbody", {}, (m.features || []).map((f) =>
          h("tr", {}, h("td", {}, typeof f === "string" ? f : f.name), h("td", { class: "muted" }, f.dtype || "")))))),
    ),
    driftCard(name, version, signal),
    m.onnx ? onnxCard(m) : null,
    h("details", {}, h("summary", {}, "Whole manifest (JSON)"), h("pre", {}, JSON.stringify(m, null, 2)))));
}

// An uploaded ONNX version (docs/models.md): its kind and source, and the graph's inputs and outputs as checked.
function onnxCard(m) {
  const spec = m.onnx;
  const shape = (s) => (s ? `[${s.map((d) => (d === null ? "?" : d)).join(", ")}]` : "");
  const tensors = (id, list) => h("table", { class: "table compact", id }, h("thead", {}, h("tr", {},
    ["name", "type", "shape"].map((c) => h("th", {}, c)))), h("tbody", {}, list.map((t) => h("tr", {},
    h("td", { class: "mono" }, t.name), h("td", {}, t.type), h("td", { class: "mono" }, shape(t.shape))))));
  const text = spec.text ? `column "${spec.text.column}", up to ${spec.text.max_length} tokens` : "";
  return h("section", { class: "card", id: "onnx" }, h("h2", {}, "Uploaded ONNX model"),
    h("dl", { class: "kv" }, [["kind", m.model_kind], ["layout", spec.layout], ["source", m.source?.file],
      ["producer", spec.producer], ["output", `${spec.output} (${spec.output_kind})`], ["text", text],
      ["opsets", Object.entries(spec.opsets || {}).map(([d, v]) => `${d} ${v}`).join(", ")]]
      .filter(([, v]) => v).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h3", {}, "Inputs"), tensors("onnx-inputs", spec.inputs || []),
    h("h3", {}, "Outputs"), tensors("onnx-outputs", spec.outputs || []));
}
