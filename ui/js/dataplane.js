// Talking to a data plane straight from this browser: the query role, the live inspector,
// traces and dead-letter queues. A short-lived token from the control plane proves who the
// person is; event data goes data plane → browser and never passes through the control plane.

import * as api from './api.js';

let token = null;

/** A token for this tenant's data planes (renewed half a minute before it expires). */
export async function dataPlaneToken(tenantId) {
  if (token && token.tenant === tenantId && token.until > Date.now()) return token.value;
  const t = await api.post(`/api/v1/tenants/${encodeURIComponent(tenantId)}/query-token`, {});
  token = { tenant: tenantId, value: t.token, until: Date.now() + (t.expires_in - 30) * 1000 };
  return token.value;
}

/**
 * Where clients reach this tenant's nodes, by role (`receiver`, `proxy`, `query`), as the
 * nodes advertised them; connected nodes first.
 */
export async function nodeUrls(tenantId) {
  let nodes = [];
  try {
    nodes = await api.get(`/api/v1/tenants/${encodeURIComponent(tenantId)}/data-planes`).then((r) => r.data);
  } catch { /* no address is better than a wrong one */ }
  const urls = {};
  for (const n of [...nodes].sort((a, b) => Number(b.connected) - Number(a.connected))) {
    for (const [role, url] of Object.entries(n.urls || {})) urls[role] ??= url;
  }
  return urls;
}

const urlKey = (tenantId) => `sluice.query-url.${tenantId}`;

/**
 * The data plane address this browser uses for the tenant (the same on every page): the one
 * the person last used, else the query role one of the tenant's own nodes advertises.
 */
export async function dataPlaneUrl(tenantId) {
  const remembered = localStorage.getItem(urlKey(tenantId));
  if (remembered) return remembered;
  const urls = await nodeUrls(tenantId);
  return urls.query || urls.receiver || '';
}

export function rememberDataPlaneUrl(tenantId, url) {
  localStorage.setItem(urlKey(tenantId), url.trim());
}

function base(url) {
  return url.trim().replace(/\/+$/, '');
}

// The Content-Security-Policy refuses some addresses before any request leaves; the browser
// says so only in this event, so remember the last refusals to name them.
const refused = [];
document.addEventListener('securitypolicyviolation', (e) => {
  if (e.effectiveDirective === 'connect-src') refused.push({ uri: e.blockedURI, at: Date.now() });
  if (refused.length > 20) refused.shift();
});

/** Why a fetch to `url` failed: the console's policy refused it, or the network did. */
export async function unreachable(url) {
  // The violation event is queued alongside the failed fetch; give it a moment to land.
  await new Promise((resolve) => setTimeout(resolve, 50));
  let origin = url;
  try { origin = new URL(url).origin; } catch { /* keep it as typed */ }
  if (refused.some((r) => r.at > Date.now() - 5000 && r.uri.startsWith(origin))) {
    return new Error(`The console's Content-Security-Policy refused to connect to ${origin}: it admits https:// addresses, plain http:// only on localhost or 127.0.0.1, and the address set as SLUICE_UI_QUERY_URL on the control plane. Serve the data plane over HTTPS, or set SLUICE_UI_QUERY_URL=${origin}.`);
  }
  return new Error(`This browser cannot reach the data plane at ${url}. Check the address, that the node is running, and that this browser can reach it (data planes usually live in a private network: use a VPN or a bastion).`);
}

/** A JSON call to the data plane; throws with the node's own message on an error. */
export async function call(tenantId, url, method, path, body) {
  const bearer = await dataPlaneToken(tenantId);
  let response;
  try {
    response = await fetch(`${base(url)}${path}`, {
      method,
      headers: { Authorization: `Bearer ${bearer}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch {
    throw await unreachable(url);
  }
  const text = await response.text();
  let json;
  try { json = JSON.parse(text); } catch { json = null; }
  if (!response.ok) {
    const error = new Error(json?.error?.message || `The data plane answered ${response.status}.`);
    error.status = response.status;
    throw error;
  }
  return json;
}

/**
 * Server-Sent Events from the data plane, read with fetch (EventSource cannot send an
 * Authorization header). Calls `onEvent(name, data)` per event until `signal` aborts.
 */
export async function stream(tenantId, url, path, onEvent, signal) {
  const bearer = await dataPlaneToken(tenantId);
  let response;
  try {
    response = await fetch(`${base(url)}${path}`, { headers: { Authorization: `Bearer ${bearer}` }, signal });
  } catch (e) {
    if (signal.aborted) return;
    throw await unreachable(url);
  }
  if (!response.ok) {
    let message = `The data plane answered ${response.status}.`;
    try { message = (await response.json()).error.message; } catch { /* keep the status */ }
    throw new Error(message);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let text = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += value;
      let end;
      while ((end = text.indexOf('\n\n')) >= 0) {
        const block = text.slice(0, end);
        text = text.slice(end + 2);
        let name = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) name = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(5).trimStart();
        }
        if (data) {
          let parsed;
          try { parsed = JSON.parse(data); } catch { parsed = data; }
          onEvent(name, parsed);
        }
      }
    }
  } catch (e) {
    if (!signal.aborted) throw e;
  }
}

/** A JSON value as indented text for a <pre>. */
export function pretty(value) {
  if (value === undefined || value === null) return '—';
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}
