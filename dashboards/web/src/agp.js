// The Ambulatory Glucose Profile of one patient (#/patients/{id}/agp?from=&to=; default the
// last 14 days), from GET /patients/{id}/agp (docs/agp.md): the figures (readings, days, % of
// expected CGM readings, mean, GMI, CV), the time in the five consensus ranges as a stacked bar
// with every percentage written beside it, and the percentiles by hour of day as an SVG chart
// (5–95 % and 25–75 % bands, the median) whose text alternative is a table of the same
// figures. Colours are never the only signal: every range is named and numbered in text.
// Glucose is written in the clinic's unit (mg/dL, or mmol/L with the consensus's figures:
// 3.9–10.0 in range, 3.0–3.8 low, 10.1–13.9 high); the API's figures stay in mg/dL.

import { get, seg } from './api.js';
import { readPeriod, reportHead, reportQuery } from './period.js';
import {
  clear, formatShown, formatTime, formatValue, h, isConverted, svg as s, toDisplay, unitLabel,
} from './util.js';

/** A glucose in mg/dL as the clinic writes it, without the unit. */
const g = (v) => formatValue('glucose', v);
/** The clinic's glucose unit. */
const unit = () => unitLabel(null, 'glucose');
/**
 * The value next to a limit as the clinic writes it: one step of the unit's last digit above
 * (`d` 1) or below (-1) the limit written (181 mg/dL; 10.0 mmol/L → 10.1).
 */
const beside = (v, d) => (isConverted('glucose')
  ? (Number(formatShown('glucose', toDisplay('glucose', v))) + d * 0.1).toFixed(1)
  : String(v + d));

/** The five ranges, highest first (as the AGP stacks them), with their words. */
const RANGES = [
  { key: 'very_high', label: 'Very high', limits: (t) => `above ${g(t.high_up_to)} ${unit()}` },
  { key: 'high', label: 'High', limits: (t) => `${beside(t.in_range_up_to, 1)}–${g(t.high_up_to)} ${unit()}` },
  { key: 'in_range', label: 'In range', limits: (t) => `${g(t.low_below)}–${g(t.in_range_up_to)} ${unit()}` },
  { key: 'low', label: 'Low', limits: (t) => `${g(t.very_low_below)}–${beside(t.low_below, -1)} ${unit()}` },
  { key: 'very_low', label: 'Very low', limits: (t) => `below ${g(t.very_low_below)} ${unit()}` },
];

const ZONE_SOURCE = {
  patient: (z) => `Times of day are the patient’s (${z}, from their record).`,
  clinic: (z) => `Times of day are the clinic’s (${z}).`,
  default: () => 'Times of day are in UTC: neither the patient’s record nor the clinic’s settings (clinic.timezone) name a time zone.',
};

export class AgpView {
  constructor(root, id) {
    this.root = root;
    this.id = id;
    this.period = readPeriod(14);
    this.render();
    this.load();
  }

  destroy() {
    this.destroyed = true;
  }

  render() {
    clear(this.root).append(...reportHead(this, 'agp', 'Glucose profile (AGP)'));
  }

  async load() {
    const q = reportQuery(this);
    if (!q) return;
    try {
      const [a, p] = await Promise.all([get(`/patients/${seg(this.id)}/agp?${q}`), get(`/patients/${seg(this.id)}`)]);
      if (this.destroyed) return;
      document.title = `AGP: ${p.name} · Vigil`;
      this.title.textContent = `Glucose profile (AGP): ${p.name}`;
      this.show(a);
    } catch (e) {
      if (!this.destroyed) {
        clear(this.body);
        this.msg.error(e.status === 403 || e.status === 404 ? `There is no patient “${this.id}” on your panel.` : e.message);
      }
    } finally {
      this.body.removeAttribute('aria-busy');
    }
  }

