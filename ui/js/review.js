// The review every change to a pipeline goes through, whoever makes it (the editor, the
// catalogue's form): the diff against the current revision and a change message.

import { h, field, modal } from './dom.js';
import { lineDiff } from './diff.js';

/** A line diff as a scrollable block: added, removed and kept lines. */
export function diffView(from, to) {
  return h('pre', { class: 'diff', tabindex: '0', 'aria-label': 'Changes' }, lineDiff(from, to).map(([op, line]) =>
    h('span', { class: op === '+' ? 'add' : op === '-' ? 'del' : '' }, `${op === '=' ? ' ' : op} ${line}`)));
}

/**
 * What a save will change and why: resolves with what `onSubmit(message)` returns (by
 * default the message, '' when none given), or null when the person steps back. An error
 * `onSubmit` throws is shown in the dialog, which stays open.
 */
export function reviewChange(title, from, to, { message: given = '', onSubmit = (m) => m } = {}) {
  const message = h('input', { name: 'message', maxlength: 500, autocomplete: 'off', value: given || null, placeholder: 'Send page views to the CRM too' });
  setTimeout(() => message.focus());
  return modal(title, h('div', {},
    h('p', {}, 'Connected data planes apply it within seconds. The change against the current revision:'),
    h('div', { class: 'diff-box' }, diffView(from, to)),
    field('Change message', message, 'Why this change; kept with the revision and in the audit log.')), {
    submitLabel: 'Deploy',
    wide: true,
    onSubmit: () => onSubmit(message.value.trim()),
  });
}
