import * as api from '../api.js';
import { h, replace, field, table, empty, when, badge, loading, alert, modal, confirmDialog, toast } from '../dom.js';
import { ctx, can, go } from '../app.js';
import { lineOfPath } from '../diff.js';
import { diffView, reviewChange } from '../review.js';
import { nodeUrls, call, dataPlaneUrl, rememberDataPlaneUrl, pretty as prettyValue } from '../dataplane.js';
import { sourceSnippets, snippetPicker, snippetCopied } from '../snippets.js';

const TEMPLATE = `{
  "sources": [{ "name": "web", "allowed_origins": ["https://www.example.com"] }],
  "governance": [],
  "destinations": [],
  "archive": { "dataset": "events" }
}
`;

const base = () => `/api/v1/tenants/${encodeURIComponent(ctx.tenant.id)}/pipelines`;

export async function pipelinesPage(page) {
  const create = can('member')
    ? h('button', { type: 'button', class: 'primary', id: 'new-pipeline', onclick: newPipeline }, 'New pipeline')
    : null;
  const body = h('div', {}, loading());
  replace(page, h('div', { class: 'page-head' }, h('h1', {}, 'Pipelines'), create),
    h('p', { class: 'muted' }, 'A pipeline is code: sources, governance, destinations and archiving in one spec. Every save is a revision you can compare and roll back to; data planes apply it without a restart.'),
    body);
  let pipelines;
  try {
    pipelines = await api.get(base()).then((r) => r.data);
  } catch (e) {
    return replace(body, alert('error', `Could not load the pipelines: ${e.message}`));
  }
  if (pipelines.length === 0) {
    return replace(body, empty('No pipelines yet',
      'Create a pipeline to say where events come from, how they are governed and where they go.',
      create && h('button', { type: 'button', class: 'primary', onclick: newPipeline }, 'Create your first pipeline')));
  }
  replace(body, table(['Name', 'Revision', 'Sources', 'Destinations', 'Archive', 'Updated'], pipelines.map((p) => h('tr', {},
    h('td', {}, h('a', { href: `#/t/${encodeURIComponent(ctx.tenant.id)}/pipelines/${encodeURIComponent(p.id)}` }, p.name)),
    h('td', { class: 'num' }, p.revision),
    h('td', {}, (p.spec.sources || []).map((s) => s.name).join(', ') || '—'),
    h('td', {}, (p.spec.destinations || []).map((d) => d.name).join(', ') || '—'),
    h('td', {}, p.spec.archive?.dataset || '—'),
    h('td', {}, when(p.updated_at)))), 'Pipelines of this tenant'));
}

async function newPipeline() {
  const name = h('input', { name: 'name', required: true, pattern: '[a-z0-9][a-z0-9_\\-]*', maxlength: 64, autocomplete: 'off' });
  setTimeout(() => name.focus());
  const created = await modal('New pipeline', field('Name', name, 'Lowercase letters, digits, - and _. You edit the spec next.'), {
    submitLabel: 'Create',
    onSubmit: () => api.api('POST', `${base()}?name=${encodeURIComponent(name.value.trim())}`, { body: TEMPLATE, contentType: 'application/yaml' }),
  });
  if (created) go(`#/t/${encodeURIComponent(ctx.tenant.id)}/pipelines/${encodeURIComponent(created.id)}`);
}

