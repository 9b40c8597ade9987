// One event's lineage on a data plane: every stage it passed, each destination's attempts and
// answers, its dead-letter entries and the archive file — from the node, to this browser.

import { h, replace, field, alert, loading, badge } from '../dom.js';
import { ctx, go } from '../app.js';
import { call, dataPlaneUrl, rememberDataPlaneUrl, pretty } from '../dataplane.js';
import { stagesSideBySide } from './live.js';

export async function tracePage(page, eventId) {
  const tenantId = ctx.tenant.id;
  const url = h('input', { type: 'url', name: 'url', value: await dataPlaneUrl(tenantId), required: true, size: 30 });
  const id = h('input', { type: 'text', name: 'event_id', value: eventId || '', required: true, size: 36, placeholder: 'an event id (messageId)' });
  const form = h('form', { 'aria-label': 'Trace an event', class: 'toolbar-form' },
    field('Data plane', url), field('Event id', id),
    h('div', { class: 'toolbar' }, h('button', { type: 'submit', class: 'primary', id: 'trace-run' }, 'Trace')));
  const result = h('div', { id: 'trace-result' });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    rememberDataPlaneUrl(tenantId, url.value);
    go(`#/t/${encodeURIComponent(tenantId)}/trace/${encodeURIComponent(id.value.trim())}`);
  });
  replace(page, h('div', { class: 'page-head' }, h('h1', {}, 'Event trace')),
    h('p', { class: 'muted' }, 'Every stage one event passed on a data plane: from its live ring while it holds the event, from the archive and the dead-letter queues after that.'),
    form, result);
  if (!eventId) return;
  replace(result, loading('Tracing…'));
  try {
    const trace = await call(tenantId, url.value, 'GET', `/v1/events/${encodeURIComponent(eventId)}/trace`);
    replace(result, render(trace));
  } catch (err) {
    replace(result, alert(err.status === 404 ? 'info' : 'error', err.message));
  }
}

function render(trace) {
  const parts = [h('p', {}, badge('info', trace.from === 'ring' ? 'from the live ring' : 'from the archive'),
    ` node ${String(trace.node_id).slice(0, 8)}`, trace.complete ? '' : ' · the dead-letter queues were only partly searched')];
  if (trace.stages.length) {
    parts.push(h('h2', {}, 'Stages'),
      h('ol', { class: 'timeline', id: 'trace-stages' }, trace.stages.map((r) => h('li', { 'data-stage': r.stage },
        h('span', { class: 'mono' }, new Date(r.at).toLocaleTimeString()), ' ',
        h('strong', {}, r.stage), r.destination ? ` → ${r.destination}` : '',
        r.status !== undefined ? ` · HTTP ${r.status ?? 'no answer'}` : '',
        r.outcome ? ` · ${r.outcome.replace('_', ' ')}` : '',
        r.error && r.error !== `HTTP ${r.status}` ? h('span', { class: 'error-text' }, ` · ${r.error}`) : '',
        r.file ? h('span', { class: 'mono' }, ` · ${r.file}`) : ''))),
      stagesSideBySide(trace.stages));
  }
  if (trace.dlq.length) {
    parts.push(h('h2', {}, 'Dead-letter entries'), trace.dlq.map((entry) => h('details', { class: 'dlq-entry', open: true },
      h('summary', {}, `${entry.destination} · ${entry.attempts} attempt${entry.attempts === 1 ? '' : 's'} · ${entry.error}`),
      entry.response ? h('pre', { class: 'code' }, pretty(entry.response)) : null,
      h('pre', { class: 'code' }, pretty(entry.payload)))));
  }
  if (trace.rejected.length) {
    parts.push(h('h2', {}, 'Rejected'), trace.rejected.map((r) => h('p', {}, badge('danger', r.reason_code), ' ', r.reason)));
  }
  if (trace.archive) {
    parts.push(h('h2', {}, 'Archive'), trace.archive.copies.map((copy) => h('div', { class: 'archive-copy' },
      h('ul', { id: 'trace-files' }, copy.files.map((f) => h('li', { class: 'mono' }, f))),
      h('pre', { class: 'code' }, pretty(copy.row)))));
  } else if (!trace.stages.some((r) => r.stage === 'archived')) {
    parts.push(h('p', { class: 'muted' }, 'Not in the archive (yet): events reach it when the archiver flushes.'));
  }
  return h('div', {}, parts);
}
