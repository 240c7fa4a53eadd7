// Calls to this Farebox with the signed-in secret as a Bearer header; the secret lives in sessionStorage only.

const STORAGE_KEY = "farebox.console.secret";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code || null;
  }
}

export function secret() {
  return sessionStorage.getItem(STORAGE_KEY);
}

export function keepSecret(value) {
  sessionStorage.setItem(STORAGE_KEY, value);
}

export function forgetSecret() {
  sessionStorage.removeItem(STORAGE_KEY);
}

let onUnauthorized = () => {};

export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

// A path with its query string; undefined, null and "" values are left out.
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

// GET (or POST with a JSON or FormData body) and parse JSON; OpenAI-shaped errors become ApiError.
export async function api(path, { method = "GET", json, form, token, signal } = {}) {
  const headers = { Authorization: `Bearer ${token || secret() || ""}`, Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal, cache: "no-store", credentials: "omit" });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "Farebox did not answer. Check that it is running.");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    const message = error.message || `${method} ${path} answered HTTP ${response.status}.`;
    const failure = new ApiError(response.status, message, error.code);
    if (response.status === 401 && !token) onUnauthorized(failure);
    throw failure;
  }
  return data;
}