export async function pipelinePage(page, id, notice) {
  replace(page, loading());
  const url = `${base()}/${encodeURIComponent(id)}`;
  let pipeline;
  let revisions;
  try {
    [pipeline, revisions] = await Promise.all([api.get(url), api.get(`${url}/revisions`).then((r) => r.data)]);
  } catch (e) {
    return replace(page, alert('error', `Could not load the pipeline: ${e.message}`));
  }
  const editable = can('member');
  // The document as its author wrote it (comments kept), else the spec as JSON.
  const saved = pipeline.source ?? pretty(pipeline.spec);
  const text = h('textarea', {
    class: 'code', id: 'spec-editor', spellcheck: 'false', 'aria-label': 'Pipeline spec (JSON or YAML)',
    readonly: !editable, wrap: 'off',
  });
  text.value = saved;
  const gutter = h('pre', { class: 'gutter', 'aria-hidden': 'true' });
  const errors = h('ul', { class: 'errors', id: 'spec-errors', 'aria-live': 'polite' });
  const status = h('div', { role: 'status', id: 'save-status' }, notice && alert('ok', notice));
  const save = h('button', { type: 'button', class: 'primary', id: 'save-pipeline', disabled: true }, 'Save');
  const reset = h('button', { type: 'button', disabled: true }, 'Discard changes');
  let bad = new Set();

  const paintGutter = () => {
    const lines = text.value.split('\n').length;
    replace(gutter, Array.from({ length: lines }, (_, i) => [
      bad.has(i + 1) ? h('span', { class: 'bad', title: 'See the error below' }, String(i + 1)) : String(i + 1), '\n']));
    gutter.scrollTop = text.scrollTop;
  };
  const dirty = () => {
    const changed = text.value !== saved;
    save.disabled = !changed || !editable;
    reset.disabled = !changed;
  };
  text.addEventListener('input', () => { paintGutter(); dirty(); });
  text.addEventListener('scroll', () => { gutter.scrollTop = text.scrollTop; });
  text.addEventListener('keydown', (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === 's') { e.preventDefault(); if (!save.disabled) save.click(); }
  });
  reset.addEventListener('click', () => { text.value = saved; bad = new Set(); replace(errors); paintGutter(); dirty(); });

  const jumpTo = (line) => {
    const starts = text.value.split('\n');
    const offset = starts.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    text.focus();
    text.setSelectionRange(offset, offset + (starts[line - 1] || '').length);
    text.scrollTop = Math.max(0, (line - 5) * 20);
  };

  save.addEventListener('click', async () => {
    const message = await reviewChange(`Deploy revision ${pipeline.revision + 1}?`, saved, text.value);
    if (message === null) return;
    save.disabled = true;
    replace(status, loading('Validating and saving…'));
    replace(errors);
    bad = new Set();
    try {
      const query = message ? `?message=${encodeURIComponent(message)}` : '';
      const updated = await api.put(`${url}${query}`, text.value, 'application/yaml');
      toast(`Saved revision ${updated.revision}.`);
      return pipelinePage(page, id, `Saved revision ${updated.revision} as config version ${updated.config_version}. Connected data planes apply it within seconds; watch them on Data planes.`);
    } catch (e) {
      const details = e.details?.length ? e.details : [{ path: '', message: e.message }];
      replace(status, alert('error', details.length === 1 ? 'The spec has a problem; nothing was saved.' : `The spec has ${details.length} problems; nothing was saved.`));
      replace(errors, details.map((d) => {
        const line = d.line || lineOfPath(text.value, d.path);
        if (line) bad.add(line);
        return h('li', {},
          line ? h('button', { type: 'button', class: 'link', onclick: () => jumpTo(line) }, `Line ${line}`) : null,
          line ? ': ' : null, d.path ? h('code', {}, d.path) : null, d.path ? ' — ' : null, d.message);
      }));
      paintGutter();
      dirty();
    }
  });
  paintGutter();

  const current = revisions.find((r) => r.revision === pipeline.revision);
  const diffBox = h('div', { id: 'revision-diff' });
  const showDiff = (rev) => {
    replace(diffBox, h('h3', {}, `Revision ${rev.revision} → current (${pipeline.revision})`),
      diffView(written(rev), current ? written(current) : saved));
  };
  const rollback = async (rev) => {
    const ok = await confirmDialog(`Roll back to revision ${rev.revision}?`,
      `This saves revision ${rev.revision}'s spec as a new revision; data planes apply it at once.`, 'Roll back');
    if (!ok) return;
    try {
      const updated = await api.post(`${url}/rollback`, { revision: rev.revision });
      toast(`Rolled back: revision ${updated.revision} now has revision ${rev.revision}'s spec.`);
      pipelinePage(page, id);
    } catch (e) {
      toast(`Could not roll back: ${e.message}`);
    }
  };

  replace(page,
    h('div', { class: 'page-head' },
      h('h1', {}, h('a', { href: `#/t/${encodeURIComponent(ctx.tenant.id)}/pipelines` }, 'Pipelines'), ' / ', pipeline.name),
      h('span', {}, badge('info', `revision ${pipeline.revision}`), ' ', badge('', `config v${pipeline.config_version}`))),
    !editable && alert('info', 'You can read this pipeline but not change it: that needs the member role.'),
    h('div', { class: 'split' },
      h('section', { 'aria-label': 'Spec' },
        h('div', { class: 'editor' }, gutter, text),
        errors, status,
        editable && h('div', { class: 'toolbar' }, save, reset,
          h('span', { class: 'muted' }, 'JSON or YAML. Ctrl+S saves. '),
          h('a', { href: '/api/v1/schemas/pipeline.json', target: '_blank', rel: 'noopener' }, 'Spec schema'))),
      h('section', { 'aria-label': 'Revisions' },
        h('h2', {}, 'Revisions'),
        h('ul', { class: 'revisions' }, revisions.map((r) => h('li', { 'aria-current': r.revision === pipeline.revision ? 'true' : false },
          h('span', {}, h('strong', {}, `#${r.revision}`), ' ', h('span', { class: 'muted' }, r.created_by, ' · '), when(r.created_at),
            r.message ? h('div', { class: 'revision-message' }, r.message) : null),
          r.revision === pipeline.revision ? badge('ok', 'current') : h('span', {},
            h('button', { type: 'button', onclick: () => showDiff(r) }, 'Diff'), ' ',
            editable && h('button', { type: 'button', onclick: () => rollback(r) }, 'Roll back'))))),
        diffBox)),
    sourcesSection(pipeline),
    destinationsSection(pipeline));
}

