// Building the page without innerHTML: every piece of server data becomes a text node, so
// nothing a tenant names (a key, a pipeline, an audit detail) can inject markup.

/** Creates an element: h('button', {class: 'primary', onclick}, 'Save'). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      el.className = value;
    } else if (name === 'value') {
      el.value = value;
    } else if (value === true) {
      el.setAttribute(name, '');
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A labelled form field; `control` gets an id tied to the label. */
let fieldCounter = 0;
export function field(label, control, hint) {
  const id = control.id || `f${++fieldCounter}`;
  control.id = id;
  const hintId = hint ? `${id}-hint` : undefined;
  if (hintId) control.setAttribute('aria-describedby', hintId);
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    control,
    hint && h('span', { class: 'hint', id: hintId }, hint));
}

/** A table in a box that scrolls sideways when it must; keyboard users can scroll it too. */
export function table(headers, rows, caption) {
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption || 'Table' },
    h('table', {},
      caption && h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows)));
}

export function empty(title, text, action) {
  return h('div', { class: 'empty' }, h('h2', {}, title), h('p', { class: 'muted' }, text), action);
}

export function alert(kind, ...text) {
  return h('div', { class: `alert ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...text);
}

export function badge(kind, text) {
  return h('span', { class: `badge ${kind}` }, text);
}

export function loading(text = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, text);
}

/** "3 minutes ago", with the exact time as a tooltip. */
export function when(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const date = new Date(iso);
  return h('time', { datetime: iso, title: date.toLocaleString() }, relative(date));
}

export function relative(date) {
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  const future = seconds < 0;
  const s = Math.abs(seconds);
  const [n, unit] = s < 45 ? [0, ''] : s < 3600 ? [Math.round(s / 60), 'minute']
    : s < 86400 ? [Math.round(s / 3600), 'hour'] : [Math.round(s / 86400), 'day'];
  if (n === 0) return future ? 'in a moment' : 'just now';
  const text = `${n} ${unit}${n === 1 ? '' : 's'}`;
  return future ? `in ${text}` : `${text} ago`;
}

let toastTimer;
export function toast(text) {
  document.querySelector('.toast')?.remove();
  const el = h('div', { class: 'toast', role: 'status' }, text);
  document.body.append(el);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.remove(), 4000);
}

/**
 * A modal dialog; resolves with what `onSubmit` returns, or null when cancelled. `escapable:
 * false` keeps it open on Escape (a key shown once must not be lost to a keypress); `wide`
 * makes room for code.
 */
export function modal(title, body, { submitLabel = 'OK', danger = false, cancelLabel = 'Cancel', onSubmit, escapable = true, wide = false } = {}) {
  return new Promise((resolve) => {
    const error = h('div');
    const submit = h('button', { type: 'submit', class: danger ? 'danger' : 'primary' }, submitLabel);
    const form = h('form', { method: 'dialog' },
      h('h2', { id: 'dialog-title' }, title), body, error,
      h('div', { class: 'form-actions' },
        cancelLabel && h('button', { type: 'button', value: 'cancel', onclick: () => dialog.close('cancel') }, cancelLabel),
        submit));
    const dialog = h('dialog', { 'aria-labelledby': 'dialog-title', class: wide ? 'wide' : null }, form);
    let result = null;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      submit.disabled = true;
      try {
        result = onSubmit ? await onSubmit() : true;
        dialog.close('ok');
      } catch (e) {
        replace(error, alert('error', e.message));
      } finally {
        submit.disabled = false;
      }
    });
    dialog.addEventListener('close', () => {
      if (!escapable && dialog.returnValue !== 'ok') {
        // Closed by Escape: open it again and say why.
        dialog.showModal();
        replace(error, alert('warn', `Press “${submitLabel}” to close this.`));
        return;
      }
      dialog.remove();
      resolve(dialog.returnValue === 'ok' ? result : null);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function confirmDialog(title, text, submitLabel) {
  return modal(title, h('p', {}, text), { submitLabel, danger: true });
}

/** CSV text from column names and rows of values. */
export function toCsv(columns, rows) {
  const cell = (v) => {
    const s = v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
    return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  return [columns.map(cell).join(','), ...rows.map((r) => columns.map((c) => cell(r[c])).join(','))].join('\r\n') + '\r\n';
}

export function download(filename, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
