// SQL over the archive, sent from this browser straight to a data plane's query role with a
// short-lived query token: the rows never pass through the control plane.

import { h, replace, field, table, alert, toCsv, download } from '../dom.js';
import { ctx } from '../app.js';
import { dataPlaneToken as queryToken, dataPlaneUrl, rememberDataPlaneUrl } from '../dataplane.js';

const EXAMPLE = `SELECT event, count(*) AS n
FROM events
GROUP BY event
ORDER BY n DESC
LIMIT 20`;

export async function queryPage(page) {
  const tenantId = ctx.tenant.id;
  const url = h('input', { type: 'url', name: 'url', value: await dataPlaneUrl(tenantId), required: true, size: 36 });
  const sql = h('textarea', { class: 'code', name: 'sql', rows: 8, spellcheck: 'false', required: true }, localStorage.getItem(`sluice.sql.${tenantId}`) || EXAMPLE);
  const run = h('button', { type: 'submit', class: 'primary', id: 'run-query' }, 'Run query');
  const csv = h('button', { type: 'button', id: 'download-csv', disabled: true }, 'Download CSV');
  const meta = h('div', { class: 'query-meta', role: 'status' });
  const result = h('div');
  let last = null;

  const form = h('form', { 'aria-label': 'Archive query' },
    field('Query endpoint', url, 'A data plane running the query role, as this browser reaches it (for example http://dataplane.internal:8090).'),
    field('SQL', sql, 'One table, events. JSON columns (properties, traits, context) are read with json_get_str(properties, \'key\'). Ctrl+Enter runs.'),
    h('div', { class: 'toolbar' }, run, csv));
  sql.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) form.requestSubmit(); });
  csv.addEventListener('click', () => {
    if (last) download(`sluice-query-${new Date().toISOString().slice(0, 19).replaceAll(':', '')}.csv`, toCsv(last.columns, last.rows), 'text/csv');
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    run.disabled = true;
    csv.disabled = true;
    last = null;
    replace(meta, 'Running…');
    replace(result);
    rememberDataPlaneUrl(tenantId, url.value);
    localStorage.setItem(`sluice.sql.${tenantId}`, sql.value);
    const started = performance.now();
    try {
      const bearer = await queryToken(tenantId);
      let response;
      try {
        response = await fetch(`${url.value.trim().replace(/\/+$/, '')}/v1/query`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${bearer}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ sql: sql.value, format: 'json' }),
        });
      } catch {
        throw new Error(`This browser cannot reach the query role at ${url.value.trim()}. Check the address, that the data plane runs the query role, and that this browser can reach it (data planes usually live in a private network: use a VPN or a bastion).`);
      }
      const text = await response.text();
      let body;
      try { body = JSON.parse(text); } catch { body = null; }
      if (!response.ok) throw new Error(body?.error?.message || `The query role answered ${response.status}.`);
      const rows = Array.isArray(body?.rows) ? body.rows : [];
      const columns = (body?.columns || []).map((c) => c.name);
      last = { columns, rows };
      const elapsed = Math.round(performance.now() - started);
      const server = typeof body?.elapsed_ms === 'number' ? body.elapsed_ms.toFixed(1) : null;
      const files = body?.files_scanned ?? null;
      replace(meta,
        h('span', { id: 'query-rows' }, `${rows.length.toLocaleString()} row${rows.length === 1 ? '' : 's'}`),
        h('span', { id: 'query-time' }, `${elapsed} ms${server ? ` (${server} ms on the data plane)` : ''}`),
        files !== null ? h('span', {}, `${files} file${files === 1 ? '' : 's'} scanned`) : null);
      csv.disabled = rows.length === 0;
      replace(result, rows.length === 0
        ? alert('info', 'The query ran and returned no rows. Events reach the archive when the archiver flushes (every minute by default).')
        : table(columns, rows.map((r) => h('tr', {}, columns.map((c) => h('td', {}, cell(r[c]))))), 'Query result'));
    } catch (e) {
      replace(meta);
      replace(result, alert('error', e.message));
    } finally {
      run.disabled = false;
    }
  });

  replace(page, h('div', { class: 'page-head' }, h('h1', {}, 'Archive query')),
    h('p', { class: 'muted' }, 'SQL over this tenant\'s archive in your own object storage. The browser asks the data plane directly; results never pass through the control plane.'),
    form, meta, result);
}

function cell(value) {
  if (value === null || value === undefined) return h('span', { class: 'muted' }, 'null');
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}
