// The printable summary of one patient's period (#/patients/{id}/summary?from=&to=): per
// metric the number of readings, lowest, median, highest and latest with units and the care
// plan's thresholds; the alerts opened in the period with who acknowledged and resolved them;
// the notes. One request (GET /patients/{id}/summary, audited as a read of the patient). "Print"
// is the browser's print (which also saves a PDF); the print stylesheet leaves out navigation
// and buttons and fits A4.

import { get, seg } from './api.js';
import { readPeriod, reportHead, reportQuery } from './period.js';
import { clear, formatTime, formatValue, h, metricLabel, unitLabel } from './util.js';

const OPS = { '<': 'below', '<=': 'at or below', '>': 'above', '>=': 'at or above' };

export class SummaryView {
  constructor(root, id) {
    this.root = root;
    this.id = id;
    this.period = readPeriod();
    this.render();
    this.load();
  }

  destroy() {
    this.destroyed = true;
  }

  render() {
    clear(this.root).append(...reportHead(this, 'summary', 'Patient summary'));
  }

  async load() {
    const q = reportQuery(this);
    if (!q) return;
    try {
      const s = await get(`/patients/${seg(this.id)}/summary?${q}`);
      if (this.destroyed) return;
      this.show(s);
    } catch (e) {
      if (!this.destroyed) {
        clear(this.body);
        this.msg.error(e.status === 403 || e.status === 404 ? `There is no patient “${this.id}” on your panel.` : e.message);
      }
    } finally {
      this.body.removeAttribute('aria-busy');
    }
  }

  show(s) {
    const p = s.patient;
    document.title = `Summary: ${p.name} · Vigil`;
    this.title.textContent = `Summary: ${p.name}`;
    const facts = [['Id', p.id], ['MRN', p.mrn], ['Born', p.birth_date], ['Care team', p.care_team],
      ['Period', `${formatTime(s.from)} to ${formatTime(s.to)}`], ['Printed', formatTime(s.generated_at)]].filter(([, v]) => v);
    const vitals = s.vitals.length
      ? h('div', { class: 'scroll', role: 'region', tabindex: '0', 'aria-label': 'Vitals table' }, h('table', { class: 'table summary-table', id: 'summary-vitals' },
        h('caption', { class: 'visually-hidden' }, 'Vitals over the period'),
        h('thead', {}, h('tr', {}, ['Vital', 'Readings', 'Lowest', 'Median', 'Highest', 'Latest', 'Care plan'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, s.vitals.map((v) => {
          const u = unitLabel(v.unit, v.metric);
          const val = (x) => `${formatValue(v.metric, x)} ${u}`.trim();
          return h('tr', { dataset: { metric: v.metric } },
            h('th', { scope: 'row' }, metricLabel(v.metric)),
            h('td', {}, String(v.count)),
            h('td', {}, val(v.min)),
            h('td', {}, `${val(v.median)}${v.median_exact ? '' : ' (approx.)'}`),
            h('td', {}, val(v.max)),
            h('td', {}, v.latest ? `${val(v.latest.value)}, ${formatTime(v.latest.time)}` : '–'),
            h('td', {}, v.thresholds.length
              ? v.thresholds.map((t) => `${t.severity} alert ${OPS[t.op] || t.op} ${formatValue(v.metric, t.value)} ${u}`).join('; ')
              : '–'));
        }))))
      : h('p', { class: 'empty' }, 'No readings in this period.');
    const who = (by, at, note) => (by ? `${by}, ${formatTime(at)}${note ? `: “${note}”` : ''}` : '–');
    const alerts = s.alerts.length
      ? h('div', { class: 'scroll', role: 'region', tabindex: '0', 'aria-label': 'Alerts table' }, h('table', { class: 'table summary-table', id: 'summary-alerts' },
        h('caption', { class: 'visually-hidden' }, 'Alerts opened in the period'),
        h('thead', {}, h('tr', {}, ['Opened', 'Severity', 'Alert', 'Acknowledged', 'Resolved'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, s.alerts.map((a) => h('tr', { dataset: { alertId: a.id } },
          h('td', {}, formatTime(a.opened_at)),
          h('td', {}, h('span', { class: `badge sev-${a.severity}` }, a.severity)),
          h('td', {}, a.message),
          h('td', {}, who(a.acknowledged_by, a.acknowledged_at, a.ack_note)),
          h('td', {}, who(a.resolved_by, a.resolved_at, a.resolve_note)))))))
      : h('p', { class: 'empty' }, 'No alerts were opened in this period.');
    const notes = s.notes.length
      ? h('ol', { class: 'summary-notes', id: 'summary-notes' }, s.notes.map((n) => h('li', {},
        h('p', { class: 'small muted' }, `${formatTime(n.time)}${n.by || n.user ? `, ${n.by || n.user}` : ''}`),
        h('p', { class: 'note-text' }, n.text || ''))))
      : h('p', { class: 'empty' }, 'No notes were written in this period.');
    clear(this.body).append(
      h('dl', { class: 'facts' }, facts.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))),
      h('section', { class: 'card summary-section', 'aria-labelledby': 'sm-vitals' }, h('h2', { id: 'sm-vitals' }, 'Vitals'),
        vitals, h('p', { class: 'small muted' }, `Care plan: ${s.care_plan_source === 'own' ? 'the patient’s own' : s.care_plan_source === 'programme' ? 'their programme’s' : 'the default plan'}. Values in the units stored.`)),
      h('section', { class: 'card summary-section', 'aria-labelledby': 'sm-alerts' }, h('h2', { id: 'sm-alerts' }, 'Alerts opened'), alerts),
      h('section', { class: 'card summary-section', 'aria-labelledby': 'sm-notes' }, h('h2', { id: 'sm-notes' }, 'Notes'), notes,
        s.notes_complete ? null : h('p', { class: 'small' }, 'Only the latest notes of a very long record are shown; shorten the period for the rest.')),
    );
  }
}
