// Datasets: the tenant's uploads with their columns (dtype, missing, distinct values), upload by drag and drop or
// the file input, and a training form built from GET /v1/algorithms. The API validates the form's request exactly
// as any other: its 422 errors are shown beside the fields they name.

import { get, post, query, request } from "../api.js";
import { fmtBytes, fmtNumber, fmtTime, h, notice, problemText, replace } from "../dom.js";

const PAGE = 50;

function columnsTable(ds) {
  return h("table", { class: "table compact columns" },
    h("thead", {}, h("tr", {}, ["column", "dtype", "missing", "distinct"].map((c) => h("th", {}, c)))),
    h("tbody", {}, ds.columns.map((c) => h("tr", {}, h("td", {}, c.name), h("td", {}, c.dtype),
      h("td", { class: c.missing ? "num warn" : "num" }, fmtNumber(c.missing)),
      h("td", { class: "num" }, c.distinct == null ? "" : c.distinct >= 20 ? "20+" : c.distinct)))));
}

// One input per parameter of the schema; empty means "the default" and is left out of the request.
function paramField(name, spec) {
  const id = `param-${name}`;
  let input;
  if (spec.kind === "bool") {
    input = h("input", { type: "checkbox", id, name, checked: spec.default === true });
  } else if (spec.choices) {
    input = h("select", { id, name }, spec.choices.map((c) => h("option", { value: JSON.stringify(c),
      selected: c === spec.default }, c === null ? "(none)" : String(c))));
  } else if (spec.kind === "int_list") {
    input = h("input", { id, name, value: (spec.default || []).join(", "), placeholder: "64, 64" });
  } else {
    input = h("input", { type: "number", id, name, step: spec.kind === "int" ? 1 : "any",
      min: spec.minimum ?? undefined, max: spec.maximum ?? undefined,
      value: spec.default ?? "", placeholder: spec.default == null ? "none" : "" });
  }
  input.dataset.kind = spec.kind;
  // A select lists its choices already: its hint says the default instead, in the words the select shows.
  const allowed = spec.choices ? `default: ${spec.default === null ? "(none)" : String(spec.default)}` : spec.description;
  const hint = [spec.help, allowed].filter(Boolean).join(" · ");
  return h("label", { class: "field", "data-param": name, title: hint }, h("span", {}, name), input,
    h("small", { class: "muted hint" }, hint), h("small", { class: "field-error" }));
}

function paramValue(input) {
  const kind = input.dataset.kind;
  if (kind === "bool") return input.checked;
  if (input.tagName === "SELECT") return JSON.parse(input.value);
  const text = input.value.trim();
  if (text === "") return undefined;
  if (kind === "int_list") return text.split(/[\s,]+/).filter(Boolean).map(Number);
  return Number(text); // the API refuses a fraction where an integer is wanted, with its own message
}

