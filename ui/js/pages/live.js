// Events as they pass each stage of a data plane, streamed from the node to this browser:
// input, governance, each destination's payload, attempts and answers, the archive file.

import { h, replace, field, alert, badge } from '../dom.js';
import { ctx } from '../app.js';
import { dataPlaneUrl, rememberDataPlaneUrl, stream, pretty } from '../dataplane.js';

const STAGES = ['received', 'governed', 'rejected', 'shaped', 'attempt', 'outcome', 'archived'];
const OUTCOMES = ['delivered', 'retrying', 'dead_lettered', 'rejected'];
/** Events kept on the page; the oldest go first. */
const MAX_EVENTS = 500;

const OUTCOME_BADGE = { delivered: 'ok', retrying: 'warn', dead_lettered: 'danger' };

export async function livePage(page) {
  const tenantId = ctx.tenant.id;
  const url = h('input', { type: 'url', name: 'url', value: await dataPlaneUrl(tenantId), required: true, size: 30 });
  const filters = {
    event: h('input', { type: 'text', name: 'event', placeholder: 'any', size: 14 }),
    user: h('input', { type: 'text', name: 'user', placeholder: 'user or anonymous id', size: 18 }),
    destination: h('input', { type: 'text', name: 'destination', placeholder: 'any', size: 12 }),
    stage: h('select', { name: 'stage' }, h('option', { value: '' }, 'any'), STAGES.map((s) => h('option', { value: s }, s))),
    outcome: h('select', { name: 'outcome' }, h('option', { value: '' }, 'any'), OUTCOMES.map((s) => h('option', { value: s }, s.replace('_', ' ')))),
  };
  const toggle = h('button', { type: 'submit', class: 'primary', id: 'live-toggle' }, 'Start');
  const clear = h('button', { type: 'button', id: 'live-clear' }, 'Clear');
  const status = h('div', { class: 'query-meta', role: 'status', id: 'live-status' }, 'Not connected.');
  const problem = h('div');
  const tbody = h('tbody', { id: 'live-events' });
  const list = h('div', { class: 'table-wrap' },
    h('table', { class: 'live' },
      h('caption', { class: 'visually-hidden' }, 'Live events'),
      h('thead', {}, h('tr', {}, ['Time', 'Event', 'Source', 'Stages', ''].map((t) => h('th', { scope: 'col' }, t)))),
      tbody));

  /** event id → { records, row, detail, open } */
  const events = new Map();
  let controller = null;
  let count = 0;
  /** What the node said when the stream opened; the count of events follows it. */
  let connected = '';
  const showCount = () => { status.textContent = `${connected} · ${count} event${count === 1 ? '' : 's'}`; };

  const form = h('form', { 'aria-label': 'Live stream', class: 'live-form' },
    field('Data plane', url, 'The node this browser streams from.'),
    h('div', { class: 'filters' },
      field('Event', filters.event), field('User', filters.user), field('Destination', filters.destination),
      field('Stage', filters.stage), field('Outcome', filters.outcome)),
    h('div', { class: 'toolbar' }, toggle, clear));

  const stop = (why) => {
    controller?.abort();
    controller = null;
    toggle.textContent = 'Start';
    if (why) status.textContent = why;
  };
  ctx.stop.push(() => stop());

  clear.addEventListener('click', () => { events.clear(); replace(tbody); count = 0; });

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (controller) return stop(`Paused · ${count} event${count === 1 ? '' : 's'} shown.`);
    replace(problem);
    rememberDataPlaneUrl(tenantId, url.value);
    const query = new URLSearchParams({ backlog: '200' });
    for (const [k, control] of Object.entries(filters)) if (control.value.trim()) query.set(k, control.value.trim());
    controller = new AbortController();
    toggle.textContent = 'Pause';
    status.textContent = 'Connecting…';
    const signal = controller.signal;
    stream(tenantId, url.value, `/v1/live?${query}`, (name, data) => {
      if (name === 'hello') {
        connected = `Live from node ${String(data.node_id).slice(0, 8)} · the node holds the last ${data.ring?.records ?? 0} stage records.`;
        showCount();
      }
      else if (name === 'lagged') replace(problem, alert('warn', `${data.skipped} records were skipped: this browser fell behind. Narrow the filters to see every one.`));
      else if (name === 'record') add(data);
    }, signal).then(() => {
      if (!signal.aborted) stop('The data plane closed the stream.');
    }).catch((err) => {
      stop('Not connected.');
      replace(problem, alert('error', err.message));
    });
  });

  function add(record) {
    let ev = events.get(record.event_id);
    if (!ev) {
      if (events.size >= MAX_EVENTS) {
        const [oldest, gone] = events.entries().next().value;
        gone.row.remove();
        gone.detail.remove();
        events.delete(oldest);
      }
      ev = { records: [], open: false };
      ev.row = h('tr', { 'data-event-id': record.event_id });
      ev.detail = h('tr', { class: 'live-detail', hidden: true }, h('td', { colspan: 5 }));
      events.set(record.event_id, ev);
      tbody.prepend(ev.row, ev.detail);
      count += 1;
      if (controller) showCount();
    }
    ev.records.push(record);
    render(record.event_id, ev);
  }

  function render(id, ev) {
    const envelope = ev.records.find((r) => r.stage === 'received' || r.stage === 'governed' || r.stage === 'rejected')?.body || {};
    const name = envelope.event || envelope.name || envelope.type || '—';
    const toggleDetail = h('button', { type: 'button', class: 'link', 'aria-expanded': String(ev.open) }, ev.open ? 'Hide stages' : 'Show stages');
    toggleDetail.addEventListener('click', () => {
      ev.open = !ev.open;
      render(id, ev);
    });
    replace(ev.row,
      h('td', { class: 'mono' }, new Date(ev.records[0].at).toLocaleTimeString()),
      h('td', {}, h('strong', {}, name), h('div', { class: 'muted mono' }, id)),
      h('td', {}, envelope.source || '—'),
      h('td', { class: 'stages' }, chips(ev.records)),
      h('td', {}, toggleDetail, ' ', h('a', { href: `#/t/${encodeURIComponent(tenantId)}/trace/${encodeURIComponent(id)}` }, 'Trace')));
    ev.detail.hidden = !ev.open;
    if (ev.open) replace(ev.detail.firstChild, stagesSideBySide(ev.records));
  }

  replace(page, h('div', { class: 'page-head' }, h('h1', {}, 'Live events')),
    h('p', { class: 'muted' }, 'Every stage an event passes on a data plane: as the client sent it, after governance, and per destination the payload, each attempt with the vendor\'s answer, and the outcome. Streamed from the node to this browser; nothing passes through the control plane.'),
    form, status, problem, list);
}

