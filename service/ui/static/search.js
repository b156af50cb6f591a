// The search playground: direct and think side by side, the thoughts, the stage timings, the two-phase stream.
import { enc, getJson, parseFilter, sendJson, streamEvents } from "./api.js";
import { clearError, showError } from "./banner.js";
import { clear, field, h, ms } from "./dom.js";

const STAGES = ["cache", "think", "embed", "search"];
const REASONS = {
  deadline: "the thoughts missed the deadline (deadline_ms): answered in direct mode",
  thinker_error: "the thought worker failed or could not be reached",
  thinker_not_configured: "no thought worker is configured (THINKER_URL)",
};

export async function searchView(root, params) {
  const collection = h("select", { testid: "search-collection", required: true });
  const query = h("input", { type: "search", testid: "search-query", placeholder: "why does the sea level change twice a day", required: true, value: params.get("q") || "" });
  const topK = h("input", { type: "number", min: 1, max: 100, value: params.get("top_k") || "10", testid: "search-topk" });
  const filter = h("input", { type: "text", testid: "search-filter", placeholder: 'field = physics; year = 2020; tag = ["a", "b"]', value: params.get("filter") || "" });
  const retrieval = h("select", { testid: "search-retrieval" }, ...["auto", "dense", "sparse", "hybrid"].map((r) => h("option", { value: r, text: r })));
  retrieval.value = params.get("retrieval") || "auto";
  const think = h("input", { type: "checkbox", testid: "search-think", checked: params.get("think") !== "0" });
  const stream = h("input", { type: "checkbox", testid: "search-stream", checked: params.get("stream") !== "0" });
  const deadline = h("input", { type: "number", min: 1, max: 600000, placeholder: "server default", testid: "search-deadline", value: params.get("deadline_ms") || "" });
  const submit = h("button", { type: "submit", testid: "search-submit", text: "Search" });
  const out = h("div", { class: "search-out", testid: "search-out" });

  const form = h(
    "form",
    { class: "panel search-form", testid: "search-form" },
    h("div", { class: "row" }, field("Collection", collection), h("div", { class: "grow" }, field("Query", query))),
    h(
      "div",
      { class: "row" },
      field("top_k", topK),
      h("div", { class: "grow" }, field("Filter", filter)),
      field("Retrieval", retrieval),
      field("deadline_ms", deadline),
    ),
    h(
      "div",
      { class: "row" },
      h("label", { class: "check" }, think, " think"),
      h("label", { class: "check" }, stream, " two-phase stream"),
      submit,
    ),
  );
  clear(root, h("h1", { text: "Search playground" }), form, out);

  const { collections } = await getJson("/v1/collections");
  for (const c of collections) collection.append(h("option", { value: c.name, text: `${c.name} (${c.count})` }));
  const wanted = params.get("collection");
  if (wanted && !collections.some((c) => c.name === wanted)) collection.append(h("option", { value: wanted, text: wanted }));
  if (wanted) collection.value = wanted;
  if (!collections.length && !wanted) out.append(h("p", { class: "hint", text: "No collection yet: create one under Collections." }));

  let controller = null;
  async function run() {
    if (controller) controller.abort();
    controller = new AbortController();
    clearError();
    let body;
    try {
      body = { query: query.value, top_k: Number(topK.value) || 10, think: think.checked, include_thoughts: true };
      const f = parseFilter(filter.value);
      if (Object.keys(f).length) body.filter = f;
      if (retrieval.value !== "auto") body.retrieval = retrieval.value;
      if (deadline.value) body.deadline_ms = Number(deadline.value);
    } catch (err) {
      showError(err);
      return;
    }
    shareable({ collection: collection.value, q: query.value, top_k: topK.value, filter: filter.value, retrieval: retrieval.value, think: think.checked ? "" : "0", stream: stream.checked ? "" : "0", deadline_ms: deadline.value });
    const view = new Results(out);
    submit.disabled = true;
    try {
      await search(collection.value, body, stream.checked && think.checked, view, controller.signal);
    } catch (err) {
      if (err.name !== "AbortError") {
        view.failed();
        showError(err);
      }
    } finally {
      submit.disabled = false;
    }
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  if (query.value && collection.value) run();
  return () => controller && controller.abort();
}

// The URL says what was searched, so a result can be shared (/ui/search?collection=…&q=…).
function shareable(values) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v && v !== "auto") params.set(k, v);
  history.replaceState({}, "", `/ui/search?${params}`);
}

async function search(name, body, twoPhase, view, signal) {
  const path = `/v1/collections/${enc(name)}/search`;
  const direct = () => sendJson("POST", path, { ...body, think: false }, { signal });
  if (!body.think) {
    view.answer(await direct());
    view.done({ mode: "direct", degraded: false, reason: null });
    return;
  }
  if (!twoPhase) {
    const [thought, plain] = await Promise.all([sendJson("POST", path, body, { signal }), direct()]);
    view.compareWith(plain);
    view.answer(thought);
    view.done({ mode: thought.mode, degraded: thought.degraded, reason: thought.degraded ? "unknown" : null });
    return;
  }
  let sawDirect = false;
  await streamEvents(
    path,
    { ...body, stream: true },
    (event, data) => {
      if (event === "direct") {
        sawDirect = true;
        view.answer(data);
        view.waiting();
      } else if (event === "think" || event === "response") {
        view.answer(data);
      } else if (event === "done") {
        view.done(data);
      }
    },
    signal,
  );
  // A cached think vector answers at once (no direct phase): ask for the direct results to compare with.
  if (!sawDirect) view.compareWith(await direct());
}

