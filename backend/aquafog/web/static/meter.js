// One meter, live: its facts, flow and register charts (the last hour from GET .../readings,
// then each `reading` event as it arrives), the valve buttons with the command ledger's
// state as the gateway reports it, and the meter's recent commands.
import { $, ago, api, atCloud, boot, explain, h, has, hide, isOperator, litres, number, poll, show, stream, when } from "./common.js";
import { TimeChart } from "./charts.js";

const id = boot.meter;
const enc = encodeURIComponent(id);
const WINDOW_MS = 3600_000;
const POLL_MS = 2000;
const TERMINAL = new Set(["applied", "failed", "expired", "rejected"]);

const flow = new TimeChart($("#flow-chart"), { windowMs: WINDOW_MS, kind: "area", minMax: 1 });
const register = new TimeChart($("#register-chart"), { windowMs: WINDOW_MS, kind: "register" });
const seen = new Set();       // readings by boot:seq, so a replay changes nothing
const commands = new Map();   // command id -> command
let tracked = null;           // the command this page sent last
let latest = null;            // the newest reading shown
let meter = null;

// --- facts ----------------------------------------------------------------------------------
function badge(online) {
  const el = $("#online");
  el.textContent = online === null || online === undefined ? "never seen" : online ? "online" : "offline";
  el.className = "badge " + (online ? "ok" : "off");
}

function valveText(v) {
  if (!v) return "–";
  const parts = [`reported ${v.reported || "unknown"}`];
  if (v.desired && v.desired !== v.reported) parts.push(`wanted ${v.desired}`);
  if (v.pending_command) parts.push("command pending");
  return parts.join(" · ");
}

function showMeter(m) {
  meter = m;
  badge(m.online);
  $("#register").textContent = litres(m.register ? m.register.litres : m.litres);
  $("#flow").textContent = m.flow_lpm === null ? "–" : `${number(m.flow_lpm)} L/min`;
  $("#today").textContent = litres(m.consumption && m.consumption.today_litres);
  $("#month").textContent = litres(m.consumption && m.consumption.month_litres);
  $("#valve").textContent = valveText(m.valve);
  $("#valve").dataset.reported = (m.valve && m.valve.reported) || "";
  $("#last-seen").textContent = ago(m.last_seen_at);
  renderAlarms();
  if (m.region) $("#meter-id").textContent = `${id} (${m.region})`;
}

// --- alarms and alerts -------------------------------------------------------------------------
const ALARM_TEXT = {
  leak: "Leak: this meter sees a constant flow.",
  burst: "Burst: the meter closed its valve on a burst.",
  valve_fault: "Valve fault: the valve does not follow its commands.",
};
const alerts = new Map();  // active alerts of this meter, by id

function renderAlarms() {
  const active = [...alerts.values()].sort((a, b) => b.raised_ms - a.raised_ms);
  const kinds = new Set(active.map((a) => a.kind));
  const health = ((meter && meter.health && meter.health.alarms) || []).filter((a) => !kinds.has(a));
  const box = $("#alarms");
  box.replaceChildren(
    ...health.map((a) => h("p", { class: "warning", "data-alarm": a }, ALARM_TEXT[a] || a)),
    ...active.map((a) => h("p", { class: "warning", "data-alert": a.id },
      h("strong", {}, a.kind.replace("_", " ")), ` since ${when(a.raised_ms)}: ${a.message}`,
      a.acked_ms ? ` (acknowledged by ${a.acked_by})`
        : isOperator ? h("button", { type: "button", class: "small", onclick: () => acknowledge(a) }, "Acknowledge") : "")));
  box.hidden = box.childElementCount === 0;
}

async function loadAlerts() {
  if (!has("alerts")) return;
  const body = await api(`/alerts?state=active&meter=${enc}&limit=20`);
  alerts.clear();
  for (const a of body.items) alerts.set(a.id, a);
  renderAlarms();
}

function onAlert(a) {
  if (a.cleared_ms) alerts.delete(a.id); else alerts.set(a.id, a);
  renderAlarms();
}

async function acknowledge(a) {
  try { onAlert(await api(`/alerts/${encodeURIComponent(a.id)}/ack`, { method: "POST", body: {} })); }
  catch (err) { show("#meter-error", explain(err)); }
}

async function loadMeter() {
  showMeter(await api(`/meters/${enc}`));
}