/** One chip per stage reached; a destination's chip shows its latest outcome. */
function chips(records) {
  const out = [];
  const has = (stage) => records.some((r) => r.stage === stage);
  if (has('received')) out.push(badge('info', 'received'));
  if (has('rejected')) out.push(badge('danger', `rejected: ${records.find((r) => r.stage === 'rejected').reason_code || ''}`));
  if (has('governed')) out.push(badge('info', 'governed'));
  const destinations = [...new Set(records.filter((r) => r.destination).map((r) => r.destination))];
  for (const d of destinations) {
    const last = records.filter((r) => r.destination === d && r.stage === 'outcome').at(-1);
    const attempts = records.filter((r) => r.destination === d && r.stage === 'attempt').length;
    const label = last ? last.outcome.replace('_', ' ') : attempts ? 'sending' : 'shaped';
    out.push(h('span', { class: `badge ${OUTCOME_BADGE[last?.outcome] || ''}`, 'data-destination': d, title: last?.error || '' }, `${d}: ${label}`));
  }
  if (has('archived')) out.push(badge('ok', 'archived'));
  return out;
}

/** Input, governed, and each destination's payload and answers, side by side. */
export function stagesSideBySide(records) {
  const column = (title, ...content) => h('section', { class: 'stage-col' }, h('h3', {}, title), content);
  const body = (r) => h('pre', { class: 'code' }, pretty(r?.body));
  const cols = [];
  const received = records.find((r) => r.stage === 'received');
  cols.push(column('Input', received ? body(received) : h('p', { class: 'muted' }, 'Received before this view opened.')));
  const rejected = records.find((r) => r.stage === 'rejected');
  const governed = records.find((r) => r.stage === 'governed');
  if (rejected) cols.push(column('Rejected', h('p', {}, badge('danger', rejected.reason_code || 'rejected'), ' ', rejected.reason || '')));
  else cols.push(column('Governed', governed ? body(governed) : h('p', { class: 'muted' }, '—')));
  const destinations = [...new Set(records.filter((r) => r.destination).map((r) => r.destination))];
  for (const d of destinations) {
    const mine = records.filter((r) => r.destination === d);
    const shaped = mine.find((r) => r.stage === 'shaped');
    cols.push(column(`→ ${d}`,
      h('h4', {}, 'Vendor payload'), shaped ? body(shaped) : h('p', { class: 'muted' }, '—'),
      mine.filter((r) => r.stage === 'attempt' || r.stage === 'outcome').map((r) => r.stage === 'attempt'
        ? h('div', { class: 'attempt' },
          h('h4', {}, `Attempt · ${r.status ?? 'no answer'} · ${r.latency_ms} ms`),
          r.error && r.error !== `HTTP ${r.status}` ? h('p', { class: 'error-text' }, r.error) : null,
          r.response !== undefined ? h('pre', { class: 'code' }, pretty(r.response)) : null)
        : h('p', {}, badge(OUTCOME_BADGE[r.outcome] || '', r.outcome.replace('_', ' ')),
          r.next_attempt_at ? ` next attempt ${new Date(r.next_attempt_at).toLocaleTimeString()}` : '',
          r.outcome === 'dead_lettered' && r.body?.error ? ` · ${r.body.error}` : ''))));
  }
  const archived = records.find((r) => r.stage === 'archived');
  if (archived) cols.push(column('Archive', h('p', { class: 'mono' }, archived.file)));
  return h('div', { class: 'stage-cols' }, cols);
}
