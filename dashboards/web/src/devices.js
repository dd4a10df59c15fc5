// @ts-check
// The device inventory (#/devices): every device of the patients the user may see
// (GET /devices), filtered by type, status, low battery and patient, in a table that says each
// state in words (online / offline / revoked, "12 % — low"), not by colour alone. On a phone
// the table scrolls sideways inside its region; the filters wrap.

import { get } from './api.js';
import { ageEl, clear, field, formatValue, h, metricLabel, unitLabel } from './util.js';

/** Battery at or below this is low (the registry's `BATTERY_LOW_PERCENT`). */
const LOW = 20;

export class DevicesView {
  /** @param {HTMLElement} root */
  constructor(root) {
    this.root = root;
    this.abort = new AbortController();
    this.render();
  }

  destroy() {
    this.abort.abort();
  }

  async render() {
    document.title = 'Devices · Vigil';
    const [profiles, patients] = await Promise.all([
      get('/profiles').catch(() => ({ profiles: [] })),
      get('/patients?status=all').catch(() => ({ patients: [] })),
    ]);
    this.patients = new Map((patients.patients || []).map((p) => [p.id, p]));
    this.profile = h('select', { id: 'dv-profile' }, h('option', { value: '' }, 'All types'),
      (profiles.profiles || []).map((p) => h('option', { value: p.id }, p.name || p.id)));
    this.status = h('select', { id: 'dv-status' }, h('option', { value: '' }, 'Any status'),
      h('option', { value: 'online' }, 'Online'), h('option', { value: 'offline' }, 'Offline'), h('option', { value: 'revoked' }, 'Revoked'));
    this.low = h('input', { type: 'checkbox', id: 'dv-low' });
    this.patient = h('select', { id: 'dv-patient' }, h('option', { value: '' }, 'All patients'),
      [...this.patients.values()].map((p) => h('option', { value: p.id }, `${p.name} (${p.id})${p.discharged ? ' — discharged' : ''}`)));
    for (const c of [this.profile, this.status, this.low, this.patient]) c.addEventListener('change', () => this.load());
    this.summary = h('p', { class: 'summary', id: 'devices-summary', role: 'status' });
    this.table = h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': 'Devices' });
    clear(this.root).append(
      h('div', { class: 'view-head' }, h('h1', {}, 'Devices'),
        h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter devices', onsubmit: (e) => e.preventDefault() },
          field('Type', this.profile), field('Status', this.status), field('Patient', this.patient),
          h('div', { class: 'field check-field' }, h('span', { class: 'check' }, this.low, h('label', { for: 'dv-low' }, `Battery low (${LOW} % or less)`))))),
      this.summary, this.table);
    await this.load();
  }

  async load() {
    const q = new URLSearchParams();
    if (this.profile.value) q.set('profile', this.profile.value);
    if (this.status.value) q.set('status', this.status.value);
    if (this.low.checked) q.set('battery_below', String(LOW + 1));
    if (this.patient.value) q.set('patient_id', this.patient.value);
    const seq = (this.seq = (this.seq || 0) + 1);
    this.summary.textContent = 'Loading…';
    let devices = [];
    let next = null;
    try {
      // Every page, for a clinic's inventory (5,000 a page).
      do {
        const page = new URLSearchParams(q);
        page.set('limit', '5000');
        if (next) page.set('after', next);
        const r = await get(`/devices?${page}`, { signal: this.abort.signal });
        devices = devices.concat(r.devices || []);
        next = r.next;
      } while (next);
    } catch (e) {
      if (e.name === 'AbortError') return;
      this.summary.textContent = `The devices could not be loaded: ${e.message}`;
      return;
    }
    if (seq !== this.seq) return;
    this.summary.textContent = devices.length === 1 ? '1 device.' : `${devices.length} devices.`;
    clear(this.table);
    if (!devices.length) return;
    this.table.append(h('table', { class: 'table', id: 'device-table' },
      h('caption', { class: 'visually-hidden' }, 'Devices: patient, type, status, battery, last seen and last reading'),
      h('thead', {}, h('tr', {}, ['Device', 'Patient', 'Type', 'Status', 'Battery', 'Last seen', 'Last reading'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, devices.map((d) => {
        const p = this.patients.get(d.patient_id);
        const r = d.last_reading;
        return h('tr', { dataset: { device: d.id, status: d.status } },
          h('th', { scope: 'row' }, d.id),
          h('td', {}, h('a', { href: `#/patients/${encodeURIComponent(d.patient_id)}` }, p?.name || d.patient_id),
            d.patient_discharged ? h('span', { class: 'muted small' }, ' (discharged)') : null),
          h('td', {}, d.profile),
          h('td', {}, h('span', { class: `badge dev-${d.status}` }, d.status)),
          h('td', { class: d.battery_low ? 'warn' : '' }, typeof d.battery === 'number' ? `${d.battery} %${d.battery_low ? ' — low' : ''}` : '–'),
          h('td', {}, d.last_seen ? ageEl(d.last_seen) : 'never'),
          h('td', {}, r ? [`${metricLabel(r.metric)} ${formatValue(r.metric, r.value)} ${unitLabel(r.unit, r.metric)} · `, ageEl(r.time)] : '–'));
      }))));
  }
}
