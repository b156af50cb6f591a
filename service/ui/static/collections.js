// Collections: the list (counts, sparse side, chunking, think policy), create, delete with confirmation; and one
// collection's page (/ui/collections/{name}): its details, its documents page by page, and the upload.
import { enc, getJson, parseFilter, request, sendJson } from "./api.js";
import { clearError, showError } from "./banner.js";
import { clear, field, h, link } from "./dom.js";
import { uploader } from "./upload.js";

function policyText(think) {
  if (!think) return "–";
  const parts = [think.enabled === false ? "off" : "on", think.profile, `n=${think.n}`, think.fusion];
  if (think.query_weight !== null && think.query_weight !== undefined) parts.push(`α=${think.query_weight}`);
  return parts.filter(Boolean).join(" · ");
}

function chunkingText(chunking) {
  return chunking ? `${chunking.max_tokens} tokens, overlap ${chunking.overlap}` : "off";
}

export async function collectionsView(root) {
  const name = h("input", { type: "text", testid: "collection-name", placeholder: "papers", pattern: "[A-Za-z0-9_\\-]{1,64}", required: true });
  const sparse = h("input", { type: "checkbox", testid: "collection-sparse", checked: true });
  const chunked = h("input", { type: "checkbox", testid: "collection-chunking" });
  const maxTokens = h("input", { type: "number", min: 32, max: 8192, value: "256", testid: "collection-max-tokens" });
  const form = h(
    "form",
    { class: "panel row", testid: "collection-form" },
    h("div", { class: "grow" }, field("New collection", name, "A-Z a-z 0-9 _ -, up to 64")),
    h("label", { class: "check" }, sparse, " BM25 sparse side"),
    h("label", { class: "check" }, chunked, " chunking"),
    field("max_tokens", maxTokens),
    h("button", { type: "submit", testid: "collection-create", text: "Create" }),
  );
  const table = h("tbody");
  clear(
    root,
    h("h1", { text: "Collections" }),
    form,
    h("table", { class: "grid", testid: "collections" }, h("thead", {}, h("tr", {}, ["name", "documents", "sparse", "chunking", "think policy", ""].map((t) => h("th", { text: t })))), table),
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    const body = { name: name.value.trim(), sparse: sparse.checked };
    if (chunked.checked) body.chunking = { max_tokens: Number(maxTokens.value) || 256 };
    try {
      await sendJson("POST", "/v1/collections", body);
      name.value = "";
      await load();
    } catch (err) {
      showError(err);
    }
  });

  async function load() {
    const { collections } = await getJson("/v1/collections");
    const details = await Promise.all(collections.slice(0, 100).map((c) => getJson(`/v1/collections/${enc(c.name)}`).catch(() => null)));
    clear(table, collections.map((c, i) => row(c, details[i])));
    if (!collections.length) table.append(h("tr", {}, h("td", { colspan: 6, class: "empty", text: "No collections yet: create one above." })));
  }

  function row(c, d) {
    const actions = h("td", { class: "actions" });
    const remove = h("button", { type: "button", class: "danger quiet", testid: "collection-delete", text: "Delete" });
    remove.addEventListener("click", () => {
      const yes = h("button", { type: "button", class: "danger", testid: "collection-delete-confirm", text: `Delete ${c.name} and its ${c.count} documents` });
      const no = h("button", { type: "button", class: "quiet", text: "Keep it" });
      yes.addEventListener("click", async () => {
        try {
          await request("DELETE", `/v1/collections/${enc(c.name)}`);
          await load();
        } catch (err) {
          showError(err);
        }
      });
      no.addEventListener("click", () => clear(actions, searchLink, remove));
      clear(actions, yes, no);
    });
    const searchLink = link(`/ui/search?collection=${enc(c.name)}`, "Search");
    actions.append(searchLink, remove);
    return h(
      "tr",
      { testid: "collection", "data-name": c.name },
      h("td", {}, link(`/ui/collections/${enc(c.name)}`, c.name)),
      h("td", { class: "num", testid: "collection-count", text: String(c.count) }),
      h("td", { text: d ? (d.sparse ? "BM25" : "none") : "?" }),
      h("td", { text: d ? chunkingText(d.chunking) : "?" }),
      h("td", { text: d ? policyText(d.think) : "?" }),
      actions,
    );
  }

  await load();
}

