// "My details" (#/me): every user keeps how Vigil reaches them about alerts — email, mobile
// number for SMS, quiet hours (only high alerts reach them then) and their time zone
// (PATCH /users/{name}; the session carries the details as they are, so the form starts
// filled). The API's refusal is shown beside the form in its words, and the field it names is
// marked.

import { patch, seg } from './api.js';
import { clear, field, h, messageLine, zoneList } from './util.js';

export class MyDetailsView {
  constructor(root, { user }) {
    this.root = root;
    this.user = user;
    this.render();
  }

  destroy() {}

  render() {
    const c = this.user.contact || {};
    const msg = messageLine();
    const email = h('input', { id: 'me-email', type: 'email', autocomplete: 'email', value: c.email || '', maxlength: 254, spellcheck: 'false' });
    const phone = h('input', { id: 'me-phone', type: 'tel', autocomplete: 'tel', value: c.phone || '', pattern: '\\+[1-9][0-9]{7,14}', inputmode: 'tel' });
    const from = h('input', { id: 'me-quiet-from', type: 'time', value: c.quiet?.from || '' });
    const to = h('input', { id: 'me-quiet-to', type: 'time', value: c.quiet?.to || '' });
    const zone = h('input', { id: 'me-timezone', list: 'me-zones', value: c.timezone || '', autocomplete: 'off', spellcheck: 'false' });
    const save = h('button', { type: 'submit', class: 'btn', id: 'me-save' }, 'Save my details');
    const byName = { email, phone, quiet: from, timezone: zone };
    const form = h('form', { id: 'my-details', class: 'details-form', 'aria-labelledby': 'me-title', novalidate: true },
      field('Email', email, 'Where alert emails go, like nina@clinic.example.'),
      field('Mobile number', phone, 'For alert text messages: international form with + and the country code, like +13125550123.'),
      h('fieldset', { class: 'quiet', 'aria-describedby': 'me-quiet-hint' },
        h('legend', {}, 'Quiet hours'),
        h('p', { class: 'hint', id: 'me-quiet-hint' }, 'Each day on your clocks. During them only high alerts reach you; the others wait for the end. Leave both empty for none.'),
        h('div', { class: 'quiet-times' }, field('From', from), field('To', to))),
      field('Time zone', zone, 'Your time zone for quiet hours, like America/Chicago. Empty: the clinic\'s.'),
      zoneList('me-zones'),
      h('div', { class: 'buttons' }, save), msg.el);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      msg.clear();
      for (const el of Object.values(byName).concat(to)) el.removeAttribute('aria-invalid');
      if (Boolean(from.value) !== Boolean(to.value)) {
        (from.value ? to : from).setAttribute('aria-invalid', 'true');
        msg.error('Give both the start and the end of your quiet hours, or neither.');
        (from.value ? to : from).focus();
        return;
      }
      const body = {
        email: email.value.trim(),
        phone: phone.value.replace(/[\s()-]/g, ''),
        quiet: from.value ? { from: from.value, to: to.value } : null,
        timezone: zone.value.trim(),
      };
      save.disabled = true;
      try {
        const u = await patch(`/users/${seg(this.user.name)}`, body);
        this.user.contact = u.contact || {};
        phone.value = this.user.contact.phone || '';
        msg.ok('Saved. Alerts reach you by these details from now on.');
      } catch (err) {
        // The API's reason names the field first ("phone … must be …", "quiet.from …").
        const key = Object.keys(byName).find((k) => err.message.startsWith(k));
        if (key) {
          byName[key].setAttribute('aria-invalid', 'true');
          byName[key].focus();
        }
        msg.error(`Not saved: ${err.message}`);
      } finally {
        save.disabled = false;
      }
    });
    clear(this.root).append(
      h('div', { class: 'view-head' }, h('h1', { id: 'me-title' }, 'My details')),
      h('section', { class: 'card narrow', 'aria-labelledby': 'me-reach' },
        h('h2', { id: 'me-reach' }, 'How Vigil reaches you about alerts'),
        h('p', { class: 'muted' }, `Signed in as ${this.user.name}. When you are on call, alerts reach you by every way given here.`),
        form),
    );
  }
}
