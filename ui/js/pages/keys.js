import * as api from '../api.js';
import { h, replace, field, table, empty, when, badge, modal, confirmDialog, toast, loading, alert } from '../dom.js';
import { ctx, can } from '../app.js';
import { nodeUrls } from '../dataplane.js';
import { sourceSnippets, dataPlaneSnippets, snippetPicker, snippetCopied, controlUrl } from '../snippets.js';

const STATUS = { active: 'ok', expired: 'warn', revoked: 'danger' };
const TYPE_HINT = {
  service: 'For a data plane: it syncs configuration with this key.',
  api: 'For automation calling the REST API, with a role.',
  ingest: 'For a source sending events to a receiver (a write key).',
};

export async function keysPage(page) {
  const tid = encodeURIComponent(ctx.tenant.id);
  const generate = can('admin')
    ? h('button', { type: 'button', class: 'primary', id: 'generate-key', onclick: () => generateKey(page) }, 'Generate key')
    : null;
  const body = h('div', {}, loading());
  replace(page, h('div', { class: 'page-head' }, h('h1', {}, 'Service keys'), generate),
    h('p', { class: 'muted' }, 'Keys let data planes, automation and event sources talk to Sluice. A key is shown once, when it is generated; Sluice keeps only a hash.'),
    !can('admin') && alert('info', 'You can see keys but not generate or revoke them: that needs the admin role.'),
    body);

  let keys;
  try {
    keys = await api.get(`/api/v1/tenants/${tid}/keys`).then((r) => r.data);
  } catch (e) {
    return replace(body, alert('error', `Could not load the keys: ${e.message}`));
  }
  if (keys.length === 0) {
    return replace(body, empty('No keys yet',
      'Generate a service key, then start a data plane with it as SLUICE_SERVICE_KEY. It shows up under Data planes once it connects.',
      generate && h('button', { type: 'button', class: 'primary', onclick: () => generateKey(page) }, 'Generate a service key')));
  }
  replace(body, table(['Name', 'Type', 'Prefix', 'Created', 'Created by', 'Last used', 'Expires', 'Status', ''],
    keys.map((k) => h('tr', { 'data-key-id': k.id },
      h('td', {}, k.name),
      h('td', {}, k.type, k.role ? h('span', { class: 'muted' }, ` (${k.role})`) : null,
        k.source ? h('span', { class: 'muted' }, ` · ${k.source}`) : null),
      h('td', {}, h('code', {}, k.prefix)),
      h('td', {}, when(k.created_at)),
      h('td', {}, k.created_by),
      h('td', {}, k.last_used_at ? when(k.last_used_at) : h('span', { class: 'muted' }, 'never')),
      h('td', {}, k.expires_at ? when(k.expires_at) : h('span', { class: 'muted' }, 'never')),
      h('td', {}, badge(STATUS[k.status] || '', k.status)),
      h('td', {}, can('admin') && k.status !== 'revoked'
        ? h('button', { type: 'button', 'aria-label': `Revoke ${k.name}`, onclick: () => revoke(page, k) }, 'Revoke')
        : null))), 'Keys of this tenant'));
}

async function generateKey(page) {
  const tid = encodeURIComponent(ctx.tenant.id);
  const name = h('input', { name: 'name', required: true, maxlength: 200, autocomplete: 'off', placeholder: 'dc1-data-plane' });
  const type = h('select', { name: 'type' },
    h('option', { value: 'service' }, 'Service (data plane)'),
    h('option', { value: 'api' }, 'API (automation)'),
    h('option', { value: 'ingest' }, 'Ingest (write key)'));
  const typeHint = h('span', { class: 'hint' }, TYPE_HINT.service);
  const role = h('select', { name: 'role' }, ['viewer', 'member', 'admin'].map((r) => h('option', { value: r }, r)));
  const pipeline = h('select', { name: 'pipeline' });
  const source = h('select', { name: 'source' });
  const expires = h('input', { type: 'date', name: 'expires' });
  const roleField = field('Role', role, 'What the key may do, at most your own role.');
  const pipelineField = field('Pipeline', pipeline);
  const sourceField = field('Source', source);
  let pipelines = [];

  const fillSources = () => {
    const p = pipelines.find((x) => x.id === pipeline.value);
    replace(source, (p?.spec?.sources || []).map((s) => h('option', { value: s.name }, s.name)));
  };
  pipeline.addEventListener('change', fillSources);
  const sync = async () => {
    typeHint.textContent = TYPE_HINT[type.value];
    roleField.hidden = type.value !== 'api';
    pipelineField.hidden = sourceField.hidden = type.value !== 'ingest';
    if (type.value === 'ingest' && pipelines.length === 0) {
      pipelines = await api.get(`/api/v1/tenants/${tid}/pipelines`).then((r) => r.data).catch(() => []);
      replace(pipeline, pipelines.map((p) => h('option', { value: p.id }, p.name)));
      fillSources();
    }
  };
  type.addEventListener('change', sync);
  sync();

  const typeField = field('Type', type);
  typeField.append(typeHint);
  setTimeout(() => name.focus());
  const created = await modal('Generate a key', h('div', {},
    field('Name', name, 'Where it will be used, so you can tell keys apart.'),
    typeField, roleField, pipelineField, sourceField,
    field('Expires (optional)', expires, 'The key stops working at the start of this day (UTC). Leave empty for no expiry.')), {
    submitLabel: 'Generate',
    onSubmit: () => {
      const body = { name: name.value.trim(), type: type.value };
      if (type.value === 'api') body.role = role.value;
      if (type.value === 'ingest') {
        if (!pipeline.value || !source.value) throw new Error('An ingest key needs a pipeline with a source. Create a pipeline first.');
        body.pipeline_id = pipeline.value;
        body.source = source.value;
      }
      if (expires.value) body.expires_at = `${expires.value}T00:00:00Z`;
      return api.post(`/api/v1/tenants/${tid}/keys`, body);
    },
  });
  if (!created) return;
  await showOnce(created);
  keysPage(page);
}

