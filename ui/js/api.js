// The control plane's REST API as the console uses it. The access token lives only in memory;
// the refresh token is an HttpOnly cookie the browser sends to /api/v1/auth/ and nowhere else,
// so a reload restores the session without the page ever holding a long-lived secret.

export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

let accessToken = null;
let refreshTimer = null;
let refreshing = null;
const listeners = new Set();

/** Called with `null` when the session ends (sign-out, or a refresh that failed). */
export function onSessionChange(fn) { listeners.add(fn); }

function setSession(token, expiresIn) {
  accessToken = token;
  clearTimeout(refreshTimer);
  if (token && expiresIn) {
    // Refresh a minute early (or halfway for short tokens) so a request never races expiry.
    const lead = Math.min(60, expiresIn / 2);
    refreshTimer = setTimeout(() => refresh().catch(() => {}), (expiresIn - lead) * 1000);
  }
  for (const fn of listeners) fn(token);
}

export function signedIn() { return accessToken !== null; }

async function decode(response) {
  const text = await response.text();
  let body = null;
  if (text) {
    try { body = JSON.parse(text); } catch { body = text; }
  }
  if (!response.ok) {
    const err = body && body.error;
    throw new ApiError(response.status, err?.code || 'http_' + response.status,
      err?.message || `the server answered ${response.status}`, err?.details || []);
  }
  return body;
}

async function send(method, path, { body, contentType, auth = true } = {}) {
  const headers = {};
  if (auth && accessToken) headers.Authorization = `Bearer ${accessToken}`;
  let payload;
  if (body !== undefined) {
    if (contentType) {
      headers['Content-Type'] = contentType;
      payload = body;
    } else {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' });
  } catch {
    throw new ApiError(0, 'unreachable', 'The control plane did not answer. Check your connection and try again.');
  }
  return decode(response);
}

/** A request with the access token; one refresh and retry when it has expired. */
export async function api(method, path, options = {}) {
  try {
    return await send(method, path, options);
  } catch (e) {
    if (e.status === 401 && accessToken && options.auth !== false) {
      await refresh();
      return send(method, path, options);
    }
    throw e;
  }
}

/** Exchanges the refresh cookie for a new access token; ends the session when it cannot. */
export function refresh() {
  if (!refreshing) {
    refreshing = send('POST', '/api/v1/auth/refresh', { auth: false })
      .then((t) => { setSession(t.access_token, t.expires_in); return true; })
      .catch((e) => { if (e.status === 401) setSession(null); throw e; })
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

export async function login(email, password) {
  const t = await send('POST', '/api/v1/auth/login', { body: { email, password }, auth: false });
  setSession(t.access_token, t.expires_in);
}

export async function setup(token, email, password) {
  const t = await send('POST', '/api/v1/auth/setup', { body: { token, email, password }, auth: false });
  setSession(t.access_token, t.expires_in);
}

export async function acceptInvite(token, password) {
  const t = await send('POST', '/api/v1/auth/accept-invite', { body: { token, password }, auth: false });
  setSession(t.access_token, t.expires_in);
}

export async function logout() {
  try { await send('POST', '/api/v1/auth/logout', { auth: false }); } finally { setSession(null); }
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, { body });
export const patch = (path, body) => api('PATCH', path, { body });
export const put = (path, body, contentType) => api('PUT', path, { body, contentType });
export const del = (path) => api('DELETE', path);

/** Every page of a cursor-paginated list. */
export async function all(path) {
  const out = [];
  let cursor = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await get(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
    out.push(...page.data);
    cursor = page.next_cursor || null;
  } while (cursor);
  return out;
}

export const enc = encodeURIComponent;