export async function collectionView(root, name) {
  const summary = h("p", { class: "summary", testid: "collection-summary", text: "loading…" });
  const docs = h("section", { class: "panel" });
  const detail = h("section", { class: "panel document", testid: "document-detail", hidden: true });
  const refresh = async () => {
    const d = await getJson(`/v1/collections/${enc(name)}`);
    summary.textContent = `${d.count} documents · ${d.dimension}-dim ${d.distance} · ${d.embedder} · sparse: ${d.sparse ? "BM25" : "none"} · chunking: ${chunkingText(d.chunking)} · think: ${policyText(d.think)}`;
    summary.dataset.count = String(d.count);
  };
  const browser = documentBrowser(docs, name, detail);
  const upload = uploader(name, async () => {
    await refresh();
    await browser.first();
  });
  clear(
    root,
    h("p", { class: "crumbs" }, link("/ui", "Collections"), " / "),
    h("h1", { text: name }),
    summary,
    h("p", {}, link(`/ui/search?collection=${enc(name)}`, "Search this collection →", { testid: "collection-search" })),
    upload.element,
    docs,
    detail,
  );
  await refresh();
  await browser.first();
  return upload.stop;
}

function documentBrowser(root, name, detail) {
  const filter = h("input", { type: "text", testid: "documents-filter", placeholder: "source = s1; year = 2020" });
  const limit = h("select", { testid: "documents-limit" }, [10, 20, 50, 100].map((n) => h("option", { value: n, text: `${n} a page` })));
  limit.value = "20";
  const list = h("tbody");
  const pageInfo = h("span", { class: "hint", testid: "documents-page" });
  const prev = h("button", { type: "button", class: "quiet", testid: "documents-prev", text: "← Previous" });
  const next = h("button", { type: "button", class: "quiet", testid: "documents-next", text: "Next →" });
  const form = h("form", { class: "row" }, h("div", { class: "grow" }, field("Filter", filter)), field("Page", limit), h("button", { type: "submit", text: "Apply" }));
  clear(
    root,
    h("h2", { text: "Documents" }),
    form,
    h("table", { class: "grid", testid: "documents" }, h("thead", {}, h("tr", {}, ["id", "title", "text", "metadata"].map((t) => h("th", { text: t })))), list),
    h("div", { class: "row pager" }, prev, pageInfo, next),
  );
  let cursors = [null]; // the cursor of each page seen so far
  let page = 0;
  let nextCursor = null;

  async function show() {
    clearError();
    const params = new URLSearchParams({ limit: limit.value });
    if (cursors[page]) params.set("cursor", cursors[page]);
    const f = parseFilter(filter.value);
    if (Object.keys(f).length) params.set("filter", JSON.stringify(f));
    const body = await getJson(`/v1/collections/${enc(name)}/documents?${params}`);
    nextCursor = body.next_cursor;
    clear(
      list,
      body.documents.map((d) => {
        const open = h("a", { href: "#", text: d.id, testid: "document-open" });
        open.addEventListener("click", (event) => {
          event.preventDefault();
          openDocument(d.id);
        });
        return h(
          "tr",
          { testid: "document", "data-id": d.id },
          h("td", {}, open),
          h("td", { text: d.title }),
          h("td", { class: "clip", text: d.text.slice(0, 160) }),
          h("td", { class: "mono", text: JSON.stringify(d.metadata) }),
        );
      }),
    );
    if (!body.documents.length) list.append(h("tr", {}, h("td", { colspan: 4, class: "empty", text: "no documents" })));
    pageInfo.textContent = `page ${page + 1}`;
    prev.disabled = page === 0;
    next.disabled = !nextCursor;
  }

  async function openDocument(id) {
    try {
      const d = await getJson(`/v1/collections/${enc(name)}/documents/${enc(id)}`);
      const remove = h("button", { type: "button", class: "danger quiet", text: "Delete this document" });
      remove.addEventListener("click", async () => {
        try {
          await request("DELETE", `/v1/collections/${enc(name)}/documents/${enc(id)}`);
          detail.hidden = true;
          await show();
        } catch (err) {
          showError(err);
        }
      });
      clear(
        detail,
        h("h2", { text: d.title || d.id }),
        h("p", { class: "hint mono", text: d.id }),
        h("pre", { class: "doc-text", text: d.text }),
        h("pre", { class: "mono", text: JSON.stringify(d.metadata, null, 2) }),
        remove,
      );
      detail.hidden = false;
    } catch (err) {
      showError(err);
    }
  }

  const safely = (fn) => () => fn().catch(showError);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    cursors = [null];
    page = 0;
    safely(show)();
  });
  limit.addEventListener("change", () => form.requestSubmit());
  prev.addEventListener("click", safely(async () => {
    page = Math.max(0, page - 1);
    await show();
  }));
  next.addEventListener("click", safely(async () => {
    if (!nextCursor) return;
    cursors[page + 1] = nextCursor;
    page += 1;
    await show();
  }));
  return {
    first: async () => {
      cursors = [null];
      page = 0;
      await show();
    },
  };
}
