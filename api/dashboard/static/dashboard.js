/* streamrec operator dashboard: polls the JSON endpoints and draws Chart.js charts.
   Counters arrive cumulative; rates are the difference between two polls. */
(function () {
  "use strict";
  const script = document.currentScript;
  const API = script.dataset.api;
  const params = new URLSearchParams(location.search);
  const REFRESH_MS = Math.max(250, Number(params.get("refresh")) || 2000);
  const KEEP = 90; // points on the time charts
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
  const charts = {};
  window.dashboardCharts = charts; // read by the browser tests

  async function getJSON(path) {
    const response = await fetch(API + path, { credentials: "same-origin" });
    if (response.status === 401) { location.href = API.replace(/api\/$/, "login"); throw new Error("logged out"); }
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  function chart(id, type, options) {
    const canvas = document.getElementById(id);
    charts[id] = new Chart(canvas, {
      type: type,
      data: { labels: [], datasets: [] },
      options: Object.assign({ responsive: true, maintainAspectRatio: false, animation: false,
        plugins: { legend: { labels: { boxWidth: 10, font: { size: 11 } } } } }, options || {}),
    });
    return charts[id];
  }

  function setSeries(c, labels, series, extra) {
    c.data.labels = labels;
    c.data.datasets = Object.keys(series).map(function (name, i) {
      return Object.assign({ label: name, data: series[name], borderColor: COLORS[i % COLORS.length],
        backgroundColor: COLORS[i % COLORS.length] + (c.config.type === "line" ? "33" : "cc"),
        pointRadius: 2, borderWidth: 2, tension: 0.2 }, extra || {});
    });
    c.update();
  }

  function pushPoint(c, label, values) {
    // values: {series name: number}; missing series are created on the fly.
    c.data.labels.push(label);
    Object.keys(values).forEach(function (name) {
      let ds = c.data.datasets.find(function (d) { return d.label === name; });
      if (!ds) {
        const color = COLORS[c.data.datasets.length % COLORS.length];
        ds = { label: name, data: new Array(c.data.labels.length - 1).fill(null), borderColor: color,
          backgroundColor: color + "33", pointRadius: 2, borderWidth: 2, tension: 0.2 };
        c.data.datasets.push(ds);
      }
    });
    c.data.datasets.forEach(function (ds) { ds.data.push(values[ds.label] === undefined ? 0 : values[ds.label]); });
    while (c.data.labels.length > KEEP) { c.data.labels.shift(); c.data.datasets.forEach(function (d) { d.data.shift(); }); }
    c.update();
  }

  // Quantile from cumulative histogram buckets {le: count}, interpolated as Prometheus does.
  function quantile(q, buckets) {
    const bounds = Object.keys(buckets).map(function (le) { return [le === "+Inf" ? Infinity : Number(le), buckets[le]]; })
      .sort(function (a, b) { return a[0] - b[0]; });
    if (!bounds.length) return null;
    const total = bounds[bounds.length - 1][1];
    if (total <= 0) return null;
    const rank = q * total;
    let prevBound = 0, prevCount = 0;
    for (const [bound, count] of bounds) {
      if (count >= rank) {
        if (bound === Infinity) return prevBound;
        return prevBound + (bound - prevBound) * ((rank - prevCount) / Math.max(count - prevCount, 1e-9));
      }
      prevBound = bound; prevCount = count;
    }
    return prevBound;
  }

  function diffBuckets(now, before) {
    const out = {};
    Object.keys(now).forEach(function (le) { out[le] = now[le] - ((before || {})[le] || 0); });
    return out;
  }

  // Tables are built from DOM nodes and text, never from HTML strings: the values (an
  // event's variant, a model's metadata) are client or file input.
  function cell(parts, colspan) {
    const td = document.createElement("td");
    if (colspan) td.colSpan = colspan;
    (Array.isArray(parts) ? parts : [parts]).forEach(function (part) {
      td.append(part instanceof Node ? part : String(part));
    });
    return td;
  }
  function row(cells) {
    const tr = document.createElement("tr");
    cells.forEach(function (c) { tr.appendChild(c instanceof Node ? c : cell(c)); });
    return tr;
  }
  function withBreaks(texts) {
    const parts = [];
    texts.forEach(function (text, i) { if (i) parts.push(document.createElement("br")); parts.push(text); });
    return parts;
  }
  function element(tag, text) { const e = document.createElement(tag); e.textContent = text; return e; }

  function fmt(x, digits) { return x === null || x === undefined || isNaN(x) ? "–" : Number(x).toFixed(digits); }
  function sum(obj) { return Object.values(obj || {}).reduce(function (a, b) { return a + b; }, 0); }

  let previous = null;
  const history = [];
  async function pollLive() {
    let live;
    try { live = await getJSON("live"); } catch (e) { document.getElementById("live-status").textContent = String(e); return; }
    const t = new Date(live.ts * 1000).toLocaleTimeString();
    const lag = live.lag, con = live.consumers, api = live.api;
    document.getElementById("live-status").textContent = "updated " + t;
    // Lag, from the broker (committed offset vs high-water mark).
    document.getElementById("lag-note").textContent = lag.error ? "lag: " + lag.error
      : "group " + lag.group + " on topic " + lag.topic + ": lag = high-water mark − committed offset";
    document.getElementById("kpi-lag").textContent = lag.total === null ? "–" : lag.total;
    setSeries(charts["chart-lag-partitions"], lag.partitions.map(function (p) { return "p" + p.partition; }),
      { lag: lag.partitions.map(function (p) { return p.lag; }) });
    const values = {};
    if (lag.total !== null) values.total = lag.total;
    pushPoint(charts["chart-lag"], t, values);
    // Freshness and rates need two polls.
    const dt = previous ? live.ts - previous.ts : null;
    // Freshness over the last minute of polls; with no new events there, since start.
    history.push(live);
    while (history.length > 1 && live.ts - history[0].ts > 60) history.shift();
    let fresh = diffBuckets(con.freshness.buckets, history[0] === live ? {} : history[0].consumers.freshness.buckets);
    let since = "";
    if (quantile(0.5, fresh) === null) { fresh = con.freshness.buckets; since = " (since start)"; }
    const p50 = quantile(0.5, fresh), p95 = quantile(0.95, fresh);
    document.getElementById("kpi-fresh").textContent = fmt(p95, 3) + since;
    pushPoint(charts["chart-freshness"], t, { p50: p50, p95: p95 });
    if (dt && dt > 0) {
      const rates = {};
      Object.keys(con.events).forEach(function (k) { rates[k] = (con.events[k] - (previous.consumers.events[k] || 0)) / dt; });
      pushPoint(charts["chart-throughput"], t, rates);
      const errors = {
        "dead letters": (con.dead_letters - previous.consumers.dead_letters) / dt,
        "handler errors": (con.handler_errors - previous.consumers.handler_errors) / dt,
        "API 5xx": (api.errors_5xx - previous.api.errors_5xx) / dt,
      };
      pushPoint(charts["chart-errors"], t, errors);
      document.getElementById("kpi-rate").textContent = fmt(sum(rates), 1);
      document.getElementById("kpi-errors").textContent = fmt(sum(errors), 2);
    }
    setSeries(charts["chart-sources"], Object.keys(api.sources), { items: Object.values(api.sources) },
      { backgroundColor: COLORS.slice(0, Object.keys(api.sources).length) });
    document.getElementById("kpi-model").textContent = api.model ? api.model.version : "none";
    // Conditional recommendation requests: 304s, cache hits, misses (cumulative).
    const rc = api.rec_cache, answered = rc.not_modified + rc.hit + rc.miss;
    document.getElementById("kpi-rec-cache").textContent = rc.not_modified + " / " + rc.hit + " / " + rc.miss +
      (answered ? " (" + fmt(100 * (rc.not_modified + rc.hit) / answered, 1) + "% unrecomputed)" : "");
    const rows = Object.keys(api.variants).map(function (name) {
      const v = api.variants[name];
      return row([name, v.served, v.items, v.click, v.purchase, fmt(100 * v.ctr, 2) + "%",
        fmt(100 * v.conversion, 2) + "%"]);
    });
    document.querySelector("#variants tbody").replaceChildren(
      ...(rows.length ? rows : [row([cell("no recommendations served yet", 7)])]));
    document.getElementById("consumer-targets").textContent = "consumer metrics: " + (con.targets.length
      ? con.targets.map(function (x) { return x.url + (x.up ? " up" : " DOWN"); }).join(", ") : "none configured (STREAMREC_CONSUMER_METRICS_URLS)");
    previous = live;
  }

  async function loadInsights() {
    const days = document.getElementById("days").value;
    const q = "?days=" + days;
    const [summary, top, trend, funnel, ratings, users] = await Promise.all([
      getJSON("insights/summary"), getJSON("insights/top-products" + q), getJSON("insights/category-trend" + q),
      getJSON("insights/funnel" + q), getJSON("insights/ratings"), getJSON("insights/users" + q)]);
    document.getElementById("insights-summary").textContent = summary.events + " archived events, " + summary.users + " users";
    setSeries(charts["chart-top"], top.map(function (p) { return p.name.slice(0, 28); }),
      { views: top.map(function (p) { return p.views; }), carts: top.map(function (p) { return p.carts; }),
        purchases: top.map(function (p) { return p.purchases; }) });
    setSeries(charts["chart-categories"], trend.days, trend.series);
    setSeries(charts["chart-funnel"], funnel.map(function (s) { return s.stage; }),
      { "all users with the event": funnel.map(function (s) { return s.users; }),
        "through every earlier stage": funnel.map(function (s) { return s.funnel_users; }) });
    setSeries(charts["chart-ratings"], Object.keys(ratings), { ratings: Object.values(ratings) });
    setSeries(charts["chart-users"], users.map(function (d) { return d.day; }),
      { "new": users.map(function (d) { return d.new; }), returning: users.map(function (d) { return d.returning; }) });
  }

  async function loadModels() {
    const status = await getJSON("models");
    document.getElementById("models-message").textContent = status.message || ("in use: " + status.latest);
    document.querySelector("#models-table tbody").replaceChildren(...status.versions.map(function (v) {
      const metrics = Object.keys(v.metrics || {}).map(function (k) {
        const m = v.metrics[k]; return k + ": " + (typeof m === "number" ? m.toFixed(4) : JSON.stringify(m));
      });
      const data = [(v.dataset || "") + (v.events ? " (" + v.events + " events)" : "")];
      if (v.data_sha256) data.push(document.createElement("br"), element("code", String(v.data_sha256).slice(0, 12)));
      return row([v.version, v.version === status.latest ? "✔" : "", v.created_at || "?", cell(data),
        Object.keys(v.models || {}).join(", "), cell(v.error ? "unreadable: " + v.error : withBreaks(metrics))]);
    }));
  }

  chart("chart-lag-partitions", "bar", { plugins: { legend: { display: false } } });
  chart("chart-lag", "line");
  chart("chart-freshness", "line");
  chart("chart-throughput", "line");
  chart("chart-errors", "line");
  chart("chart-sources", "doughnut");
  chart("chart-top", "bar", { indexAxis: "y", scales: { x: { stacked: true }, y: { stacked: true, ticks: { font: { size: 10 } } } } });
  chart("chart-categories", "line");
  chart("chart-funnel", "bar");
  chart("chart-ratings", "bar", { plugins: { legend: { display: false } } });
  chart("chart-users", "bar", { scales: { x: { stacked: true }, y: { stacked: true } } });

  document.getElementById("days").addEventListener("change", loadInsights);
  pollLive().then(function () { setInterval(pollLive, REFRESH_MS); });
  loadInsights().catch(function (e) { document.getElementById("insights-summary").textContent = String(e); });
  loadModels().catch(function (e) { document.getElementById("models-message").textContent = String(e); });
})();
