// The consumer's portal: their own consumption today (by hour), this month (by day) and the
// last 12 months (by month), the month's bill, and warnings (leak, burst) for the meter.
// A consumer with several meters switches between them; an operator picks any meter.
import { $, api, explain, h, has, hide, litres, litresShort, poll, show, user } from "./common.js";
import { BarChart } from "./charts.js";

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const charts = {
  hour: new BarChart($("#chart-hour")),
  day: new BarChart($("#chart-day")),
  month: new BarChart($("#chart-month")),
};
const params = new URLSearchParams(location.search);
const own = user.meters || [];
let meter = null;

function choose() {
  const wanted = params.get("meter");
  if (user.role === "consumer") {
    if (!own.length) return null;
    const sel = $("#meter-select");
    sel.replaceChildren(...own.map((m) => h("option", { value: m }, m)));
    if (own.length > 1) show("#meter-switch");
    const m = own.includes(wanted) ? wanted : own[0];
    sel.value = m;
    sel.addEventListener("change", () => go(sel.value));
    return m;
  }
  show("#meter-pick");
  $("#meter-input").value = wanted || "";
  $("#meter-pick").addEventListener("submit", (ev) => { ev.preventDefault(); go($("#meter-input").value.trim().toLowerCase()); });
  return wanted || null;
}

function go(m) {
  const q = new URLSearchParams(location.search);
  q.set("meter", m);
  history.replaceState(null, "", `${location.pathname}?${q}`);
  meter = m;
  refresh(true);
}

function hourItems(body) {
  const now = Date.now();
  return body.items.map((it) => {
    const t = Date.parse(it.period);  // "2026-03-29T02:00+01:00": the hour's local start
    return { label: it.period.slice(11, 13), value: it.litres, current: t <= now && now < t + 3600_000,
      title: `${it.period.slice(0, 16).replace("T", " ")}: ${litres(it.litres)}` };
  });
}

function dayItems(body) {
  return body.items.map((it, i) => ({ label: String(Number(it.period.slice(8, 10))), value: it.litres,
    title: `${it.period}: ${litres(it.litres)}`, current: i === body.items.length - 1 }));
}

function monthItems(body) {
  // m³ once a month reaches 10 m³, litres below (a new meter's first weeks)
  const m3 = Math.max(0, ...body.items.map((it) => it.litres)) >= 10_000;
  $("#month-unit").textContent = `by month, ${m3 ? "m³" : "L"}`;
  return body.items.map((it, i) => ({ label: MONTHS[Number(it.period.slice(5, 7)) - 1], value: m3 ? it.litres / 1000 : it.litres,
    title: `${it.period}: ${litresShort(it.litres)}`, current: i === body.items.length - 1 }));
}

function warnings(detail, alerts) {
  const out = [];
  const alarms = (detail.health && detail.health.alarms) || [];
  if (alarms.includes("leak")) out.push(h("p", { class: "warning", "data-warning": "leak" }, "Possible leak: water has been flowing without a pause. Check taps, cisterns and pipes."));
  if (alarms.includes("burst")) out.push(h("p", { class: "warning", "data-warning": "burst" }, "Burst: the meter saw a very high flow and closed the valve. Call the utility."));
  if (alarms.includes("valve_fault")) out.push(h("p", { class: "warning", "data-warning": "valve_fault" }, "The meter's valve reports a fault; the utility has been told."));
  for (const a of alerts) {
    if (a.kind === "leak" && alarms.includes("leak")) continue;
    if (a.kind === "burst" && alarms.includes("burst")) continue;
    out.push(h("p", { class: "warning", "data-warning": a.kind }, a.message || a.kind));
  }
  if (detail.valve && detail.valve.reported === "closed") out.push(h("p", { class: "info" }, "The water supply at this meter is closed."));
  $("#warnings").replaceChildren(...out);
}

