// The NEWS2 card on a patient's page (GET /patients/{id}/news2; docs/alerts.md "The NEWS2
// card"): the score now in figures and words, what is missing, each parameter's latest reading
// and points as a table, and the last 24 hours as a small step chart with the same in words.
// Shown only when the care plan in force has a news2 rule (the answer's `rule`).
//
// Refreshed a moment after a live reading of one of the seven parameters arrives (the patient
// page forwards them: onReading; at most once a minute), and every 5 minutes besides, since
// inputs go stale with time alone; the page's AbortSignal cancels a request in flight when the
// page is left.

import { get, seg } from './api.js';
import { clear, formatTime, formatValue, h, svg as s, unitLabel } from './util.js';

const REFRESH_MS = 5 * 60e3;
const AFTER_READING_MS = 2000;
// A streaming oximeter sends a reading a second: refresh for live readings at most once a minute
// (each refresh is an audited read).
const LIVE_GAP_MS = 60e3;
const METRICS = new Set(['respiratory_rate', 'spo2', 'on_oxygen', 'bp_systolic', 'heart_rate', 'consciousness', 'body_temperature']);
const RISK = {
  low: 'low risk',
  'low-medium': 'low-medium risk: one parameter scores 3',
  medium: 'medium risk',
  high: 'high risk',
};
const hm = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

/** "4 h", "90 min": a freshness in words. */
export function duration(seconds) {
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  return `${Math.round(seconds / 60)} min`;
}

const clock = (t) => hm.format(new Date(Date.parse(t)));

/**
 * The trend in plain words: "Highest 7 at 14:00; now 5, down from 7 six hours ago." Points
 * without a score (no recent reading) are gaps, and said to be.
 */
export function trendSummary(trend) {
  const scored = trend.filter((p) => p.total !== null && p.total !== undefined);
  if (!scored.length) return 'No score in this period: none of the seven parameters had a recent reading.';
  const top = scored.reduce((a, p) => (p.total > a.total ? p : a));
  const parts = [`Highest ${top.total} at ${clock(top.time)}`];
  const last = trend[trend.length - 1];
  const end = Date.parse(last.time);
  const before = trend.filter((p) => Date.parse(p.time) <= end - 6 * 3600e3).pop();
  if (last.total === null || last.total === undefined) {
    parts.push('no score now');
  } else if (before && before.total !== null && before.total !== undefined) {
    const d = last.total - before.total;
    parts.push(d === 0
      ? `now ${last.total}, the same as six hours ago`
      : `now ${last.total}, ${d < 0 ? 'down' : 'up'} from ${before.total} six hours ago`);
  } else {
    parts.push(`now ${last.total}`);
  }
  const gaps = trend.length - scored.length;
  const tail = gaps ? ` No score at ${gaps} of ${trend.length} times (no recent reading).` : '';
  return `${parts.join('; ')}.${tail}`;
}

/** The step chart of the trend: times across, score up; dashed lines at 5 and 7. */
function chart(trend, title, desc) {
  const W = 360, H = 140, L = 26, R = 8, T = 8, B = 22;
  const totals = trend.map((p) => p.total).filter((v) => v !== null && v !== undefined);
  const top = Math.max(8, ...totals.map((v) => v + 1));
  const t0 = Date.parse(trend[0].time), t1 = Date.parse(trend[trend.length - 1].time);
  const step = trend.length > 1 ? (t1 - t0) / (trend.length - 1) : 1;
  const x = (t) => L + ((t - t0 + step) / (t1 - t0 + step || 1)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  // Each point holds from the step before it to its own time; a gap breaks the line.
  let d = '';
  let open = false;
  for (const p of trend) {
    const tx = Date.parse(p.time);
    if (p.total === null || p.total === undefined) { open = false; continue; }
    const start = x(tx - step), end = x(tx), yy = y(p.total);
    d += open ? ` V${yy} H${end}` : ` M${start},${yy} H${end}`;
    open = true;
  }
  const lines = [5, 7].filter((v) => v < top).flatMap((v) => [
    s('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#8a5300', 'stroke-dasharray': '4 3', 'stroke-width': 1 }),
    s('text', { x: L - 4, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 11, fill: '#4a5563' }, String(v)),
  ]);
  return s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'news2-chart', id: 'news2-chart', role: 'img', 'aria-labelledby': 'news2-chart-title news2-chart-desc' },
    s('title', { id: 'news2-chart-title' }, title),
    s('desc', { id: 'news2-chart-desc' }, desc),
    s('line', { x1: L, x2: W - R, y1: y(0), y2: y(0), stroke: '#4a5563', 'stroke-width': 1 }),
    s('text', { x: L - 4, y: y(0) + 4, 'text-anchor': 'end', 'font-size': 11, fill: '#4a5563' }, '0'),
    lines,
    s('path', { d: d.trim(), fill: 'none', stroke: '#1b2430', 'stroke-width': 2.5 }),
    s('text', { x: L, y: H - 6, 'font-size': 11, fill: '#4a5563' }, clock(trend[0].time)),
    s('text', { x: W - R, y: H - 6, 'text-anchor': 'end', 'font-size': 11, fill: '#4a5563' }, `${clock(trend[trend.length - 1].time)} (now)`));
}

