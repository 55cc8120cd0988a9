// Charts drawn as SVG by hand: a time series (line and area) and bars. Each chart redraws
// itself to its box's width (phones included) and exposes what it shows for tests and
// assistive technology: data-count (points or bars) and data-last (the newest value).

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

/** About `count` round ticks covering [lo, hi]: steps of 1, 2 or 5 x 10^k. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((st) => st >= raw) || 10 * mag;
  const first = Math.floor(lo / step) * step;
  const ticks = [];
  for (let v = first; v <= hi + step * 1e-9; v += step) ticks.push(+v.toFixed(10));
  if (ticks[ticks.length - 1] < hi) ticks.push(+(ticks[ticks.length - 1] + step).toFixed(10));
  return ticks;
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
  .map((x) => x * 1000);

function timeTicks(t0, t1, count) {
  const raw = (t1 - t0) / Math.max(1, count);
  const step = TIME_STEPS.find((st) => st >= raw) || TIME_STEPS[TIME_STEPS.length - 1];
  const off = new Date(t0).getTimezoneOffset() * 60000;  // ticks on local round times
  const ticks = [];
  for (let t = Math.ceil((t0 - off) / step) * step + off; t <= t1; t += step) ticks.push(t);
  return { ticks, step };
}

function timeLabel(t, step) {
  const d = new Date(t);
  const hm = d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
  return step < 60000 ? d.toLocaleTimeString("en-GB") : hm;
}

/** A tick label: k and M for large values, else as many decimals as the step needs. */
function fmt(v, step) {
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
  const decimals = step > 0 ? Math.min(6, Math.max(0, Math.ceil(-Math.log10(step) - 1e-9))) : 0;
  return v.toFixed(decimals);
}

const SPANS = [2, 5, 10, 15, 30, 60, 120, 360, 720, 1440].map((m) => m * 60_000);

class Chart {
  constructor(box) {
    this.box = box;
    this.width = 0;
    new ResizeObserver(() => {
      const w = Math.round(this.box.clientWidth);
      if (w && w !== this.width) { this.width = w; this.draw(); }
    }).observe(box);
  }

  frame(height) {
    const width = this.width || Math.round(this.box.clientWidth) || 600;
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "svg-chart" });
    return { svg, width, height };
  }

  replace(svg) {
    this.box.replaceChildren(svg);
  }
}

/** A time series: points [t_ms, value], over a window of `windowMs` up to now. */
export class TimeChart extends Chart {
  constructor(box, { unit = "", windowMs = 3600_000, height = 200, kind = "line", minMax = 1 } = {}) {
    super(box);
    Object.assign(this, { unit, windowMs, height, kind, minMax });
    this.points = [];
    this.draw();
  }

  set(points) { this.points = points.slice().sort((a, b) => a[0] - b[0]); this.draw(); }

  add(t, v) {
    const p = this.points;
    if (p.length && t < p[p.length - 1][0]) { p.push([t, v]); p.sort((a, b) => a[0] - b[0]); }
    else p.push([t, v]);
    this.draw();
  }

