import * as api from '../api.js';
import { h, replace, field, table, empty, when, loading, alert } from '../dom.js';
import { ctx } from '../app.js';

const ACTIONS = ['tenant.', 'member.', 'invitation.', 'key.', 'key.create', 'key.revoke', 'pipeline.', 'pipeline.create', 'pipeline.update', 'pipeline.rollback', 'pipeline.delete'];
const PAGE = 25;

export async function auditPage(page) {
  const tid = encodeURIComponent(ctx.tenant.id);
  const actor = h('select', { name: 'actor' }, h('option', { value: '' }, 'Anyone'));
  const action = h('input', { name: 'action', list: 'audit-actions', placeholder: 'key.revoke, or key. for every key action', size: 30 });
  const apply = h('button', { type: 'submit' }, 'Filter');
  const body = h('div', {}, loading());
  const pager = h('div', { class: 'pager' });
  const form = h('form', { class: 'toolbar', 'aria-label': 'Filter the audit log' },
    field('Actor', actor), field('Action', action),
    h('datalist', { id: 'audit-actions' }, ACTIONS.map((a) => h('option', { value: a }))),
    h('div', { class: 'field' }, apply));
  replace(page, h('div', { class: 'page-head' }, h('h1', {}, 'Audit log')),
    h('p', { class: 'muted' }, 'Every change in this tenant, newest first: who, what, when and from where.'),
    form, body, pager);

  api.get(`/api/v1/tenants/${tid}/members`).then((r) => {
    for (const m of r.data) actor.append(h('option', { value: `user:${m.user_id}` }, m.email));
  }).catch(() => {});

  // Cursors of the pages before this one, so "Newer" can go back.
  const history = [];
  let cursor = null;
  const load = async () => {
    replace(body, loading());
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (cursor) params.set('cursor', cursor);
    if (actor.value) params.set('actor', actor.value);
    if (action.value.trim()) params.set('action', action.value.trim());
    try {
      const result = await api.get(`/api/v1/tenants/${tid}/audit?${params}`);
      render(body, result.data, actor.value || action.value.trim());
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

function render(body, entries, filtered) {
  if (entries.length === 0) {
    return replace(body, empty(filtered ? 'Nothing matches' : 'Nothing recorded yet',
      filtered ? 'No entry matches this actor and action. Clear the filters to see everything.'
        : 'Changes to keys, pipelines and members appear here as they happen.'));
  }
  replace(body, table(['When', 'Actor', 'Action', 'Target', 'From', 'Details'], entries.map((e) => h('tr', {},
    h('td', {}, when(e.created_at)),
    h('td', {}, e.actor_name, h('div', { class: 'muted mono' }, e.actor)),
    h('td', {}, h('code', {}, e.action)),
    h('td', { class: 'mono' }, e.target || '—'),
    h('td', { class: 'mono' }, e.source_ip || '—'),
    h('td', { class: 'mono' }, e.details ? JSON.stringify(e.details) : '—'))), 'Audit log entries'));
}
