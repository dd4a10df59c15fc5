// A period of whole days for the one-patient reports (the printable summary, the AGP): read
// from the page's hash query (#/patients/p1/summary?from=2026-11-01&to=2026-11-14), the last 14
// days by default, chosen with two date fields. Days are the browser's: `from` starts at its
// local midnight, `to` ends at the next one.

import { seg } from './api.js';
import { h, messageLine } from './util.js';

const pad = (n) => String(n).padStart(2, '0');
/** A Date's local calendar day, YYYY-MM-DD. */
export const isoDay = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;

/** The period in the hash query, or the last `days` days (today included). */
export function readPeriod(days = 14) {
  const q = new URLSearchParams(location.hash.split('?')[1] || '');
  const today = new Date();
  const start = new Date(today.getFullYear(), today.getMonth(), today.getDate() - (days - 1));
  const ok = (v) => /^\d{4}-\d{2}-\d{2}$/.test(v || '');
  return { from: ok(q.get('from')) ? q.get('from') : isoDay(start), to: ok(q.get('to')) ? q.get('to') : isoDay(today) };
}

/** `{from, to}` days as the API's RFC 3339 instants, or `{error}` in words. */
export function instants({ from, to }) {
  const day = (v, end) => {
    const [y, m, d] = v.split('-').map(Number);
    return new Date(y, m - 1, end ? d + 1 : d);
  };
  const f = day(from, false), t = day(to, true);
  if (Number.isNaN(f.getTime()) || Number.isNaN(t.getTime())) return { error: 'Choose both dates.' };
  if (f >= t) return { error: 'The “From” date is after the “To” date.' };
  return { from: f.toISOString(), to: t.toISOString() };
}

/** The query string of a period for the API (`from=…&to=…`). */
export function apiQuery(period) {
  const r = instants(period);
  return r.error ? null : new URLSearchParams({ from: r.from, to: r.to }).toString();
}

/**
 * Two date fields and a Show button; `onChange(period)` on submit. The form is left out of
 * print (class no-print).
 */
export function periodForm(idPrefix, period, onChange) {
  const from = h('input', { type: 'date', id: `${idPrefix}-from`, value: period.from, required: true });
  const to = h('input', { type: 'date', id: `${idPrefix}-to`, value: period.to, required: true });
  const form = h('form', { class: 'filters no-print', id: `${idPrefix}-period` },
    h('label', { for: from.id }, 'From'), from,
    h('label', { for: to.id }, 'To (inclusive)'), to,
    h('button', { type: 'submit', class: 'btn' }, 'Show'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    onChange({ from: from.value, to: to.value });
  });
  return form;
}

/**
 * The top of a one-patient report page (`kind`: 'summary' or 'agp'): its heading, "Back to the
 * patient", Print, the period form, a message line and the body, as nodes to append. Sets
 * `view.title`, `view.msg` and `view.body`; choosing a period puts it in the hash and calls
 * `view.load()`.
 */
export function reportHead(view, kind, heading) {
  view.msg = messageLine();
  view.title = h('h1', { id: `${kind}-title` }, heading);
  view.body = h('div', { id: `${kind}-body`, 'aria-live': 'polite' });
  return [
    h('div', { class: 'view-head' },
      h('div', {}, view.title, h('p', { class: 'muted no-print' }, h('a', { href: `#/patients/${seg(view.id)}` }, 'Back to the patient'))),
      h('div', { class: 'head-actions no-print' },
        h('button', { type: 'button', class: 'btn', id: `${kind}-print`, onclick: () => window.print() }, 'Print'))),
    periodForm(kind, view.period, (p) => {
      view.period = p;
      history.replaceState(null, '', `#/patients/${seg(view.id)}/${kind}?from=${p.from}&to=${p.to}`);
      view.load();
    }),
    view.msg.el, view.body,
  ];
}

/** The API query of `view.period`, or null once `view.msg` says what is wrong with it. */
export function reportQuery(view) {
  const q = apiQuery(view.period);
  if (!q) {
    view.msg.error('Choose a “From” date on or before the “To” date.');
    return null;
  }
  view.msg.clear();
  view.body.setAttribute('aria-busy', 'true');
  return q;
}
