// The model page's traffic panel: for each alias, its versions side by side (share, shadow) with their live
// figures over the last 5 minutes (requests, errors, p99 latency, prediction distribution, shadow agreement),
// refreshed every few seconds while the page is shown. GET /v1/models/{name}/traffic and …/versions/{v}/live.

import { get } from "../api.js";
import { fmtNumber, h, problemText, replace } from "../dom.js";

const REFRESH_MS = 5000;

function distribution(live) {
  const p = live.predictions;
  if (!p) return "";
  if (p.classes) {
    return Object.entries(p.classes).sort((a, b) => b[1] - a[1]).slice(0, 3)
      .map(([label, share]) => `${label} ${(share * 100).toFixed(0)}%`).join(", ");
  }
  return `mean ${fmtNumber(p.mean, 3)}, std ${fmtNumber(p.std, 3)}`;
}

function versionRow(name, alias, version, share, role, live) {
  const shadow = live?.shadow;
  return h("tr", { "data-alias": alias, "data-version": version },
    h("td", {}, h("a", { href: `#/models/${encodeURIComponent(name)}/${version}` }, `v${version}`)),
    h("td", {}, role), h("td", { class: "num" }, share),
    h("td", { class: "num live-requests" }, live ? String(live.requests) : "…"),
    h("td", { class: "num" }, live ? `${(live.error_rate * 100).toFixed(2)}%` : ""),
    h("td", { class: "num" }, live?.latency_ms?.p99 != null ? `≤ ${live.latency_ms.p99} ms` : ""),
    h("td", {}, live ? distribution(live) : ""),
    h("td", { class: "num" }, shadow?.agreement != null ? `${(shadow.agreement * 100).toFixed(1)}%` : ""));
}

export function trafficPanel(name, signal) {
  const body = h("div", { id: "traffic-panel" }, h("p", { class: "muted" }, "Loading traffic…"));
  const card = h("section", { class: "card" }, h("h2", {}, "Traffic and live figures (last 5 minutes)"), body);

  async function draw() {
    const base = `/v1/models/${encodeURIComponent(name)}`;
    const { aliases } = await get(`${base}/traffic`, { signal });
    const wanted = new Set();
    for (const policy of Object.values(aliases)) {
      Object.keys(policy.versions).forEach((v) => wanted.add(v));
      if (policy.shadow) wanted.add(String(policy.shadow.version));
    }
    const lives = Object.fromEntries(await Promise.all([...wanted].map(async (v) =>
      [v, await get(`${base}/versions/${v}/live?window=5m`, { signal }).catch(() => null)])));
    const tables = Object.entries(aliases).map(([alias, policy]) => {
      const rows = Object.entries(policy.versions).map(([v, share]) =>
        versionRow(name, alias, v, `${share}%`, "serves", lives[v]));
      if (policy.shadow) {
        const v = String(policy.shadow.version);
        rows.push(versionRow(name, alias, v, `copy of ${policy.shadow.percent}%`, "shadow", lives[v]));
      }
      return [h("h3", {}, alias), h("table", { class: "table compact traffic", "data-alias": alias },
        h("thead", {}, h("tr", {}, ["version", "role", "share", "requests", "errors", "p99", "predictions",
          "agreement"].map((c) => h("th", {}, c)))), h("tbody", {}, rows))];
    });
    replace(body, tables.length ? tables : h("p", { class: "muted" }, "No alias yet: promote a version."));
  }

  async function tick() {
    if (signal?.aborted) return;
    try {
      await draw();
    } catch (err) {
      if (signal?.aborted) return;
      replace(body, h("p", { class: "muted" }, problemText(err)));
    }
    if (!signal?.aborted) setTimeout(tick, REFRESH_MS);
  }
  tick();
  return card;
}
