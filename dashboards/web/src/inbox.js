// The alert inbox: unresolved alerts, open before acknowledged, most severe and newest first.
// Items are keyed by alert id and updated in place, so a note being typed survives live updates.

import { post, seg } from './api.js';
import { notificationSteps } from './notifysteps.js';
import { NO_TEAM, ageEl, announce, clear, formatTime, formatValue, h, messageLine, metricLabel, onNoTeam, unitLabel } from './util.js';

export class InboxView {
  constructor(root, store) {
    this.root = root;
    this.store = store;
    this.items = new Map();
    this.unsub = store.subscribe((c) => { if (c.alerts || c.patients === 'all') this.sync(); });
    this.render();
  }

  destroy() {
    this.unsub();
  }

  render() {
    clear(this.root);
    this.summary = h('p', { class: 'summary', id: 'inbox-summary', tabindex: '-1' });
    this.openList = h('ol', { class: 'alerts', id: 'inbox-open', 'aria-label': 'Open alerts' });
    this.ackList = h('ol', { class: 'alerts', id: 'inbox-acked', 'aria-label': 'Acknowledged alerts' });
    this.root.append(
      h('div', { class: 'view-head' }, h('h1', {}, 'Alert inbox')),
      this.summary,
      h('h2', { class: 'section-title' }, 'Open'), this.openList,
      h('h2', { class: 'section-title' }, 'Acknowledged, not resolved'), this.ackList,
    );
    this.items.clear();
    this.sync();
  }

  sync() {
    const alerts = this.store.sortedAlerts();
    const seen = new Set();
    const open = [], acked = [];
    for (const a of alerts) {
      seen.add(a.id);
      let item = this.items.get(a.id);
      if (!item) {
        item = this.buildItem(a);
        this.items.set(a.id, item);
      } else if (item.alert !== a) {
        this.updateItem(item, a);
      }
      (a.status === 'open' ? open : acked).push(item.el);
    }
    for (const [id, item] of this.items) {
      if (!seen.has(id)) {
        item.el.remove();
        this.items.delete(id);
      }
    }
    placeInOrder(this.openList, open);
    placeInOrder(this.ackList, acked);
    // A clinician on no care team sees no alert at all: say why, not "No open alerts".
    const noTeam = onNoTeam(this.store);
    if (!open.length) this.openList.replaceChildren(h('li', { class: 'empty', id: noTeam ? 'no-team' : null }, noTeam ? NO_TEAM : 'No open alerts.'));
    if (!acked.length) this.ackList.replaceChildren(h('li', { class: 'empty' }, 'None.'));
    this.summary.textContent = noTeam ? NO_TEAM : `${open.length} open, ${acked.length} acknowledged.`;
  }

  buildItem(a) {
    const el = h('li', { class: 'alert-item', dataset: { alertId: a.id } });
    const item = { el, alert: null };
    item.head = h('div', { class: 'alert-head' });
    item.body = h('div', { class: 'alert-body' });
    const noteId = `note-${a.id}`;
    item.note = h('textarea', { id: noteId, rows: 2, maxlength: 10000, class: 'note' });
    item.msg = messageLine();
    item.ackBtn = h('button', { type: 'button', class: 'btn', onclick: () => this.act(item, 'ack') }, 'Acknowledge');
    item.resolveBtn = h('button', { type: 'button', class: 'btn btn-secondary', onclick: () => this.act(item, 'resolve') }, 'Resolve');
    item.form = h('div', { class: 'alert-actions' },
      h('div', { class: 'field' }, h('label', { for: noteId }, 'Note (optional)'), item.note),
      h('div', { class: 'buttons' }, item.ackBtn, item.resolveBtn),
      item.msg.el);
    const name = this.store.patientName(a.patient_id);
    item.notify = notificationSteps(a.id, `${a.severity} alert for ${name}`);
    el.append(item.head, item.body, item.form, item.notify);
    this.updateItem(item, a);
    return item;
  }

  updateItem(item, a) {
    item.alert = a;
    item.el.className = `alert-item sev-${a.severity} status-${a.status}`;
    item.el.dataset.status = a.status;
    const name = this.store.patientName(a.patient_id);
    item.head.replaceChildren(
      h('span', { class: `badge sev-${a.severity}` }, a.severity.toUpperCase()),
      h('h3', {}, h('a', { href: `#/patients/${encodeURIComponent(a.patient_id)}` }, name)),
      h('span', { class: 'muted' }, ' opened ', ageEl(a.opened_at)),
    );
    const t = a.trigger;
    item.body.replaceChildren(
      h('p', { class: 'alert-message' }, a.message),
      h('p', { class: 'muted small' },
        `Rule ${a.rule_id}`,
        t ? ` · ${metricLabel(t.metric)} ${formatValue(t.metric, t.value)} ${unitLabel(t.unit, t.metric)} at ${formatTime(t.time)}` : '',
        a.escalations ? ` · escalated ${a.escalations}×` : '',
        a.status === 'acknowledged' ? ` · acknowledged by ${a.acknowledged_by || '?'} ${a.acknowledged_at ? formatTime(a.acknowledged_at) : ''}${a.ack_note ? ` — “${a.ack_note}”` : ''}` : ''),
    );
    item.ackBtn.hidden = a.status !== 'open';
    item.ackBtn.setAttribute('aria-label', `Acknowledge ${a.severity} alert for ${name}`);
    item.resolveBtn.setAttribute('aria-label', `Resolve ${a.severity} alert for ${name}`);
  }

  async act(item, action) {
    const a = item.alert;
    const note = item.note.value.trim();
    item.ackBtn.disabled = item.resolveBtn.disabled = true;
    item.msg.clear();
    // Where keyboard focus goes afterwards: the next open alert's note, else the summary.
    const next = item.el.nextElementSibling?.querySelector('textarea');
    try {
      const updated = await post(`/alerts/${seg(a.id)}/${action}`, note ? { note } : {});
      item.note.value = '';
      announce(`${action === 'ack' ? 'Acknowledged' : 'Resolved'} the alert for ${this.store.patientName(a.patient_id)}.`);
      this.store.updateAlert(updated);
      if (next && next.isConnected) next.focus();
      else this.summary.focus();
    } catch (e) {
      item.msg.error(e.message);
    } finally {
      item.ackBtn.disabled = item.resolveBtn.disabled = false;
    }
  }
}

function placeInOrder(list, els) {
  const keep = new Set(els);
  for (const child of [...list.children]) if (!keep.has(child)) child.remove();
  let cursor = list.firstElementChild;
  for (const el of els) {
    if (el === cursor) cursor = cursor.nextElementSibling;
    else list.insertBefore(el, cursor);
  }
}
