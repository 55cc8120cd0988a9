// Alerts raised by the gateway (leaks, bursts, valve faults, meters offline, policy blocks),
// newest first, with acknowledgement. Until the alerts API is served here the page says so.
import { $, api, explain, h, has, hide, isOperator, meterUrl, poll, show, when } from "./common.js";

const tbody = $("#alerts tbody");
const stateSel = $("#alert-state");
const kindSel = $("#alert-kind");
const meterIn = $("#alert-meter");
let cursor = null;
let items = [];

const params = new URLSearchParams(location.search);
if (params.get("state")) stateSel.value = params.get("state");
if (params.get("kind")) kindSel.value = params.get("kind");
if (params.get("meter")) meterIn.value = params.get("meter");

function unavailable() {
  show("#alerts-unavailable", "Alerts are not available at this server yet (it does not serve GET /api/v1/alerts).");
  hide("#alerts");
  $("#alert-filters").hidden = true;
  $("#alerts-source").textContent = "not available";
}

function query(more) {
  const q = new URLSearchParams({ state: stateSel.value, limit: "50" });
  if (kindSel.value) q.set("kind", kindSel.value);
  if (meterIn.value.trim()) q.set("meter", meterIn.value.trim().toLowerCase());
  if (more && cursor) q.set("cursor", cursor);
  return q;
}

function row(a) {
  const ack = a.acked_ms
    ? h("span", {}, `${when(a.acked_ms)}${a.acked_by ? ` by ${a.acked_by}` : ""}`)
    : isOperator ? h("button", { type: "button", class: "small", "data-ack": a.id, onclick: () => acknowledge(a) }, "Acknowledge") : "–";
  return h("tr", { "data-alert": a.id, class: a.cleared_ms ? "cleared" : "active" },
    h("td", {}, h("span", { class: `kind ${a.kind}` }, a.kind.replace("_", " "))),
    h("td", { "data-label": "Meter" }, a.meter ? h("a", { href: meterUrl(a.meter) }, a.meter) : "–"),
    h("td", { class: "wrap" }, a.message || ""),
    h("td", { "data-label": "Raised" }, when(a.raised_ms)),
    h("td", { "data-label": "Cleared" }, a.cleared_ms ? when(a.cleared_ms) : h("strong", {}, "active")),
    h("td", { "data-label": "Acknowledged" }, ack));
}

function render() {
  tbody.replaceChildren(...items.map(row));
  $("#alerts-empty").hidden = items.length > 0;
  $("#alerts-more").hidden = !cursor;
}

async function load(more = false) {
  try {
    const body = await api(`/alerts?${query(more)}`);
    hide("#alerts-error");
    items = more ? items.concat(body.items) : body.items;
    cursor = body.next;
    render();
    $("#alerts-source").textContent = `updated ${when(Date.now())}`;
  } catch (err) {
    if (err.status === 404 && err.code !== "bad_request") { unavailable(); stop(); return; }
    show("#alerts-error", explain(err));
  }
}

async function acknowledge(a) {
  try {
    await api(`/alerts/${encodeURIComponent(a.id)}/ack`, { method: "POST", body: {} });
    await load();
  } catch (err) {
    show("#alerts-error", explain(err));
  }
}

let stop = () => {};
if (!has("alerts")) {
  unavailable();
} else {
  for (const el of [stateSel, kindSel, meterIn]) el.addEventListener("change", () => load());
  $("#alert-filters").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  $("#alerts-more").addEventListener("click", () => load(true));
  stop = poll(() => (items.length > 50 ? null : load()), 10000);
}
