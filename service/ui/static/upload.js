// Upload a JSONL / NDJSON file through the bulk API, then follow its job: a live progress bar (processed / total,
// docs/s), errors with their line numbers as they appear, and cancel.
import { enc, getJson, request, upload } from "./api.js";
import { showError } from "./banner.js";
import { clear, field, h } from "./dom.js";

const POLL_MS = 400;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function uploader(name, onFinished) {
  const input = h("input", { type: "file", accept: ".jsonl,.ndjson,.json,.txt,application/x-ndjson", testid: "upload-file" });
  const fill = h("div", { class: "fill" });
  const bar = h("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": 0, "aria-label": "ingestion progress", testid: "job-progress" }, fill);
  const status = h("p", { class: "hint", testid: "job-status", text: "Choose a file: one JSON document per line ({\"id\", \"text\", \"title\"?, \"metadata\"?})." });
  const errors = h("ol", { class: "errors", testid: "job-errors" });
  const cancel = h("button", { type: "button", class: "danger quiet", testid: "job-cancel", text: "Cancel", disabled: true });
  const element = h("section", { class: "panel upload", testid: "upload" }, h("h2", { text: "Upload" }), field("JSONL / NDJSON file", input), bar, status, cancel, errors);

  let sending = null;
  let jobId = null;
  let timer = null;

  function setProgress(percent, text) {
    const value = Math.max(0, Math.min(100, Math.round(percent)));
    bar.setAttribute("aria-valuenow", String(value));
    fill.style.width = `${value}%`;
    if (text) status.textContent = text;
  }

  function stop() {
    if (timer) clearTimeout(timer);
    timer = null;
    if (sending) sending.abort();
  }

  async function follow() {
    timer = null;
    let job;
    try {
      job = await getJson(`/v1/jobs/${enc(jobId)}`);
    } catch (err) {
      showError(err);
      cancel.disabled = true;
      return;
    }
    const done = job.processed + job.failed;
    const finished = TERMINAL.has(job.status);
    const percent = job.total ? (100 * done) / job.total : finished ? 100 : 0;
    const rate = job.documents_per_second ? `, ${job.documents_per_second.toFixed(1)} docs/s` : "";
    setProgress(job.status === "succeeded" ? 100 : percent, `${job.status}: ${job.processed} / ${job.total} processed, ${job.failed} failed${rate}${job.error ? ` — ${job.error}` : ""}`);
    bar.dataset.status = job.status;
    clear(errors, job.errors.map((e) => h("li", { testid: "job-error", "data-line": e.line, text: `line ${e.line}${e.id ? ` (id ${e.id})` : ""}: ${e.error}` })));
    if (finished) {
      cancel.disabled = true;
      await onFinished().catch(showError);
    } else {
      timer = setTimeout(follow, POLL_MS);
    }
  }

  input.addEventListener("change", async () => {
    const file = input.files && input.files[0];
    if (!file) return;
    stop();
    jobId = null;
    clear(errors);
    delete bar.dataset.status;
    setProgress(0, `uploading ${file.name} (${file.size} bytes)…`);
    cancel.disabled = false;
    sending = upload(`/v1/collections/${enc(name)}/documents/bulk`, file, "application/x-ndjson", (loaded, total) => {
      status.textContent = `uploading ${file.name}: ${Math.round((100 * loaded) / total)} % of ${total} bytes sent…`;
    });
    try {
      const accepted = await sending.done;
      jobId = accepted.job_id;
      bar.dataset.job = jobId;
      await follow();
    } catch (err) {
      cancel.disabled = true;
      if (err.name === "AbortError") status.textContent = "upload cancelled before it was queued";
      else {
        status.textContent = "upload refused";
        showError(err);
      }
    } finally {
      sending = null;
      input.value = "";
    }
  });

  cancel.addEventListener("click", async () => {
    if (sending) return sending.abort();
    if (!jobId) return;
    try {
      await request("DELETE", `/v1/jobs/${enc(jobId)}`);
    } catch (err) {
      showError(err);
    }
  });

  return { element, stop };
}
