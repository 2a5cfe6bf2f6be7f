"use strict";
// The cfn-serve page: one /api/dashboard request per refresh; the view (range, metric,
// agent, tag, scale, clock) lives in the URL so it can be shared, bookmarked and walked
// with back and forward.
const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";
const PRESETS = [["5m", 300e3], ["15m", 900e3], ["1h", 3600e3], ["6h", 21600e3], ["24h", 86400e3]];
const PRESET_MS = Object.fromEntries(PRESETS);
const LABEL = { "5m": "5 min", "15m": "15 min", "1h": "1 h", "6h": "6 h", "24h": "24 h" };
// With no data to fit a range to.
const DEFAULT_RANGE = "1h";
const TIME_STEPS = [30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 10800e3, 21600e3, 43200e3];

let view = { range: "", metric: "", agent: "", tag: "", log: false, utc: false };
let problems = [];   // what was wrong with the URL, shown until the view changes
let autoRange = null; // the preset "auto" chose last
let last = null;      // the last answer, redrawn on resize and on toggles
let timer = null;

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
// A metric name that may wrap after its dots and underscores (text nodes: never markup).
function breakable(tag, attrs, name) {
  const e = el(tag, attrs);
  for (const part of name.split(/(?<=[._])/)) e.append(document.createTextNode(part), el("wbr"));
  return e;
}
function plural(n, one, many) {
  return `${n.toLocaleString("en-US")} ${n === 1 ? one : (many || one + "s")}`;
}

// ---- the view in the URL
const AGENT_STATES = ["silent", "active", "done", "gone"];
const AGENT_ROWS = 50;
function readURL() {
  const p = new URLSearchParams(location.search);
  const found = [];
  const v = {
    range: p.get("range") || "", metric: p.get("metric") || "", agent: p.get("agent") || "",
    tag: p.get("tag") || "", log: p.get("scale") === "log", utc: p.get("tz") === "utc",
    agents: p.get("agents") || "",
  };
  if (v.agents && !AGENT_STATES.includes(v.agents)) {
    found.push(`Unknown agent state "${v.agents}" (use ${AGENT_STATES.join(", ")}): showing every agent.`);
    v.agents = "";
  }
  if (v.range && !(v.range in PRESET_MS)) {
    found.push(`Unknown range "${v.range}" (use ${PRESETS.map((r) => r[0]).join(", ")}): showing the default view.`);
    v.range = "";
  }
  if (v.tag && !/^[^=:]+[=:]/.test(v.tag)) {
    found.push(`Tag "${v.tag}" is not NAME=VALUE: showing every tag.`);
    v.tag = "";
  }
  return { v, found };
}
function urlOf(v) {
  const p = new URLSearchParams();
  if (v.range) p.set("range", v.range);
  if (v.metric) p.set("metric", v.metric);
  if (v.agent) p.set("agent", v.agent);
  if (v.tag) p.set("tag", v.tag);
  if (v.log) p.set("scale", "log");
  if (v.utc) p.set("tz", "utc");
  if (v.agents) p.set("agents", v.agents);
  const q = p.toString();
  return location.pathname + (q ? "?" + q : "");
}
// push: a change the user made (back undoes it); else the URL is corrected in place.
function setView(change, push) {
  view = Object.assign({}, view, change);
  const url = urlOf(view);
  if (push && url !== location.pathname + location.search) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
  syncControls();
}
function ensureOption(select, value) {
  if (value && !Array.from(select.options).some((o) => o.value === value)) select.append(el("option", { value }, value));
}
function syncControls() {
  ensureOption($("metric"), view.metric);
  ensureOption($("agent"), view.agent);
  $("range").value = view.range;
  $("metric").value = view.metric;
  $("agent").value = view.agent;
  $("tag").value = view.tag;
  $("log").checked = view.log;
  $("utc").checked = view.utc;
  $("agent-state").value = view.agents;
  document.body.dataset.view = urlOf(view);
}
function showProblems() {
  const n = $("notice");
  n.replaceChildren(...problems.map((m) => el("p", {}, m)));
  n.hidden = problems.length === 0;
}

