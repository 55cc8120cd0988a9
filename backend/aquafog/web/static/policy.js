// The consumption policy: the settings (editable by admins; every problem the API names is
// shown next to its field) and the latest evaluation (the dry-run list), or at the cloud
// each fog's mode and counts.
import { $, api, atCloud, explain, h, hide, isAdmin, litres, meterUrl, number, poll, show, when } from "./common.js";

const form = $("#policy-form");
const FIELDS = ["mode", "period", "mean_rule", "mean_factor", "cap_m3", "caps_m3", "exempt"];
let dirty = false;

function fill(s) {
  $("#mode").value = s.mode;
  $("#period").value = s.period;
  $("#mean_rule").checked = !!s.mean_rule;
  $("#mean_factor").value = String(s.mean_factor);
  $("#cap_m3").value = s.cap_m3 === null || s.cap_m3 === undefined ? "" : String(s.cap_m3);
  $("#caps_m3").value = Object.entries(s.caps_m3 || {}).map(([m, v]) => `${m} = ${v}`).join("\n");
  $("#exempt").value = (s.exempt || []).join(" ");
}

/** A number as typed, or the text itself, so the API names what is wrong with it. */
function num(text) {
  const t = text.trim();
  if (t === "") return "";
  const v = Number(t);
  return Number.isFinite(v) ? v : t;
}

function read() {
  const caps = {};
  const problems = [];
  for (const line of $("#caps_m3").value.split(/\n/)) {
    if (!line.trim()) continue;
    const m = line.match(/^\s*([^=:\s]+)\s*[=:]\s*(\S+)\s*$/);
    if (!m) { problems.push(`caps_m3: write each line as "meter = m³", got "${line.trim()}"`); continue; }
    caps[m[1]] = num(m[2]);
  }
  const cap = num($("#cap_m3").value);
  return {
    body: {
      mode: $("#mode").value, period: $("#period").value, mean_rule: $("#mean_rule").checked,
      mean_factor: num($("#mean_factor").value), cap_m3: cap === "" ? null : cap, caps_m3: caps,
      exempt: $("#exempt").value.split(/[\s,;]+/).filter(Boolean),
    },
    problems,
  };
}

function clearErrors() {
  for (const el of form.querySelectorAll(".field-error")) { el.hidden = true; el.textContent = ""; }
  for (const el of form.querySelectorAll(".field")) el.classList.remove("invalid");
  hide("#policy-error");
}

/** "mean_factor: must be ...; caps_m3.m1: must be ..." -> each problem next to its field. */
function showErrors(message, field) {
  const parts = message.split(/;\s+(?=[A-Za-z_][\w.-]*:\s)/);
  const loose = [];
  for (const p of parts) {
    const m = p.match(/^([A-Za-z_][\w-]*)(?:\.[\w-]+)?:\s+(.*)$/s);
    const name = m && FIELDS.includes(m[1]) ? m[1] : null;
    const box = name && form.querySelector(`.field[data-field="${name}"]`);
    if (!box) { loose.push(p); continue; }
    box.classList.add("invalid");
    const el = box.querySelector(".field-error");
    el.textContent = el.textContent ? `${el.textContent}; ${p.slice(m[1].length + 1).trim()}` : p.slice(m[1].length + 1).trim();
    el.hidden = false;
  }
  if (loose.length) {
    const box = field && form.querySelector(`.field[data-field="${field}"]`);
    if (box && !box.classList.contains("invalid")) {
      box.classList.add("invalid");
      show(box.querySelector(".field-error"), loose.join("; "));
    } else show("#policy-error", loose.join("; "));
  }
  const first = form.querySelector(".field.invalid input, .field.invalid select, .field.invalid textarea");
  if (first) first.focus();
}