  show(a) {
    const zone = h('p', { id: 'agp-zone', class: 'small' }, (ZONE_SOURCE[a.timezone_source] || ZONE_SOURCE.clinic)(a.timezone));
    const period = h('p', { class: 'small muted' }, `Patient ${a.patient_id}. ${formatTime(a.from)} to ${formatTime(a.to)}.`);
    if (!a.readings) {
      clear(this.body).append(period, h('p', { class: 'empty', id: 'agp-empty' }, 'No glucose readings in this period.'), zone);
      return;
    }
    const t = a.thresholds;
    const stat = (id, label, value, hint) => h('div', { class: 'stat', id },
      h('dt', {}, label), h('dd', {}, value), hint ? h('dd', { class: 'small muted' }, hint) : null);
    const stats = h('dl', { class: 'stats', id: 'agp-stats' },
      stat('agp-readings', 'Readings', String(a.readings), a.cgm ? `${a.cgm_readings} from a CGM` : 'from glucose meters'),
      stat('agp-days', 'Days with readings', `${a.days_with_data} of ${Math.round(a.period_days * 10) / 10}`,
        a.period_days < t.recommended_days ? `fewer than the ${t.recommended_days} days recommended` : null),
      a.cgm_active_pct !== null && a.cgm_active_pct !== undefined
        ? stat('agp-active', 'CGM readings received', `${a.cgm_active_pct.toFixed(1)} %`,
          `of one every ${Math.round(a.cgm_interval_s / 60)} min; ${t.recommended_active_pct} % or more recommended`)
        : null,
      isConverted('glucose')
        ? stat('agp-mean', 'Mean glucose', `${a.mean_mmol_l.toFixed(1)} mmol/L`, `${a.mean_mg_dl.toFixed(0)} mg/dL`)
        : stat('agp-mean', 'Mean glucose', `${a.mean_mg_dl.toFixed(0)} mg/dL`, `${a.mean_mmol_l.toFixed(1)} mmol/L`),
      stat('agp-gmi', 'Glucose Management Indicator (GMI)', `${a.gmi_pct.toFixed(1)} %`),
      stat('agp-cv', 'Glucose variability (CV)', `${a.cv_pct.toFixed(1)} %`,
        a.cv_pct <= t.cv_stable_up_to_pct ? `stable (${t.cv_stable_up_to_pct} % or less)` : `unstable (above ${t.cv_stable_up_to_pct} %)`),
    );
    // Time in ranges: a stacked bar (hidden from screen readers) and the same in words.
    const bar = h('div', { class: 'tir-bar', 'aria-hidden': 'true' }, RANGES.map((r) => {
      const seg_ = h('span', { class: `tir-seg tir-${r.key}` });
      seg_.style.height = `${a.ranges[r.key].pct}%`;
      return seg_;
    }));
    const list = h('ul', { class: 'tir-list', id: 'agp-tir' }, RANGES.map((r) => h('li', { dataset: { range: r.key } },
      h('span', { class: `tir-key tir-${r.key}`, 'aria-hidden': 'true' }),
      h('span', {}, h('strong', {}, `${r.label} `), `(${r.limits(t)}): `),
      h('span', { class: 'tir-pct' }, `${a.ranges[r.key].pct.toFixed(1)} %`),
      h('span', { class: 'small muted' }, ` (${a.ranges[r.key].count} readings)`))));
    const tir = h('section', { class: 'card agp-section', 'aria-labelledby': 'agp-tir-title' },
      h('h2', { id: 'agp-tir-title' }, 'Time in ranges'),
      h('div', { class: 'tir' }, bar, list),
      h('p', { class: 'small muted' }, 'Share of readings in each range. Targets for most adults with type 1 or 2 diabetes: in range more than 70 %, low less than 4 %, very low less than 1 %, high and very high together less than 25 %, very high less than 5 %.'));
    const profile = h('section', { class: 'card agp-section', 'aria-labelledby': 'agp-profile-title' },
      h('h2', { id: 'agp-profile-title' }, 'Glucose by time of day'),
      chart(a),
      h('p', { class: 'small muted' }, `Hourly bins, not smoothed. The darker band holds the middle half of the readings of each hour (25th to 75th percentile), the lighter one 90 % (5th to 95th); the line is the median; dashed lines mark the target range ${g(t.low_below)}–${g(t.in_range_up_to)} ${unit()}.`),
      table(a));
    clear(this.body).append(period, zone,
      a.sufficient ? null : h('p', { class: 'notice', id: 'agp-insufficient' }, `Less data than the consensus asks for a reliable profile (${t.recommended_days} days with ${t.recommended_active_pct} % of CGM readings): read these figures with care.`),
      h('section', { class: 'card agp-section', 'aria-labelledby': 'agp-figures' }, h('h2', { id: 'agp-figures' }, 'Figures'), stats),
      tir, profile,
      h('p', { class: 'small muted', id: 'agp-sources' }, `Ranges and targets: ${t.source}. GMI (%) = 3.31 + 0.02392 × mean glucose (mg/dL): ${a.gmi_source}.`));
  }
}

