// The patient's record as a timeline a clinician can read: filters by kind (alerts, notes,
// visits, devices, care plan, notifications), and a device's comings and goings folded into one
// line per device per day, its entries a click away (docs/dashboard.md, "The record").

import { get, seg } from './api.js';
import { announce, formatTime, h } from './util.js';

const KIND_TEXT = {
  'alert.opened': 'Alert opened', 'alert.raised': 'Alert raised', 'alert.escalated': 'Alert escalated',
  'alert.acknowledged': 'Alert acknowledged', 'alert.resolved': 'Alert resolved',
  'alert.assigned': 'Alert taken', 'alert.snoozed': 'Alert snoozed', 'alert.notify_step': 'Notification step',
  note: 'Note',
  'device.offline': 'Device offline', 'device.online': 'Device back online', 'device.battery_low': 'Battery low',
  'device.revoked': 'Device revoked',
  'care_plan.updated': 'Care plan updated', 'visit.started': 'Video visit started', 'visit.ended': 'Video visit ended',
  'patient.discharged': 'Discharged', 'patient.readmitted': 'Readmitted',
  'notification.delivered': 'Notification delivered', 'notification.failed': 'Notification failed',
  'notification.retry': 'Notification to be retried', 'notification.cancelled': 'Notification cancelled',
};

/** The filters, in the order shown: each a group of kinds. */
export const GROUPS = [
  { id: 'alerts', label: 'Alerts', has: (k) => k.startsWith('alert.') && k !== 'alert.notify_step' },
  { id: 'notes', label: 'Notes', has: (k) => k === 'note' },
  { id: 'visits', label: 'Visits', has: (k) => k.startsWith('visit.') },
  { id: 'devices', label: 'Devices', has: (k) => k.startsWith('device.') },
  { id: 'plan', label: 'Care plan and enrollment', has: (k) => k.startsWith('care_plan.') || k.startsWith('enrollment') || k.startsWith('patient.') },
  { id: 'notifications', label: 'Notifications', has: (k) => k.startsWith('notification.') || k === 'alert.notify_step' },
];

export const groupOf = (kind) => (GROUPS.find((g) => g.has(kind)) || { id: 'other' }).id;

/** Whether an entry is a device going or coming back: what is folded. */
const comesAndGoes = (e) => e.kind === 'device.offline' || e.kind === 'device.online';

const dayFmt = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

/**
 * Entries (newest first) as the lines shown: a device's offline/online entries of one day
 * become one `{fold}` line where the first of them stood; everything else stays as it is.
 */
