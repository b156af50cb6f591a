// The console's shell: routing (/ui, /ui/collections/{name}, /ui/search?…, /ui/health), the key prompt, the banner.
import { key, onUnauthorized } from "./api.js";
import { clearError, showError } from "./banner.js";
import { h, clear } from "./dom.js";
import { collectionsView, collectionView } from "./collections.js";
import { searchView } from "./search.js";
import { healthView } from "./health.js";

const view = document.getElementById("view");
const prompt = document.getElementById("key-prompt");
const keyInput = document.getElementById("key-input");
let cleanup = null;

function showPrompt(focus = true) {
  prompt.hidden = false;
  keyInput.value = "";
  if (focus) keyInput.focus();
}

onUnauthorized(() => showPrompt());

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  key.set(keyInput.value.trim());
  keyInput.value = "";
  prompt.hidden = true;
  clearError();
  render();
});
document.getElementById("key-forget").addEventListener("click", () => {
  key.set("");
  prompt.hidden = true;
  render();
});
document.getElementById("key-button").addEventListener("click", () => {
  if (prompt.hidden) showPrompt();
  else prompt.hidden = true;
});

// In-app links: no page load, the URL stays shareable.
document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-link]");
  if (!a || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  if (a.getAttribute("href") !== location.pathname + location.search) history.pushState({}, "", a.getAttribute("href"));
  render();
});
window.addEventListener("popstate", () => render());

function route() {
  const path = location.pathname.replace(/\/+$/, "");
  const params = new URLSearchParams(location.search);
  const parts = path.split("/").slice(2).map(decodeURIComponent); // after "/ui"
  if (parts.length === 0 || (parts.length === 1 && parts[0] === "collections")) return ["collections", collectionsView];
  if (parts[0] === "collections" && parts.length === 2) return ["collections", (el) => collectionView(el, parts[1])];
  if (parts[0] === "search" && parts.length === 1) return ["search", (el) => searchView(el, params)];
  if (parts[0] === "health" && parts.length === 1) return ["health", healthView];
  return [null, (el) => clear(el, h("h1", { text: "Not found" }), h("p", { text: `No console page at ${path}.` }))];
}

function render() {
  if (cleanup) cleanup();
  cleanup = null;
  clearError();
  const [nav, show] = route();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === nav);
  document.getElementById("key-button").textContent = key.get() ? "API key ✓" : "API key";
  clear(view);
  const result = show(view);
  Promise.resolve(result)
    .then((stop) => {
      if (typeof stop === "function") cleanup = stop;
    })
    .catch(showError);
}

render();
