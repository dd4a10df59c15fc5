// The monthly billing evidence, printable (docs/billing.md): #/billing for every enrolled
// patient the user may see, #/billing/{id} for one. One sheet per patient — the device periods
// with their days, the month's minutes, the codes the evidence supports with their evidence,
// and the notes — each printed on a page of its own ("Print" uses the browser's print, which
// also saves a PDF).

import { get, seg } from './api.js';
import { clear, h, messageLine } from './util.js';

/** The month before this one, YYYY-MM (the one a biller closes). */
function lastMonth() {
  const d = new Date();
  d.setDate(1);
  d.setMonth(d.getMonth() - 1);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}`;
}

export class BillingView {
  constructor(root, store, patientId = null) {
    this.root = root;
    this.patientId = patientId;
    this.month = new URLSearchParams(location.hash.split('?')[1] || '').get('month') || lastMonth();
    this.render();
    this.load();
  }

  destroy() {
    this.destroyed = true;
  }

  render() {
    clear(this.root);
    this.msg = messageLine();
    const month = h('input', { type: 'month', id: 'billing-month', value: this.month });
    month.addEventListener('change', () => {
      if (!month.value) return;
      this.month = month.value;
      this.load();
    });
    const print = h('button', { type: 'button', class: 'btn', id: 'billing-print', onclick: () => window.print() }, 'Print');
    const csv = h('a', { class: 'btn btn-secondary', id: 'billing-csv', href: '#' }, 'Download CSV');
    this.csv = csv;
    this.sheets = h('div', { id: 'billing-sheets' });
    this.root.append(
      h('div', { class: 'view-head no-print' }, h('h1', {}, this.patientId ? 'Billing evidence' : 'Billing evidence, all patients')),
      h('div', { class: 'filters no-print' }, h('label', { for: 'billing-month' }, 'Month'), month, print, csv),
      this.msg.el, this.sheets);
  }

  async load() {
    const path = this.patientId
      ? `/patients/${seg(this.patientId)}/billing?month=${this.month}`
      : `/billing?month=${this.month}`;
    this.csv.href = `/api/v1${path}&format=csv`;
    try {
      const v = await get(path);
      if (this.destroyed) return;
      this.msg.clear();
      const statements = this.patientId ? [v] : v.patients;
      const names = new Map();
      for (const s of statements) {
        try {
          names.set(s.patient_id, (await get(`/patients/${seg(s.patient_id)}`)).name);
        } catch { /* shown by id */ }
      }
      this.sheets.replaceChildren(...statements.map((s) => this.sheet(s, names.get(s.patient_id))));
      if (!statements.length) this.sheets.replaceChildren(h('p', { class: 'empty' }, 'No enrolled patients in this month.'));
    } catch (e) {
      if (!this.destroyed) this.msg.error(e.message);
    }
  }

  sheet(s, name) {
    const periods = h('table', { class: 'billing-table' },
      h('thead', {}, h('tr', {}, ...['Period', 'Programme', 'Days with device data', 'Billed this month'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ...s.periods.map((p) => h('tr', {},
        h('td', {}, `${p.start} to ${p.end}${p.complete ? '' : ' (running)'}`),
        h('td', {}, p.program),
        h('td', {}, `${p.device_days}${p.days.length ? `: ${p.days.map((d) => d.slice(8)).join(' ')}` : ''}`),
        h('td', {}, p.billed_this_month ? 'yes' : 'no')))));
    const codes = s.codes.length
      ? h('table', { class: 'billing-table' },
        h('thead', {}, h('tr', {}, ...['Code', 'Units', 'Date of service', 'Final', 'Evidence'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, ...s.codes.map((c) => h('tr', { dataset: { code: c.code } },
          h('td', {}, h('strong', {}, c.code), h('br'), h('span', { class: 'small' }, c.name)),
          h('td', {}, String(c.units)),
          h('td', {}, c.date),
          h('td', {}, c.final ? 'yes' : 'not yet'),
          h('td', { class: 'small' }, evidence(c.evidence))))))
      : h('p', {}, 'No code is supported by this month\'s evidence.');
    return h('section', { class: 'card billing-sheet', dataset: { patientId: s.patient_id }, 'aria-label': `Billing evidence for ${name || s.patient_id}` },
      h('h2', {}, `${name || s.patient_id}: ${s.month}`),
      h('p', { class: 'muted small' }, `Patient ${s.patient_id}. Days counted in ${s.timezone}. Rules: ${s.rules}.`),
      h('h3', {}, 'Device periods'), periods,
      h('p', {}, `Management time this month: ${s.minutes} min; ${s.interactive ? 'with' : 'without'} a live conversation with the patient.`),
      h('h3', {}, 'Codes supported'), codes,
      s.notes.length ? h('ul', { class: 'notes' }, ...s.notes.map((n) => h('li', {}, n))) : '',
    );
  }
}

function evidence(items) {
  const days = items.filter((e) => e.kind === 'device_day').map((e) => e.date.slice(5));
  const parts = [];
  for (const e of items) {
    if (e.kind === 'setup') parts.push(`Set-up of ${e.device_id} on ${e.date} by ${e.by}`);
    if (e.kind === 'time') parts.push(`${e.date}: ${e.minutes} min ${e.activity}${e.interactive ? ' (spoke with patient)' : ''}, ${e.user}`);
  }
  if (days.length) parts.push(`${days.length} days: ${days.join(', ')}`);
  return parts.join('; ');
}
