// The destination catalogue: every vendor and warehouse a pipeline can send to, and a form,
// generated from the definition's settings, that adds one to a pipeline without writing the
// spec by hand. Secrets are named here and resolved on the data plane; their values are
// never typed into the console.

import * as api from '../api.js';
import { h, replace, field, alert, loading, badge, empty, modal, toast } from '../dom.js';
import { ctx, can, go } from '../app.js';
import { reviewChange } from '../review.js';
import { addDestination, uniqueName } from '../specedit.js';

const CATEGORY = {
  advertising: 'Advertising',
  analytics: 'Analytics',
  messaging: 'Messaging',
  forwarding: 'Forwarding',
  warehouse: 'Warehouse',
  webhook: 'Webhook',
};

let cached = null;
/** The catalogue (it changes only with the control plane's version). */
export async function catalogue() {
  cached ??= api.get('/api/v1/catalogue').then((r) => r.data).catch((e) => { cached = null; throw e; });
  return cached;
}

export async function cataloguePage(page) {
  const search = h('input', { type: 'search', name: 'search', placeholder: 'TikTok, warehouse, analytics…', autocomplete: 'off' });
  const list = h('div', { id: 'catalogue', class: 'catalogue' }, loading());
  replace(page,
    h('div', { class: 'page-head' }, h('h1', {}, 'Destinations')),
    h('p', { class: 'muted' }, 'Where a pipeline can send events. Each destination is a definition that both planes share: what it needs, what it sends, how it batches and how it reads the vendor\'s answer. ',
      h('a', { href: '/api/v1/catalogue', target: '_blank', rel: 'noopener' }, 'As JSON'), ' · ',
      h('a', { href: '/api/v1/schemas/destination-definition.json', target: '_blank', rel: 'noopener' }, 'Definition schema')),
    h('form', { role: 'search', class: 'toolbar-form', onsubmit: (e) => e.preventDefault() }, field('Search', search)),
    list);
  let definitions;
  try {
    definitions = await catalogue();
  } catch (e) {
    return replace(list, alert('error', `Could not load the catalogue: ${e.message}`));
  }
  const render = () => {
    const q = search.value.trim().toLowerCase();
    const shown = definitions.filter((d) => !q || `${d.name} ${d.id} ${d.category} ${d.description}`.toLowerCase().includes(q));
    if (shown.length === 0) return replace(list, empty('Nothing matches', `No destination matches “${search.value}”.`));
    replace(list, shown.map((d) => h('article', { class: 'card destination', 'data-definition': d.id, 'aria-labelledby': `def-${d.id}` },
      h('div', { class: 'destination-head' },
        h('h2', { id: `def-${d.id}` }, d.name),
        badge('', CATEGORY[d.category] || d.category)),
      h('p', {}, d.description),
      h('p', { class: 'muted small' }, h('code', {}, `type: ${d.id}`), ` · version ${d.version}`,
        d.batch?.max_events > 1 ? ` · up to ${d.batch.max_events} events a request` : '',
        d.rate_limit ? ` · ${d.rate_limit.events_per_second}/s` : ''),
      h('ul', { class: 'docs' }, d.docs.map((doc) => h('li', {}, h('a', { href: doc.url, target: '_blank', rel: 'noopener noreferrer' }, doc.title)))),
      can('member') && h('button', { type: 'button', class: 'primary add-destination', onclick: () => addToPipeline(d) }, `Add ${d.name}`))));
  };
  search.addEventListener('input', render);
  render();
}

/** The form control of one setting, and how to read its value back (undefined: not set). */
function control(definition, setting) {
  const base = { name: setting.key, required: setting.required || null, autocomplete: 'off' };
  const fallback = setting.default !== undefined ? `default: ${typeof setting.default === 'object' ? JSON.stringify(setting.default) : setting.default}` : null;
  switch (setting.type) {
    case 'secret': {
      const input = h('input', { ...base, pattern: '[A-Z][A-Z0-9_]*', value: `${definition.id}_${setting.key}`.toUpperCase(), spellcheck: 'false' });
      return [input, () => input.value.trim() || undefined,
        'The name of a secret on the data plane: an environment variable, or a file of that name in --secrets-dir. Its value stays on the data plane.'];
    }
    case 'enum': {
      const select = h('select', base,
        !setting.required && h('option', { value: '' }, fallback ? `(${fallback})` : '(none)'),
        setting.values.map((v) => h('option', { value: v }, v)));
      return [select, () => select.value || undefined];
    }
    case 'boolean': {
      const box = h('input', { type: 'checkbox', name: setting.key, checked: setting.default === true });
      return [box, () => (box.checked === (setting.default === true) ? undefined : box.checked)];
    }
    case 'integer': {
      const input = h('input', { ...base, type: 'number', step: 1, min: setting.min ?? null, max: setting.max ?? null, placeholder: fallback });
      return [input, () => (input.value === '' ? undefined : Number(input.value))];
    }
    case 'headers': {
      const area = h('textarea', { name: setting.key, rows: 3, class: 'code', spellcheck: 'false', placeholder: 'X-Api-Version: 2' });
      const read = () => {
        const headers = {};
        for (const line of area.value.split('\n')) {
          if (!line.trim()) continue;
          const colon = line.indexOf(':');
          if (colon <= 0) throw new Error(`${setting.label}: write each header as “Name: value” (“${line.trim()}”)`);
          headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
        }
        return Object.keys(headers).length ? headers : undefined;
      };
      return [area, read, 'One header a line: Name: value.'];
    }
    default: {
      const input = h('input', {
        ...base, type: setting.type === 'url' ? 'url' : 'text', spellcheck: 'false',
        pattern: setting.pattern || null, title: setting.hint || null,
        placeholder: setting.example || fallback,
      });
      return [input, () => input.value.trim() || undefined];
    }
  }
}

