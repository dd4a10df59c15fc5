// Population figures for a programme and a month (GET /api/v1/population, docs/population.md),
// as figures and bar charts. Each bar says its value in words beside it, so a chart is never
// the only way to read a figure (and a screen reader reads the numbers).

import { get } from './api.js';
import { clear, h, messageLine } from './util.js';

function thisMonth() {
  const d = new Date();
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}`;
}

/** A bar `fraction` of its track wide (set through the CSSOM: the page's CSP allows no inline
 * style attributes). */
function barOf(fraction) {
  const bar = h('span', { class: 'bar' });
  bar.style.width = `${Math.round(fraction * 1000) / 10}%`;
  return bar;
}

/** A bar chart: rows of [label, value, text]. */
function bars(id, title, rows) {
  const max = Math.max(1, ...rows.map((r) => r[1]));
  return h('figure', { class: 'chart-bars', id },
    h('figcaption', {}, title),
    rows.length
      ? h('ul', {}, ...rows.map(([label, value, text]) => h('li', { dataset: { value: String(value) } },
        h('span', { class: 'bar-label' }, label),
        h('span', { class: 'bar-track', 'aria-hidden': 'true' }, barOf(value / max)),
        h('span', { class: 'bar-value' }, text ?? String(value)))))
      : h('p', { class: 'muted' }, 'None this month.'));
}

export class PopulationView {
  constructor(root) {
    this.root = root;
    this.month = thisMonth();
    this.program = '';
    this.render();
    this.load();
  }

  destroy() {
    this.destroyed = true;
  }

  render() {
    clear(this.root);
    this.msg = messageLine();
    const month = h('input', { type: 'month', id: 'population-month', value: this.month });
    month.addEventListener('change', () => { if (month.value) { this.month = month.value; this.load(); } });
    const program = h('select', { id: 'population-program' }, h('option', { value: '' }, 'All programmes'));
    program.addEventListener('change', () => { this.program = program.value; this.load(); });
    get('/programs').then((v) => { for (const p of v.programs) program.append(h('option', { value: p.id }, p.name)); }).catch(() => {});
    this.out = h('div', { id: 'population' });
    this.root.append(
      h('div', { class: 'view-head' }, h('h1', {}, 'Population')),
      h('div', { class: 'filters' }, h('label', { for: 'population-month' }, 'Month'), month,
        h('label', { for: 'population-program' }, 'Programme'), program),
      this.msg.el, this.out);
  }

  async load() {
    const q = new URLSearchParams({ month: this.month });
    if (this.program) q.set('program', this.program);
    try {
      const v = await get(`/population?${q}`);
      if (this.destroyed) return;
      this.msg.clear();
      this.show(v.figures);
    } catch (e) {
      if (!this.destroyed) this.msg.error(e.message);
    }
  }

  show(f) {
    const pct = (x) => (x == null ? 'no periods ended' : `${Math.round(x * 100)} %`);
    const stat = (id, label, value) => h('div', { class: 'stat', id }, h('dt', {}, label), h('dd', {}, value));
    const tiers = f.risk_tiers;
    const bands = f.minutes_bands;
    this.out.replaceChildren(
      h('dl', { class: 'stats' },
        stat('pop-patients', 'Patients enrolled', String(f.patients)),
        stat('pop-patient-days', 'Patient-days', String(f.patient_days)),
        stat('pop-share-16', 'Periods reaching 16 days', `${pct(f.share_16)} (${f.periods_16} of ${f.periods})`),
        stat('pop-ack', 'Time to acknowledge', f.ack_minutes.count
          ? `median ${f.ack_minutes.p50} min, 90th percentile ${f.ack_minutes.p90} min (${f.ack_minutes.count} alerts)`
          : 'no alert acknowledged'),
        stat('pop-minutes', 'Minutes per patient', f.minutes_per_patient == null ? '—' : String(f.minutes_per_patient))),
      h('div', { class: 'charts-grid' },
        bars('chart-alert-rates', 'Alerts per 100 patient-days, by rule',
          f.alert_rates.map((r) => [r.rule_id, r.per_100_patient_days, `${r.per_100_patient_days} (${r.alerts} alerts)`])),
        bars('chart-risk', 'Patients by risk tier (most severe alert this month)',
          [['High', tiers.high], ['Medium', tiers.medium], ['Low', tiers.low], ['None', tiers.none]]),
        bars('chart-minutes', 'Patients by minutes of care this month',
          [['Under 10', bands.under_10], ['10 to 19', bands.from_10_to_19], ['20 to 39', bands.from_20_to_39], ['40 or more', bands.from_40]])));
  }
}
