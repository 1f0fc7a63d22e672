// The eventpipe dashboard: fetches /dashboard/data every REFRESH_MS and redraws its charts in
// place. The key comes from the URL fragment (#key=..., then removed from the address bar) or
// the form, and is kept in sessionStorage for this tab only. Every value from the server is put
// in the page as text (textContent) or drawn on a canvas, never parsed as HTML.
"use strict";

const REFRESH_MS = 5000;
const HISTORY = 120; // health samples kept (10 minutes at 5 s)
const PALETTE = ["#5b9cff", "#3fcf8e", "#ffb547", "#ff6b6b", "#b48cff", "#4dd0e1",
                 "#f48fb1", "#c5e1a5", "#8a93ab"];
const STAGE_COLORS = { normalize: "#ff6b6b", dedupe: "#ffb547", identity: "#b48cff",
                       publish: "#f48fb1", sink: "#4dd0e1", decode: "#c5e1a5" };

const state = { key: null, range: "hour", charts: {}, last: null, health: [], timer: null };
window.__dashboard = state; // for the browser test and for curious people

function $(id) { return document.getElementById(id); }

function readKey() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("key");
  if (given) {
    sessionStorage.setItem("eventpipe.key", given);
    const range = fragment.get("range");
    if (range === "hour" || range === "day") state.range = range;
    history.replaceState(null, "", location.pathname + location.search);
  }
  return given || sessionStorage.getItem("eventpipe.key");
}

function fmt(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Math.round(n).toLocaleString();
}

function hhmm(iso) {
  const d = new Date(iso);
  return d.toISOString().slice(11, 16);
}

function baseOptions(extra) {
  const grid = { color: "#263049" };
  const ticks = { color: "#8a93ab", precision: 0 };
  return Object.assign({
    responsive: true, maintainAspectRatio: false, animation: false,
    interaction: { mode: "index", intersect: false },
    plugins: { legend: { labels: { color: "#e6e9f2", boxWidth: 12 } } },
    scales: { x: { grid, ticks }, y: { grid, ticks, beginAtZero: true } },
  }, extra || {});
}

function makeCharts() {
  const C = window.Chart;
  const c = state.charts;
  c.events = new C($("c-events"), { type: "bar", data: { labels: [], datasets: [] },
    options: baseOptions({ datasets: { bar: { barPercentage: 1, categoryPercentage: .85, borderRadius: 2 } },
      scales: { x: { stacked: true, grid: { display: false }, ticks: { color: "#8a93ab", maxTicksLimit: 13, maxRotation: 0 } },
                y: { stacked: true, beginAtZero: true, grid: { color: "#263049" },
                     ticks: { color: "#8a93ab", precision: 0 },
                     title: { display: true, text: "events / minute", color: "#8a93ab" } } } }) });
  c.top = new C($("c-top"), { type: "bar", data: { labels: [], datasets: [{ label: "events", data: [],
    backgroundColor: "#5b9cff", borderRadius: 4, maxBarThickness: 26 }] },
    options: baseOptions({ indexAxis: "y", plugins: { legend: { display: false } } }) });
  c.stages = new C($("c-stages"), { type: "bar", data: { labels: [], datasets: [{ label: "rejected", data: [],
    backgroundColor: [], borderRadius: 4, maxBarThickness: 26 }] },
    options: baseOptions({ indexAxis: "y", plugins: { legend: { display: false } } }) });
  c.links = new C($("c-links"), { type: "bar", data: { labels: [], datasets: [
      { label: "linked", data: [], backgroundColor: "#3fcf8e", borderRadius: 3, maxBarThickness: 36 },
      { label: "conflict", data: [], backgroundColor: "#ff6b6b", borderRadius: 3, maxBarThickness: 36 }] },
    options: baseOptions({ scales: { x: { stacked: true, grid: { color: "#263049" }, ticks: { color: "#8a93ab", precision: 0 } },
                                     y: { stacked: true, beginAtZero: true, grid: { color: "#263049" }, ticks: { color: "#8a93ab", precision: 0 } } } }) });
  c.persons = new C($("c-persons"), { type: "bar", data: { labels: [], datasets: [{ label: "active persons",
    data: [], backgroundColor: "#b48cff", borderRadius: 3, maxBarThickness: 36 }] },
    options: baseOptions({ plugins: { legend: { display: false } } }) });
  c.lag = new C($("c-lag"), { type: "line", data: { labels: [], datasets: [
      { label: "worker lag (records)", data: [], borderColor: "#5b9cff", pointRadius: 0 },
      { label: "sink lag (records)", data: [], borderColor: "#3fcf8e", pointRadius: 0 },
      { label: "last commit age (s)", data: [], borderColor: "#ffb547", pointRadius: 0, yAxisID: "y2" }] },
    options: baseOptions({ scales: { x: { grid: { color: "#263049" }, ticks: { color: "#8a93ab", maxTicksLimit: 8 } },
      y: { beginAtZero: true, grid: { color: "#263049" }, ticks: { color: "#8a93ab", precision: 0 } },
      y2: { position: "right", beginAtZero: true, grid: { display: false }, ticks: { color: "#ffb547", precision: 0 } } } }) });
  c.rates = new C($("c-rates"), { type: "line", data: { labels: [], datasets: [
      { label: "events in /s (edge)", data: [], borderColor: "#5b9cff", pointRadius: 0 },
      { label: "rows stored /s (sink)", data: [], borderColor: "#3fcf8e", pointRadius: 0 },
      { label: "errors /s (5xx, rejected, insert failures)", data: [], borderColor: "#ff6b6b", pointRadius: 0 }] },
    options: baseOptions({ scales: { x: { grid: { color: "#263049" }, ticks: { color: "#8a93ab", maxTicksLimit: 8 } },
      y: { beginAtZero: true, grid: { color: "#263049" }, ticks: { color: "#8a93ab", precision: 0 } } } }) });
}