export function fold(entries, dayOf = (t) => dayFmt.format(new Date(t))) {
  const out = [];
  const folds = new Map();
  for (const e of entries) {
    if (!comesAndGoes(e)) {
      out.push(e);
      continue;
    }
    const key = `${e.device_id}|${dayOf(e.time)}`;
    let f = folds.get(key);
    if (!f) {
      f = { fold: true, device_id: e.device_id, day: dayOf(e.time), time: e.time, entries: [] };
      folds.set(key, f);
      out.push(f);
    }
    f.entries.push(e);
  }
  return out;
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

export class Timeline {
  constructor(patientId) {
    this.id = patientId;
    this.entries = [];
    this.shown = new Set(GROUPS.map((g) => g.id).concat('other'));
    this.list = h('ol', { class: 'timeline', id: 'timeline' });
    this.count = h('p', { class: 'muted small', id: 'timeline-count', 'aria-live': 'polite' });
    this.more = h('button', { type: 'button', class: 'btn-quiet', onclick: () => this.loadOlder() }, 'Show older entries');
    const boxes = GROUPS.map((g) => {
      const box = h('input', { type: 'checkbox', id: `tl-show-${g.id}`, checked: true, onchange: () => {
        if (box.checked) this.shown.add(g.id); else this.shown.delete(g.id);
        this.render();
      } });
      return h('div', { class: 'check' }, box, h('label', { for: `tl-show-${g.id}` }, g.label));
    });
    this.filters = h('fieldset', { class: 'tl-filters', id: 'timeline-filters' }, h('legend', {}, 'Show in the record'), boxes);
    this.el = h('div', { class: 'tl-wrap' }, this.filters, this.count, this.list, this.more);
    this.lastPage = 0;
  }

  /** Replaces the entries (newest first), as a fresh read of the record gives them. */
  set(entries) {
    this.entries = entries.slice();
    this.lastPage = entries.length;
    this.render();
  }

  async loadOlder() {
    if (!this.entries.length) return;
    const before = this.entries[this.entries.length - 1].time;
    try {
      const rec = await get(`/patients/${seg(this.id)}/record?before=${encodeURIComponent(before)}`);
      const older = rec.timeline || [];
      this.entries = this.entries.concat(older);
      this.lastPage = older.length;
      this.render();
    } catch (e) {
      announce(e.message);
    }
  }

  render() {
    const visible = this.entries.filter((e) => this.shown.has(groupOf(e.kind)));
    const lines = fold(visible);
    this.list.replaceChildren(...(lines.length ? lines.map((l) => (l.fold ? foldItem(l) : timelineItem(l)))
      : [h('li', { class: 'empty' }, this.entries.length ? 'Nothing of the kinds chosen above.' : 'Nothing in the record yet.')]));
    const hidden = this.entries.length - visible.length;
    this.count.textContent = `${plural(lines.length, 'line', 'lines')} shown${hidden ? `, ${plural(hidden, 'entry', 'entries')} hidden by the filters` : ''}.`;
    this.more.hidden = this.lastPage < 50;
  }
}

function foldItem(f) {
  const off = f.entries.filter((e) => e.kind === 'device.offline').length;
  const on = f.entries.length - off;
  const latest = f.entries[0];
  const summary = `${f.device_id}: ${off ? `offline ${plural(off, 'time', 'times')}` : ''}${off && on ? ', ' : ''}${on ? `back online ${plural(on, 'time', 'times')}` : ''} on ${f.day}; last ${latest.kind === 'device.offline' ? 'offline' : 'back online'} at ${timeFmt.format(new Date(latest.time))}`;
  return h('li', { class: 'tl-item tl-fold kind-device', dataset: { kind: 'device.fold', device: f.device_id } },
    h('div', { class: 'tl-meta' }, h('strong', {}, 'Device connection'), ' ', h('time', { datetime: f.time }, f.day)),
    h('details', {}, h('summary', {}, summary),
      h('ol', { class: 'tl-folded' }, f.entries.map((e) => h('li', {}, `${KIND_TEXT[e.kind]} ${formatTime(e.time)}`)))));
}

export function timelineItem(e) {
  const parts = [];
  if (e.severity) parts.push(h('span', { class: `badge sev-${e.severity}` }, e.severity.toUpperCase()), ' ');
  if (e.message) parts.push(e.message);
  if (e.text) parts.push(h('span', { class: 'note-text' }, e.text));
  if (e.device_id) parts.push(`${e.device_id}${typeof e.battery === 'number' ? ` · battery ${e.battery}%` : ''}`);
  if (Array.isArray(e.rules)) parts.push(`rules: ${e.rules.join(', ') || '(none)'}`);
  if (e.kind === 'patient.discharged') parts.push(`on ${e.date}${e.reason ? `: ${e.reason}` : ''}`);
  if (e.kind === 'alert.assigned') parts.push(e.to ? ` · to ${e.to}` : ' · released');
  if (e.kind === 'alert.snoozed') parts.push(e.until ? ` · until ${formatTime(e.until)}: ${e.reason || ''}` : ' · snooze ended');
  const by = e.by ? h('span', { class: 'muted' }, ` — ${e.by}`) : null;
  const note = e.note ? h('p', { class: 'tl-note' }, `“${e.note}”`) : null;
  return h('li', { class: `tl-item kind-${e.kind.replace(/\./g, '-')}`, dataset: { kind: e.kind } },
    h('div', { class: 'tl-meta' }, h('strong', {}, KIND_TEXT[e.kind] || e.kind), ' ', h('time', { datetime: e.time }, formatTime(e.time)), by),
    parts.length ? h('p', { class: 'tl-body' }, parts) : null, note);
}
