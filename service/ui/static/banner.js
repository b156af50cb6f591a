// The page's one error banner (data-testid="error"): what failed, as a readable sentence with its status.
import { describe } from "./api.js";

const banner = () => document.getElementById("banner");

export function showError(err) {
  const el = banner();
  el.textContent = describe(err);
  el.dataset.status = err && err.status !== undefined ? String(err.status) : "";
  el.hidden = false;
}

export function clearError() {
  const el = banner();
  el.hidden = true;
  el.textContent = "";
  delete el.dataset.status;
}