// ---- one clock: local time with its zone, or UTC
function parts(ms) {
  const f = new Intl.DateTimeFormat("en-US", {
    timeZone: view.utc ? "UTC" : undefined, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
  });
  const o = {};
  for (const p of f.formatToParts(new Date(ms))) o[p.type] = p.value;
  return o;
}
function timeOf(ms, seconds) {
  const p = parts(ms);
  return seconds ? `${p.hour}:${p.minute}:${p.second}` : `${p.hour}:${p.minute}`;
}
function stamp(ms) {
  const p = parts(ms);
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${p.timeZoneName}`;
}
function zoneOffsetMs(ms) {
  return view.utc ? 0 : -new Date(ms).getTimezoneOffset() * 60e3;
}

// ---- numbers in their unit (the server says how each unit scales: cfn_core::units)
function fmtNum(v) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e15) return v.toPrecision(4).replace("e+", "e");
  if (a >= 1e9) return +(v / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return +(v / 1e6).toFixed(2) + "M";
  if (Number.isInteger(v)) return String(v);
  return String(+v.toFixed(a >= 100 ? 1 : a >= 1 ? 2 : 3));
}
function scaledOf(metric) {
  const u = last && last.units[metric];
  return u && u.scaled ? u.scaled : null;
}
function rawUnit(metric) {
  const u = last && last.units[metric];
  return u && !u.scaled && u.unit && u.unit !== "count" ? u.unit : "";
}
// The unit to show values up to `maxBase` (in the base unit) in: [name, base units per one].
function displayUnit(dimension, maxBase) {
  const a = Math.abs(maxBase);
  if (dimension === "time") {
    if (a > 0 && a < 1e-3) return ["µs", 1e-6];
    if (a < 1) return ["ms", 1e-3];
    if (a < 120) return ["s", 1];
    if (a < 7200) return ["min", 60];
    return ["h", 3600];
  }
  if (dimension === "bytes") {
    if (a < 1024) return ["B", 1];
    if (a < 1048576) return ["KB", 1024];
    if (a < 1073741824) return ["MB", 1048576];
    return ["GB", 1073741824];
  }
  if (dimension === "percent") return ["%", 1];
  return ["", 1];
}
function fmtBytes(n) {
  const [name, per] = displayUnit("bytes", n);
  return `${fmtNum(n / per)} ${name}`;
}
function emptyRow(cols, text) {
  const tr = el("tr");
  tr.append(el("td", { colspan: String(cols), class: "empty" }, text));
  return tr;
}
function fmtValue(v, metric) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  const s = scaledOf(metric);
  if (!s) return fmtNum(v);
  const base = v * s.to_base;
  // Past the largest double in the base unit (1e308 GB in bytes): shown as it was recorded.
  if (!isFinite(base)) return `${fmtNum(v)} ${(last && last.units[metric] && last.units[metric].unit) || ""}`.trim();
  const [name, per] = displayUnit(s.dimension, base);
  return `${fmtNum(base / per)} ${name}`;
}
// A value as drawn: finite, at most the largest double of its sign (the number itself is
// shown as it is in the table and the tooltip).
function finite(v) {
  return isNaN(v) ? 0 : Math.max(-Number.MAX_VALUE, Math.min(Number.MAX_VALUE, v));
}

// ---- axes
function niceStep(span, n) {
  const raw = span / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw * (1 - 1e-9)) return m * mag;
  return 10 * mag;
}
// 3 to 5 ticks from 0 to a round top at or above `max` (at most 6, whatever `max` is: a
// round top past the largest double ends the ticks at `max` itself).
function linearTicks(max) {
  max = finite(max);
  if (!(max > 0)) max = 1;
  const step = niceStep(max, 4);
  const top = Math.ceil(max / step - 1e-9) * step;
  const ticks = [];
  for (let i = 0; i < 6; i++) {
    const t = i * step;
    if (!isFinite(t) || t > top * (1 + 1e-9)) break;
    ticks.push(+t.toPrecision(12));
  }
  if (ticks[ticks.length - 1] < max) ticks.push(max);
  return ticks;
}
// 3 to 5 ticks on a log scale over [lo, hi] (both > 0): decades, or 1-2-5 steps when the
// data spans less than two.
function logTicks(lo, hi) {
  lo = Math.max(finite(lo), Number.MIN_VALUE); hi = Math.max(finite(hi), lo);
  // Decades within the doubles: 10^-323 to 10^308.
  let a = Math.max(Math.floor(Math.log10(lo)), -323), b = Math.min(Math.ceil(Math.log10(hi)), 308);
  if (b === a) b < 308 ? (b = a + 1) : (a = b - 1);
  if (b - a >= 2) {
    const k = Math.ceil((b - a) / 4);
    const ticks = [];
    for (let e = a; ; e += k) {
      ticks.push(10 ** Math.min(e, b));
      if (e >= b) break;
    }
    return ticks.slice(0, 5);
  }
  const ticks = [];
  for (let e = a; e <= b; e++) for (const m of [1, 2, 5]) {
    const t = m * 10 ** e;
    if (t >= 10 ** a && t <= 10 ** b) ticks.push(+t.toPrecision(12));
  }
  while (ticks.length > 3 && ticks[ticks.length - 2] >= hi) ticks.pop();
  while (ticks.length > 3 && ticks[1] <= lo) ticks.shift();
  return ticks.slice(0, 5);
}
function timeTicks(t0, t1) {
  const step = TIME_STEPS.find((s) => (t1 - t0) / s <= 8) || 86400e3;
  const off = step >= 3600e3 ? zoneOffsetMs(t1) : 0;
  const ticks = [];
  for (let t = Math.ceil((t0 + off) / step) * step - off; t <= t1; t += step) ticks.push(t);
  return ticks;
}

// ---- a chart
function drawChart(card, metric, aggs, d, now) {
  const W = Math.max(280, Math.floor(card.clientWidth - 24) || 560);
  const L = 64, R = 44, T = 10, HL = 170, GAP = 12, HB = 44, HX = 22;
  const H = T + HL + GAP + HB + HX;
  const t0 = now - d.range_ms;
  const x = (t) => L + ((t - t0) / d.range_ms) * (W - L - R);
  const s = scaledOf(metric) || { dimension: "", to_base: 1 };
  const unitRaw = rawUnit(metric);
  const series = aggs.map((a) => ({ t: Date.parse(a.bucket_start), a }));
  const base = (v) => finite(v * s.to_base);
  const top = Math.max(0, ...aggs.map((a) => base(a.p99 ?? a.max ?? 0)));
  const [uname, per] = displayUnit(s.dimension, top);
  const positive = aggs.flatMap((a) => [a.p50, a.p95, a.p99]).map(base).filter((v) => v > 0);
  const useLog = view.log && positive.length > 0;
  // Tick values are in the display unit; yd places one, y a value in the metric's unit.
  let ticks, yd;
  if (useLog) {
    ticks = logTicks(Math.min(...positive) / per, Math.max(...positive) / per);
    const lo = Math.log10(ticks[0]), hi = Math.log10(ticks[ticks.length - 1]);
    yd = (dv) => T + (1 - (Math.log10(Math.max(dv, ticks[0])) - lo) / (hi - lo || 1)) * HL;
  } else {
    ticks = linearTicks(top / per);
    const tmax = ticks[ticks.length - 1];
    yd = (dv) => T + (1 - dv / tmax) * HL;
  }
  const y = (v) => yd(base(v) / per);
  const svg = el("svg:svg", {
    class: "chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, tabindex: "0", role: "img",
    "data-metric": metric, "data-points": String(aggs.length), "data-scale": useLog ? "log" : "linear",
    "aria-label": `${metric}: p50, p95 and p99 over ${LABEL[d.range_label] || d.range_label}, ${plural(aggs.length, "bucket")}; arrow keys read each bucket`,
  });
  // y axis: gridlines and labels in the metric's unit
  for (const tv of ticks) {
    const yy = yd(tv);
    svg.append(el("svg:line", { class: "grid", x1: L, x2: W - R, y1: yy.toFixed(1), y2: yy.toFixed(1) }));
    const label = `${fmtNum(tv)}${uname ? " " + uname : unitRaw ? " " + unitRaw : ""}`;
    svg.append(el("svg:text", { class: "tick tick-y", x: L - 6, y: (yy + 4).toFixed(1), "text-anchor": "end" }, label));
  }
  // x axis: 4 to 8 labelled times across the range
  const by = T + HL + GAP + HB;
  for (const t of timeTicks(t0, now)) {
    const xx = x(t);
    svg.append(el("svg:line", { class: "grid", x1: xx.toFixed(1), x2: xx.toFixed(1), y1: T, y2: by }));
    svg.append(el("svg:text", { class: "tick tick-x", x: xx.toFixed(1), y: by + 15, "text-anchor": "middle" }, timeOf(t)));
  }
  // counts: bars with their own scale on the right
  const cticks = linearTicks(Math.max(1, ...aggs.map((a) => a.count)));
  const cmax = cticks[cticks.length - 1];
  const bw = Math.max(1, ((W - L - R) * d.bucket_ms) / d.range_ms - 1);
  for (const { t, a } of series) {
    const h = (a.count / cmax) * HB;
    svg.append(el("svg:rect", { class: "count", x: x(t).toFixed(1), y: (by - h).toFixed(1), width: bw.toFixed(1), height: h.toFixed(1) }));
  }
  for (const cv of [0, cmax]) {
    svg.append(el("svg:text", { class: "tick tick-count", x: W - R + 6, y: (by - (cv / cmax) * HB + 4).toFixed(1) }, fmtNum(cv)));
  }
  // quantile lines, broken where buckets are missing; a point where a bucket stands alone
  for (const key of ["p50", "p95", "p99"]) {
    let seg = [];
    const flush = () => {
      if (seg.length > 1) svg.append(el("svg:polyline", { class: `line ${key}`, points: seg.map((p) => `${p[0]},${p[1]}`).join(" "), "data-points": String(seg.length) }));
      if (seg.length === 1) svg.append(el("svg:circle", { class: `point ${key}`, cx: seg[0][0], cy: seg[0][1], r: 3.5 }));
      seg = [];
    };
    series.forEach(({ t, a }, i) => {
      if (i > 0 && t - series[i - 1].t > d.bucket_ms) flush();
      seg.push([(x(t) + bw / 2).toFixed(1), y(a[key]).toFixed(1)]);
    });
    flush();
  }
  const cursor = el("svg:line", { class: "cursor", x1: 0, x2: 0, y1: T, y2: by, visibility: "hidden" });
  svg.append(cursor);
  attachTooltip(svg, cursor, series, (t) => x(t) + bw / 2, metric, d.bucket_ms);
  card.replaceChildren(el("h3", {}, metric), legend(aggs, cmax), svg);
}
function legend(aggs, cmax) {
  const d = el("div", { class: "legend" });
  const total = aggs.reduce((s, a) => s + a.count, 0);
  for (const k of ["p50", "p95", "p99"]) d.append(el("b", { class: `key key-${k}`, "aria-hidden": "true" }), k);
  d.append(el("b", { class: "key key-cnt", "aria-hidden": "true" }), `records per bucket (right scale, up to ${fmtNum(cmax)})`);
  d.append(el("span", { class: "totals" }, ` · ${plural(aggs.length, "bucket")}, ${plural(total, "record")}`));
  return d;
}
function attachTooltip(svg, cursor, series, xOf, metric, bucketMs) {
  let at = -1;
  const tip = $("tooltip");
  const show = (i, clientX, clientY) => {
    if (series.length === 0) return;
    at = Math.max(0, Math.min(series.length - 1, i));
    const { t, a } = series[at];
    const cx = xOf(t);
    cursor.setAttribute("x1", cx);
    cursor.setAttribute("x2", cx);
    cursor.setAttribute("visibility", "visible");
    tip.replaceChildren(
      el("strong", {}, `${metric}`),
      el("div", {}, `${timeOf(t, true)} – ${timeOf(t + bucketMs, true)} ${parts(t).timeZoneName}`),
      ...[["records", fmtNum(a.count)], ["p50", fmtValue(a.p50, metric)], ["p95", fmtValue(a.p95, metric)], ["p99", fmtValue(a.p99, metric)], ["max", fmtValue(a.max, metric)]]
        .map(([k, v]) => el("div", {}, `${k} ${v}`)),
    );
    tip.hidden = false;
    const box = svg.getBoundingClientRect();
    const px = clientX ?? box.left + (cx / svg.viewBox.baseVal.width) * box.width;
    const py = clientY ?? box.top + 20;
    tip.style.left = `${Math.min(window.scrollX + px + 12, window.scrollX + document.documentElement.clientWidth - 200)}px`;
    tip.style.top = `${window.scrollY + py + 12}px`;
  };
  const hide = () => { tip.hidden = true; cursor.setAttribute("visibility", "hidden"); };
  svg.addEventListener("mousemove", (e) => {
    const box = svg.getBoundingClientRect();
    const vx = ((e.clientX - box.left) / box.width) * svg.viewBox.baseVal.width;
    let best = -1, dist = Infinity;
    series.forEach(({ t }, i) => { const dd = Math.abs(xOf(t) - vx); if (dd < dist) { dist = dd; best = i; } });
    if (best >= 0) show(best, e.clientX, e.clientY);
  });
  svg.addEventListener("mouseleave", hide);
  svg.addEventListener("blur", hide);
  svg.addEventListener("focus", () => show(at < 0 ? series.length - 1 : at));
  svg.addEventListener("keydown", (e) => {
    const moves = { ArrowLeft: at - 1, ArrowRight: at + 1, Home: 0, End: series.length - 1 };
    if (e.key in moves) { e.preventDefault(); show(moves[e.key]); }
    if (e.key === "Escape") hide();
  });
}

// ---- the page
async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  const body = await r.json();
  if (!r.ok) { const e = new Error(body.error || r.statusText); e.status = r.status; throw e; }
  return body;
}
function setOptions(select, values, keep) {
  const have = Array.from(select.options).map((o) => o.value).slice(1).join("\n");
  if (have !== values.join("\n")) {
    select.length = 1;
    for (const v of values) select.append(el("option", { value: v }, v));
  }
  ensureOption(select, keep);
  select.value = keep;
}
// The smallest preset that holds the data (the index's oldest minute with records).
function fitRange(d) {
  if (!d.data_since) return DEFAULT_RANGE;
  const age = Date.parse(d.now) - Date.parse(d.data_since);
  const fit = PRESETS.find(([, ms]) => ms >= age);
  return fit ? fit[0] : "24h";
}

async function refresh() {
  clearTimeout(timer);
  const range = view.range || autoRange || "24h";
  const q = new URLSearchParams({ exact: "1", range });
  if (view.metric) q.set("metric", view.metric);
  if (view.agent) q.set("agent", view.agent);
  if (view.tag) q.set("tag", view.tag);
  try {
    const aq = new URLSearchParams({ limit: String(AGENT_ROWS) });
    if (view.agents) aq.set("state", view.agents);
    const [d, ag] = await Promise.all([getJSON(`/api/dashboard?${q}`), getJSON(`/api/agents?${aq}`)]);
    d.agent_states = ag;
    if (!view.range) {
      const pick = fitRange(d);
      const again = pick !== range;
      autoRange = pick;
      if (again) return refresh();
    }
    if (view.metric && !d.metrics.includes(view.metric)) {
      problems.push(`No metric "${view.metric}" has records in the last ${LABEL[range]}: showing every metric.`);
      setView({ metric: "" }, false);
      showProblems();
      return refresh();
    }
    d.range_label = range;
    last = d;
    render(d);
  } catch (e) {
    if (e.status === 400 && (view.tag || view.agent || view.metric)) {
      problems.push(`${e.message}: showing the default view.`);
      setView({ tag: "", agent: "", metric: "" }, false);
      showProblems();
      return refresh();
    }
    $("status").textContent = `error: ${e.message}`;
  }
  timer = setTimeout(refresh, 5000);
}

function render(d) {
  const now = Date.parse(d.now);
  setOptions($("metric"), d.metrics, view.metric);
  setOptions($("agent"), d.agents, view.agent);
  const metrics = d.shown;

  const box = $("alerts");
  box.replaceChildren();
  if (d.alerts.firing.length === 0) box.append(el("p", { class: "none" }, "Nothing is firing."));
  for (const a of d.alerts.firing) {
    const div = el("div", { class: `alert ${a.severity}`, "data-alert": a.alert });
    const since = a.since && isFinite(Date.parse(a.since)) ? ` since ${stamp(Date.parse(a.since))}` : "";
    div.append(el("strong", {}, `${a.alert} [${a.severity}]`), " ", a.message || "", el("span", { class: "dim" }, since));
    box.append(div);
  }

  renderAgents(d.agent_states);

  const tbody = $("summary").tBodies[0];
  const rows = d.summary.filter((a) => metrics.includes(a.metric));
  tbody.replaceChildren();
  if (rows.length === 0) {
    const what = view.metric || view.agent || view.tag ? " matching this view" : "";
    tbody.append(emptyRow(9, `No records${what} in the last 30 s.`));
  }
  for (const a of rows) {
    const tr = el("tr");
    tr.append(breakable("th", { scope: "row" }, a.metric), el("td", {}, fmtNum(a.count)),
      ...["avg", "min", "max", "p50", "p95", "p99"].map((k) => el("td", {}, fmtValue(a[k], a.metric))), el("td", {}, a.unit || ""));
    tbody.append(tr);
  }

  const range = d.range_label;
  const from = now - d.range_ms;
  const day = (t) => (d.range_ms >= 12 * 3600e3 ? `${parts(t).month}-${parts(t).day} ` : "");
  $("range-label").textContent = `${view.range ? "" : "auto: "}${LABEL[range]}, ${day(from)}${timeOf(from)} – ${day(now)}${timeOf(now)} ${parts(now).timeZoneName}`;
  // A metric with no bucket in the range (a filter that matches none of its records) gets
  // no chart: empty axes would only show made-up ticks.
  const charted = metrics.filter((m) => (d.series[m] || []).length > 0);
  if (charted.length === 0) {
    const what = view.metric || view.agent || view.tag ? " matching this view" : "";
    $("charts").replaceChildren(el("p", { class: "empty" }, `No records${what} in the last ${LABEL[range]}.`));
  } else {
    const cards = charted.map((m) => el("div", { class: "chart-card" }));
    $("charts").replaceChildren(...cards);
    charted.forEach((m, i) => drawChart(cards[i], m, d.series[m], d, now));
    const idle = metrics.length - charted.length;
    if (idle > 0) $("charts").append(el("p", { class: "dim" }, `${plural(idle, "metric")} with no records in this range.`));
  }
  if (d.charts_not_shown > 0) $("charts").append(el("p", { class: "dim" }, `${plural(d.charts_not_shown, "more metric")} not charted: pick one above.`));

  const sb = $("shards").tBodies[0];
  sb.replaceChildren();
  if (d.shards.length === 0) sb.append(emptyRow(5, "No hot shards."));
  for (const s of d.shards) {
    const tr = el("tr");
    const age = s.newest_age_s === null ? "–" : `${fmtNum(Math.round(s.newest_age_s))} s ago`;
    tr.append(el("th", { scope: "row" }, s.file), el("td", {}, fmtBytes(s.bytes)), el("td", {}, fmtNum(s.records)),
      el("td", { class: s.malformed ? "stale" : "" }, fmtNum(s.malformed)), el("td", { class: s.newest_age_s > 300 ? "stale" : "" }, age));
    sb.append(tr);
  }
  $("status").textContent = `updated ${stamp(now)}`;
  document.body.dataset.ready = "1";
  document.body.dataset.range = range;
}

// Who went silent: silent agents first (the server sorts), done and gone dimmed; each name
// links to the page filtered to that agent.
function renderAgents(a) {
  const c = a.counts;
  $("agent-counts").textContent = `${fmtNum(c.silent)} silent, ${fmtNum(c.active)} active, ${fmtNum(c.done)} done, ${fmtNum(c.gone)} gone`;
  const body = $("agents").tBodies[0];
  body.replaceChildren();
  if (a.agents.length === 0) body.append(emptyRow(7, view.agents ? `No ${view.agents} agents.` : "No agent has written yet."));
  for (const r of a.agents) {
    const tr = el("tr", { class: `agent-${r.state}`, "data-agent": r.agent, "data-state": r.state });
    const link = el("a", { href: urlOf(Object.assign({}, view, { agent: r.agent })) }, r.agent);
    link.addEventListener("click", (e) => { e.preventDefault(); changed({ agent: r.agent }); });
    const th = el("th", { scope: "row" });
    th.append(link);
    tr.append(th, el("td", {}, r.state), el("td", {}, stamp(Date.parse(r.last_seen))),
      el("td", {}, `${fmtNum(r.silence_s)} s`), el("td", {}, `${fmtNum(r.threshold_s)} s`),
      el("td", {}, fmtNum(r.per_minute)), el("td", {}, fmtNum(r.records)));
    body.append(tr);
  }
  if (a.matching > a.shown) body.append(emptyRow(7, `${plural(a.matching - a.shown, "more agent")} not shown.`));
}

function changed(change) {
  problems = [];
  showProblems();
  setView(change, true);
  refresh();
}
$("range").addEventListener("change", (e) => changed({ range: e.target.value }));
$("metric").addEventListener("change", (e) => changed({ metric: e.target.value }));
$("agent").addEventListener("change", (e) => changed({ agent: e.target.value }));
$("agent-state").addEventListener("change", (e) => changed({ agents: e.target.value }));
$("tag").addEventListener("change", (e) => {
  const t = e.target.value.trim();
  if (t && !/^[^=:]+[=:]/.test(t)) { problems = [`Tag "${t}" is not NAME=VALUE.`]; showProblems(); return; }
  changed({ tag: t });
});
for (const id of ["log", "utc"]) {
  $(id).addEventListener("change", (e) => {
    setView({ [id]: e.target.checked }, true);
    if (last) render(last);
  });
}
window.addEventListener("popstate", () => {
  const { v, found } = readURL();
  view = v;
  problems = found;
  showProblems();
  syncControls();
  refresh();
});
let resizing = null;
window.addEventListener("resize", () => {
  // A tooltip placed for the old width would hang past the new one.
  $("tooltip").hidden = true;
  clearTimeout(resizing);
  resizing = setTimeout(() => { if (last) render(last); }, 150);
});
{
  const { v, found } = readURL();
  view = v;
  problems = found;
  setView({}, false);
  showProblems();
  refresh();
}