async function addToPipeline(definition) {
  let pipelines;
  try {
    pipelines = await api.get(`/api/v1/tenants/${encodeURIComponent(ctx.tenant.id)}/pipelines`).then((r) => r.data);
  } catch (e) {
    return toast(`Could not load the pipelines: ${e.message}`);
  }
  if (pipelines.length === 0) {
    toast('Create a pipeline first: a destination belongs to one.');
    return go(`#/t/${encodeURIComponent(ctx.tenant.id)}/pipelines`);
  }
  const pipeline = h('select', { name: 'pipeline', required: true }, pipelines.map((p) => h('option', { value: p.id }, p.name)));
  const taken = () => (pipelines.find((p) => p.id === pipeline.value)?.spec.destinations || []).map((d) => d.name);
  const wanted = definition.id.replaceAll('_', '-');
  const name = h('input', { name: 'name', required: true, pattern: '[a-z0-9][a-z0-9_\\-]*', maxlength: 64, autocomplete: 'off', value: uniqueName(wanted, taken()) });
  pipeline.addEventListener('change', () => { name.value = uniqueName(wanted, taken()); });
  const readers = [];
  const fields = definition.settings.map((setting) => {
    const [input, read, extra] = control(definition, setting);
    readers.push([setting.key, read]);
    const hint = [setting.help, setting.hint, extra].filter(Boolean).join(' ');
    return field(`${setting.label}${setting.required ? '' : ' (optional)'}`, input, hint || null);
  });
  setTimeout(() => name.focus());
  const chosen = await modal(`Add ${definition.name}`, h('div', { class: 'settings-form' },
    field('Pipeline', pipeline),
    field('Destination name', name, 'Unique within the pipeline: lowercase letters, digits, - and _.'),
    fields), {
    submitLabel: 'Review',
    wide: true,
    onSubmit: () => {
      const settings = {};
      for (const [key, read] of readers) {
        const value = read();
        if (value !== undefined) settings[key] = value;
      }
      const destination = { name: name.value.trim(), type: definition.id };
      if (Object.keys(settings).length) destination.settings = settings;
      return { pipelineId: pipeline.value, destination };
    },
  });
  if (!chosen) return;
  const url = `/api/v1/tenants/${encodeURIComponent(ctx.tenant.id)}/pipelines/${encodeURIComponent(chosen.pipelineId)}`;
  let current;
  try {
    current = await api.get(url);
  } catch (e) {
    return toast(`Could not load the pipeline: ${e.message}`);
  }
  const before = current.source ?? `${JSON.stringify(current.spec, null, 2)}\n`;
  let after;
  try {
    after = addDestination(before, chosen.destination);
  } catch (e) {
    return toast(e.message);
  }
  const saved = await reviewChange(`Deploy revision ${current.revision + 1} of ${current.name}?`, before, after, {
    message: `Add ${definition.name} (${chosen.destination.name})`,
    onSubmit: async (message) => {
      try {
        return await api.put(`${url}?message=${encodeURIComponent(message)}`, after, 'application/yaml');
      } catch (e) {
        const details = (e.details || []).map((d) => `${d.path ? `${d.path}: ` : ''}${d.message}`);
        throw new Error(details.length ? `Not saved. ${details.join('; ')}` : `Not saved: ${e.message}`);
      }
    },
  });
  if (!saved) return;
  toast(`Saved revision ${saved.revision}.`);
  go(`#/t/${encodeURIComponent(ctx.tenant.id)}/pipelines/${encodeURIComponent(saved.id)}`);
}