function bill(b) {
  const money = (x) => `${x} ${b.currency}`;
  const rows = b.lines.map((ln) => h("tr", {},
    h("td", {}, ln.minimum ? `${ln.block} (minimum charge)` : ln.block),
    h("td", { class: "num" }, ln.m3),
    h("td", { class: "num" }, ln.unit_price === null ? "–" : ln.unit_price),
    h("td", { class: "num" }, money(ln.amount))));
  $("#bill tbody").replaceChildren(...rows);
  $("#bill tfoot").replaceChildren(
    h("tr", {}, h("th", { colspan: 3 }, "Water"), h("td", { class: "num" }, money(b.water))),
    h("tr", {}, h("th", { colspan: 3 }, `Sewage (${b.sewage_percent} % of water)`), h("td", { class: "num" }, money(b.sewage))),
    h("tr", { class: "total" }, h("th", { colspan: 3 }, b.complete ? "Total" : "Total so far"), h("td", { class: "num", id: "bill-total" }, money(b.total))));
  show("#bill");
  hide("#bill-missing");
  $("#bill-title").textContent = `Bill for ${b.month}${b.complete ? "" : " (so far)"}`;
  $("#bill-tariff").textContent = `${b.consumption.m3} m³ · tariff ${b.tariff.name || b.tariff.utility}, effective ${b.tariff.effective} · ${b.from} to ${b.to}`;
}

function noBill(message) {
  hide("#bill");
  show("#bill-missing", message);
  $("#bill-tariff").textContent = "";
  $("#bill-title").textContent = "Bill";
}

async function loadBill() {
  const month = $("#bill-month").value;
  if (!has("bill")) { noBill("Bills are not available at this server."); return null; }
  try {
    const b = await api(`/meters/${encodeURIComponent(meter)}/bill${month ? `?month=${month}` : ""}`);
    bill(b);
    return b;
  } catch (err) {
    noBill(err.status === 404 ? `No tariff configured: ${err.message}` : explain(err));
    return null;
  }
}

async function refresh(all = false) {
  if (!meter) return;
  const enc = encodeURIComponent(meter);
  $("#portal-meter").textContent = meter;
  try {
    const alertsAllowed = has("alerts");
    const [detail, hours, days, months, alerts] = await Promise.all([
      api(`/meters/${enc}`),
      has("usage") ? api(`/meters/${enc}/usage?by=hour`) : null,
      has("usage") ? api(`/meters/${enc}/usage?by=day`) : null,
      has("usage") ? api(`/meters/${enc}/usage?by=month`) : null,
      alertsAllowed ? api(`/alerts?state=active&meter=${enc}&limit=20`).then((b) => b.items, () => []) : [],
    ]);
    hide("#portal-error");
    warnings(detail, alerts);
    $("#sum-today").textContent = litres(detail.consumption.today_litres);
    $("#sum-month").textContent = litres(detail.consumption.month_litres);
    if (hours) charts.hour.set(hourItems(hours));
    if (days) charts.day.set(dayItems(days));
    if (months) {
      charts.month.set(monthItems(months));
      $("#sum-year").textContent = litresShort(months.total_litres);
    }
    if (all || !$("#bill-month").value) {
      const b = await loadBill();
      $("#sum-bill").textContent = b ? `${b.total} ${b.currency}` : "–";
    }
  } catch (err) {
    show("#portal-error", err.status === 403 ? `Refused: ${err.message}.` : explain(err));
  }
}

meter = choose();
if (!meter) {
  show("#portal-error", user.role === "consumer" ? "No meter is linked to your account yet; ask the utility to add it."
    : "Enter a meter id to see its consumer portal.");
} else {
  const now = new Date();
  $("#bill-month").max = `${now.getFullYear()}-${String(now.getMonth() + 1).padStart(2, "0")}`;
  $("#bill-month").addEventListener("change", async () => {
    const b = await loadBill();
    if (b && b.complete === false) $("#sum-bill").textContent = `${b.total} ${b.currency}`;
  });
  let first = true;
  poll(() => { const all = first; first = false; return refresh(all); }, 30000);
}
