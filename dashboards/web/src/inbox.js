// The alert inbox, what needs action first: escalated alerts nobody has acknowledged, then
// alerts whose snooze has ended, then the other open ones (most severe, newest first); below
// them acknowledged alerts, then snoozed ones, and on request the resolved ones with who
// resolved them and how long it took. A nurse claims an alert or gives it to a colleague,
// acknowledges several at once, or snoozes one with a reason (docs/dashboard.md, "The inbox").
// Items are keyed by alert id and updated in place, so a note being typed survives live updates.

import { get, post, seg } from './api.js';
import { notificationSteps } from './notifysteps.js';
import { NO_TEAM, ageEl, announce, clear, formatTime, formatValue, h, messageLine, metricLabel, onNoTeam, parseTime, severityRank, unitLabel } from './util.js';

const SNOOZE_CHOICES = [[15, '15 minutes'], [30, '30 minutes'], [60, '1 hour'], [120, '2 hours'], [240, '4 hours']];

/** Whether the alert is snoozed now. */
export const snoozed = (a, now = Date.now()) => !!a.snoozed_until && parseTime(a.snoozed_until) > now;
/** Whether the alert was snoozed and the time has passed: it comes back to the top. */
const snoozeEnded = (a, now = Date.now()) => !!a.snoozed_until && parseTime(a.snoozed_until) <= now;

/** Where an unresolved alert stands in the inbox: lower first. */
function rank(a, now) {
  if (a.status === 'open' && a.escalations > 0) return 0;
  if (a.status !== 'open' && snoozeEnded(a, now)) return 1;
  if (a.status === 'open') return 2;
  return 3;
}

/** The inbox's order: what needs action first, then most severe, then newest. */
export function inboxOrder(now = Date.now()) {
  return (a, b) => rank(a, now) - rank(b, now)
    || (b.escalations || 0) - (a.escalations || 0)
    || severityRank(b.severity) - severityRank(a.severity)
    || parseTime(b.opened_at) - parseTime(a.opened_at)
    || a.id.localeCompare(b.id);
}

/** "45 s", "12 min", "3 h 5 min", "2 d 4 h": how long something took. */
export function took(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return m % 60 ? `${hrs} h ${m % 60} min` : `${hrs} h`;
  const d = Math.floor(hrs / 24);
  return hrs % 24 ? `${d} d ${hrs % 24} h` : `${d} d`;
}

export class InboxView {
  constructor(root, store, user) {
    this.root = root;
    this.store = store;
    this.me = user?.name || '';
    this.items = new Map();
    this.selected = new Set();
    this.unsub = store.subscribe((c) => { if (c.alerts || c.patients === 'all') this.sync(); });
    // A snooze that ends brings its alert back without any other change: look each half minute.
    this.timer = setInterval(() => this.sync(), 30000);
    this.render();
  }

  destroy() {
    this.unsub();
    clearInterval(this.timer);
  }

  render() {
    clear(this.root);
    this.summary = h('p', { class: 'summary', id: 'inbox-summary', tabindex: '-1' });
    this.openList = h('ol', { class: 'alerts', id: 'inbox-open', 'aria-label': 'Alerts that need action' });
    this.ackList = h('ol', { class: 'alerts', id: 'inbox-acked', 'aria-label': 'Acknowledged alerts' });
    this.snoozeList = h('ol', { class: 'alerts', id: 'inbox-snoozed', 'aria-label': 'Snoozed alerts' });
    this.bulkNote = h('input', { id: 'bulk-note', maxlength: 10000, autocomplete: 'off' });
    this.bulkBtn = h('button', { type: 'button', class: 'btn', id: 'ack-selected', disabled: true, onclick: () => this.ackSelected() }, 'Acknowledge selected');
    this.bulkMsg = messageLine();
    this.resolvedBox = h('div', { id: 'inbox-resolved' });
    const showResolved = h('button', { type: 'button', class: 'btn btn-secondary', id: 'show-resolved', onclick: () => this.loadResolved() }, 'Show resolved alerts');
    this.root.append(
      h('div', { class: 'view-head' }, h('h1', {}, 'Alert inbox')),
      this.summary,
      h('div', { class: 'inbox-tools', role: 'group', 'aria-label': 'Act on the selected alerts' },
        h('div', { class: 'field' }, h('label', { for: 'bulk-note' }, 'Note for the selected alerts (optional)'), this.bulkNote),
        this.bulkBtn, this.bulkMsg.el),
      h('h2', { class: 'section-title' }, 'Needs action'), this.openList,
      h('h2', { class: 'section-title' }, 'Acknowledged, not resolved'), this.ackList,
      h('h2', { class: 'section-title' }, 'Snoozed'), this.snoozeList,
      h('h2', { class: 'section-title' }, 'Resolved'), showResolved, this.resolvedBox,
    );
    this.items.clear();
    this.sync();
  }

