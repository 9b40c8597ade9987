import * as api from '../api.js';
import { h, replace, field, alert } from '../dom.js';

function card(root, title, intro, form, footer) {
  replace(root, h('main', { id: 'main', class: 'center' },
    h('div', { class: 'card' },
      h('h1', {}, title),
      intro && h('p', { class: 'muted' }, intro),
      form,
      footer && h('p', { class: 'muted' }, footer))));
}

/** Wires a form's submit to `action`, showing its error above the buttons. */
function submitting(form, errorBox, button, action) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    replace(errorBox);
    try {
      await action();
    } catch (e) {
      replace(errorBox, alert('error', e.message));
    } finally {
      button.disabled = false;
    }
  });
}

export async function signInPage(root, next) {
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const error = h('div');
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { 'aria-label': 'Sign in' }, field('E-mail', email), field('Password', password), error,
    h('div', { class: 'form-actions' }, button));
  submitting(form, error, button, async () => {
    await api.login(email.value.trim(), password.value);
    location.hash = next && next !== '/signin' ? `#${next}` : '#/';
  });
  const setupLink = h('span');
  card(root, 'Sign in to Sluice', 'The control plane for your data planes.', form, setupLink);
  email.focus();
  try {
    const status = await api.get('/api/v1/auth/status');
    if (status.setup_required) {
      replace(setupLink, 'First run? ', h('a', { href: '#/setup' }, 'Create the owner account'),
        ' with the setup token from the control plane\'s log.');
    }
  } catch { /* the sign-in form works without it */ }
}

export function setupPage(root) {
  const token = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true });
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password', minlength: 8, required: true });
  const error = h('div');
  const button = h('button', { type: 'submit', class: 'primary' }, 'Create owner');
  const form = h('form', { 'aria-label': 'First-run setup' },
    field('Setup token', token, 'Printed once in the control plane\'s log on its first start.'),
    field('Your e-mail', email), field('Password', password, 'At least 8 characters.'), error,
    h('div', { class: 'form-actions' }, button));
  submitting(form, error, button, async () => {
    await api.setup(token.value.trim(), email.value.trim(), password.value);
    location.hash = '#/tenants';
  });
  card(root, 'Set up Sluice', 'Create the first owner of this control plane.', form,
    h('a', { href: '#/signin' }, 'Back to sign-in'));
  token.focus();
}

export function invitePage(root, token) {
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password', minlength: 8, required: true });
  const error = h('div');
  const button = h('button', { type: 'submit', class: 'primary' }, 'Create account');
  const form = h('form', { 'aria-label': 'Accept invitation' },
    field('Choose a password', password, 'At least 8 characters.'), error,
    h('div', { class: 'form-actions' }, button));
  submitting(form, error, button, async () => {
    await api.acceptInvite(token, password.value);
    location.hash = '#/';
  });
  card(root, 'Join Sluice', 'You were invited to a tenant. Choose a password to create your account.', form,
    h('a', { href: '#/signin' }, 'I already have an account'));
  password.focus();
}