/** Each destination with its kind, and a test send through the data plane. */
function destinationsSection(pipeline) {
  const destinations = pipeline.spec.destinations || [];
  const catalogue = `#/t/${encodeURIComponent(ctx.tenant.id)}/catalogue`;
  const kindOf = (d) => d.type || ['webhook', 'ga4', 'meta'].find((k) => d[k]) || '—';
  return h('section', { id: 'destinations', 'aria-labelledby': 'destinations-title' },
    h('h2', { id: 'destinations-title' }, 'Destinations'),
    destinations.length === 0
      ? h('p', { class: 'muted' }, 'This pipeline sends nowhere yet. ', h('a', { href: catalogue }, 'Add a destination from the catalogue'), '.')
      : table(['Destination', 'Type', ''], destinations.map((d) => h('tr', { 'data-destination': d.name },
        h('td', {}, h('strong', {}, d.name)),
        h('td', {}, h('code', {}, kindOf(d))),
        h('td', {}, can('member') && h('button', { type: 'button', class: 'test-destination', onclick: () => testSend(pipeline, d) }, 'Send a test event')))), 'Destinations of this pipeline'),
    destinations.length > 0 && h('p', { class: 'muted' }, h('a', { href: catalogue }, 'Add another destination'), '. A test event goes from this browser to the data plane, which shapes it for the destination and sends it once; the answer comes back here, not through the control plane.'));
}

async function testSend(pipeline, destination) {
  const tenantId = ctx.tenant.id;
  const url = h('input', { type: 'url', name: 'url', required: true, value: await dataPlaneUrl(tenantId), size: 30 });
  const result = h('div', { id: 'test-result', 'aria-live': 'polite' });
  const run = async () => {
    rememberDataPlaneUrl(tenantId, url.value);
    replace(result, loading('Sending…'));
    try {
      const path = `/v1/destinations/${encodeURIComponent(pipeline.id)}/${encodeURIComponent(destination.name)}/test`;
      const answer = await call(tenantId, url.value, 'POST', path, {});
      replace(result, testResult(answer));
    } catch (e) {
      replace(result, alert('error', e.status === 404
        ? `${e.message}. The data plane may not have applied revision ${pipeline.revision} yet, or this node does not run delivery.`
        : e.message));
    }
    return false;
  };
  const send = h('button', { type: 'button', class: 'primary', id: 'send-test', onclick: run }, 'Send');
  await modal(`Test “${destination.name}”`, h('div', {},
    h('p', {}, 'Sends one sample “Order Completed” event through the pipeline\'s governance and this destination\'s settings, mapping and payload to the vendor, once. It is not archived or retried.'),
    h('div', { class: 'toolbar-form' }, field('Data plane', url), h('div', { class: 'toolbar' }, send)),
    result), { submitLabel: 'Close', cancelLabel: null, wide: true });
}