  sync() {
    const now = Date.now();
    const alerts = [...this.store.alerts.values()].sort(inboxOrder(now));
    const seen = new Set();
    const open = [], acked = [], later = [];
    for (const a of alerts) {
      seen.add(a.id);
      let item = this.items.get(a.id);
      if (!item) {
        item = this.buildItem(a);
        this.items.set(a.id, item);
      } else if (item.alert !== a || item.snoozedNow !== snoozed(a, now)) {
        this.updateItem(item, a);
      }
      if (snoozed(a, now)) later.push(item.el);
      else if (rank(a, now) <= 2) open.push(item.el);
      else acked.push(item.el);
    }
    for (const [id, item] of this.items) {
      if (!seen.has(id)) {
        item.el.remove();
        this.items.delete(id);
        this.selected.delete(id);
      }
    }
    placeInOrder(this.openList, open);
    placeInOrder(this.ackList, acked);
    placeInOrder(this.snoozeList, later);
    // A clinician on no care team sees no alert at all: say why, not "No open alerts".
    const noTeam = onNoTeam(this.store);
    if (!open.length) this.openList.replaceChildren(h('li', { class: 'empty', id: noTeam ? 'no-team' : null }, noTeam ? NO_TEAM : 'Nothing needs action.'));
    if (!acked.length) this.ackList.replaceChildren(h('li', { class: 'empty' }, 'None.'));
    if (!later.length) this.snoozeList.replaceChildren(h('li', { class: 'empty' }, 'None.'));
    const escalated = alerts.filter((a) => rank(a, now) === 0).length;
    this.summary.textContent = noTeam ? NO_TEAM
      : `${open.length} need action${escalated ? ` (${escalated} escalated)` : ''}, ${acked.length} acknowledged, ${later.length} snoozed.`;
    this.updateBulk();
  }

