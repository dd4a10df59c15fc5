// API tokens (#/tokens), for every signed-in user: their own tokens (an admin: everyone's, with
// the owner), a form to create one — the secret is shown once, here — and revocation. Tokens
// are managed only from a session: the API refuses this page's calls made with a token.

import { ApiError, del, get, post, seg } from './api.js';
import { announce, clear, confirmStep, copyField, field, formatTime, h, messageLine, parseTime } from './util.js';

export class TokensView {
  constructor(root, store, { user }) {
    this.root = root;
    this.user = user;
    this.admin = user.role === 'admin';
    this.render();
  }

  destroy() {
    this.destroyed = true;
  }

  render() {
    this.listBox = h('div', { id: 'token-list' });
    this.confirmBox = h('div', { class: 'token-confirm', hidden: true });
    this.secretBox = h('div', { id: 'token-secret-box' });
    this.listMsg = messageLine();
    clear(this.root).append(
      h('div', { class: 'view-head' }, h('div', {},
        h('h1', {}, 'API tokens'),
        h('p', { class: 'muted' }, this.admin
          ? 'Tokens let scripts and other systems use Vigil’s API. A token acts as its owner, with their role and care teams. As an admin you see everyone’s tokens.'
          : 'Tokens let scripts and other systems use Vigil’s API as you, seeing what you see. Keep them secret; revoke one as soon as it is not needed.'))),
      h('section', { class: 'card', 'aria-labelledby': 'tk-new' },
        h('h2', { id: 'tk-new' }, 'Create a token'), this.createForm(), this.secretBox),
      h('section', { class: 'card', 'aria-labelledby': 'tk-list' },
        h('h2', { id: 'tk-list', tabindex: '-1' }, this.admin ? 'All tokens' : 'Your tokens'),
        this.listBox, this.confirmBox, this.listMsg.el));
    this.reload();
  }

  async reload() {
    let res;
    try {
      res = await get('/tokens');
    } catch (e) {
      if (this.destroyed) return;
      clear(this.listBox).append(h('p', { class: 'msg error', role: 'alert' }, e instanceof ApiError && e.status === 404 ? 'This Vigil server does not have API tokens yet.' : e.message));
      return;
    }
    if (this.destroyed) return;
    this.tokens = res.tokens || [];
    this.renderList();
  }