function setRows(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      td.textContent = text;
      tr.appendChild(td);
    }
    return tr;
  }));
}

function renderRollups(r) {
  const c = state.charts;
  const ev = r.events;
  c.events.data.labels = ev.minutes.map(hhmm);
  c.events.data.datasets = ev.series.map((s, i) => ({
    label: s.name, data: s.counts, backgroundColor: PALETTE[i % PALETTE.length],
  }));
  c.events.update("none");
  const top = ev.top.slice(0, 10);
  c.top.data.labels = top.map((t) => t.name);
  c.top.data.datasets[0].data = top.map((t) => t.events);
  c.top.update("none");

  const stages = Object.entries(r.rejections.by_stage);
  c.stages.data.labels = stages.map(([s]) => s);
  c.stages.data.datasets[0].data = stages.map(([, n]) => n);
  c.stages.data.datasets[0].backgroundColor = stages.map(([s]) => STAGE_COLORS[s] || "#8a93ab");
  c.stages.update("none");

  const days = [...new Set(r.identity_links.map((l) => l.day))].sort();
  const links = (status) => days.map((d) => {
    const row = r.identity_links.find((l) => l.day === d && l.status === status);
    return row ? row.links : 0;
  });
  c.links.data.labels = days.map((d) => d.slice(5));
  c.links.data.datasets[0].data = links("linked");
  c.links.data.datasets[1].data = links("conflict");
  c.links.update("none");
  c.persons.data.labels = r.active_persons.map((p) => p.day.slice(5));
  c.persons.data.datasets[0].data = r.active_persons.map((p) => p.persons);
  c.persons.update("none");

  const rejected = stages.reduce((a, [, n]) => a + n, 0);
  $("t-events").textContent = fmt(ev.total);
  $("t-events-sub").textContent = state.range === "hour" ? "last hour" : "last day";
  $("t-rejected").textContent = fmt(rejected);
  $("t-rejected").className = "value " + (rejected > 0 ? "warn" : "good");
  $("t-dupes").textContent = fmt(r.duplicates);
  const today = r.active_persons.length ? r.active_persons[r.active_persons.length - 1] : null;
  $("t-persons").textContent = fmt(today ? today.persons : 0);

  setRows($("reasons").tBodies[0], r.rejections.groups.slice(0, 12).map((g) => [
    [g.stage], [g.field || "–"], [fmt(g.rejected), "n"], [g.reasons.join(" · ")],
    [[...new Set(g.examples.map((e) => e.event_id))].join(", ")],
  ]));
  $("reasons-empty").hidden = r.rejections.groups.length > 0;
  setRows($("anomalies").tBodies[0], r.anomalies.map((a) => [
    [a.name], [a.version || "(none)"], [a.kind], [a.property], [fmt(a.events), "n"],
  ]));
  $("anomalies-empty").hidden = r.anomalies.length > 0;
}

