// Talks to the /v1 API: JSON requests with the bearer token, and event streams read with fetch.
//
// The token lives in sessionStorage (gone when the tab closes; never in localStorage, never in a URL). EventSource
// cannot send an Authorization header, so event streams are read with fetch and a stream reader instead.

const TOKEN_KEY = "mlq-token";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export function token() { return sessionStorage.getItem(TOKEN_KEY); }
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const out = { ...extra };
  const t = token();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

async function problemOf(response) {
  try { return await response.json(); } catch { return { detail: `${response.status} ${response.statusText}` }; }
}

// Listeners told when the API answers 401: the app asks for a token again.
const unauthorized = new Set();
export function onUnauthorized(fn) { unauthorized.add(fn); }

export async function request(method, path, body, { signal } = {}) {
  const init = { method, headers: headers(), signal, cache: "no-store" };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (response.status === 401) unauthorized.forEach((fn) => fn());
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, opts) => request("GET", path, undefined, opts);
export const post = (path, body, opts) => request("POST", path, body, opts);
export const put = (path, body, opts) => request("PUT", path, body, opts);

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// Download a file that needs the token: fetch it, then hand the browser a blob URL to save.
export async function download(path, fallbackName) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = match ? match[1] : fallbackName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Parse a text/event-stream body: calls onEvent({id, event, data}) per event; resolves when the body ends.
async function readEvents(response, onEvent, onId) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const ev = { id: null, event: "message", data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // a heartbeat comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") ev.id = val;
        else if (field === "event") ev.event = val;
        else if (field === "data") ev.data += val;
      }
      if (ev.id) onId(ev.id);
      if (ev.data) onEvent({ ...ev, data: JSON.parse(ev.data) });
    }
  }
}

// Follow an event stream until `signal` aborts or the server ends it for good (a job's stream ends after its final
// status). A dropped connection is resumed with Last-Event-ID, as EventSource would, so no event is lost.
// `from`: the event id to resume after ("0-0" replays a job's whole log); onOpen is called on every connect.
export async function follow(path, { onEvent, onOpen, signal, from = null, endsByItself = false }) {
  let last = from;
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const h = headers({ Accept: "text/event-stream" });
      if (last) h["Last-Event-ID"] = last;
      const response = await fetch(path, { headers: h, signal, cache: "no-store" });
      if (response.status === 401) { unauthorized.forEach((fn) => fn()); return; }
      if (!response.ok) throw new ApiError(response.status, await problemOf(response));
      delay = 1000;
      if (onOpen) onOpen();
      let final = false;
      await readEvents(response, (ev) => {
        if (ev.data.event && ["succeeded", "failed", "cancelled", "expired"].includes(ev.data.event)) final = true;
        onEvent(ev);
      }, (id) => { last = id; });
      if (endsByItself && final) return;
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status === 404) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}