  renderList() {
    if (!this.tokens.length) {
      clear(this.listBox).append(h('p', { class: 'muted', id: 'no-tokens' }, 'No tokens yet.'));
      return;
    }
    const now = Date.now();
    // Active first, newest first within each group.
    const rows = [...this.tokens].sort((a, b) => (state(a, now) === 'active' ? 0 : 1) - (state(b, now) === 'active' ? 0 : 1)
      || parseTime(b.created_at) - parseTime(a.created_at));
    const cols = ['Label', 'Scope'];
    if (this.admin) cols.push('Owner');
    cols.push('Created', 'Expires', 'Status', '');
    clear(this.listBox).append(h('div', { class: 'scroll' }, h('table', { class: 'table', id: 'tokens' },
      h('caption', { class: 'visually-hidden' }, 'API tokens'),
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.map((t) => {
        const st = state(t, now);
        return h('tr', { dataset: { tokenId: t.id, state: st } },
          h('th', { scope: 'row' }, t.label),
          h('td', {}, t.scope === 'write' ? 'read and write' : 'read only'),
          this.admin ? h('td', { class: 'token-owner' }, t.user) : null,
          h('td', {}, day(t.created_at)),
          h('td', {}, day(t.expires_at)),
          h('td', { class: 'token-state' }, st === 'revoked'
            ? [h('span', { class: 'badge revoked' }, 'revoked'), ' ', day(t.revoked_at)]
            : st === 'expired' ? h('span', { class: 'badge' }, 'expired') : 'active'),
          h('td', {}, st === 'active'
            ? h('button', { type: 'button', class: 'btn-quiet btn-quiet-danger', dataset: { action: 'revoke' }, 'aria-label': `Revoke the token “${t.label}”${this.admin ? ` of ${t.user}` : ''}`, onclick: (e) => this.askRevoke(t, e.currentTarget) }, 'Revoke')
            : null));
      })))));
  }

  askRevoke(t, trigger) {
    this.listMsg.clear();
    confirmStep(this.confirmBox, {
      id: 'token-revoke-confirm',
      question: `Revoke the token “${t.label}”${this.admin && t.user !== this.user.name ? ` of ${t.user}` : ''}?`,
      detail: 'It stops working at once: whatever uses it gets “401 Unauthorized” from its next request. This cannot be undone; create a new token if it is needed again.',
      confirmLabel: 'Revoke the token',
      trigger: () => (trigger.isConnected ? trigger : this.listBox.querySelector(`tr[data-token-id="${CSS.escape(t.id)}"] button`)),
      onConfirm: async () => {
        await del(`/tokens/${seg(t.id)}`);
        // The secret of this token, if it is still shown, opens nothing any more.
        if (this.secretBox.dataset.tokenId === t.id) {
          clear(this.secretBox);
          delete this.secretBox.dataset.tokenId;
        }
        announce(`The token “${t.label}” is revoked.`);
        this.listMsg.ok(`Revoked “${t.label}”.`);
        await this.reload();
        return this.root.querySelector('#tk-list');
      },
    });
  }

  createForm() {
    const msg = messageLine();
    const label = h('input', { id: 'nk-label', required: true, maxlength: 100, autocomplete: 'off' });
    const scope = h('select', { id: 'nk-scope' },
      h('option', { value: 'read' }, 'Read only'), h('option', { value: 'write' }, 'Read and write'));
    const days = h('input', { id: 'nk-days', type: 'number', min: 1, max: 365, step: 1, required: true, value: '90', inputmode: 'numeric' });
    const owner = this.admin ? h('select', { id: 'nk-user' }, h('option', { value: '' }, `Me (${this.user.name})`)) : null;
    if (owner) {
      // Admins may make a token for another user (an integration's own account).
      get('/users').then((r) => {
        for (const u of r.users || []) if (u.name !== this.user.name) owner.append(h('option', { value: u.name }, `${u.name} (${u.role})`));
      }).catch(() => {});
    }
    const submit = h('button', { type: 'submit', class: 'btn' }, 'Create token');
    const form = h('form', { id: 'new-token', class: 'grid-form' },
      field('Label', label, 'What or who will use it, e.g. “EHR nightly import”'),
      field('Scope', scope, 'Read only: GET requests only. Read and write: also changes, as the owner may.'),
      field('Expires after (days)', days, '1 to 365: every token expires'),
      owner ? field('For user', owner) : null,
      h('div', { class: 'buttons' }, submit), msg.el);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = { label: label.value.trim(), scope: scope.value, expires_days: Number(days.value) };
      if (owner?.value) body.user = owner.value;
      submit.disabled = true;
      msg.clear();
      try {
        const t = await post('/tokens', body);
        msg.ok(`Created “${t.label}”${t.user !== this.user.name ? ` for ${t.user}` : ''}.`);
        label.value = '';
        if (owner) owner.value = '';
        this.showSecret(t);
        this.reload();
      } catch (err) {
        msg.error(err.message);
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }

  showSecret(t) {
    this.secretBox.dataset.tokenId = t.id;
    clear(this.secretBox).append(h('div', { class: 'credentials', role: 'region', 'aria-label': `Secret of the new token “${t.label}”` },
      h('p', { class: 'warn-text' }, h('strong', {}, 'Shown once. '), 'Copy the token now: Vigil keeps only a hash and cannot show it again.'),
      copyField('Token', t.token, 'token-secret'),
      h('p', { class: 'small' }, 'Send it as ', h('code', {}, 'Authorization: Bearer <token>'), `. It expires ${formatTime(t.expires_at)}.`)));
    this.secretBox.querySelector('#token-secret').focus();
  }
}

const dayFormat = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });

/** A date for a table cell, the full time in its tooltip. */
function day(t) {
  const ms = parseTime(t);
  if (!Number.isFinite(ms)) return '–';
  return h('time', { datetime: t, title: formatTime(ms) }, dayFormat.format(new Date(ms)));
}

function state(t, now) {
  if (t.revoked_at) return 'revoked';
  if (parseTime(t.expires_at) <= now) return 'expired';
  return 'active';
}
