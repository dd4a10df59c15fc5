// The one way the dashboard talks to Vigil's HTTP API: JSON in and out, the session cookie
// (same origin), and the CSRF token on every request that changes something. A 401 anywhere
// means the session ended: the app is told once and shows the sign-in page.

const BASE = '/api/v1';

let csrfToken = null;
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

export function setCsrfToken(token) {
  csrfToken = token;
}

export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/**
 * Calls `method path` with an optional JSON body. Resolves to the parsed body (null for 204);
 * rejects with an ApiError carrying the server's one-sentence reason.
 * `opts.quiet401`: a 401 is the caller's business (sign-in, session probe), not a sign-out.
 * `opts.headers`: more request headers (the visit page's `Authorization: Visit <token>`).
 */
export async function api(method, path, body = undefined, opts = {}) {
  const headers = { Accept: 'application/json', ...(opts.headers || {}) };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let resp;
  try {
    resp = await fetch(BASE + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      signal: opts.signal,
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'Vigil cannot be reached. Check the network connection.');
  }
  if (resp.status === 204) return null;
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const message = (data && typeof data.error === 'string' && data.error) || `The server answered ${resp.status}.`;
    const err = new ApiError(resp.status, message, resp.headers.get('Retry-After'));
    err.body = data; // where a refusal says where the problem is (a care plan's rule and field)
    if (resp.status === 401 && !opts.quiet401) onUnauthorized();
    throw err;
  }
  return data;
}

export const get = (path, opts) => api('GET', path, undefined, opts);
export const post = (path, body = {}, opts) => api('POST', path, body, opts);
export const put = (path, body, opts) => api('PUT', path, body, opts);
export const patch = (path, body, opts) => api('PATCH', path, body, opts);
export const del = (path, opts) => api('DELETE', path, undefined, opts);

/** Encodes one path segment (ids are restricted, but never trust that in a URL). */
export const seg = (s) => encodeURIComponent(s);
