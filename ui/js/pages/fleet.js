import * as api from '../api.js';
import { h, replace, table, empty, when, badge, loading, alert } from '../dom.js';
import { ctx } from '../app.js';

const REFRESH_MS = 5000;

export async function fleetPage(page) {
  const tid = encodeURIComponent(ctx.tenant.id);
  const status = h('span', { class: 'muted', role: 'status' });
  const body = h('div', {}, loading());
  replace(page, h('div', { class: 'page-head' }, h('h1', {}, 'Data planes'), status),
    h('p', { class: 'muted' }, 'Every node that has connected with one of this tenant\'s service keys. Counts only: event data never leaves your network.'),
    body);

  let timer;
  let left = false;
  const load = async () => {
    try {
      const nodes = await api.get(`/api/v1/tenants/${tid}/data-planes`).then((r) => r.data);
      render(body, nodes);
      status.textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s`;
    } catch (e) {
      replace(body, alert('error', `Could not load the data planes: ${e.message}`));
    }
    // Left while the request was out: no next round (it would poll forever, once per visit).
    if (!left) timer = setTimeout(load, REFRESH_MS);
  };
  ctx.stop.push(() => { left = true; clearTimeout(timer); });
  await load();
}

function render(body, nodes) {
  if (nodes.length === 0) {
    return replace(body, empty('No data planes yet',
      'Generate a service key under Service keys, then run `sluice data-plane` with SLUICE_CONTROL_URL and SLUICE_SERVICE_KEY. The node appears here as soon as it connects.',
      h('a', { class: 'button', href: `#/t/${encodeURIComponent(ctx.tenant.id)}/keys` }, 'Go to service keys')));
  }
  replace(body, table(['Node', 'Status', 'Version', 'Roles', 'Config', 'Last seen', 'Last error', 'Counters'],
    nodes.map((n) => {
      const current = n.applied_version === n.config_version;
      return h('tr', { 'data-node-id': n.id },
        h('td', {}, h('strong', {}, n.name), h('div', { class: 'muted mono' }, n.id.slice(0, 8))),
        h('td', {}, n.connected ? badge('ok', 'connected') : badge('danger', 'disconnected')),
        h('td', {}, n.agent_version),
        h('td', {}, n.roles.join(', ')),
        h('td', { class: 'config-state' }, badge(current ? 'ok' : 'warn', `v${n.applied_version}`),
          h('span', { class: 'muted' }, current ? ' up to date' : ` of v${n.config_version}: ${n.connected ? 'updating' : 'behind'}`)),
        h('td', {}, when(n.last_seen_at)),
        h('td', {}, n.last_error
          ? h('span', { class: 'badge danger', title: n.last_error }, n.nacked_version ? `NACK v${n.nacked_version}: ` : '', n.last_error)
          : h('span', { class: 'muted' }, '—')),
        h('td', {}, counters(n.counters)));
    }), 'Data planes of this tenant'),
  health(nodes));
}

const STATE_BADGE = { ok: 'ok', failing: 'danger', idle: 'info' };

/** Each destination as each node reports it: counts and the vendor's last error, no event data. */
function health(nodes) {
  const rows = nodes.flatMap((n) => (Array.isArray(n.destinations) ? n.destinations : []).map((d) => ({ node: n, d })));
  const section = h('section', { id: 'destination-health', 'aria-labelledby': 'destination-health-title' },
    h('h2', { id: 'destination-health-title' }, 'Destination health'));
  if (rows.length === 0) {
    section.append(h('p', { class: 'muted' }, 'No destination has reported yet: nodes report each destination\'s deliveries with their status every few seconds.'));
    return section;
  }
  const counts = (w) => h('span', { class: 'window' },
    h('span', { title: 'delivered' }, `${w?.delivered ?? 0} delivered`), ' · ',
    h('span', { title: 'retried' }, `${w?.retried ?? 0} retried`), ' · ',
    h('span', { class: w?.failed ? 'error-text' : '', title: 'dead-lettered' }, `${w?.failed ?? 0} dead-lettered`));
  section.append(table(['Pipeline', 'Destination', 'Node', 'State', 'Last vendor error', 'Last 5 minutes', 'Last 24 hours'],
    rows.map(({ node, d }) => h('tr', { 'data-destination': d.destination, 'data-state': d.state },
      h('td', {}, d.pipeline || d.pipeline_id),
      h('td', {}, h('strong', {}, d.destination)),
      h('td', {}, node.name),
      h('td', {}, badge(STATE_BADGE[d.state] || 'info', d.state)),
      h('td', { class: 'last-error' }, d.last_error
        ? [d.last_error_status ? h('span', { class: 'badge danger' }, `HTTP ${d.last_error_status}`) : null, ' ', d.last_error,
          d.last_error_at ? h('div', { class: 'muted' }, when(d.last_error_at)) : null]
        : h('span', { class: 'muted' }, '—')),
      h('td', {}, counts(d.last_5m)),
      h('td', {}, counts(d.last_24h)))),
    'Destination health'));
  return section;
}

function counters(value) {
  const flat = [];
  const walk = (prefix, v) => {
    if (v && typeof v === 'object') {
      for (const [k, inner] of Object.entries(v)) walk(prefix ? `${prefix}.${k}` : k, inner);
    } else if (v !== null && v !== undefined) {
      flat.push([prefix, v]);
    }
  };
  walk('', value);
  flat.sort(([a], [b]) => flowRank(a) - flowRank(b) || a.localeCompare(b));
  if (flat.length === 0) return h('span', { class: 'muted' }, 'none yet');
  return h('div', { class: 'counters' }, flat.map(([k, v]) => h('span', { title: k }, `${k} ${typeof v === 'number' ? v.toLocaleString() : v}`)));
}

/** Counters in the order events flow through a node: in, governed, out per destination, archived. */
const FLOW = ['received', 'processed', 'rejected', 'routed', 'skipped', 'delivered', 'retried', 'failed', 'dlq_depth', 'archived'];

/** Node totals first in flow order, then each destination's counters in the same order. */
function flowRank(key) {
  const dot = key.lastIndexOf('.');
  const name = dot >= 0 ? key.slice(dot + 1) : key;
  const rank = FLOW.indexOf(name);
  return (dot >= 0 ? 100 : 0) + (rank >= 0 ? rank : FLOW.length);
}