// --- readings ----------------------------------------------------------------------------
function addReading(r, redraw = true) {
  const key = `${r.boot}:${r.seq}`;
  if (seen.has(key)) return false;
  seen.add(key);
  const t = Date.parse(r.ts);
  if (r.flow_lpm !== null && r.flow_lpm !== undefined) flow.points.push([t, r.flow_lpm]);
  register.points.push([t, r.litres]);
  if (!latest || t >= Date.parse(latest.ts)) latest = r;
  if (redraw) { flow.set(flow.points); register.set(register.points); }
  return true;
}

async function loadHistory(fromS) {
  let cursor = null;
  for (let page = 0; page < 10; page++) {
    const q = new URLSearchParams({ from: String(fromS), limit: "1000" });
    if (cursor) q.set("cursor", cursor);
    const body = await api(`/meters/${enc}/readings?${q}`);
    for (const r of body.items) addReading(r, false);
    cursor = body.next;
    if (!cursor) break;
  }
  flow.set(flow.points);
  register.set(register.points);
  $("#points").textContent = `${register.points.length} readings in the last hour`;
}

function onReading(r) {
  if (!addReading(r)) return;
  $("#register").textContent = litres(r.litres);
  $("#flow").textContent = r.flow_lpm === null ? "–" : `${number(r.flow_lpm)} L/min`;
  $("#last-seen").textContent = "just now";
  $("#points").textContent = `${register.points.length} readings in the last hour`;
  refreshSoon();
}

let refreshTimer = null;
function refreshSoon() {  // consumption today and this month: from the detail, at most every 3 s
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    try { await guarded(loadMeter); } catch { /* the next one */ }
  }, 3000);
}

// --- commands --------------------------------------------------------------------------------
function commandTime(c) {
  return c.done_at || c.sent_at || c.created_at || (c.updated_ms ? new Date(c.updated_ms).toISOString() : null)
    || (c.created_ms ? new Date(c.created_ms).toISOString() : null);
}

function renderCommands() {
  const rows = [...commands.values()]
    .sort((a, b) => (Date.parse(commandTime(b)) || 0) - (Date.parse(commandTime(a)) || 0))
    .slice(0, 20)
    .map((c) => h("tr", { "data-command": c.id },
      h("td", { "data-label": "Command" }, h("code", {}, c.id)),
      h("td", { "data-label": "State" }, c.state),
      h("td", { "data-label": "Status", class: "wrap" }, h("span", { class: `status ${c.status}` }, c.status), c.error ? ` ${c.error}` : ""),
      h("td", { "data-label": "Origin" }, c.origin || (c.region ? `cloud → ${c.region}` : "")),
      h("td", { "data-label": "When" }, when(commandTime(c)))));
  $("#commands tbody").replaceChildren(...rows);
}

function describe(c) {
  const what = c.state === "closed" ? "Block (close valve)" : "Unblock (open valve)";
  const meaning = {
    routed: "routed to the meter's fog",
    queued: "queued: waiting for the meter to be online",
    sent: "sent: waiting for the meter to confirm",
    applied: "applied: the meter confirmed",
    failed: "failed",
    expired: "expired: the meter never confirmed",
    rejected: "rejected by the fog",
  }[c.status] || c.status;
  return `${what}: ${meaning}${c.error ? ` (${c.error})` : ""}`;
}

// a command's status only moves forward: an answer read before an event never undoes it
const RANK = { routed: 0, queued: 0, sent: 1, applied: 2, failed: 2, expired: 2, rejected: 2 };

function onCommand(c) {
  const known = commands.get(c.id);
  if (known && (RANK[c.status] ?? 0) < (RANK[known.status] ?? 0)) return;
  commands.set(c.id, { ...(known || {}), ...c });
  renderCommands();
  if (tracked && c.id === tracked.id) {
    tracked = { ...tracked, ...c };
    const el = $("#command-state");
    el.textContent = describe(tracked);
    el.dataset.status = tracked.status;
    el.className = `command status ${tracked.status}`;
    if (TERMINAL.has(tracked.status)) refreshSoon();
  }
}

async function loadCommands() {
  const body = await api(`/meters/${enc}/commands?limit=20`);
  for (const c of body.items) commands.set(c.id, c);
  renderCommands();
}

