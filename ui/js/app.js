// The console's shell: session restore, hash routes, the sidebar with the tenant switcher.

import * as api from './api.js';
import { h, replace, loading, alert } from './dom.js';
import { signInPage, setupPage, invitePage } from './pages/signin.js';
import { tenantsPage } from './pages/tenants.js';

/**
 * A tenant page's module, loaded when first visited: a first visit downloads the shell and
 * the page it opens, not every page (the budget test in control-plane/src/ui.rs holds it).
 */
const pageModule = (name) => import(`./pages/${name}.js`);

const root = document.getElementById('app');

/** What every page may read: the signed-in user, their tenants, the current one. */
export const ctx = { me: null, tenants: [], tenant: null, stop: [] };

const ROLE_RANK = { viewer: 0, member: 1, admin: 2, owner: 3 };
/** Whether the signed-in user's role in the current tenant is at least `role`. */
export function can(role) {
  return ctx.tenant && ROLE_RANK[ctx.tenant.role] >= ROLE_RANK[role];
}

const NAV = [
  ['overview', 'Overview'],
  ['fleet', 'Data planes'],
  ['live', 'Live events'],
  ['keys', 'Service keys'],
  ['pipelines', 'Pipelines'],
  ['catalogue', 'Destinations'],
  ['query', 'Archive query'],
  ['dlq', 'Dead letters'],
  ['members', 'Members'],
  ['audit', 'Audit log'],
];

export function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

export async function reloadTenants() {
  ctx.tenants = await api.all('/api/v1/tenants?limit=200');
}

/** Runs before every page: stops the previous page's timers. */
function leavePage() {
  for (const stop of ctx.stop) stop();
  ctx.stop = [];
  document.querySelector('dialog[open]')?.close();
}

async function route() {
  leavePage();
  const path = location.hash.replace(/^#/, '') || '/';
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);

  if (!api.signedIn()) {
    if (parts[0] === 'setup') return setupPage(root);
    if (parts[0] === 'invite' && parts[1]) return invitePage(root, parts[1]);
    return signInPage(root, path === '/signin' || path === '/' ? null : path);
  }
  if (!ctx.me) {
    replace(root, h('main', { id: 'main', class: 'center' }, loading()));
    try {
      ctx.me = await api.get('/api/v1/auth/me');
      await reloadTenants();
    } catch (e) {
      return replace(root, h('main', { id: 'main', class: 'center' }, alert('error', e.message)));
    }
  }
  if (parts[0] === 't' && parts[1]) {
    ctx.tenant = ctx.tenants.find((t) => t.id === parts[1]) || null;
    if (!ctx.tenant) {
      await reloadTenants().catch(() => {});
      ctx.tenant = ctx.tenants.find((t) => t.id === parts[1]) || null;
    }
    if (!ctx.tenant) return go('#/tenants');
    localStorage.setItem('sluice.tenant', ctx.tenant.id);
    const section = parts[2] || 'overview';
    const page = shell(section);
    replace(page, loading());
    // A page whose module arrives after the person has moved on is not drawn.
    const show = async (name, fn, ...args) => {
      const module = await pageModule(name);
      if (page.isConnected) return module[fn](page, ...args);
    };
    switch (section) {
      case 'keys': return show('keys', 'keysPage');
      case 'pipelines': return parts[3] ? show('pipelines', 'pipelinePage', parts[3]) : show('pipelines', 'pipelinesPage');
      case 'catalogue': return show('catalogue', 'cataloguePage');
      case 'query': return show('query', 'queryPage');
      case 'live': return show('live', 'livePage');
      case 'trace': return show('trace', 'tracePage', parts[3] || '');
      case 'dlq': return show('dlq', 'dlqPage');
      case 'members': return show('members', 'membersPage');
      case 'audit': return show('audit', 'auditPage');
      case 'fleet': return show('fleet', 'fleetPage');
      default: return show('overview', 'overviewPage');
    }
  }
  if (parts[0] === 'tenants') {
    ctx.tenant = null;
    return tenantsPage(shell('tenants'));
  }
  // Home: the last tenant used, else the first, else the page to create one.
  const last = localStorage.getItem('sluice.tenant');
  const home = ctx.tenants.find((t) => t.id === last) || ctx.tenants[0];
  return go(home ? `#/t/${encodeURIComponent(home.id)}/overview` : '#/tenants');
}

/** The sidebar and an empty page element for the section. */
function shell(section) {
  const switcher = h('select', {
    id: 'tenant-switcher',
    onchange: (e) => go(e.target.value === '' ? '#/tenants' : `#/t/${encodeURIComponent(e.target.value)}/${section === 'tenants' ? 'overview' : section.split('/')[0]}`),
  },
  ctx.tenants.map((t) => h('option', { value: t.id, selected: ctx.tenant?.id === t.id }, `${t.name} (${t.role})`)),
  h('option', { value: '', selected: !ctx.tenant }, 'All tenants…'));

  const nav = ctx.tenant
    ? h('nav', { class: 'nav', 'aria-label': 'Tenant' }, NAV.map(([id, label]) => h('a', {
      href: `#/t/${encodeURIComponent(ctx.tenant.id)}/${id}`,
      'aria-current': section === id ? 'page' : false,
    }, label)))
    : h('nav', { class: 'nav', 'aria-label': 'Console' },
      h('a', { href: '#/tenants', 'aria-current': 'page' }, 'Tenants'));

  const page = h('main', { id: 'main', class: 'page', tabindex: '-1' });
  replace(root, h('div', { class: 'shell' },
    h('aside', { class: 'sidebar' },
      h('a', { class: 'brand', href: '#/', 'aria-label': 'Sluice home' }, logo(), 'Sluice'),
      h('div', {}, h('label', { for: 'tenant-switcher' }, 'Tenant'), switcher),
      nav,
      h('div', { class: 'who' },
        h('div', {}, 'Signed in as ', h('strong', {}, ctx.me.name)),
        h('button', { type: 'button', id: 'sign-out', onclick: signOut }, 'Sign out'))),
    page));
  // A route change moves focus to the new page, as a page load would.
  page.focus({ preventScroll: true });
  return page;
}

function logo() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 32 32');
  svg.setAttribute('aria-hidden', 'true');
  const rect = document.createElementNS(ns, 'rect');
  for (const [k, v] of Object.entries({ width: 32, height: 32, rx: 6, fill: '#2f80d1' })) rect.setAttribute(k, v);
  const path = document.createElementNS(ns, 'path');
  for (const [k, v] of Object.entries({ d: 'M6 11h20M6 16h14M6 21h8', stroke: '#fff', 'stroke-width': 3, 'stroke-linecap': 'round' })) path.setAttribute(k, v);
  svg.append(rect, path);
  return svg;
}

async function signOut() {
  await api.logout().catch(() => {});
}

api.onSessionChange((token) => {
  // Only a session that was open ends here; a failed restore at load just shows sign-in.
  if (token === null && ctx.me) {
    ctx.me = null;
    ctx.tenants = [];
    ctx.tenant = null;
    location.hash = '#/signin';
    route();
  }
});

window.addEventListener('hashchange', route);

// A reload keeps the page: the refresh cookie gives a new access token, then the same route.
api.refresh().catch(() => {}).finally(route);