/** The percentile chart: hours across, glucose up (drawn in mg/dL, labelled in the clinic's unit). */
function chart(a) {
  const W = 720, H = 300, L = 44, R = 24, T = 10, B = 30;
  const top = Math.max(300, ...a.hours.map((b) => b.p95));
  const x = (hr) => L + (hr / 24) * (W - L - R);
  const y = (v) => T + (1 - Math.min(v, top) / top) * (H - T - B);
  // Each hour's figures drawn at the middle of the hour.
  const pts = a.hours.map((b) => ({ ...b, cx: x(b.hour + 0.5) }));
  const band = (lo, hi) => {
    if (!pts.length) return '';
    const up = pts.map((p) => `${p.cx},${y(p[hi])}`);
    const down = pts.slice().reverse().map((p) => `${p.cx},${y(p[lo])}`);
    return [...up, ...down].join(' ');
  };
  const desc = `Median glucose by hour ranges from ${g(Math.min(...a.hours.map((b) => b.p50)))} to ${g(Math.max(...a.hours.map((b) => b.p50)))} ${unit()}; the table below gives every hour's percentiles.`;
  const ticksY = [54, 70, 180, 250].filter((v) => v < top);
  return s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'agp-chart', id: 'agp-chart', role: 'img', 'aria-labelledby': 'agp-chart-title agp-chart-desc' },
    s('title', { id: 'agp-chart-title' }, 'Glucose percentiles by hour of day'),
    s('desc', { id: 'agp-chart-desc' }, desc),
    s('rect', { x: L, y: y(180), width: W - L - R, height: y(70) - y(180), fill: '#e6f4ea' }),
    ...ticksY.map((v) => s('g', {},
      s('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: v === 70 || v === 180 ? '#1e6b34' : '#8a96a3', 'stroke-dasharray': '4 3' }),
      s('text', { x: L - 4, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 11, fill: '#1b2430' }, g(v)))),
    ...[0, 3, 6, 9, 12, 15, 18, 21, 24].map((hr) => s('text', { x: x(hr), y: H - 10, 'text-anchor': 'middle', 'font-size': 11, fill: '#1b2430' }, `${String(hr % 24).padStart(2, '0')}:00`)),
    s('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: '#4a5563' }),
    s('polygon', { points: band('p5', 'p95'), fill: '#b7cfe9', class: 'agp-band-90' }),
    s('polygon', { points: band('p25', 'p75'), fill: '#5b8fc7', class: 'agp-band-50' }),
    s('polyline', { points: pts.map((p) => `${p.cx},${y(p.p50)}`).join(' '), fill: 'none', stroke: '#0b2a4a', 'stroke-width': 2.5, class: 'agp-median' }),
    ...pts.map((p) => s('circle', { cx: p.cx, cy: y(p.p50), r: 2.5, fill: '#0b2a4a' })),
    s('text', { x: 4, y: T + 10, 'font-size': 11, fill: '#1b2430' }, unit()));
}

/** The chart's figures as a table (its text alternative, printed with it). */
function table(a) {
  return h('div', { class: 'agp-table' },
    h('h3', { id: 'agp-hours-title' }, `Hourly figures (${unit()})`),
    h('div', { class: 'scroll', role: 'region', tabindex: '0', 'aria-labelledby': 'agp-hours-title' }, h('table', { class: 'table', id: 'agp-hours' },
      h('caption', { class: 'visually-hidden' }, `Glucose percentiles by hour, ${unit()}`),
      h('thead', {}, h('tr', {}, ['Hour', 'Readings', '5th', '25th', 'Median', '75th', '95th'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, a.hours.map((b) => h('tr', {},
        h('th', { scope: 'row' }, `${String(b.hour).padStart(2, '0')}:00–${String(b.hour).padStart(2, '0')}:59`),
        h('td', {}, String(b.n)),
        ...[b.p5, b.p25, b.p50, b.p75, b.p95].map((v) => h('td', {}, g(v)))))))));
}