  draw() {
    const now = Date.now();
    const t1 = Math.max(now, this.points.length ? this.points[this.points.length - 1][0] : now);
    // the window: the last windowMs, or less while there is less history (at least 2 minutes)
    const had = this.points.length ? t1 - this.points[0][0] : 0;
    const span = Math.min(this.windowMs, SPANS.find((x) => x >= had) || this.windowMs);
    const t0 = t1 - span;
    while (this.points.length > 2 && this.points[1][0] < t1 - this.windowMs) this.points.shift();
    const pts = this.points;
    const { svg, width, height } = this.frame(this.height);
    const left = 52, right = 12, top = 10, bottom = 24;
    const vals = pts.map((p) => p[1]);
    let lo = this.kind === "area" ? 0 : Math.min(...vals, 0);
    let hi = Math.max(...vals, lo + this.minMax);
    if (this.kind === "register" && vals.length) {  // the register: its own range, not from 0
      lo = Math.min(...vals); hi = Math.max(...vals);
      const pad = Math.max((hi - lo) * 0.1, 0.5);
      lo = Math.max(0, lo - pad); hi = hi + pad;
    }
    const yt = niceTicks(lo, hi, Math.max(2, Math.round((height - top - bottom) / 40)));
    lo = yt[0]; hi = yt[yt.length - 1];
    const x = (t) => left + (t - t0) / (t1 - t0) * (width - left - right);
    const y = (v) => top + (1 - (v - lo) / (hi - lo || 1)) * (height - top - bottom);
    const grid = s("g", { class: "grid" });
    for (const v of yt) {
      grid.append(s("line", { x1: left, x2: width - right, y1: y(v), y2: y(v) }));
      grid.append(s("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v, yt[1] - yt[0])));
    }
    const { ticks, step } = timeTicks(t0, t1, Math.max(2, Math.floor((width - left - right) / 80)));
    for (const t of ticks) {
      grid.append(s("line", { x1: x(t), x2: x(t), y1: top, y2: height - bottom, class: "vgrid" }));
      grid.append(s("text", { x: x(t), y: height - 6, "text-anchor": "middle" }, timeLabel(t, step)));
    }
    svg.append(grid);
    const visible = pts.filter((p) => p[0] >= t0);
    const before = pts.filter((p) => p[0] < t0).pop();
    const line = (before ? [[t0, before[1]], ...visible] : visible);
    if (line.length) {
      const path = line.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
      const baseY = y(Math.max(lo, 0));
      svg.append(s("path", { d: `${path}L${x(line[line.length - 1][0]).toFixed(1)},${baseY}L${x(line[0][0]).toFixed(1)},${baseY}Z`, class: "area" }));
      svg.append(s("path", { d: path, class: "line" }));
      const last = line[line.length - 1];
      svg.append(s("circle", { cx: x(last[0]), cy: y(last[1]), r: 3.5, class: "dot" }));
    } else {
      svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "nodata" }, "no readings yet"));
    }
    svg.setAttribute("data-count", String(visible.length));
    svg.setAttribute("data-last", visible.length ? String(visible[visible.length - 1][1]) : "");
    this.replace(svg);
  }
}

/** Bars: items [{label, value, title, current}], labels shown as room allows. */
export class BarChart extends Chart {
  constructor(box, { height = 200, unit = "" } = {}) {
    super(box);
    Object.assign(this, { height, unit });
    this.items = [];
    this.draw();
  }

  set(items) { this.items = items; this.draw(); }

  draw() {
    const { svg, width, height } = this.frame(this.height);
    const left = 48, right = 8, top = 10, bottom = 24;
    const items = this.items;
    const hi0 = Math.max(0, ...items.map((i) => i.value));
    const yt = niceTicks(0, hi0 > 0 ? hi0 : 1, Math.max(2, Math.round((height - top - bottom) / 40)));
    const hi = yt[yt.length - 1];
    const y = (v) => top + (1 - v / hi) * (height - top - bottom);
    const grid = s("g", { class: "grid" });
    for (const v of yt) {
      grid.append(s("line", { x1: left, x2: width - right, y1: y(v), y2: y(v) }));
      grid.append(s("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v, yt[1] - yt[0])));
    }
    svg.append(grid);
    const n = Math.max(1, items.length);
    const slot = (width - left - right) / n;
    const every = Math.max(1, Math.ceil(34 / slot));  // a label needs ~34 px
    const bars = s("g", { class: "bars" });
    items.forEach((it, i) => {
      const x = left + i * slot;
      const bh = Math.max(it.value > 0 ? 1 : 0, y(0) - y(it.value));
      const bar = s("rect", { x: (x + slot * 0.15).toFixed(1), y: (y(0) - bh).toFixed(1), width: Math.max(1, slot * 0.7).toFixed(1),
        height: bh.toFixed(1), class: it.current ? "bar current" : "bar" });
      bar.append(s("title", {}, it.title || `${it.label}: ${it.value}`));
      bars.append(bar);
      if (i % every === 0) bars.append(s("text", { x: x + slot / 2, y: height - 6, "text-anchor": "middle" }, it.label));
    });
    svg.append(bars);
    svg.setAttribute("data-count", String(items.length));
    svg.setAttribute("data-last", items.length ? String(items[items.length - 1].value) : "");
    this.replace(svg);
  }
}
