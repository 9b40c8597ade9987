// The home page: is data flowing? Rates from the counters nodes report (counts only), the
// fleet at a glance, and the steps to a first delivered event, ticked from what the control
// plane knows.

import * as api from '../api.js';
import { h, replace, loading, alert, badge } from '../dom.js';
import { ctx } from '../app.js';
import { lineChart } from '../chart.js';

const REFRESH_MS = 10000;

const STEPS = {
  pipeline: ['Create a pipeline', 'It says where events come from and where they go.', 'pipelines', 'Go to pipelines'],
  ingest_key: ['Generate a write key for a source', 'Service keys → Generate key → type Ingest, pick the pipeline and source.', 'keys', 'Generate a write key'],
  data_plane: ['Run a data plane', 'Generate a service key, paste the lines it shows where the data plane runs; the node connects within seconds.', 'keys', 'Generate a service key'],
  snippet_copied: ['Copy a setup snippet', 'Each source has lines for sluice.js, curl and the Segment/RudderStack SDKs, with the address filled in.', 'pipelines', 'Open a pipeline\'s sources'],
  first_event: ['See your first event', 'Send one with the snippet; it appears under Live events as it arrives.', 'live', 'Watch live events'],
  first_delivery: ['Deliver your first event', 'Add a destination to the pipeline; its first delivery ticks this.', 'fleet', 'See destination health'],
};

export async function overviewPage(page) {
  const tid = encodeURIComponent(ctx.tenant.id);
  let span = sessionStorage.getItem('sluice.overview.window') || 'hour';
  const status = h('span', { class: 'muted', id: 'overview-status' });
  const picker = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Window' },
    [['hour', 'Last hour'], ['day', 'Last day']].map(([value, label]) => h('button', {
      type: 'button', 'data-window': value, 'aria-pressed': String(span === value),
      onclick: (e) => {
        span = value;
        sessionStorage.setItem('sluice.overview.window', value);
        for (const b of picker.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b === e.currentTarget));
        clearTimeout(timer);
        load();
      },
    }, label)));
  const body = h('div', {}, loading());
  replace(page, h('div', { class: 'page-head' }, h('h1', {}, 'Overview'), h('div', { class: 'toolbar' }, picker, status)),
    h('p', { class: 'muted' }, 'Whether events flow, from the counts your data planes report. Event data never leaves your network.'),
    body);

  let timer;
  let left = false;
  const load = async () => {
    try {
      const view = await api.get(`/api/v1/tenants/${tid}/overview?window=${span}`);
      if (left) return;
      render(body, view);
      status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      replace(body, alert('error', `Could not load the overview: ${e.message}`));
    }
    if (!left) timer = setTimeout(load, REFRESH_MS);
  };
  ctx.stop.push(() => { left = true; clearTimeout(timer); });
  await load();
}

const latest = (points) => points[points.length - 1] ?? 0;
const rate = (n) => `${(+n.toFixed(1)).toLocaleString()}/min`;

function render(body, v) {
  const tid = encodeURIComponent(ctx.tenant.id);
  const done = v.checklist.filter((s) => s.done).length;
  const nextStep = v.checklist.find((s) => !s.done);
  const checklist = h('section', { class: 'card checklist', id: 'onboarding', 'aria-labelledby': 'onboarding-title' },
    h('h2', { id: 'onboarding-title' }, done === v.checklist.length ? 'Set up: done' : `Get to a first delivered event (${done} of ${v.checklist.length})`),
    h('ol', {}, v.checklist.map((s) => {
      const [title, text, section, action] = STEPS[s.step] || [s.step, '', 'fleet', 'Open'];
      return h('li', { 'data-step': s.step, 'data-done': String(s.done), class: s.done ? 'done' : s === nextStep ? 'next' : '' },
        h('span', { class: 'tick', 'aria-hidden': 'true' }, s.done ? '✓' : ''),
        h('div', {},
          h('strong', {}, title), h('span', { class: 'visually-hidden' }, s.done ? ' (done)' : ' (to do)'),
          s.done ? null : h('div', { class: 'muted' }, text)),
        s.done || s !== nextStep ? null : h('a', { class: 'button primary', href: `#/t/${tid}/${section}` }, action));
    })));

  const connected = v.nodes.connected;
  const tiles = h('div', { class: 'tiles', id: 'rates' },
    tile('received', 'Received', rate(latest(v.received)), `${v.totals.received.toLocaleString()} in the window`),
    tile('delivered', 'Delivered', rate(latest(v.delivered)), `${v.totals.delivered.toLocaleString()} in the window`),
    tile('retried', 'Retrying', rate(latest(v.retried)), `${v.totals.retried.toLocaleString()} attempts to retry`, v.totals.retried > 0 ? 'warn' : ''),
    tile('dead_lettered', 'Dead-lettered', rate(latest(v.dead_lettered)), `${v.dlq_depth.toLocaleString()} waiting in DLQs now`, v.dlq_depth > 0 ? 'danger' : ''),
    tile('rejected', 'Rejected', rate(latest(v.rejected)), `${v.totals.rejected.toLocaleString()} failed governance`, v.totals.rejected > 0 ? 'warn' : ''),
    tile('nodes', 'Data planes', `${connected} of ${v.nodes.total} connected`,
      v.nodes.total === 0 ? 'none yet' : `${v.nodes.current} on the current config v${v.nodes.config_version}`,
      v.nodes.total > 0 && (connected < v.nodes.total || v.nodes.current < connected) ? 'warn' : ''));

  const flow = [
    { name: 'received', points: v.received, total: v.totals.received },
    { name: 'delivered', points: v.delivered, total: v.totals.delivered },
    { name: 'retrying', points: v.retried, total: v.totals.retried },
    { name: 'dead-lettered', points: v.dead_lettered, total: v.totals.dead_lettered },
    { name: 'rejected', points: v.rejected, total: v.totals.rejected },
  ];
  const charts = h('div', { class: 'charts' },
    lineChart({ title: 'Events through the pipeline', buckets: v.buckets, series: flow, id: 'chart-flow' }),
    lineChart({ title: 'By source', buckets: v.buckets, series: v.sources, id: 'chart-sources' }),
    lineChart({ title: 'Delivered by destination', buckets: v.buckets, series: v.destinations, id: 'chart-destinations' }));
  const perBucket = v.bucket_minutes === 1 ? 'per minute' : `per minute, averaged over ${v.bucket_minutes} minutes`;
  replace(body,
    done < v.checklist.length ? checklist : null,
    tiles,
    h('p', { class: 'muted' }, `Rates ${perBucket}; "now" is the latest minute reported.`),
    charts,
    done === v.checklist.length ? checklist : null);
}

function tile(id, label, value, detail, kind = '') {
  return h('div', { class: `tile ${kind}`, 'data-tile': id },
    h('div', { class: 'muted' }, label),
    h('div', { class: 'tile-value' }, value),
    h('div', { class: 'muted' }, kind ? badge(kind, detail) : detail));
}
