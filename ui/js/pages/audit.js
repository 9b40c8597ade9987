import * as api from '../api.js';
import { h, replace, field, table, empty, when, loading, alert } from '../dom.js';
import { ctx } from '../app.js';

const ACTIONS = ['tenant.', 'member.', 'invitation.', 'key.', 'key.create', 'key.revoke', 'pipeline.', 'pipeline.create', 'pipeline.update', 'pipeline.rollback', 'pipeline.delete'];
const PAGE = 25;

export async function auditPage(page) {
  const tid = encodeURIComponent(ctx.tenant.id);
  const actor = h('select', { name: 'actor' }, h('option', { value: '' }, 'Anyone'));
  const action = h('input', { name: 'action', list: 'audit-actions', placeholder: 'key.revoke, or key. for every key action', size: 30 });
  const from = h('input', { type: 'date', name: 'from' });
  const to = h('input', { type: 'date', name: 'to' });
  const apply = h('button', { type: 'submit' }, 'Filter');
  const body = h('div', {}, loading());
  const pager = h('div', { class: 'pager' });
  const form = h('form', { class: 'toolbar', 'aria-label': 'Filter the audit log' },
    field('Actor', actor), field('Action', action), field('From (UTC)', from), field('To (UTC)', to),
    h('datalist', { id: 'audit-actions' }, ACTIONS.map((a) => h('option', { value: a }))),
    h('div', { class: 'field' }, apply));
  replace(page, h('div', { class: 'page-head' }, h('h1', {}, 'Audit log')),
    h('p', { class: 'muted' }, 'Every change in this tenant, newest first: who, what, when and from where.'),
    form, body, pager);

  // Names for the ids entries carry; anything deleted since keeps its id.
  const names = new Map([[`tenant:${ctx.tenant.id}`, `tenant ${ctx.tenant.name}`]]);
  const known = Promise.allSettled([
    api.get(`/api/v1/tenants/${tid}/members`).then((r) => {
      for (const m of r.data) {
        actor.append(h('option', { value: `user:${m.user_id}` }, m.email));
        names.set(`user:${m.user_id}`, m.email);
      }
    }),
    api.get(`/api/v1/tenants/${tid}/keys`).then((r) => { for (const k of r.data) names.set(`key:${k.id}`, `key “${k.name}”`); }),
    api.get(`/api/v1/tenants/${tid}/pipelines`).then((r) => { for (const p of r.data) names.set(`pipeline:${p.id}`, `pipeline ${p.name}`); }),
  ]);

  // Cursors of the pages before this one, so "Newer" can go back.
  const history = [];
  let cursor = null;
  const load = async () => {
    replace(body, loading());
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (cursor) params.set('cursor', cursor);
    if (actor.value) params.set('actor', actor.value);
    if (action.value.trim()) params.set('action', action.value.trim());
    if (from.value) params.set('since', `${from.value}T00:00:00Z`);
    if (to.value) {
      const end = new Date(`${to.value}T00:00:00Z`);
      end.setUTCDate(end.getUTCDate() + 1);
      params.set('until', end.toISOString().replace('.000', ''));
    }
    try {
      const [result] = await Promise.all([api.get(`/api/v1/tenants/${tid}/audit?${params}`), known]);
      render(body, result.data, actor.value || action.value.trim() || from.value || to.value, names);
      replace(pager,
        h('button', { type: 'button', disabled: history.length === 0, onclick: () => { cursor = history.pop(); load(); } }, 'Newer'),
        h('button', { type: 'button', disabled: !result.next_cursor, onclick: () => { history.push(cursor); cursor = result.next_cursor; load(); } }, 'Older'));
    } catch (e) {
      replace(body, alert('error', `Could not load the audit log: ${e.message}`));
      replace(pager);
    }
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); history.length = 0; cursor = null; load(); });
  actor.addEventListener('change', () => form.requestSubmit());
  await load();
}

function render(body, entries, filtered, names) {
  if (entries.length === 0) {
    return replace(body, empty(filtered ? 'Nothing matches' : 'Nothing recorded yet',
      filtered ? 'No entry matches these filters. Clear them to see everything.'
        : 'Changes to keys, pipelines and members appear here as they happen.'));
  }
  replace(body, table(['When', 'Actor', 'Action', 'Target', 'From', 'Details'], entries.map((e) => h('tr', {},
    h('td', {}, when(e.created_at)),
    h('td', { title: e.actor }, e.actor_name),
    h('td', {}, h('code', {}, e.action)),
    h('td', { title: e.target || null }, e.target ? names.get(e.target) || e.target : '—'),
    h('td', { class: 'mono' }, e.source_ip || '—'),
    h('td', { class: 'details' }, details(e.details)))), 'Audit log entries'));
}

/** An entry's details as labelled values that wrap, not one line of JSON. */
function details(value) {
  if (!value || typeof value !== 'object') return value ?? '—';
  const entries = Object.entries(value).filter(([, v]) => v !== null && v !== undefined);
  if (entries.length === 0) return '—';
  return h('dl', {}, entries.flatMap(([k, v]) => [
    h('dt', {}, k.replaceAll('_', ' ')),
    h('dd', {}, typeof v === 'object' ? JSON.stringify(v) : String(v))]));
}