export async function datasetsPage(view, signal) {
  const [algorithms] = await Promise.all([get("/v1/algorithms", { signal })]);
  const datasets = new Map();
  const tbody = h("tbody");
  const more = h("button", { class: "more", hidden: true }, "Load more");
  const status = h("p", { class: "muted", id: "upload-status", role: "status" });
  const fileInput = h("input", { type: "file", id: "upload-file", accept: ".csv,text/csv", hidden: true });
  let cursor = null;

  async function upload(file) {
    status.textContent = `Uploading ${file.name} (${fmtBytes(file.size)})…`;
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const ds = await request("POST", "/v1/datasets", form);
      status.textContent = `Uploaded ${ds.name}: ${fmtNumber(ds.rows)} rows, ${ds.columns.length} columns.`;
      addRow(ds, true);
      chooseDataset(ds.id);
    } catch (err) {
      status.textContent = `Upload refused: ${problemText(err)}`;
    }
  }

  const drop = h("div", { class: "dropzone", id: "dropzone", tabindex: 0,
    ondragover: (e) => { e.preventDefault(); drop.classList.add("over"); },
    ondragleave: () => drop.classList.remove("over"),
    ondrop: (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      [...e.dataTransfer.files].forEach(upload);
    },
    onclick: () => fileInput.click(),
    onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") fileInput.click(); },
  }, h("strong", {}, "Drop a CSV here"), " or ", h("span", { class: "linkish" }, "choose a file"), fileInput);
  fileInput.addEventListener("change", () => { [...fileInput.files].forEach(upload); fileInput.value = ""; });

  function addRow(ds, atTop = false) {
    if (datasets.has(ds.id)) return;
    datasets.set(ds.id, ds);
    const details = h("tr", { class: "details", hidden: true }, h("td", { colspan: 7 }, columnsTable(ds)));
    const tr = h("tr", { "data-dataset": ds.id },
      h("td", {}, h("button", { class: "link", "aria-expanded": "false", onclick: (e) => {
        details.hidden = !details.hidden;
        e.target.setAttribute("aria-expanded", String(!details.hidden));
      } }, ds.name)),
      h("td", { class: "num" }, fmtNumber(ds.rows)), h("td", { class: "num" }, ds.columns.length),
      h("td", { class: "num" }, fmtNumber(ds.columns.reduce((n, c) => n + (c.missing || 0), 0))),
      h("td", { class: "num" }, fmtBytes(ds.size_bytes)), h("td", {}, fmtTime(ds.created_at)),
      h("td", {}, h("button", { class: "small", onclick: () => chooseDataset(ds.id) }, "Train…")));
    if (atTop) tbody.prepend(tr, details); else tbody.append(tr, details);
    datasetSelect.append(h("option", { value: ds.id }, `${ds.name} (${ds.id})`));
  }

  // The training form.
  const datasetSelect = h("select", { id: "train-dataset", name: "dataset", required: true },
    h("option", { value: "" }, "choose a dataset"));
  const targetSelect = h("select", { id: "train-target", name: "target", required: true });
  const taskSelect = h("select", { id: "train-task", name: "task" },
    [["", "infer from the target"], ["classification", "classification"], ["regression", "regression"]]
      .map(([v, t]) => h("option", { value: v }, t)));
  const algorithmSelect = h("select", { id: "train-algorithm", name: "algorithm" },
    algorithms.items.map((a) => h("option", { value: a.name }, `${a.name} (${a.tasks.join(", ")})`)));
  const modelInput = h("input", { id: "train-model", name: "model", required: true, placeholder: "my-model",
    pattern: "[a-z0-9][a-z0-9._\\-]{0,62}" });
  const paramsBox = h("fieldset", { class: "params" });
  const formError = h("pre", { class: "error", id: "train-error" });

  function chooseDataset(id, focus = true) {
    datasetSelect.value = id;
    datasetSelect.dispatchEvent(new Event("change"));
    if (focus) modelInput.focus();
  }
  datasetSelect.addEventListener("change", () => {
    const ds = datasets.get(datasetSelect.value);
    replace(targetSelect, (ds?.columns || []).map((c) => h("option", { value: c.name }, `${c.name} (${c.dtype})`)));
    if (ds) targetSelect.value = ds.columns[ds.columns.length - 1].name; // the last column is the usual target
  });
  function drawParams() {
    const algo = algorithms.items.find((a) => a.name === algorithmSelect.value);
    replace(paramsBox, h("legend", {}, `${algo.name} parameters`),
      Object.entries(algo.params).map(([name, spec]) => paramField(name, spec)));
  }
  algorithmSelect.addEventListener("change", drawParams);

  const form = h("form", { class: "card train-form", id: "train-form", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    formError.textContent = "";
    form.querySelectorAll(".field-error").forEach((el) => { el.textContent = ""; });
    const params = {};
    for (const input of paramsBox.querySelectorAll("input, select")) {
      const value = paramValue(input);
      if (value !== undefined) params[input.name] = value;
    }
    const body = { model: modelInput.value.trim(), dataset: datasetSelect.value, target: targetSelect.value,
      algorithm: algorithmSelect.value, params };
    if (taskSelect.value) body.task = taskSelect.value;
    try {
      const job = await post("/v1/jobs/train", body);
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (err) {
      formError.textContent = problemText(err);
      for (const e2 of err.problem?.errors || []) {
        const [where, name] = e2.loc || [];
        const field = where === "params" ? paramsBox.querySelector(`[data-param="${CSS.escape(String(name))}"]`)
          : null;
        if (field) field.querySelector(".field-error").textContent = e2.msg;
      }
    }
  } },
  h("h2", {}, "Train a model"),
  h("div", { class: "form-grid" },
    h("label", { class: "field" }, h("span", {}, "dataset"), datasetSelect),
    h("label", { class: "field" }, h("span", {}, "model name"), modelInput),
    h("label", { class: "field" }, h("span", {}, "target column"), targetSelect),
    h("label", { class: "field" }, h("span", {}, "task"), taskSelect),
    h("label", { class: "field" }, h("span", {}, "algorithm"), algorithmSelect)),
  paramsBox, h("button", { class: "primary", type: "submit" }, "Start training"), formError);

  async function loadPage() {
    const page = await get(`/v1/datasets${query({ limit: PAGE, cursor })}`, { signal });
    page.items.forEach((ds) => addRow(ds));
    cursor = page.next_cursor;
    more.hidden = !cursor;
  }
  more.addEventListener("click", () => loadPage().catch((err) => notice(problemText(err))));

  replace(view, h("section", { class: "page datasets" }, h("div", { class: "page-head" }, h("h1", {}, "Datasets")),
    h("div", { class: "grid2" },
      h("div", {}, drop, status, h("div", { class: "scroll" }, h("table", { class: "table", id: "datasets-table" },
        h("thead", {}, h("tr", {}, ["name", "rows", "columns", "missing", "size", "uploaded", ""]
          .map((c) => h("th", {}, c)))), tbody)), more),
      form)));
  drawParams();
  await loadPage();
  if (!datasetSelect.value && datasets.size) chooseDataset(datasets.keys().next().value, false); // the newest
}
