// The operator's dashboard: the live top-N table (at a fog from the live ranking stream,
// polling GET /ranking when the stream is refused; at the cloud from polling the city
// ranking), a meter search, the open alerts and (cloud) the city mean.
import { $, api, atCloud, boot, explain, h, has, hide, litres, meterUrl, number, poll, show, stream, when } from "./common.js";

const POLL_MS = 3000;
const tbody = $("#ranking tbody");
const source = $("#ranking-source");
const nInput = $("#top-n");
const periodSelect = $("#period");
let stop = () => {};
let previous = new Map();  // meter -> litres shown last

const saved = new URLSearchParams(location.search);
nInput.value = clampN(saved.get("n") || localStorage.getItem("aquafog.topN") || 10);
if (["today", "month"].includes(saved.get("period"))) periodSelect.value = saved.get("period");

function clampN(v) {
  const n = Math.floor(Number(v));
  return Number.isFinite(n) ? Math.min(1000, Math.max(1, n)) : 10;
}

if (atCloud) {
  $("#ranking-title").textContent = "Top consumers in the city";
  for (const el of document.querySelectorAll(".region-col")) el.hidden = false;
} else if (boot.site.region) {
  $("#ranking-title").textContent = `Top consumers in ${boot.site.region}`;
}

function render(body) {
  hide("#ranking-error");
  const items = body.items || [];
  const max = Math.max(...items.map((i) => i.litres), 0) || 1;
  const seen = new Map();
  const rows = items.map((it) => {
    const before = previous.get(it.meter);
    seen.set(it.meter, it.litres);
    const bar = h("span", { class: "bar" });
    bar.style.width = `${(100 * it.litres / max).toFixed(1)}%`;
    const changed = before !== undefined && before !== it.litres;
    return h("tr", { "data-meter": it.meter, "data-litres": it.litres, class: changed ? "changed" : null },
      h("td", { class: "num" }, it.rank),
      h("td", {}, h("a", { href: meterUrl(it.meter) }, it.meter)),
      atCloud ? h("td", { class: "region-col" }, it.region || "") : null,
      h("td", { class: "num" }, litres(it.litres)),
      h("td", { class: "bar-col" }, bar));
  });
  tbody.replaceChildren(...rows);
  previous = seen;
  $("#ranking-empty").hidden = items.length > 0;
  const p = body.period || {};
  const missing = body.missing_regions && body.missing_regions.length
    ? ` · no figures yet from ${body.missing_regions.join(", ")}` : "";
  $("#ranking-asof").textContent = `updated ${when(Date.now())}${p.timezone ? " · " + p.timezone : ""}${missing}`;
  tbody.dataset.updates = String(Number(tbody.dataset.updates || 0) + 1);
}

function failed(err) {
  show("#ranking-error", explain(err));
}

function query() {
  return `n=${clampN(nInput.value)}&period=${periodSelect.value}`;
}

function polling(path, label) {
  source.textContent = label;
  source.dataset.mode = "polling";
  return poll(async () => {
    try { render(await api(`${path}?${query()}`)); } catch (err) { failed(err); }
  }, POLL_MS);
}

function start() {
  stop();
  previous = new Map();
  if (atCloud) {
    stop = polling("/city/ranking", `city ranking · polling every ${POLL_MS / 1000} s`);
  } else if (has("ranking_live")) {
    source.textContent = "live (server-sent events)";
    source.dataset.mode = "live";
    let fallback = null;
    const es = stream(`/ranking/live?${query()}`, { ranking: render }, (state) => {
      if (state === "live") { source.textContent = "live (server-sent events)"; source.dataset.mode = "live"; }
      if (state === "reconnecting") { source.textContent = "live · reconnecting…"; }
      if (state === "failed" && !fallback) {
        fallback = polling("/ranking", `polling every ${POLL_MS / 1000} s (live stream refused)`);
      }
    });
    stop = () => { es.close(); if (fallback) fallback(); };
  } else if (has("ranking")) {
    stop = polling("/ranking", `polling every ${POLL_MS / 1000} s`);
  } else {
    source.textContent = "no ranking at this server";
  }
}

let debounce = null;
$("#ranking-controls").addEventListener("submit", (ev) => { ev.preventDefault(); start(); });
for (const el of [nInput, periodSelect]) {
  el.addEventListener("change", () => {
    nInput.value = clampN(nInput.value);
    localStorage.setItem("aquafog.topN", nInput.value);
    const q = new URLSearchParams({ n: nInput.value, period: periodSelect.value });
    history.replaceState(null, "", `${location.pathname}?${q}`);
    clearTimeout(debounce);
    debounce = setTimeout(start, 150);
  });
}
start();

$("#goto").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $("#goto-meter").value.trim().toLowerCase();
  if (id) location.assign(meterUrl(id));
});

// --- alerts ---------------------------------------------------------------------------------
const summary = $("#alerts-summary");
if (has("alerts")) {
  poll(async () => {
    try {
      const body = await api("/alerts?state=open&limit=100");
      const items = body.items || [];
      if (!items.length) { summary.textContent = "No open alerts."; return; }
      const kinds = {};
      for (const a of items) kinds[a.kind] = (kinds[a.kind] || 0) + 1;
      summary.replaceChildren(
        h("strong", {}, `${items.length}${body.next ? "+" : ""} open`), " · ",
        Object.entries(kinds).map(([k, n]) => `${n} ${k.replace("_", " ")}`).join(", "));
    } catch (err) {
      summary.textContent = err.status === 404 ? "Alerts are not available at this server yet." : explain(err);
    }
  }, 15000);
} else {
  summary.textContent = "Alerts are not available at this server yet.";
}

// --- the city mean (cloud) ------------------------------------------------------------------
if (atCloud && has("city_mean")) {
  show("#mean-card");
  poll(async () => {
    try {
      const m = await api(`/city/mean?period=${periodSelect.value}`);
      $("#mean-summary").replaceChildren(
        h("strong", {}, litres(m.mean_litres)), ` per meter over ${number(m.meters, 0)} meters (${m.period.kind})`,
        h("br"), m.regions.map((r) => `${r.region}: ${litres(r.mean_litres)}`).join(" · "));
    } catch (err) {
      $("#mean-summary").textContent = explain(err);
    }
  }, 10000);
}
