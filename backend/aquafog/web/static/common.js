// What every page shares: the boot block, the API client (session cookie, CSRF header,
// 401 -> login, 403 -> a clear message), DOM and number helpers, live streams and polling.

export const boot = JSON.parse(document.getElementById("boot").textContent);
export const user = boot.user;
export const isOperator = !!user && (user.role === "operator" || user.role === "admin");
export const isAdmin = !!user && user.role === "admin";
export const atCloud = boot.site.kind === "cloud";
const API = boot.root + "/api/v1";

export class ApiError extends Error {
  constructor(status, body, path) {
    const e = (body && body.error) || {};
    super(e.message || `the server answered ${status} for ${path}`);
    this.status = status;
    this.code = e.code || null;
    this.field = e.field || null;
    this.path = path;
  }
}

let csrf = boot.csrf;

async function refreshCsrf() {
  const r = await fetch(API + "/auth/me", { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.ok) csrf = (await r.json()).user.csrf_token;
}

export function toLogin() {
  const here = location.pathname + location.search;
  location.assign(boot.root + "/login?next=" + encodeURIComponent(here));
}

/** Call the JSON API; resolves with the body, rejects with an ApiError (never for a 401,
 * which sends the browser to the login page). */
export async function api(path, { method = "GET", body, retried = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  let r;
  try {
    r = await fetch(API + path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, { error: { code: "network", message: "the gateway cannot be reached; retrying" } }, path);
  }
  let data = null;
  try { data = await r.json(); } catch { /* an empty or non-JSON body */ }
  if (r.status === 401 && !path.startsWith("/auth/login")) {
    toLogin();
    throw new ApiError(401, data, path);
  }
  if (r.status === 403 && data && data.error && data.error.code === "csrf" && !retried) {
    await refreshCsrf();
    return api(path, { method, body, retried: true });
  }
  if (!r.ok) throw new ApiError(r.status, data, path);
  return data;
}

/** The sentence to show for a failed call. */
export function explain(err) {
  if (!(err instanceof ApiError)) return String(err && err.message || err);
  if (err.status === 403) return `Not allowed: ${err.message}`;
  return err.message;
}

// --- DOM ----------------------------------------------------------------------------------
export const $ = (sel, root = document) => root.querySelector(sel);

/** h("a", {href: "/x", class: "y"}, "text", child...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function show(el, text) {
  if (typeof el === "string") el = $(el);
  if (text !== undefined) el.textContent = text;
  el.hidden = false;
  return el;
}

export function hide(el) {
  if (typeof el === "string") el = $(el);
  el.hidden = true;
  return el;
}

/** A message at the top of the page (kind: error, info). */
export function notice(text, kind = "error") {
  const el = $("#notice");
  if (!el) return;
  if (!text) { el.hidden = true; return; }
  el.textContent = text;
  el.className = "notice " + kind;
  el.hidden = false;
}

// --- numbers and times ----------------------------------------------------------------------
const nf = new Intl.NumberFormat("en-US", { maximumFractionDigits: 3, minimumFractionDigits: 0 });
const nf1 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1, minimumFractionDigits: 1 });

export function litres(v) {
  return v === null || v === undefined ? "–" : nf.format(v) + " L";
}

export function litresShort(v) {
  if (v === null || v === undefined) return "–";
  if (Math.abs(v) >= 10000) return nf1.format(v / 1000) + " m³";
  return nf.format(v) + " L";
}

export function number(v, digits = 3) {
  return v === null || v === undefined ? "–"
    : new Intl.NumberFormat("en-US", { maximumFractionDigits: digits }).format(v);
}

export function when(iso) {
  if (!iso) return "–";
  const d = typeof iso === "number" ? new Date(iso) : new Date(iso);
  if (isNaN(d)) return String(iso);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay ? d.toLocaleTimeString("en-GB") : d.toLocaleString("en-GB", { dateStyle: "short", timeStyle: "medium" });
}

export function ago(iso) {
  if (!iso) return "never";
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return when(iso);
}

export function meterUrl(id) {
  return `${boot.root}/meters/${encodeURIComponent(id)}`;
}

// --- live streams and polling ------------------------------------------------------------
/** A server-sent event stream with handlers by event name. `onState(state)` hears "live",
 * "reconnecting" and "failed" (the stream was refused: fall back to polling). */
export function stream(path, handlers, onState = () => {}) {
  const es = new EventSource(API + path, { withCredentials: true });
  es.addEventListener("open", () => onState("live"));
  es.addEventListener("error", () => {
    if (es.readyState === EventSource.CLOSED) { onState("failed"); }
    else onState("reconnecting");
  });
  for (const [name, fn] of Object.entries(handlers)) {
    es.addEventListener(name, (ev) => {
      let data = null;
      try { data = JSON.parse(ev.data); } catch { return; }
      fn(data, ev);
    });
  }
  window.addEventListener("pagehide", () => es.close());
  return es;
}

/** Run `fn` now and every `ms` while the page is visible; returns a stop function. */
export function poll(fn, ms) {
  let timer = null, stopped = false, running = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden && !running) {
      running = true;
      try { await fn(); } catch (err) { console.warn("poll:", err.message || err); }
      running = false;
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

// --- every page ----------------------------------------------------------------------------
const out = $("#logout");
if (out) {
  out.addEventListener("click", async () => {
    try { await api("/auth/logout", { method: "POST" }); } catch { /* ended anyway */ }
    location.assign(boot.root + "/login");
  });
}

export function has(feature) {
  const f = boot.features[feature];
  return !!f && (!user || f.roles.includes(user.role));
}