function evaluation(e) {
  const box = $("#evaluation");
  if (!e) { box.replaceChildren(h("p", { class: "empty" }, "Not evaluated yet (the policy is off, or the first round is due).")); return; }
  $("#evaluation-asof").textContent = `at ${when(e.evaluated_ms)}`;
  const mean = e.mean ? `${litres(e.mean.sum_ml / 1000 / Math.max(1, e.mean.meters))} per meter (${e.mean.source}, ${number(e.mean.meters, 0)} meters)` : "none";
  const t = e.thresholds || {};
  const facts = h("dl", { class: "facts" },
    h("div", {}, h("dt", {}, "Mode"), h("dd", {}, e.mode)),
    h("div", {}, h("dt", {}, "Period"), h("dd", {}, `${e.period.kind} ${e.period.key}`)),
    h("div", {}, h("dt", {}, "Mean"), h("dd", {}, mean)),
    h("div", {}, h("dt", {}, "Over the mean rule"), h("dd", {}, t.mean_ml === null || t.mean_ml === undefined ? "–" : `above ${litres(t.mean_ml / 1000)}`)),
    h("div", {}, h("dt", {}, "Cap"), h("dd", {}, t.cap_ml === null || t.cap_ml === undefined ? "none" : litres(t.cap_ml / 1000))),
    h("div", {}, h("dt", {}, "Meters over a rule"), h("dd", {}, Object.entries(e.counts || {}).map(([k, v]) => `${k} ${v}`).join(" · "))));
  const rows = (e.meters || []).map((m) => h("tr", {},
    h("td", {}, h("a", { href: meterUrl(m.meter) }, m.meter)),
    h("td", { class: "num" }, litres(m.litres)),
    h("td", {}, m.rules.map((r) => `${r.rule} (> ${litres(r.threshold_ml / 1000)})`).join(", ")),
    h("td", {}, h("span", { class: `status ${m.action}` }, (m.action || "").replace("_", " ")))));
  const table = rows.length ? h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Meter"), h("th", { class: "num" }, "Used"), h("th", {}, "Rules"), h("th", {}, "Action"))),
    h("tbody", {}, rows))) : h("p", { class: "empty" }, "No meter is over a rule.");
  const more = e.meters_total > (e.meters || []).length ? h("p", { class: "hint" }, `${e.meters_total - e.meters.length} more not shown`) : null;
  box.replaceChildren(facts, table, more);
}

function fogs(list) {
  $("#evaluation-title").textContent = "Fogs";
  const rows = list.map((f) => {
    const p = f.policy || {};
    return h("tr", {}, h("td", {}, f.region), h("td", {}, p.mode || "–"), h("td", {}, p.source || "–"),
      h("td", { class: "num" }, p.over ?? "–"), h("td", { class: "num" }, p.blocked ?? "–"));
  });
  $("#evaluation").replaceChildren(rows.length ? h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Region"), h("th", {}, "Mode"), h("th", {}, "Source"), h("th", { class: "num" }, "Over"), h("th", { class: "num" }, "Blocked"))),
    h("tbody", {}, rows))) : h("p", { class: "empty" }, "No fog has reported yet."));
}

function render(body) {
  const s = body.settings || { mode: "off", period: "month", mean_rule: true, mean_factor: 1, cap_m3: null, caps_m3: {}, exempt: [] };
  if (!dirty) fill(s);
  const from = atCloud ? (body.settings ? "set for the whole city" : "never set for the city") : `from ${body.source}`;
  $("#policy-source").textContent = `${from}${body.updated_ms ? ` · ${when(body.updated_ms)}` : ""}`;
  if (atCloud) fogs(body.fogs || []); else evaluation(body.evaluation);
}

async function load() {
  try { render(await api("/policy?limit=200")); } catch (err) { show("#policy-error", explain(err)); }
}

if (isAdmin) {
  $("#policy-role").textContent = atCloud ? "Saving sends these settings to every fog of the city." : "Saving replaces this fog's settings; they are evaluated at once.";
  form.addEventListener("input", () => { dirty = true; hide("#policy-saved"); });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const { body, problems } = read();
    if (problems.length) { showErrors(problems.join("; ")); return; }
    const button = $("#policy-save");
    button.disabled = true;
    try {
      const answer = await api("/policy", { method: "PUT", body });
      dirty = false;
      show("#policy-saved", atCloud && answer.sent === false ? "Saved; the cloud broker is down, the fogs get it when it is back."
        : "Saved.");
      await load();
      // the fog evaluates the new settings at once, on its own thread: show that round too
      for (const ms of [600, 2000]) setTimeout(load, ms);
    } catch (err) {
      if (err.status === 400) showErrors(err.message, err.field);
      else show("#policy-error", explain(err));
    } finally {
      button.disabled = false;
    }
  });
} else {
  $("#policy-role").textContent = "Only an admin can change the policy.";
  for (const el of form.querySelectorAll("input, select, textarea, button")) el.disabled = true;
  $("#policy-save").hidden = true;
}

poll(load, 10000);
