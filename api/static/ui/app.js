// The dashboard's shell: sign-in when the API wants a token, the queue strip, and a hash router that mounts one
// page at a time. Each page gets an AbortSignal that ends its requests and event streams when the user leaves it.

import { ApiError, get, onUnauthorized, setToken, token } from "./api.js";
import { h, notice, replace } from "./dom.js";
import { datasetsPage } from "./pages/datasets.js";
import { jobPage } from "./pages/job.js";
import { jobsPage } from "./pages/jobs.js";
import { modelPage, modelsPage, versionPage } from "./pages/models.js";

const QUEUE_POLL_MS = 5000;
const view = document.getElementById("view");
let current = null; // the mounted page's AbortController
let signingIn = false; // while the sign-in form checks a token, its own 401 is not "your token expired"

const routes = [
  [/^#\/jobs\/([^/]+)$/, (m, signal) => jobPage(view, decodeURIComponent(m[1]), signal)],
  [/^#\/models\/([^/]+)\/(\d+)$/, (m, signal) => versionPage(view, decodeURIComponent(m[1]), Number(m[2]), signal)],
  [/^#\/models\/([^/]+)$/, (m, signal) => modelPage(view, decodeURIComponent(m[1]), signal)],
  [/^#\/models$/, (m, signal) => modelsPage(view, signal)],
  [/^#\/datasets$/, (m, signal) => datasetsPage(view, signal)],
  [/^#\/jobs$/, (m, signal) => jobsPage(view, signal)],
];

function route() {
  if (current) current.abort();
  current = new AbortController();
  notice("");
  const hash = location.hash || "#/jobs";
  for (const [pattern, page] of routes) {
    const m = pattern.exec(hash.split("?")[0]); // jobs filters ride in the hash: #/jobs?status=running
    if (!m) continue;
    const section = hash.split("/")[1];
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === section));
    page(m, current.signal).catch((err) => {
      if (current.signal.aborted) return;
      replace(view, h("p", { class: "error" }, err instanceof ApiError ? err.message : String(err)));
    });
    return;
  }
  location.hash = "#/jobs";
}

// The queue strip: depth and live workers of each queue, from /readyz (it needs no token).
async function refreshQueues() {
  const strip = document.getElementById("queues");
  try {
    const response = await fetch("/readyz", { cache: "no-store" });
    const body = await response.json();
    replace(strip, Object.entries(body.queues || {}).map(([name, q]) => h("span", {
      class: `queue ${q.workers ? "" : "no-workers"}`, "data-queue": name,
      title: `${q.depth ?? "?"} waiting, ${q.workers} worker(s) consuming`,
    }, h("b", {}, name), ` ${q.depth ?? "?"} waiting · ${q.workers} worker${q.workers === 1 ? "" : "s"}`)),
    body.redis === "ok" ? null : h("span", { class: "queue no-workers" }, `redis: ${body.redis}`));
  } catch {
    replace(strip, h("span", { class: "queue no-workers" }, "API unreachable"));
  }
}

// Ask for a token; check it against the API before keeping it, so a wrong one is refused at once.
function signIn(message = "") {
  if (current) current.abort();
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true,
    placeholder: "bearer token" });
  const error = h("p", { class: "error", id: "token-error" }, message);
  const form = h("form", { class: "card signin", onsubmit: async (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    signingIn = true;
    try {
      await get("/v1/jobs?limit=1");
      start();
    } catch (err) {
      setToken(null);
      error.textContent = err instanceof ApiError && err.status === 401 ? "That token was refused." : String(err);
    } finally {
      signingIn = false;
    }
  } }, h("h2", {}, "Sign in"),
  h("p", {}, "This mlqueue needs a bearer token (MLQ_AUTH_TOKENS). It is kept only in this tab."),
  input, h("button", { class: "primary", type: "submit" }, "Sign in"), error);
  document.getElementById("signout").hidden = true;
  replace(view, form);
  input.focus();
}

let started = false;
function start() {
  document.getElementById("signout").hidden = !token();
  if (!started) {
    started = true;
    window.addEventListener("hashchange", route);
  }
  route();
}

async function boot() {
  refreshQueues();
  setInterval(() => { if (!document.hidden) refreshQueues(); }, QUEUE_POLL_MS);
  onUnauthorized(() => {
    if (signingIn) return;
    const had = token();
    setToken(null);
    signIn(had ? "Your token was refused; sign in again." : "");
  });
  document.getElementById("signout").addEventListener("click", () => { setToken(null); signIn(); });
  try {
    await get("/v1/jobs?limit=1"); // 401 when the API wants a token (or the stored one is no longer valid)
    start();
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) start();
  }
}

boot();
