import * as api from '../api.js';
import { h, replace, field, table, empty, when, badge, modal } from '../dom.js';
import { ctx, go, reloadTenants } from '../app.js';

export function tenantsPage(page) {
  const create = h('button', { type: 'button', class: 'primary', id: 'create-tenant', onclick: createTenant }, 'Create tenant');
  const body = h('div');
  replace(page, h('div', { class: 'page-head' }, h('h1', {}, 'Tenants'), create), body);
  if (ctx.tenants.length === 0) {
    replace(body, empty('No tenants yet',
      'A tenant holds pipelines, keys and data planes for one team or environment. Create one to begin.',
      h('button', { type: 'button', class: 'primary', onclick: createTenant }, 'Create your first tenant')));
    return;
  }
  replace(body, table(['Name', 'Your role', 'Config version', 'Created'], ctx.tenants.map((t) => h('tr', {},
    h('td', {}, h('a', { href: `#/t/${encodeURIComponent(t.id)}/overview` }, t.name)),
    h('td', {}, badge('info', t.role)),
    h('td', { class: 'num' }, t.config_version),
    h('td', {}, when(t.created_at)))), 'Your tenants'));
}

async function createTenant() {
  const name = h('input', { name: 'name', required: true, maxlength: 200, autocomplete: 'off' });
  const body = field('Name', name, 'For example "acme-production". You can rename it later.');
  setTimeout(() => name.focus());
  const tenant = await modal('Create a tenant', body, {
    submitLabel: 'Create',
    onSubmit: () => api.post('/api/v1/tenants', { name: name.value.trim() }),
  });
  if (tenant) {
    await reloadTenants();
    go(`#/t/${encodeURIComponent(tenant.id)}/keys`);
  }
}
