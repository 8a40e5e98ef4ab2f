// The read API, with the bearer token this browser was given once.

const KEY = "roomwarden.readToken";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.field = this.body.field || null;
  }
}

export function token() {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export function setToken(value) {
  localStorage.setItem(KEY, value);
}

export function forgetToken() {
  localStorage.removeItem(KEY);
}

export async function get(path, params = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
  }
  const response = await fetch(url, {
    headers: { Authorization: `Bearer ${token() || ""}`, Accept: "application/json" },
    cache: "no-store",
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// Follow a text/event-stream (fetch, not EventSource: the token goes in a header), from the
// event after lastEventId; onEvent(type, data) for each. Stops when stillWanted() turns false.
export async function follow(path, lastEventId, onEvent, stillWanted) {
  const controller = new AbortController();
  const watch = setInterval(() => {
    if (!stillWanted()) controller.abort();
  }, 500);
  let last = lastEventId;
  try {
    while (stillWanted()) {
      const headers = { Authorization: `Bearer ${token() || ""}`, Accept: "text/event-stream" };
      if (last !== null && last !== undefined) headers["Last-Event-ID"] = String(last);
      try {
        const response = await fetch(path, { headers, cache: "no-store", signal: controller.signal });
        if (!response.ok || !response.body) throw new ApiError(response.status, null);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const frame = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const fields = {};
            for (const line of frame.split("\n")) {
              if (!line || line.startsWith(":")) continue;
              const at = line.indexOf(":");
              fields[line.slice(0, at)] = line.slice(at + 1).replace(/^ /, "");
            }
            if (fields.id) last = fields.id;
            if (fields.data) onEvent(fields.event || "message", JSON.parse(fields.data));
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 403 || error.status === 404)) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 2000)); // the server went away: reconnect
    }
  } finally {
    clearInterval(watch);
  }
}

// A token is good when the API answers a cheap read with it (401 otherwise).
export async function check(candidate) {
  const response = await fetch("/v1/sessions?limit=1", {
    headers: { Authorization: `Bearer ${candidate}`, Accept: "application/json" },
    cache: "no-store",
  });
  return response.status !== 401 && response.status !== 403;
}