function renderHealth(h, sources) {
  const now = Date.now();
  const sample = { t: now, h };
  state.health.push(sample);
  if (state.health.length > HISTORY) state.health.shift();
  const rate = (a, b, key) => {
    if (!a || a.h[key] === null || b.h[key] === null) return null;
    const dt = (b.t - a.t) / 1000;
    return dt > 0 ? Math.max(0, (b.h[key] - a.h[key]) / dt) : null;
  };
  const c = state.charts;
  const labels = [], wl = [], sl = [], age = [], rin = [], rout = [], rerr = [];
  state.health.forEach((s, i) => {
    labels.push(new Date(s.t).toISOString().slice(11, 19));
    wl.push(s.h.worker_lag); sl.push(s.h.sink_lag); age.push(s.h.sink_last_commit_age_s);
    const p = i > 0 ? state.health[i - 1] : null;
    rin.push(rate(p, s, "edge_events"));
    rout.push(rate(p, s, "sink_rows"));
    const errs = ["edge_errors", "worker_rejected", "sink_insert_failures"]
      .map((k) => rate(p, s, k)).filter((v) => v !== null);
    rerr.push(errs.length ? errs.reduce((a, b) => a + b, 0) : null);
  });
  c.lag.data.labels = labels; c.rates.data.labels = labels;
  [wl, sl, age].forEach((d, i) => { c.lag.data.datasets[i].data = d; });
  [rin, rout, rerr].forEach((d, i) => { c.rates.data.datasets[i].data = d; });
  c.lag.update("none"); c.rates.update("none");
  $("t-wlag").textContent = fmt(h.worker_lag);
  $("t-wlag").className = "value " + (h.worker_lag > 1000 ? "bad" : h.worker_lag > 0 ? "warn" : "good");
  $("t-slag").textContent = fmt(h.sink_lag);
  $("t-slag").className = "value " + (h.sink_lag > 1000 ? "bad" : h.sink_lag > 0 ? "warn" : "good");
  const a = h.sink_last_commit_age_s;
  $("t-commit").textContent = a === null ? "–" : a < 120 ? a.toFixed(0) + " s" : fmt(a / 60) + " min";
  $("t-commit").className = "value " + (a === null ? "" : a > 60 && h.sink_lag > 0 ? "bad" : "good");
  const el = $("sources");
  el.replaceChildren(document.createTextNode("metrics read from: "));
  sources.forEach((s, i) => {
    const span = document.createElement("span");
    span.textContent = (i ? ", " : "") + s.url + (s.ok ? "" : " (unreachable)");
    if (!s.ok) span.className = "down";
    el.appendChild(span);
  });
}

async function refresh() {
  let resp;
  try {
    resp = await fetch(`/dashboard/data?range=${state.range}`,
                       { headers: { Authorization: `Bearer ${state.key}` } });
  } catch (err) {
    $("live-dot").className = "dot down";
    $("updated").textContent = "edge unreachable";
    return;
  }
  if (resp.status === 401) {
    sessionStorage.removeItem("eventpipe.key");
    showLogin("That key was refused.");
    return;
  }
  const body = await resp.json();
  if (!resp.ok) {
    $("updated").textContent = body.message || `HTTP ${resp.status}`;
    return;
  }
  state.last = body;
  $("scope").textContent = body.scope === null ? "all workspaces (admin)" : `workspace ${body.scope}`;
  if (body.rollups) renderRollups(body.rollups);
  renderHealth(body.health, body.sources);
  $("live-dot").className = "dot live";
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  document.body.dataset.state = "ready";
}

function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  if (!state.charts.events) makeCharts();
  refresh();
  clearInterval(state.timer);
  state.timer = setInterval(refresh, REFRESH_MS);
}

function showLogin(message) {
  clearInterval(state.timer);
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("button.range").forEach((b) => {
    b.classList.toggle("active", b.dataset.range === state.range);
    b.addEventListener("click", () => {
      state.range = b.dataset.range;
      document.querySelectorAll("button.range").forEach((o) => o.classList.toggle("active", o === b));
      refresh();
    });
  });
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = $("key").value.trim();
    if (state.key) { sessionStorage.setItem("eventpipe.key", state.key); start(); }
  });
  state.key = readKey();
  document.querySelectorAll("button.range").forEach((b) =>
    b.classList.toggle("active", b.dataset.range === state.range));
  if (state.key) start(); else showLogin();
});
