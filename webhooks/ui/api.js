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

// A token is good when the API answers a cheap read with it (401 otherwise).
export async function check(candidate) {
  const response = await fetch("/v1/sessions?limit=1", {
    headers: { Authorization: `Bearer ${candidate}`, Accept: "application/json" },
    cache: "no-store",
  });
  return response.status !== 401 && response.status !== 403;
}
