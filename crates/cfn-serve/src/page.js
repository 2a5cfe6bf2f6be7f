"use strict";
const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmt(v) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  return String(parseFloat(v.toFixed(a < 10 ? 3 : 1)));
}
async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}
function params(extra) {
  // exact=1: names are literal, so a metric called `x[` is not read as a glob.
  const p = new URLSearchParams(Object.assign({ exact: "1" }, extra));
  if ($("agent").value) p.set("agent", $("agent").value);
  return p.toString();
}
function setOptions(select, values) {
  const keep = select.value;
  const have = Array.from(select.options).map((o) => o.value).slice(1).join("\n");
  if (have === values.join("\n")) return;
  select.length = 1;
  for (const v of values) select.append(el("option", { value: v }, v));
  select.value = values.includes(keep) ? keep : "";
}

function drawChart(card, metric, aggs, rangeMs, bucketMs, now) {
  const W = 600, H = 180, L = 44, R = 6, T = 8, B = 18;
  const svg = el("svg:svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, "data-metric": metric, "data-points": String(aggs.length), preserveAspectRatio: "none" });
  const t0 = now - rangeMs;
  const x = (t) => L + ((t - t0) / rangeMs) * (W - L - R);
  const ymax = Math.max(1e-9, ...aggs.map((a) => a.p99 ?? a.max ?? 0));
  const y = (v) => T + (1 - v / ymax) * (H - T - B);
  const cmax = Math.max(1, ...aggs.map((a) => a.count));
  const bw = Math.max(1, ((W - L - R) / Math.max(1, rangeMs / bucketMs)) - 1);
  for (const a of aggs) {
    const t = Date.parse(a.bucket_start);
    const h = (a.count / cmax) * (H - T - B) * 0.35;
    svg.append(el("svg:rect", { class: "count", x: x(t).toFixed(1), y: (H - B - h).toFixed(1), width: bw.toFixed(1), height: h.toFixed(1) }));
  }
  for (const key of ["p50", "p95", "p99"]) {
    const pts = aggs.map((a) => `${x(Date.parse(a.bucket_start)).toFixed(1)},${y(a[key]).toFixed(1)}`).join(" ");
    svg.append(el("svg:polyline", { class: key, points: pts, "data-points": String(aggs.length) }));
  }
  svg.append(el("svg:text", { class: "axis", x: 2, y: T + 8 }, fmt(ymax)));
  svg.append(el("svg:text", { class: "axis", x: 2, y: H - B }, "0"));
  svg.append(el("svg:text", { class: "axis", x: L, y: H - 4 }, `-${$("range").value}`));
  svg.append(el("svg:text", { class: "axis", x: W - 30, y: H - 4 }, "now"));
  card.replaceChildren(
    el("h3", {}, metric),
    legend(aggs),
    svg,
  );
}
function legend(aggs) {
  const d = el("div", { class: "legend" });
  const total = aggs.reduce((s, a) => s + a.count, 0);
  d.append(`${aggs.length} buckets, ${total} records`);
  for (const k of ["p50", "p95", "p99"]) { const b = el("b", { class: `key-${k}` }); d.append(b, k); }
  const b = el("b", { class: "key-cnt" }); d.append(b, "count");
  return d;
}

async function refresh() {
  const range = $("range").value;
  try {
    // One request per refresh: the server answers every part of the page from its rollups.
    const extra = { range };
    if ($("metric").value) extra.metric = $("metric").value;
    const d = await getJSON(`/api/dashboard?${params(extra)}`);
    const now = Date.parse(d.now);
    setOptions($("metric"), d.metrics);
    setOptions($("agent"), d.agents);
    const metrics = d.shown;

    const box = $("alerts");
    box.replaceChildren();
    if (d.alerts.firing.length === 0) box.append(el("div", { class: "none" }, "Nothing is firing."));
    for (const a of d.alerts.firing) {
      const div = el("div", { class: `alert ${a.severity}`, "data-alert": a.alert });
      div.append(el("strong", {}, `${a.alert} [${a.severity}]`), " ", a.message || "", el("span", { class: "legend" }, a.since ? ` since ${a.since}` : ""));
      box.append(div);
    }

    const tbody = $("summary").tBodies[0];
    tbody.replaceChildren();
    for (const a of d.summary.filter((a) => metrics.includes(a.metric))) {
      const tr = el("tr");
      tr.append(el("td", {}, a.metric), ...["count", "avg", "min", "max", "p50", "p95", "p99"].map((k) => el("td", {}, fmt(a[k]))), el("td", {}, a.unit || ""));
      tbody.append(tr);
    }

    const cards = metrics.map((m) => {
      const card = el("div", { class: "chart-card" });
      drawChart(card, m, d.series[m] || [], d.range_ms, d.bucket_ms, now);
      return card;
    });
    $("charts").replaceChildren(...cards);

    const sb = $("shards").tBodies[0];
    sb.replaceChildren();
    for (const s of d.shards) {
      const tr = el("tr");
      const age = s.newest_age_s === null ? "–" : `${fmt(s.newest_age_s)} s ago`;
      const ageCell = el("td", { class: s.newest_age_s > 300 ? "stale" : "" }, age);
      tr.append(el("td", {}, s.file), el("td", {}, fmt(s.bytes)), el("td", {}, fmt(s.records)), el("td", { class: s.malformed ? "stale" : "" }, String(s.malformed)), ageCell);
      sb.append(tr);
    }
    $("status").textContent = `updated ${new Date(now).toLocaleTimeString()}`;
    document.body.dataset.ready = "1";
  } catch (e) {
    $("status").textContent = `error: ${e.message}`;
  }
}
for (const id of ["range", "metric", "agent"]) $(id).addEventListener("change", refresh);
refresh();
setInterval(refresh, 5000);
