import * as api from '../api.js';
import { h, replace, field, table, when, badge, loading, alert, modal, confirmDialog, toast } from '../dom.js';
import { ctx, can } from '../app.js';

const ROLES = ['viewer', 'member', 'admin', 'owner'];

export async function membersPage(page) {
  const tid = encodeURIComponent(ctx.tenant.id);
  const add = can('admin') ? h('button', { type: 'button', class: 'primary', id: 'add-member', onclick: () => addMember(page) }, 'Add member') : null;
  const body = h('div', {}, loading());
  const invitations = h('div');
  replace(page, h('div', { class: 'page-head' }, h('h1', {}, 'Members'), add),
    h('p', { class: 'muted' }, 'Viewers read everything but secrets; members also edit pipelines; admins manage members and keys; owners manage the tenant itself.'),
    body, invitations);

  let members;
  try {
    members = await api.get(`/api/v1/tenants/${tid}/members`).then((r) => r.data);
  } catch (e) {
    return replace(body, alert('error', `Could not load the members: ${e.message}`));
  }
  const mayGrant = (role) => can('owner') || (can('admin') && role !== 'owner');
  replace(body, table(['E-mail', 'Role', 'Added', ''], members.map((m) => {
    const self = m.user_id === ctx.me.id;
    const editable = can('admin') && !self && mayGrant(m.role);
    const role = editable
      ? h('select', { 'aria-label': `Role of ${m.email}`, onchange: (e) => changeRole(page, m, e.target.value) },
        ROLES.filter(mayGrant).map((r) => h('option', { value: r, selected: r === m.role }, r)))
      : badge('info', m.role);
    return h('tr', {},
      h('td', {}, m.email, self ? h('span', { class: 'muted' }, ' (you)') : null),
      h('td', {}, role),
      h('td', {}, when(m.created_at)),
      h('td', {}, editable ? h('button', { type: 'button', 'aria-label': `Remove ${m.email}`, onclick: () => remove(page, m) }, 'Remove') : null));
  }), 'Members of this tenant'));

  if (can('admin')) {
    const pending = await api.get(`/api/v1/tenants/${tid}/invitations`).then((r) => r.data).catch(() => []);
    if (pending.length) {
      const mine = (i) => mayGrant(i.role);
      replace(invitations, h('h2', {}, 'Pending invitations'),
        h('p', { class: 'muted' }, 'A link is shown once. Lost it? A new link replaces it (the old one stops working).'),
        table(['E-mail', 'Role', 'Invited by', 'Expires', ''],
          pending.map((i) => h('tr', { 'data-invitation': i.email }, h('td', {}, i.email), h('td', {}, badge('info', i.role)), h('td', {}, i.invited_by), h('td', {}, when(i.expires_at)),
            h('td', {}, mine(i) ? [
              h('button', { type: 'button', 'aria-label': `New link for ${i.email}`, onclick: () => renew(page, i) }, 'New link'), ' ',
              h('button', { type: 'button', 'aria-label': `Withdraw the invitation of ${i.email}`, onclick: () => withdraw(page, i) }, 'Withdraw'),
            ] : null))),
          'Pending invitations'));
    }
  }
}

async function addMember(page) {
  const tid = encodeURIComponent(ctx.tenant.id);
  const email = h('input', { type: 'email', name: 'email', required: true, autocomplete: 'off' });
  const role = h('select', { name: 'role' }, ROLES.filter((r) => can('owner') || r !== 'owner').map((r) => h('option', { value: r, selected: r === 'viewer' }, r)));
  setTimeout(() => email.focus());
  const result = await modal('Add a member', h('div', {},
    field('E-mail', email, 'Someone without an account gets an invitation link to share with them.'), field('Role', role)), {
    submitLabel: 'Add',
    onSubmit: () => api.post(`/api/v1/tenants/${tid}/members`, { email: email.value.trim(), role: role.value }),
  });
  if (!result) return;
  if (result.status === 'invited' && result.invitation?.token) {
    await showLink('Invitation created', `${result.invitation.email} has no account yet.`, result.invitation);
  } else {
    toast(`Added ${email.value.trim()}.`);
  }
  membersPage(page);
}

/** An invitation link, once, with a copy button. */
function showLink(title, text, invitation) {
  const link = `${location.origin}/#/invite/${encodeURIComponent(invitation.token)}`;
  return modal(title, h('div', {},
    h('p', {}, `${text} Send them this link; it works once and expires ${new Date(invitation.expires_at).toLocaleString()}.`),
    h('div', { class: 'secret' }, h('input', { readonly: true, value: link, 'aria-label': 'Invitation link' }),
      h('button', { type: 'button', onclick: () => navigator.clipboard.writeText(link).then(() => toast('Link copied.'), () => {}) }, 'Copy'))),
  { submitLabel: 'Done', cancelLabel: null });
}

const invitationUrl = (i) => `/api/v1/tenants/${encodeURIComponent(ctx.tenant.id)}/invitations/${encodeURIComponent(i.id)}`;

async function renew(page, invitation) {
  try {
    const renewed = await api.post(`${invitationUrl(invitation)}/renew`, {});
    await showLink('New invitation link', `The earlier link for ${invitation.email} no longer works.`, renewed);
  } catch (e) {
    toast(`Could not make a new link: ${e.message}`);
  }
  membersPage(page);
}

async function withdraw(page, invitation) {
  if (!await confirmDialog(`Withdraw the invitation of ${invitation.email}?`, 'Their link stops working at once.', 'Withdraw')) return;
  try {
    await api.del(invitationUrl(invitation));
    toast(`Withdrew the invitation of ${invitation.email}.`);
  } catch (e) {
    toast(`Could not withdraw: ${e.message}`);
  }
  membersPage(page);
}

async function changeRole(page, member, role) {
  try {
    await api.patch(`/api/v1/tenants/${encodeURIComponent(ctx.tenant.id)}/members/${encodeURIComponent(member.user_id)}`, { role });
    toast(`${member.email} is now ${role}.`);
  } catch (e) {
    toast(`Could not change the role: ${e.message}`);
  }
  membersPage(page);
}

async function remove(page, member) {
  if (!await confirmDialog(`Remove ${member.email}?`, 'They lose access to this tenant at once.', 'Remove')) return;
  try {
    await api.del(`/api/v1/tenants/${encodeURIComponent(ctx.tenant.id)}/members/${encodeURIComponent(member.user_id)}`);
    toast(`Removed ${member.email}.`);
  } catch (e) {
    toast(`Could not remove: ${e.message}`);
  }
  membersPage(page);
}