function valueText(p) {
  if (p.value === null || p.value === undefined) return 'no reading';
  if (p.metric === 'on_oxygen') return p.value >= 0.5 ? 'on oxygen' : 'air';
  const unit = unitLabel(p.unit, p.metric);
  return `${formatValue(p.metric, p.value)}${unit ? ` ${unit}` : ''}`;
}

function pointsText(p, fresh) {
  if (p.score !== null && p.score !== undefined) return String(p.score);
  if (p.value === null || p.value === undefined) return 'no reading';
  return `not counted (older than ${fresh})`;
}

export class News2Card {
  /** @param {string} patientId @param {AbortSignal} signal the page's */
  constructor(patientId, signal) {
    this.patientId = patientId;
    this.signal = signal;
    this.seq = 0;
    this.el = h('section', { class: 'card news2', id: 'news2-card', 'aria-labelledby': 'pv-news2', hidden: true });
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
    this.soon = null;
    this.refresh();
  }

  destroy() {
    this.destroyed = true;
    clearInterval(this.timer);
    clearTimeout(this.soon);
  }

  /** A live reading of this patient: refresh shortly if it is one of the seven. */
  onReading(metric) {
    if (!METRICS.has(metric) || this.destroyed || this.soon) return;
    const wait = Math.max(AFTER_READING_MS, (this.last || 0) + LIVE_GAP_MS - Date.now());
    this.soon = setTimeout(() => { this.soon = null; this.refresh(); }, wait);
  }

  async refresh() {
    if (this.destroyed) return;
    const seq = ++this.seq;
    this.last = Date.now();
    try {
      const r = await get(`/patients/${seg(this.patientId)}/news2`, { signal: this.signal });
      if (this.destroyed || seq !== this.seq) return; // left the page, or a newer request won
      this.show(r);
    } catch (e) {
      if (e.name === 'AbortError' || this.destroyed || seq !== this.seq) return;
      // Keep the last score on screen; say it could not be brought up to date.
      if (this.el.hidden) return;
      this.el.querySelector('#news2-error')?.remove();
      this.el.append(h('p', { role: 'alert', id: 'news2-error' }, `NEWS2 could not be refreshed: ${e.message}`));
    }
  }

  show(r) {
    clear(this.el);
    this.el.hidden = !r.rule;
    if (!r.rule) return;
    const fresh = duration(r.rule.freshness_s);
    const c = r.current;
    this.el.append(h('h2', { id: 'pv-news2' }, 'NEWS2'));
    if (!c) {
      this.el.append(h('p', { id: 'news2-score', class: 'news2-none' },
        `No score: none of the seven parameters has a reading from the last ${fresh}.`));
    } else {
      this.el.append(
        h('p', { id: 'news2-score', class: `news2-score risk-${c.risk}` },
          h('strong', { class: 'news2-total' }, `NEWS2 ${c.total}`), ` — ${RISK[c.risk] || c.risk}`),
        c.missing > 0
          ? h('p', { id: 'news2-missing', class: 'notice' },
            `Incomplete: ${c.missing} of 7 parameters without a reading from the last ${fresh}; they count as 0.`)
          : null,
        h('div', { class: 'scroll', role: 'region', tabindex: '0', 'aria-labelledby': 'news2-table-caption' },
          h('table', { class: 'table news2-table', id: 'news2-parts' },
            h('caption', { id: 'news2-table-caption' }, `Each parameter’s latest reading and its points (readings older than ${fresh} do not count)`),
            h('thead', {}, h('tr', {}, ['Parameter', 'Latest', 'When', 'Points'].map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', {}, c.parts.map((p) => h('tr', { dataset: { metric: p.metric } },
              h('th', { scope: 'row' }, p.parameter.charAt(0).toUpperCase() + p.parameter.slice(1)),
              h('td', {}, valueText(p)),
              h('td', {}, p.time ? formatTime(p.time) : '–'),
              h('td', { class: p.score === 3 ? 'warn' : null }, pointsText(p, fresh))))))),
      );
    }
    const trend = r.trend || [];
    if (trend.length) {
      const summary = trendSummary(trend);
      this.el.append(
        h('h3', { id: 'news2-trend-title' }, 'Last 24 hours'),
        chart(trend, 'NEWS2 over the last 24 hours', `Step chart of the score every 15 minutes; dashed lines at 5 (medium) and 7 (high). ${summary}`),
        h('p', { id: 'news2-summary' }, summary),
      );
    }
    this.el.append(h('p', { class: 'small muted' },
      `SpO₂ scale ${r.rule.spo2_scale}${r.rule.spo2_scale === 2 ? ' (a documented 88–92 % target)' : ''}. `,
      'The score uses each parameter’s latest reading, as alerts do; the trend scores readings averaged over each 15 minutes. ',
      'Decision support, not validated for home monitoring (Royal College of Physicians, NEWS2, 2017).'));
  }
}