/** The plaintext key, once, with a copy button; closing the dialog forgets it. */
async function showOnce(created) {
  const input = h('input', { id: 'new-key', readonly: true, value: created.key, 'aria-label': 'The new key', spellcheck: 'false' });
  const copied = h('span', { role: 'status', class: 'muted' });
  const copy = h('button', {
    type: 'button', id: 'copy-key', onclick: async () => {
      try {
        await navigator.clipboard.writeText(created.key);
        copied.textContent = 'Copied to the clipboard.';
      } catch {
        input.select();
        copied.textContent = 'Select the key and copy it with Ctrl+C.';
      }
    },
  }, 'Copy');
  const usage = await nextStep(created);
  setTimeout(() => input.select());
  await modal(`Your new key “${created.name}”`, h('div', {},
    h('div', { class: 'alert warn', role: 'alert' }, h('strong', {}, 'Copy this key now. '),
      'You will not see it again: Sluice stores only its hash. If you lose it, generate a new one and revoke this one.'),
    h('div', { class: 'secret' }, input, copy), copied, usage), { submitLabel: 'I have copied it', cancelLabel: null, escapable: false, wide: true });
}

/** What to do with the new key, with the key and this tenant's addresses filled in. */
async function nextStep(created) {
  if (created.type === 'service') {
    const lines = dataPlaneSnippets({ controlUrl: await controlUrl(), serviceKey: created.key });
    return h('section', { 'aria-label': 'Run a data plane' },
      h('h3', {}, 'Next: run a data plane with it'),
      snippetPicker(lines, { note: 'The node appears under Data planes within seconds of starting. SLUICE_PUBLIC_URL is the address your browsers and SDKs reach it at; the console fills it into setup snippets and the archive page.' }));
  }
  if (created.type === 'ingest') {
    const urls = await nodeUrls(ctx.tenant.id);
    const missing = !urls.proxy || !urls.receiver;
    return h('section', { 'aria-label': 'Send events' },
      h('h3', {}, `Next: send events to the source “${created.source || ''}”`),
      snippetPicker(sourceSnippets({ proxyUrl: urls.proxy, receiverUrl: urls.receiver, writeKey: created.key }), {
        onCopy: () => snippetCopied(ctx.tenant.id),
        note: missing
          ? 'No data plane of this tenant advertises its proxy or receiver address yet, so example addresses are shown: set SLUICE_PUBLIC_URL and SLUICE_PROXY_PUBLIC_URL on the node.'
          : 'Addresses are the ones this tenant\'s data planes advertise.',
      }));
  }
  return h('p', {}, 'Send it as ', h('code', {}, 'Authorization: Bearer <key>'), ' to the REST API.');
}

async function revoke(page, key) {
  const ok = await confirmDialog(`Revoke “${key.name}”?`,
    `Anything using ${key.prefix}… stops working at once; a data plane using it is disconnected. This cannot be undone.`,
    'Revoke key');
  if (!ok) return;
  try {
    await api.post(`/api/v1/tenants/${encodeURIComponent(ctx.tenant.id)}/keys/${encodeURIComponent(key.id)}/revoke`, {});
    toast(`Revoked ${key.name}.`);
  } catch (e) {
    toast(`Could not revoke: ${e.message}`);
  }
  keysPage(page);
}
