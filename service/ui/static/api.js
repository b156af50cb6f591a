// Every call the console makes goes through the public API with the caller's key: no private endpoints.
// The key lives in sessionStorage (this tab only), never in a cookie or a URL.

const KEY = "thinksearch.apiKey";

export const key = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => (value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(status, title, detail, retryAfter = null, body = null) {
    super(`${status} ${title}: ${detail}`);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.retryAfter = retryAfter;
    this.body = body;
  }
}

// Listeners told about every 401 (app.js shows the key prompt).
const unauthorized = new Set();
export function onUnauthorized(fn) {
  unauthorized.add(fn);
}

export function headers(extra = {}) {
  const out = { ...extra };
  const k = key.get();
  if (k) out.Authorization = `Bearer ${k}`;
  return out;
}

async function problem(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const err = new ApiError(
    response.status,
    (body && body.title) || response.statusText || "Error",
    (body && body.detail) || `HTTP ${response.status}`,
    response.headers.get("Retry-After"),
    body,
  );
  if (response.status === 401) unauthorized.forEach((fn) => fn(err));
  return err;
}

export async function request(method, path, { json, body, accept, signal, type } = {}) {
  const init = { method, headers: headers(accept ? { Accept: accept } : {}), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.headers["Content-Type"] = type || "application/octet-stream";
    init.body = body;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, "Network error", `the service did not answer (${exc.message})`);
  }
  if (!response.ok) throw await problem(response);
  return response;
}

export async function getJson(path, options) {
  const response = await request("GET", path, options);
  return response.status === 204 ? null : response.json();
}

export async function sendJson(method, path, json, options = {}) {
  const response = await request(method, path, { ...options, json });
  return response.status === 204 ? null : response.json();
}

// A problem as a sentence a person can act on.
export function describe(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  switch (err.status) {
    case 0:
      return `Network error: ${err.detail}`;
    case 401:
      return key.get()
        ? `401 Unauthorized: the API key was refused (${err.detail}). Enter another key.`
        : "401 Unauthorized: this service needs an API key. Enter one above.";
    case 403:
      return `403 Forbidden: your key may not do this (${err.detail})`;
    case 429: {
      const wait = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : "";
      return `429 Too Many Requests: rate limited (${err.detail}).${wait}`;
    }
    default: {
      const fields = err.body && Array.isArray(err.body.errors) ? err.body.errors : [];
      const more = fields.length ? ` [${fields.map((f) => `${f.field}: ${f.message}`).join("; ")}]` : "";
      return `${err.status} ${err.title}: ${err.detail}${fields.length > 1 ? more : ""}`;
    }
  }
}

// Server-Sent Events over fetch(): EventSource can neither POST nor send an Authorization header.
// Calls onEvent(name, data) for each event; resolves when the stream ends.
export async function streamEvents(path, json, onEvent, signal) {
  const response = await request("POST", path, { json, accept: "text/event-stream", signal });
  const type = response.headers.get("Content-Type") || "";
  if (!type.startsWith("text/event-stream")) {
    onEvent("response", await response.json()); // answered as plain JSON
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      dispatch(buffer.slice(0, end), onEvent);
      buffer = buffer.slice(end + 2);
    }
  }
  if (buffer.trim()) dispatch(buffer, onEvent);
}

function dispatch(block, onEvent) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const fieldName = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (fieldName === "event") name = value;
    else if (fieldName === "data") data.push(value);
  }
  if (data.length) onEvent(name, JSON.parse(data.join("\n")));
}

// An upload with byte progress (fetch() reports none for a request body): XMLHttpRequest, same key, same errors.
export function upload(path, file, type, onProgress) {
  const xhr = new XMLHttpRequest();
  const done = new Promise((resolve, reject) => {
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(headers({ "Content-Type": type }))) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (e) => e.lengthComputable && onProgress(e.loaded, e.total));
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
      const err = new ApiError(
        xhr.status,
        (body && body.title) || xhr.statusText || "Error",
        (body && body.detail) || `HTTP ${xhr.status}`,
        xhr.getResponseHeader("Retry-After"),
        body,
      );
      if (xhr.status === 401) unauthorized.forEach((fn) => fn(err));
      reject(err);
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "Network error", "the upload was cut off")));
    xhr.addEventListener("abort", () => reject(new DOMException("upload cancelled", "AbortError")));
    xhr.send(file);
  });
  return { done, abort: () => xhr.abort() };
}

// "key = value; other = 2": equality on metadata; a value that is JSON (number, true, ["a", "b"]) is taken as such.
export function parseFilter(text) {
  const filter = {};
  for (const part of text.split(/[;\n]/)) {
    if (!part.trim()) continue;
    const eq = part.indexOf("=");
    if (eq < 1) throw new Error(`filter: "${part.trim()}" is not key = value`);
    const name = part.slice(0, eq).trim();
    const raw = part.slice(eq + 1).trim();
    let value = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      value = raw;
    }
    filter[name] = value;
  }
  return filter;
}

export const enc = encodeURIComponent;
