// Health: readiness per dependency with its breaker, and live figures from /metrics (searches by mode, cache hit
// rate, p50/p95 search latency, queue length) with a small chart of the last minutes.
import { getJson, request } from "./api.js";
import { showError } from "./banner.js";
import { clear, h, ms } from "./dom.js";
import { buckets, byLabel, delta, parseMetrics, quantile, sum } from "./metrics.js";

const POLL_MS = 5000;
const KEEP = 60; // points on the chart (5 minutes)
const isSearch = (l) => /\/search$/.test(l.route || "") && l.method === "POST";
const SVG = "http://www.w3.org/2000/svg";

export async function healthView(root) {
  const status = h("span", { class: "badge", testid: "ready-status", text: "…" });
  const deps = h("tbody");
  const figures = h("div", { class: "figures", testid: "figures" });
  const chart = h("div", { class: "chart", testid: "chart" });
  clear(
    root,
    h("h1", {}, "Health ", status),
    h("table", { class: "grid", testid: "dependencies" }, h("thead", {}, h("tr", {}, ["dependency", "ok", "breaker", "detail"].map((t) => h("th", { text: t })))), deps),
    h("h2", { text: "Live figures" }),
    figures,
    chart,
    h("p", { class: "hint", text: "From /readyz and /metrics of the replica that answered, every 5 s. Details of a dependency are shown to admin keys only." }),
  );
  const history = [];
  let last = null;
  let timer = null;
  let stopped = false;

  async function tick() {
    try {
      await Promise.all([readiness(), figuresNow()]);
    } catch (err) {
      showError(err);
    }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  }

  async function readiness() {
    // 503 still carries the body: read it either way.
    let body;
    try {
      body = await getJson("/readyz");
    } catch (err) {
      if (!err.body || !err.body.dependencies) throw err;
      body = err.body;
    }
    status.textContent = body.status;
    status.className = `badge ${body.status}`;
    status.dataset.status = body.status;
    clear(
      deps,
      Object.entries(body.dependencies || {}).map(([name, d]) =>
        h(
          "tr",
          { testid: "dependency", "data-name": name, "data-ok": String(d.ok) },
          h("td", { text: name }),
          h("td", { class: d.ok ? "ok" : "bad", text: d.ok ? "ok" : "not ok" }),
          h("td", { testid: "breaker", text: d.breaker || "–" }),
          h("td", { class: "mono", text: d.detail }),
        ),
      ),
    );
  }

  async function figuresNow() {
    const samples = parseMetrics(await (await request("GET", "/metrics")).text());
    const modes = byLabel(samples, "thinksearch_searches_total", "mode");
    const cache = byLabel(samples, "thinksearch_thought_cache_total", "result");
    const lookups = (cache.hit || 0) + (cache.miss || 0) + (cache.coalesced || 0);
    const all = buckets(samples, "thinksearch_request_duration_seconds", isSearch);
    const searches = sum(samples, "thinksearch_searches_total");
    const now = { at: Date.now(), searches, buckets: all };
    const recent = last ? delta(all, last.buckets) : all;
    const rate = last ? (1000 * (searches - last.searches)) / Math.max(1, now.at - last.at) : 0;
    const p50 = quantile(0.5, all);
    const p95 = quantile(0.95, all);
    const breakers = byLabel(samples, "thinksearch_circuit_breaker_state", "dependency");
    const open = Object.entries(breakers).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v >= 1 ? "open" : "half-open"}`);
    clear(
      figures,
      figure("searches", `${Math.round(searches)}`, `think ${Math.round(modes.think || 0)} · direct ${Math.round(modes.direct || 0)}`),
      figure("cache-hit-rate", lookups ? `${Math.round((100 * (cache.hit || 0)) / lookups)} %` : "–", `${Math.round(lookups)} thought cache lookups`),
      figure("p50", p50 === null ? "–" : ms(1000 * p50), "search latency p50 (all time)"),
      figure("p95", p95 === null ? "–" : ms(1000 * p95), "search latency p95 (all time)"),
      figure("queue", `${Math.round(sum(samples, "thinksearch_ingest_queue_length"))}`, "documents queued for ingestion"),
      figure("breakers", open.length ? open.join(", ") : "all closed", "circuit breakers"),
    );
    const recentP95 = quantile(0.95, recent);
    history.push({ rate, p95: recentP95 === null ? null : 1000 * recentP95 });
    if (history.length > KEEP) history.shift();
    last = now;
    drawChart(chart, history);
  }

  tick();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}

function figure(name, value, label) {
  return h("div", { class: "figure", testid: "figure", "data-name": name }, h("strong", { text: value }), h("small", { text: label }));
}

// Two lines: searches per second and p95 latency of the last interval, each scaled to its own maximum.
function drawChart(root, points) {
  const width = 600;
  const height = 120;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "searches per second and p95 latency, last minutes");
  for (const [key, cls] of [["rate", "line-rate"], ["p95", "line-p95"]]) {
    const values = points.map((p) => p[key] || 0);
    const top = Math.max(...values, 1e-9);
    const step = width / Math.max(1, KEEP - 1);
    const path = values.map((v, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)},${(height - 8 - ((height - 16) * v) / top).toFixed(1)}`).join(" ");
    const line = document.createElementNS(SVG, "path");
    line.setAttribute("d", path || "M0,0");
    line.setAttribute("class", cls);
    svg.append(line);
  }
  const lastPoint = points[points.length - 1] || { rate: 0, p95: null };
  clear(
    root,
    svg,
    h("div", { class: "legend" }, h("span", { class: "key line-rate", text: `searches/s ${lastPoint.rate.toFixed(2)}` }), h("span", { class: "key line-p95", text: `p95 last 5 s ${lastPoint.p95 === null ? "–" : ms(lastPoint.p95)}` })),
  );
}
