// SQL over the archive, sent from this browser straight to a data plane's query role with a
// short-lived query token: the rows never pass through the control plane.

import { h, replace, field, table, alert, toCsv, download } from '../dom.js';
import { ctx } from '../app.js';
import { dataPlaneToken as queryToken, dataPlaneUrl, rememberDataPlaneUrl, unreachable } from '../dataplane.js';

const EXAMPLE = `SELECT event, count(*) AS n
FROM events
GROUP BY event
ORDER BY n DESC
LIMIT 20`;

export async function queryPage(page) {
  const tenantId = ctx.tenant.id;
  const address = await dataPlaneUrl(tenantId);
  const url = h('input', { type: 'url', name: 'url', value: address, required: true, size: 36, placeholder: 'https://dataplane.internal:8090' });
  const sql = h('textarea', { class: 'code', name: 'sql', rows: 8, spellcheck: 'false', required: true }, localStorage.getItem(`sluice.sql.${tenantId}`) || EXAMPLE);
  const run = h('button', { type: 'submit', class: 'primary', id: 'run-query' }, 'Run query');
  const csv = h('button', { type: 'button', id: 'download-csv', disabled: true }, 'Download CSV');
  const meta = h('div', { class: 'query-meta', role: 'status' });
  const result = h('div');
  let last = null;

  const form = h('form', { 'aria-label': 'Archive query' },
    field('Query endpoint', url, address
      ? 'A data plane running the query role, as this browser reaches it. Filled in from what this tenant\'s nodes advertise (SLUICE_PUBLIC_URL).'
      : 'No data plane of this tenant advertises the query role yet: run one with the query role (and SLUICE_PUBLIC_URL set to how browsers reach it), or type its address.'),
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
        throw await unreachable(url.value.trim());
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
        : paged(columns, rows));
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

/** Rows per page of results: a browser lays out a few hundred rows at once without a stall. */
const PAGE_ROWS = 100;

/** The result a page at a time, with the page's place in the whole. */
function paged(columns, rows) {
  const box = h('div', { class: 'result' });
  const pages = Math.ceil(rows.length / PAGE_ROWS);
  const show = (n) => {
    const start = n * PAGE_ROWS;
    const slice = rows.slice(start, start + PAGE_ROWS);
    const nav = pages > 1 && h('div', { class: 'toolbar pager' },
      h('button', { type: 'button', id: 'result-prev', disabled: n === 0, onclick: () => show(n - 1) }, 'Previous'),
      h('span', { id: 'result-page' }, `Rows ${(start + 1).toLocaleString()}–${(start + slice.length).toLocaleString()} of ${rows.length.toLocaleString()}`),
      h('button', { type: 'button', id: 'result-next', disabled: n >= pages - 1, onclick: () => show(n + 1) }, 'Next'));
    replace(box, table(columns, slice.map((r) => h('tr', {}, columns.map((c) => cellTd(r[c])))), 'Query result'), nav);
  };
  show(0);
  return box;
}

/** A cell cut to one line; the whole value is its tooltip. */
function cellTd(value) {
  if (value === null || value === undefined) return h('td', {}, h('span', { class: 'muted' }, 'null'));
  const text = typeof value === 'object' ? JSON.stringify(value) : String(value);
  return h('td', { title: text.length > 60 ? text.slice(0, 2000) : null }, text);
}
