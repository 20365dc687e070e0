// A version's drift card: PSI of each feature and of the predictions over the last hour, as bars coloured by
// level (none < 0.1 ≤ moderate < 0.25 ≤ major), with major drift flagged above the chart. Loaded on its own
// after the version page: a version without a reference, or no live rows yet, says so instead.

import { get } from "../api.js";
import { fmtNumber, h, problemText, replace } from "../dom.js";

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(document.createTextNode(String(c)));
  return el;
}

function psiBars(items, { width = 560, bar = 16 } = {}) {
  const left = 170; const right = 90;
  const height = items.length * (bar + 6) + 8;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart bars drift", role: "img",
    "aria-label": "population stability index per feature" });
  // The scale runs to 0.5 (twice the "major" threshold), so both thresholds stay readable; a larger PSI fills it.
  const max = 0.5;
  items.forEach((it, i) => {
    const y = 4 + i * (bar + 6);
    const w = (Math.min(it.psi ?? 0, max) / max) * (width - left - right);
    svg.append(s("text", { x: left - 6, y: y + bar - 4, class: "tick", "text-anchor": "end" }, it.name.slice(0, 24)));
    svg.append(s("rect", { x: left, y, width: Math.max(1, w), height: bar,
      class: `bar level-${it.level ?? "none"}`, "data-feature": it.name, "data-level": it.level ?? "" }));
    svg.append(s("text", { x: left + w + 4, y: y + bar - 4, class: "tick" },
      it.psi === null ? "no data" : `${fmtNumber(it.psi, 3)} ${it.level}`));
  });
  for (const t of [0.1, 0.25]) {
    const x = left + (t / max) * (width - left - right);
    svg.append(s("line", { x1: x, x2: x, y1: 0, y2: height, class: "threshold" }));
  }
  return svg;
}

export function driftCard(name, version, signal) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const card = h("section", { class: "card", id: "drift" }, h("h2", {}, "Drift (last hour)"), body);
  get(`/v1/models/${encodeURIComponent(name)}/versions/${version}/drift?window=1h`, { signal }).then((d) => {
    const items = [...d.features.map((f) => ({ name: f.name, psi: f.psi, level: f.level })),
      { name: "(predictions)", psi: d.predictions.psi, level: d.predictions.level }];
    const major = items.filter((it) => it.level === "major").map((it) => it.name);
    replace(body,
      major.length ? h("p", { class: "drift-flag", id: "drift-major" }, `Major drift: ${major.join(", ")}`) : null,
      h("p", { class: "muted" }, d.rows ? `${d.rows} live rows against ${d.reference_rows} training rows`
        + (d.enough_rows ? "" : " (few rows: read with care)") : "No live rows counted in the last hour."),
      psiBars(items));
  }).catch((err) => {
    if (err?.name === "AbortError") return;
    replace(body, h("p", { class: "muted" }, problemText(err)));
  });
  return card;
}