let follow = () => {};
async function sendValve(state) {
  const buttons = [$("#block"), $("#unblock")];
  buttons.forEach((b) => { b.disabled = true; });
  const el = $("#command-state");
  el.className = "command";
  delete el.dataset.status;  // nothing is known of the new command until the gateway answers
  tracked = null;
  el.textContent = state === "closed" ? "Blocking…" : "Unblocking…";
  try {
    const user = boot.user.username;
    const { command } = await api(`/meters/${enc}/valve`, { method: "POST", body: { state, reason: `dashboard (${user})` } });
    tracked = command;
    onCommand(command);
    follow();
    // until it is done: the command events (live) and GET /commands/<id> (always, slower when live)
    follow = poll(async () => {
      if (!tracked || TERMINAL.has(tracked.status)) { follow(); return; }
      const body = await api(`/commands/${encodeURIComponent(tracked.id)}`);
      onCommand(body.command);
    }, liveUp ? 3000 : 1000);
  } catch (err) {
    el.textContent = explain(err);
    el.className = "command status failed";
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

// --- live or polling ---------------------------------------------------------------------------
let liveUp = false;
let polling = null;
let rounds = 0;

function startPolling(label) {
  if (polling) return;
  const src = $("#live-source");
  src.textContent = label;
  src.dataset.mode = "polling";
  polling = poll(async () => {
    const from = latest ? Math.floor(Date.parse(latest.ts) / 1000) : Math.floor((Date.now() - WINDOW_MS) / 1000);
    const body = await api(`/meters/${enc}/readings?from=${from}&limit=1000`);
    let added = false;
    for (const r of body.items) added = addReading(r, false) || added;
    if (added) {
      flow.set(flow.points); register.set(register.points);
      $("#points").textContent = `${register.points.length} readings in the last hour`;
    }
    await loadMeter();
    if (++rounds % 5 === 0) await loadAlerts();
  }, POLL_MS);
}

async function resync() {  // after `missed`: what the events would have told us
  await Promise.all([loadMeter(), loadHistory(Math.floor((Date.now() - WINDOW_MS) / 1000)),
    has("commands") ? loadCommands() : null, loadAlerts()]);
}

// Events that arrive while a JSON answer is on its way wait for it, then apply on top (each by
// its key), so an answer read before a change never hides the change's event.
let inflight = 0;
const held = [];

function later(fn) {
  return (data) => { if (inflight) held.push(() => fn(data)); else fn(data); };
}

async function guarded(work) {
  inflight++;
  try { return await work(); } finally {
    if (--inflight === 0) for (const f of held.splice(0)) f();
  }
}

/** Subscribe; resolves once the stream is open (the gateway sends what changes from now on),
 * has failed (polling instead), or after 3 s. */
function startLive() {
  const src = $("#live-source");
  let opened;
  const ready = new Promise((resolve) => { opened = resolve; setTimeout(resolve, 3000); });
  stream(`/meters/${enc}/live`, {
    reading: later(onReading),
    command: later(onCommand),
    alert: later(onAlert),
    status: later((st) => { badge(st.online); if (meter) meter.online = st.online; }),
    missed: () => { guarded(resync).catch((err) => show("#meter-error", explain(err))); },
  }, (state) => {
    liveUp = state === "live";
    if (state === "live") { src.textContent = "live (server-sent events)"; src.dataset.mode = "live"; }
    else if (state === "reconnecting") { src.textContent = "live · reconnecting…"; src.dataset.mode = "reconnecting"; }
    else if (state === "failed") startPolling(`polling every ${POLL_MS / 1000} s (live stream refused)`);
    if (state !== "reconnecting") opened();
  });
  return ready;
}

async function main() {
  try {
    await loadMeter();  // may this user see it? (403 for another consumer's meter)
  } catch (err) {
    const box = show("#meter-error", err.status === 403 ? `Refused: ${err.message}. You can only see your own meters.`
      : err.status === 404 ? `No such meter: ${err.message}` : explain(err));
    box.dataset.status = String(err.status);
    $("#online").hidden = true;
    $("#live-source").hidden = true;
    return;
  }
  show("#meter-body");
  show("#meter-panels");
  if (isOperator) {
    show("#valve-controls");
    $("#block").addEventListener("click", () => sendValve("closed"));
    $("#unblock").addEventListener("click", () => sendValve("open"));
  }
  // subscribe first, then read: a change between the two is in the stream
  if (has("meter_live")) await startLive();
  try {
    await guarded(resync);
  } catch (err) {
    show("#meter-error", explain(err));
  }
  if (!has("meter_live")) {
    startPolling(atCloud ? `via the meter's fog · polling every ${POLL_MS / 1000} s` : `polling every ${POLL_MS / 1000} s`);
  }
  setInterval(() => {
    flow.draw(); register.draw();
    if (meter) $("#last-seen").textContent = ago(latest ? latest.received_at || latest.ts : meter.last_seen_at);
  }, 5000);
}

main();
