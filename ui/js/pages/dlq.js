// Dead-letter queues of a data plane: browse a destination's entries (payload, last answer,
// attempts), replay or purge selected or all — from this browser to the node.

import { h, replace, field, alert, loading, table, empty, badge, confirmDialog, toast } from '../dom.js';
import { ctx, can } from '../app.js';
import { call, dataPlaneUrl, rememberDataPlaneUrl, pretty } from '../dataplane.js';

const PAGE = 50;

export async function dlqPage(page) {
  const tenantId = ctx.tenant.id;
  const url = h('input', { type: 'url', name: 'url', value: await dataPlaneUrl(tenantId), required: true, size: 30 });
  const overview = h('div', { id: 'dlq-overview' });
  const entries = h('div', { id: 'dlq-entries' });
  const form = h('form', { 'aria-label': 'Data plane', class: 'toolbar-form' }, field('Data plane', url),
    h('div', { class: 'toolbar' }, h('button', { type: 'submit', class: 'primary' }, 'Load')));
  form.addEventListener('submit', (e) => { e.preventDefault(); rememberDataPlaneUrl(tenantId, url.value); load(); });
  replace(page, h('div', { class: 'page-head' }, h('h1', {}, 'Dead-letter queues')),
    h('p', { class: 'muted' }, 'Events a destination could not take, with its last answer. Replay sends them again with the destination\'s current settings. Read from the data plane by this browser.'),
    form, overview, entries);

  async function load() {
    replace(overview, loading());
    replace(entries);
    try {
      const body = await call(tenantId, url.value, 'GET', '/v1/dlq');
      if (body.data.length === 0) return replace(overview, empty('No destinations', 'This data plane runs no pipeline with destinations.'));
      replace(overview, table(['Pipeline', 'Destination', 'Entries', ''], body.data.map((d) => h('tr', { 'data-destination': d.destination },
        h('td', {}, d.pipeline), h('td', {}, d.destination),
        h('td', {}, badge(d.depth > 0 ? 'danger' : 'ok', d.depth.toLocaleString())),
        h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => browse(d, 0) }, 'Browse')))), 'Dead-letter queues'));
    } catch (err) {
      replace(overview, alert('error', err.message));
    }
  }

  async function browse(d, cursor) {
    const path = `/v1/dlq/${encodeURIComponent(d.pipeline_id)}/${encodeURIComponent(d.destination)}`;
    replace(entries, loading());
    let body;
    try {
      body = await call(tenantId, url.value, 'GET', `${path}?limit=${PAGE}&cursor=${cursor}`);
    } catch (err) {
      return replace(entries, alert('error', err.message));
    }
    if (body.data.length === 0) return replace(entries, h('h2', {}, d.destination), empty('Nothing here', 'This dead-letter queue is empty.'));
    const boxes = new Map();
    const writable = can('member');
    const act = async (kind, all) => {
      const cursors = [...boxes].filter(([, box]) => box.checked).map(([c]) => c);
      if (!all && cursors.length === 0) return toast('Select entries first.');
      const what = all ? `all ${d.destination} entries` : `${cursors.length} entr${cursors.length === 1 ? 'y' : 'ies'}`;
      if (kind === 'purge' && !await confirmDialog('Purge entries', `Delete ${what} for good? They cannot be replayed after this.`, 'Purge')) return;
      try {
        const result = await call(tenantId, url.value, kind === 'purge' ? 'DELETE' : 'POST',
          kind === 'purge' ? path : `${path}/replay`, all ? { all: true } : { cursors });
        toast(kind === 'purge' ? `Purged ${result.purged ?? what}.` : `Replayed ${result.replayed ?? what}.`);
      } catch (err) {
        return replace(entries, alert('error', err.message));
      }
      await load();
      await browse(d, 0);
    };
    const actions = writable
      ? h('div', { class: 'toolbar' },
        h('button', { type: 'button', id: 'dlq-replay', onclick: () => act('replay', false) }, 'Replay selected'),
        h('button', { type: 'button', id: 'dlq-replay-all', onclick: () => act('replay', true) }, 'Replay all'),
        h('button', { type: 'button', class: 'danger', id: 'dlq-purge', onclick: () => act('purge', false) }, 'Purge selected'),
        h('button', { type: 'button', class: 'danger', onclick: () => act('purge', true) }, 'Purge all'))
      : h('p', { class: 'muted' }, 'Viewers may browse; members and above replay or purge.');
    replace(entries, h('h2', {}, `${d.pipeline} → ${d.destination}`), actions,
      table(['', 'Event', 'Failed', 'Attempts', 'Last answer', 'Payload'], body.data.map((entry) => {
        const box = h('input', { type: 'checkbox', 'aria-label': `Select ${entry.id}` });
        boxes.set(entry.cursor, box);
        return h('tr', { 'data-event-id': entry.id },
          h('td', {}, writable ? box : null),
          h('td', {}, h('a', { class: 'mono', href: `#/t/${encodeURIComponent(tenantId)}/trace/${encodeURIComponent(entry.id)}` }, entry.id)),
          h('td', {}, new Date(entry.failed_at).toLocaleString()),
          h('td', {}, String(entry.attempts)),
          h('td', {}, entry.status ? badge('danger', `HTTP ${entry.status}`) : null, ' ', entry.error,
            entry.response ? h('details', {}, h('summary', {}, 'answer'), h('pre', { class: 'code' }, pretty(entry.response))) : null),
          h('td', {}, h('details', {}, h('summary', {}, 'payload'), h('pre', { class: 'code' }, pretty(entry.payload)))));
      }), 'Dead-letter entries'),
      body.next_cursor ? h('button', { type: 'button', onclick: () => browse(d, body.next_cursor) }, 'Next page') : null);
  }
  await load();
}
