// Acknowledging an alert from a notification's link (#/ack/{token}; docs/oncall.md). The
// link's page: the alert in words (severity, rule, patient, when) and one large "Acknowledge"
// button (POST /ack-links/{token}); then a confirmation with a link to the patient. The shell
// signs the user in first and keeps the link's address through sign-in. Every refusal is said
// in words: a damaged link (400), an altered one or another team's patient (403), an expired
// or used one (410: the server says which).

import { ApiError, get, post, seg } from './api.js';
import { clear, formatTime, h, messageLine } from './util.js';

const SEVERITY = { high: 'High', medium: 'Medium', low: 'Low' };

/** What a refusal of the link means, for the person holding it. */
function refusal(e) {
  if (!(e instanceof ApiError)) return e.message;
  switch (e.status) {
    case 400: return `This is not a working acknowledgement link (${e.message}). Check that the whole link was opened, or find the alert in the inbox.`;
    case 403: return `This link cannot be used by you: ${e.message}. It may have been changed on the way, or the patient is not on one of your care teams.`;
    case 404: return 'This Vigil server cannot acknowledge alerts from a link. Find the alert in the inbox.';
    case 410: return `This link no longer works: ${e.message}. Find the alert in the inbox to see where it stands.`;
    default: return e.message;
  }
}

export class AckView {
  constructor(root, store, token) {
    this.root = root;
    this.store = store;
    this.token = token;
    this.unsub = store?.subscribe(() => this.renameSoon());
    this.load();
  }

  destroy() {
    this.unsub?.();
  }

  patientName(id) {
    return this.store?.patientName(id) ?? id;
  }

  /** The store may learn the patient's name after the page is drawn. */
  renameSoon() {
    for (const el of this.root.querySelectorAll('[data-patient-name]')) {
      const name = this.patientName(el.dataset.patientName);
      if (el.textContent !== name) el.textContent = name;
    }
  }

  head(title, id = 'ack-title') {
    return h('div', { class: 'view-head' }, h('h1', { id, tabindex: '-1' }, title));
  }

  async load() {
    clear(this.root).append(this.head('Acknowledge an alert'), h('p', { class: 'loading' }, 'Opening the link…'));
    let link;
    try {
      link = await get(`/ack-links/${seg(this.token)}`);
    } catch (e) {
      this.showRefusal(e);
      return;
    }
    this.show(link);
  }

  showRefusal(e) {
    clear(this.root).append(this.head('This link does not work'),
      h('section', { class: 'card narrow ack-card' },
        h('p', { role: 'alert', class: 'msg error', id: 'ack-error' }, refusal(e)),
        h('p', {}, h('a', { href: '#/inbox' }, 'Open the alert inbox'))));
    this.root.querySelector('h1').focus();
  }

  /** The alert in words, as a description list. */
  facts(a) {
    const rows = [
      ['Severity', h('span', { class: `badge sev-${a.severity}` }, `${SEVERITY[a.severity] || a.severity}`)],
      ['Patient', h('a', { href: `#/patients/${encodeURIComponent(a.patient_id)}`, dataset: { patientName: a.patient_id } }, this.patientName(a.patient_id))],
      ['Rule', a.rule_id],
      ['Opened', formatTime(a.opened_at)],
      ['Status', a.status === 'open' ? 'Open, not yet acknowledged' : a.status],
    ];
    return h('dl', { class: 'ack-facts' }, rows.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
  }

  show(link) {
    const a = link.alert;
    const sev = SEVERITY[a.severity] || a.severity;
    document.title = `Acknowledge: ${sev} alert · Vigil`;
    const card = h('section', { class: `card narrow ack-card sev-${a.severity}`, 'aria-labelledby': 'ack-title', id: 'ack-card', dataset: { alertId: a.id } },
      h('p', { class: 'alert-message', id: 'ack-message' }, a.message), this.facts(a));
    clear(this.root).append(this.head(`${sev} alert for `), card);
    const title = this.root.querySelector('h1');
    title.append(h('span', { dataset: { patientName: a.patient_id } }, this.patientName(a.patient_id)));
    if (link.used) {
      card.append(h('p', { role: 'status', id: 'ack-used' }, `This link was used by ${link.used.by} on ${formatTime(link.used.at)}.`),
        this.patientLink(a));
      return;
    }
    if (a.status !== 'open') {
      card.append(h('p', { role: 'status', id: 'ack-done' }, a.status === 'acknowledged'
        ? `The alert is acknowledged already${a.acknowledged_by ? ` by ${a.acknowledged_by}` : ''}${a.acknowledged_at ? ` on ${formatTime(a.acknowledged_at)}` : ''}.`
        : `The alert is ${a.status} already.`), this.patientLink(a));
      return;
    }
    const msg = messageLine();
    const note = h('textarea', { id: 'ack-note', rows: 2, maxlength: 10000, class: 'note' });
    const btn = h('button', { type: 'button', class: 'btn btn-wide btn-big', id: 'ack-button' }, 'Acknowledge');
    btn.setAttribute('aria-describedby', 'ack-message');
    btn.addEventListener('click', async () => {
      btn.disabled = true;
      msg.clear();
      try {
        const note = this.root.querySelector('#ack-note').value.trim();
        const done = await post(`/ack-links/${seg(this.token)}`, note ? { note } : {});
        this.store?.updateAlert?.(done);
        this.confirmed(done);
      } catch (e) {
        msg.error(refusal(e));
        btn.disabled = false;
      }
    });
    const expires = link.expires_at ? h('p', { class: 'muted small' }, `This link works until ${formatTime(link.expires_at)}, once.`) : null;
    card.append(h('div', { class: 'field' }, h('label', { for: 'ack-note' }, 'Note (optional)'), note), btn, msg.el, expires);
    btn.focus();
  }

  patientLink(a) {
    return h('p', {}, h('a', { href: `#/patients/${encodeURIComponent(a.patient_id)}`, id: 'ack-patient', class: 'btn btn-secondary' }, 'Open the patient\'s page'));
  }

  confirmed(a) {
    const name = this.patientName(a.patient_id);
    clear(this.root).append(this.head('Alert acknowledged', 'ack-done-title'),
      h('section', { class: 'card narrow ack-card', id: 'ack-confirmed' },
        h('p', { role: 'status' }, `You acknowledged the ${a.severity} alert for ${name}${a.acknowledged_at ? ` at ${formatTime(a.acknowledged_at)}` : ''}. Nobody else is notified about it now.`),
        this.patientLink(a)));
    document.title = 'Alert acknowledged · Vigil';
    this.root.querySelector('h1').focus();
  }
}
