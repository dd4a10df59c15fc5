// @ts-check
// Discharged patients (#/discharged): those the user may see who left remote monitoring
// (GET /patients?status=discharged), with the date, the reason and who discharged them, each
// linking to the record, which stays readable (and where they can be readmitted).

import { get } from './api.js';
import { clear, h } from './util.js';

export class DischargedView {
  /** @param {HTMLElement} root */
  constructor(root) {
    this.root = root;
    this.abort = new AbortController();
    this.load();
  }

  destroy() {
    this.abort.abort();
  }

  async load() {
    document.title = 'Discharged patients · Vigil';
    const status = h('p', { class: 'summary', id: 'discharged-summary', role: 'status' }, 'Loading…');
    const box = h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-labelledby': 'discharged-title' });
    clear(this.root).append(
      h('div', { class: 'view-head' }, h('h1', { id: 'discharged-title' }, 'Discharged patients'),
        h('a', { href: '#/panel' }, 'Back to the panel')),
      h('p', { class: 'muted' }, 'Patients discharged from remote monitoring: not on the panel or the worklist, and they raise no alerts. Their records stay readable; readmit one from their page.'),
      status, box);
    let list;
    try {
      list = (await get('/patients?status=discharged', { signal: this.abort.signal })).patients || [];
    } catch (e) {
      if (e.name === 'AbortError') return;
      status.textContent = `The list could not be loaded: ${e.message}`;
      status.className = 'msg error';
      return;
    }
    list.sort((a, b) => (b.discharged?.date || '').localeCompare(a.discharged?.date || '') || a.name.localeCompare(b.name));
    status.textContent = list.length === 1 ? '1 discharged patient.' : `${list.length} discharged patients.`;
    if (!list.length) return;
    box.append(h('table', { class: 'table', id: 'discharged' },
      h('caption', { class: 'visually-hidden' }, 'Discharged patients'),
      h('thead', {}, h('tr', {}, ['Patient', 'Id', 'MRN', 'Discharged on', 'By', 'Reason'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, list.map((p) => h('tr', { dataset: { patient: p.id } },
        h('th', { scope: 'row' }, h('a', { href: `#/patients/${encodeURIComponent(p.id)}` }, p.name)),
        h('td', {}, p.id), h('td', {}, p.mrn || '–'),
        h('td', {}, p.discharged?.date || '–'), h('td', {}, p.discharged?.by || '–'), h('td', {}, p.discharged?.reason || '–'))))));
  }
}