  buildItem(a) {
    const el = h('li', { class: 'alert-item', dataset: { alertId: a.id } });
    const item = { el, alert: null };
    const name = this.store.patientName(a.patient_id);
    item.select = h('input', { type: 'checkbox', id: `select-${a.id}`, class: 'alert-select', onchange: () => {
      if (item.select.checked) this.selected.add(a.id); else this.selected.delete(a.id);
      this.updateBulk();
    } });
    item.selectBox = h('div', { class: 'select-box' }, item.select, h('label', { for: `select-${a.id}`, class: 'select-label' }, 'Select'));
    item.head = h('div', { class: 'alert-head' });
    item.body = h('div', { class: 'alert-body' });
    const noteId = `note-${a.id}`;
    item.note = h('textarea', { id: noteId, rows: 2, maxlength: 10000, class: 'note' });
    item.msg = messageLine();
    item.ackBtn = h('button', { type: 'button', class: 'btn', onclick: () => this.act(item, 'ack') }, 'Acknowledge');
    item.resolveBtn = h('button', { type: 'button', class: 'btn btn-secondary', onclick: () => this.act(item, 'resolve') }, 'Resolve');
    item.claimBtn = h('button', { type: 'button', class: 'btn btn-secondary claim', onclick: () => this.assign(item, item.alert.assigned_to === this.me ? null : this.me) });
    // Giving it to a colleague, and snoozing: folded away so an item stays short on a phone.
    const toId = `assign-${a.id}`, minId = `snooze-min-${a.id}`, whyId = `snooze-why-${a.id}`;
    item.assignTo = h('input', { id: toId, autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' });
    item.snoozeMin = h('select', { id: minId }, SNOOZE_CHOICES.map(([m, label]) => h('option', { value: String(m) }, label)));
    item.snoozeMin.value = '30';
    item.snoozeWhy = h('input', { id: whyId, maxlength: 500, autocomplete: 'off' });
    item.snoozeBtn = h('button', { type: 'button', class: 'btn btn-secondary', onclick: () => this.snooze(item) }, 'Snooze');
    item.unsnoozeBtn = h('button', { type: 'button', class: 'btn btn-secondary', onclick: () => this.snooze(item, true) }, 'End snooze');
    item.more = h('details', { class: 'alert-more' },
      h('summary', {}, 'Give to a colleague or snooze'),
      h('div', { class: 'field' }, h('label', { for: toId }, 'Give to (username)'), item.assignTo),
      h('button', { type: 'button', class: 'btn btn-secondary', onclick: () => this.assign(item, item.assignTo.value.trim() || null) }, 'Give'),
      h('div', { class: 'field' }, h('label', { for: minId }, 'Snooze for'), item.snoozeMin),
      h('div', { class: 'field' }, h('label', { for: whyId }, 'Why (needed to snooze)'), item.snoozeWhy),
      h('div', { class: 'buttons' }, item.snoozeBtn, item.unsnoozeBtn));
    item.form = h('div', { class: 'alert-actions' },
      h('div', { class: 'field' }, h('label', { for: noteId }, 'Note (optional)'), item.note),
      h('div', { class: 'buttons' }, item.ackBtn, item.resolveBtn, item.claimBtn),
      item.more, item.msg.el);
    item.notify = notificationSteps(a.id, `${a.severity} alert for ${name}`);
    el.append(item.selectBox, item.head, item.body, item.form, item.notify);
    this.updateItem(item, a);
    return item;
  }

  updateItem(item, a) {
    const now = Date.now();
    item.alert = a;
    item.snoozedNow = snoozed(a, now);
    item.el.className = `alert-item sev-${a.severity} status-${a.status}${a.escalations && a.status === 'open' ? ' escalated' : ''}`;
    item.el.dataset.status = a.status;
    item.el.dataset.rank = String(item.snoozedNow ? 4 : rank(a, now));
    const name = this.store.patientName(a.patient_id);
    const flags = [];
    if (a.status === 'open' && a.escalations) flags.push(h('span', { class: 'badge flag-escalated' }, `Escalated ${a.escalations}×, not acknowledged`));
    if (a.status !== 'open' && snoozeEnded(a, now)) flags.push(h('span', { class: 'badge flag-snooze-ended' }, 'Snooze ended'));
    if (a.assigned_to) flags.push(h('span', { class: 'badge flag-assigned' }, a.assigned_to === this.me ? 'Taken by you' : `Taken by ${a.assigned_to}`));
    item.head.replaceChildren(
      h('span', { class: `badge sev-${a.severity}` }, a.severity.toUpperCase()),
      h('h3', {}, h('a', { href: `#/patients/${encodeURIComponent(a.patient_id)}` }, name)),
      h('span', { class: 'muted' }, ' opened ', ageEl(a.opened_at)),
      ...flags,
    );
    const t = a.trigger;
    item.body.replaceChildren(
      h('p', { class: 'alert-message' }, a.message),
      this.nowLine(a),
      a.snoozed_until ? h('p', { class: 'snooze-line' }, snoozed(a, now)
        ? `Snoozed until ${formatTime(a.snoozed_until)}: ${a.snooze_reason || ''}`
        : `The snooze ended at ${formatTime(a.snoozed_until)}; re-check: ${a.snooze_reason || ''}`) : null,
      h('p', { class: 'muted small' },
        `Rule ${a.rule_id}`,
        t ? ` · opened by ${metricLabel(t.metric)} ${formatValue(t.metric, t.value)} ${unitLabel(t.unit, t.metric)} at ${formatTime(t.time)}` : '',
        a.status === 'acknowledged' ? ` · acknowledged by ${a.acknowledged_by || '?'} ${a.acknowledged_at ? formatTime(a.acknowledged_at) : ''}${a.ack_note ? ` — “${a.ack_note}”` : ''}` : ''),
    );
    const selectable = a.status === 'open';
    item.selectBox.hidden = !selectable;
    if (!selectable && this.selected.delete(a.id)) item.select.checked = false;
    item.select.setAttribute('aria-label', `Select the ${a.severity} alert for ${name}`);
    item.ackBtn.hidden = a.status !== 'open';
    item.ackBtn.setAttribute('aria-label', `Acknowledge ${a.severity} alert for ${name}`);
    item.resolveBtn.setAttribute('aria-label', `Resolve ${a.severity} alert for ${name}`);
    const mine = a.assigned_to === this.me;
    item.claimBtn.textContent = mine ? 'Release' : 'Take it';
    item.claimBtn.setAttribute('aria-label', `${mine ? 'Release' : 'Take it'}: the ${a.severity} alert for ${name}`);
    item.unsnoozeBtn.hidden = !a.snoozed_until;
  }

  /** The patient's latest value of what opened the alert, when it is newer: "Now 98 mg/dL, 3 min ago". */
  nowLine(a) {
    const t = a.trigger;
    const p = this.store.patients.get(a.patient_id);
    if (!t || !p) return null;
    const metrics = t.metric === 'bp_systolic' || t.metric === 'bp_diastolic' ? ['bp_systolic', 'bp_diastolic'] : [t.metric];
    const latest = metrics.map((m) => p.latest?.[m]).filter(Boolean);
    if (!latest.length || !(parseTime(latest[0].time) > parseTime(t.time))) return null;
    const value = metrics.length === 2 && latest.length === 2
      ? `${formatValue('bp_systolic', latest[0].value)}/${formatValue('bp_diastolic', latest[1].value)} ${unitLabel(latest[0].unit, 'bp_systolic')}`
      : `${formatValue(metrics[0], latest[0].value)} ${unitLabel(latest[0].unit, metrics[0])}`;
    return h('p', { class: 'now-line' }, `Now: ${metricLabel(metrics.length === 2 ? 'blood_pressure' : metrics[0])} ${value}, `, ageEl(latest[0].time));
  }

  updateBulk() {
    const n = this.selected.size;
    this.bulkBtn.disabled = n === 0;
    this.bulkBtn.textContent = n ? `Acknowledge ${n} selected` : 'Acknowledge selected';
  }

  async ackSelected() {
    const ids = [...this.selected];
    if (!ids.length) return;
    const note = this.bulkNote.value.trim();
    this.bulkBtn.disabled = true;
    this.bulkMsg.clear();
    try {
      const r = await post('/alerts/ack', note ? { ids, note } : { ids });
      for (const a of r.alerts) this.store.updateAlert(a);
      this.selected.clear();
      for (const item of this.items.values()) item.select.checked = false;
      this.bulkNote.value = '';
      const failed = r.failed.map((f) => f.error).join('; ');
      const text = `Acknowledged ${r.acknowledged} alert${r.acknowledged === 1 ? '' : 's'}.${failed ? ` Not acknowledged: ${failed}` : ''}`;
      if (failed) this.bulkMsg.error(text); else this.bulkMsg.ok(text);
      announce(text);
    } catch (e) {
      this.bulkMsg.error(e.message);
    } finally {
      this.updateBulk();
    }
  }

  async act(item, action) {
    const a = item.alert;
    const note = item.note.value.trim();
    item.ackBtn.disabled = item.resolveBtn.disabled = true;
    item.msg.clear();
    // Where keyboard focus goes afterwards: the next alert's note, else the summary.
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

  async assign(item, to) {
    const a = item.alert;
    item.msg.clear();
    try {
      const updated = await post(`/alerts/${seg(a.id)}/assign`, { to });
      this.store.updateAlert(updated);
      const name = this.store.patientName(a.patient_id);
      const text = to === null ? `Released the alert for ${name}.`
        : to === this.me ? `You took the alert for ${name}.` : `Gave the alert for ${name} to ${updated.assigned_to}.`;
      item.msg.ok(text);
      announce(text);
      item.assignTo.value = '';
    } catch (e) {
      item.msg.error(e.message);
    }
  }

  async snooze(item, end = false) {
    const a = item.alert;
    item.msg.clear();
    const reason = item.snoozeWhy.value.trim();
    if (!end && !reason) {
      item.msg.error('Say why it is snoozed: the reason is shown to whoever looks next.');
      item.snoozeWhy.focus();
      return;
    }
    try {
      const body = end ? { end: true } : { minutes: Number(item.snoozeMin.value), reason };
      const updated = await post(`/alerts/${seg(a.id)}/snooze`, body);
      this.store.updateAlert(updated);
      const name = this.store.patientName(a.patient_id);
      const text = end ? `The snooze of the alert for ${name} ended.` : `Snoozed the alert for ${name} until ${formatTime(updated.snoozed_until)}.`;
      announce(text);
      item.snoozeWhy.value = '';
      item.more.open = false;
      this.summary.focus();
    } catch (e) {
      item.msg.error(e.message);
    }
  }

  async loadResolved() {
    const box = this.resolvedBox;
    box.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    try {
      const r = await get('/alerts?status=resolved&limit=50');
      if (!r.alerts.length) {
        box.replaceChildren(h('p', { class: 'empty' }, 'No resolved alerts.'));
        return;
      }
      const rows = r.alerts.map((a) => h('tr', {},
        h('td', {}, h('a', { href: `#/patients/${encodeURIComponent(a.patient_id)}` }, this.store.patientName(a.patient_id))),
        h('td', {}, h('span', { class: `badge sev-${a.severity}` }, a.severity.toUpperCase()), ' ', a.message),
        h('td', {}, formatTime(a.opened_at)),
        h('td', {}, a.resolved_by === 'vigil' ? 'Vigil (the condition cleared)' : (a.resolved_by || '?'), a.resolve_note ? ` — “${a.resolve_note}”` : ''),
        h('td', { class: 'num' }, took(parseTime(a.resolved_at) - parseTime(a.opened_at)))));
      box.replaceChildren(h('div', { class: 'scroll' }, h('table', { class: 'resolved-table' },
        h('caption', {}, 'The 50 most recently opened resolved alerts'),
        h('thead', {}, h('tr', {}, ['Patient', 'Alert', 'Opened', 'Resolved by', 'Time to resolve'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows))));
    } catch (e) {
      box.replaceChildren(h('p', { class: 'msg error', role: 'alert' }, e.message));
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