const OUTCOME = {
  delivered: ['ok', 'Delivered: the vendor accepted it.'],
  retry: ['warn', 'Would be retried'],
  refused: ['danger', 'Refused: the event would go to the dead-letter queue'],
  skipped: ['info', 'Not sent'],
  invalid: ['danger', 'Not sent'],
  rejected: ['danger', 'Not sent'],
};

function testResult(answer) {
  const [kind, text] = OUTCOME[answer.outcome] || ['', answer.outcome];
  return h('div', { class: 'test-result', 'data-outcome': answer.outcome },
    alert(kind === 'danger' ? 'error' : kind === 'ok' ? 'ok' : 'info', badge(kind, answer.outcome), ' ', text,
      answer.error ? `: ${answer.error}` : '', answer.message ? `: ${answer.message}` : '',
      answer.took_ms !== undefined ? ` (${answer.took_ms} ms)` : ''),
    answer.response && h('div', {}, h('h3', {}, `Answer: HTTP ${answer.response.status}`),
      h('pre', { class: 'code response-body' }, answer.response.body || '(empty)')),
    answer.rows && h('p', {}, `One row written to the table ${answer.rows.table}.`),
    answer.request && h('div', {}, h('h3', {}, 'Request'),
      h('pre', { class: 'code request-line' }, `${answer.request.method} ${answer.request.url}\n`,
        Object.entries(answer.request.headers).map(([k, v]) => `${k}: ${v}\n`)),
      h('pre', { class: 'code request-body' }, prettyValue(answer.request.body))),
    h('details', {}, h('summary', {}, 'The sample event'), h('pre', { class: 'code' }, prettyValue(answer.event))));
}

/** Each source with the lines to send events to it. */
function sourcesSection(pipeline) {
  const sources = pipeline.spec.sources || [];
  const keys = `#/t/${encodeURIComponent(ctx.tenant.id)}/keys`;
  return h('section', { id: 'sources', 'aria-labelledby': 'sources-title' },
    h('h2', { id: 'sources-title' }, 'Sources'),
    sources.length === 0
      ? h('p', { class: 'muted' }, 'This pipeline has no sources: add one to the spec under "sources".')
      : table(['Source', 'Allowed origins', ''], sources.map((src) => h('tr', { 'data-source': src.name },
        h('td', {}, h('strong', {}, src.name)),
        h('td', {}, (src.allowed_origins || []).join(', ') || h('span', { class: 'muted' }, 'server-side only')),
        h('td', {}, h('button', { type: 'button', class: 'setup-source', onclick: () => setupSource(pipeline, src) }, 'Set up')))), 'Sources of this pipeline'),
    h('p', { class: 'muted' }, 'A source needs a write key: generate one under ', h('a', { href: keys }, 'Service keys'), ' (type Ingest). Its snippets, with the key filled in, are shown once right after.'));
}

async function setupSource(pipeline, src) {
  const urls = await nodeUrls(ctx.tenant.id);
  await modal(`Send events to “${src.name}”`, h('div', {},
    h('p', {}, 'Paste one of these where the events start. Put the source\'s write key in place of ', h('code', {}, '<write key>'), '.'),
    snippetPicker(sourceSnippets({ proxyUrl: urls.proxy, receiverUrl: urls.receiver }), {
      onCopy: () => snippetCopied(ctx.tenant.id),
      note: urls.proxy && urls.receiver
        ? `Addresses are the ones this tenant's data planes advertise (pipeline ${pipeline.name}).`
        : 'No data plane of this tenant advertises its proxy or receiver address yet, so example addresses are shown: set SLUICE_PUBLIC_URL and SLUICE_PROXY_PUBLIC_URL on the node.',
    })), { submitLabel: 'Done', cancelLabel: null, wide: true });
}

function pretty(spec) {
  return `${JSON.stringify(spec, null, 2)}\n`;
}

/** A revision as its author wrote it, else its spec as JSON. */
const written = (rev) => rev.source ?? pretty(rev.spec);