class Results {
  constructor(root) {
    this.badge = h("span", { class: "badge", testid: "mode", text: "searching…" });
    this.phase = h("span", { class: "phase", testid: "phase", text: "asking…" });
    this.reason = h("p", { class: "degraded", testid: "degraded", hidden: true });
    this.timings = h("div", { class: "timings", testid: "timings" });
    this.thoughts = h("ol", { class: "thoughts", testid: "thoughts" });
    this.list = h("ol", { class: "results", testid: "results" });
    this.directList = h("ol", { class: "results", testid: "direct-results" });
    this.thoughts.append(h("li", { class: "empty", text: "none yet: thoughts come with think results" }));
    this.directColumn = h("section", { class: "column", hidden: true }, h("h2", { text: "Direct (no thinking)" }), this.directList);
    this.heading = h("h2", { text: "Results" });
    this.direct = null;
    clear(
      root,
      h("div", { class: "status" }, this.badge, this.phase),
      this.reason,
      this.timings,
      h("div", { class: "columns" }, h("section", { class: "column" }, this.heading, this.list), this.directColumn),
      h("section", { class: "panel thoughts-panel" }, h("h2", { text: "Thoughts" }), this.thoughts),
    );
  }

  answer(response) {
    if (response.mode === "direct") this.direct = response;
    const phase = response.mode;
    this.list.dataset.phase = phase;
    this.heading.textContent = phase === "think" ? "Think results" : "Direct results";
    this.phase.textContent = phase === "think" ? "think results" : "direct results";
    clear(this.list, response.results.map((hit, i) => this.row(hit, i, phase === "think" ? this.direct : null)));
    if (!response.results.length) this.list.append(h("li", { class: "empty", text: "no results" }));
    this.setBadge(response);
    this.showTimings(response.timings_ms);
    if (phase === "think") {
      clear(this.thoughts, (response.thoughts || []).map((t) => h("li", { testid: "thought", text: t })));
      if (!(response.thoughts || []).length) this.thoughts.append(h("li", { class: "empty", text: "(answered from the cached think vector: no thoughts kept)" }));
      if (this.direct) this.showDirect();
    }
  }

  compareWith(direct) {
    this.direct = direct;
    if (this.list.dataset.phase === "think") {
      // re-mark what moved, now that the direct ranking is known
      for (const li of this.list.querySelectorAll("[data-testid=result]")) li.replaceWith(this.row(li.hit, Number(li.dataset.rank) - 1, direct));
    }
    this.showDirect();
  }

  showDirect() {
    clear(this.directList, this.direct.results.map((hit, i) => this.row(hit, i, null, "direct-result")));
    this.directColumn.hidden = false;
  }

  row(hit, i, direct, testid = "result") {
    let moved = null;
    if (direct) {
      const before = direct.results.findIndex((d) => d.id === hit.id);
      const text = before < 0 ? "new" : before === i ? "=" : before > i ? `▲${before - i}` : `▼${i - before}`;
      moved = h("span", { class: `moved ${before < 0 ? "new" : before > i ? "up" : before < i ? "down" : ""}`, testid: "moved", text, title: before < 0 ? "not in the direct top_k" : `direct rank ${before + 1}` });
    }
    const li = h(
      "li",
      { testid, "data-id": hit.id, "data-rank": i + 1 },
      h("div", { class: "hit-head" }, h("strong", { text: hit.title || hit.id }), moved, h("span", { class: "score", text: hit.score.toFixed(4) })),
      h("div", { class: "hit-id", text: hit.id }),
      h("p", { class: "hit-text", text: hit.text.length > 280 ? `${hit.text.slice(0, 280)}…` : hit.text }),
    );
    li.hit = hit;
    return li;
  }

  setBadge(r) {
    const parts = [r.mode];
    if (r.thought_cache) parts.push(`cache ${r.thought_cache}`);
    if (r.retrieval) parts.push(r.retrieval);
    if (r.degraded) parts.push("degraded");
    this.badge.textContent = parts.join(" · ");
    this.badge.dataset.mode = r.mode;
    this.badge.dataset.cache = r.thought_cache || "";
    this.badge.dataset.degraded = String(r.degraded);
    this.badge.className = `badge ${r.mode}${r.degraded ? " degraded" : ""}`;
  }

  showTimings(t) {
    const total = t.total || STAGES.reduce((s, k) => s + (t[k] || 0), 0) || 1;
    const bar = h("div", { class: "bar" });
    for (const stage of STAGES) {
      const seg = h("span", { class: `seg ${stage}`, title: `${stage}: ${ms(t[stage] || 0)}`, "data-stage": stage });
      seg.style.width = `${Math.max(0, (100 * (t[stage] || 0)) / total)}%`;
      bar.append(seg);
    }
    const legend = h("div", { class: "legend" }, STAGES.map((s) => h("span", { class: `key ${s}`, text: `${s} ${ms(t[s] || 0)}` })), h("span", { text: `total ${ms(t.total)}` }));
    this.timings.dataset.total = String(t.total);
    clear(this.timings, bar, legend);
  }

  waiting() {
    this.phase.textContent = "direct results — thinking…";
  }

  done(end) {
    this.list.dataset.done = "true";
    if (end.degraded) {
      this.reason.hidden = false;
      this.reason.dataset.reason = end.reason || "";
      this.reason.textContent = `Degraded: ${REASONS[end.reason] || "answered in direct mode"}`;
      this.phase.textContent = "direct results (degraded)";
      this.badge.dataset.degraded = "true";
      if (!this.badge.textContent.includes("degraded")) this.badge.textContent += " · degraded";
      this.badge.classList.add("degraded");
    } else if (this.list.dataset.phase === "think") {
      this.phase.textContent = "think results";
    } else {
      this.phase.textContent = "direct results";
    }
  }

  failed() {
    this.phase.textContent = "failed";
    this.badge.textContent = "error";
  }
}
