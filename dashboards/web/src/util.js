// Small shared helpers: building DOM without innerHTML (no markup injection from data), metric
// names and units as clinicians read them, ages and times.

/**
 * h('button', {class: 'x', onclick: fn, 'aria-label': 'y'}, 'text', child) → an element.
 * Attributes whose value is null/undefined/false are left out; `true` sets an empty attribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

/** svg('line', {x1: 0, …}, children) → an SVG element (attributes null/undefined left out). */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** What a clinician on no care team is told instead of an empty panel or inbox. */
export const NO_TEAM = 'You are not on a care team, so no patients or alerts are shown to you. Ask an administrator to add you to one.';

/** True when the signed-in clinician is on no care team (the panel says so; admins see everyone). */
export const onNoTeam = (store) => Array.isArray(store?.careTeams) && store.careTeams.length === 0;

export const METRICS = {
  heart_rate: { label: 'Heart rate', short: 'HR', unit: '/min', digits: 0 },
  spo2: { label: 'SpO₂', short: 'SpO₂', unit: '%', digits: 0 },
  respiratory_rate: { label: 'Respiratory rate', short: 'RR', unit: '/min', digits: 0 },
  bp_systolic: { label: 'Systolic BP', short: 'Sys', unit: 'mmHg', digits: 0 },
  systolic_bp: { label: 'Systolic BP', short: 'Sys', unit: 'mmHg', digits: 0 },
  bp_diastolic: { label: 'Diastolic BP', short: 'Dia', unit: 'mmHg', digits: 0 },
  bp_mean: { label: 'Mean BP', short: 'MAP', unit: 'mmHg', digits: 0 },
  blood_pressure: { label: 'Blood pressure', short: 'BP', unit: 'mmHg', digits: 0 },
  body_temperature: { label: 'Temperature', short: 'Temp', unit: '°C', digits: 1 },
  body_weight: { label: 'Weight', short: 'Wt', unit: 'kg', digits: 1 },
  glucose: { label: 'Glucose', short: 'Glu', unit: 'mg/dL', digits: 0 },
  steps: { label: 'Steps', short: 'Steps', unit: 'steps', digits: 0 },
  consciousness: { label: 'Consciousness (ACVPU)', short: 'ACVPU', unit: '', digits: 0 },
  on_oxygen: { label: 'On oxygen', short: 'O₂', unit: '', digits: 0 },
};

/** The order vitals appear in on a tile and in the patient view. */
export const METRIC_ORDER = [
  'heart_rate', 'spo2', 'respiratory_rate', 'bp_systolic', 'systolic_bp', 'bp_diastolic',
  'bp_mean', 'body_temperature', 'glucose', 'body_weight', 'steps', 'consciousness', 'on_oxygen',
];

const UCUM_DISPLAY = { 'mm[Hg]': 'mmHg', Cel: '°C', '{steps}': 'steps', '{ACVPU}': '', '{bool}': '' };

export function metricLabel(m) {
  return METRICS[m]?.label ?? m.replaceAll('_', ' ');
}

export function metricShort(m) {
  return METRICS[m]?.short ?? m.replaceAll('_', ' ');
}

// The units the clinic reads values in (`[clinic] glucose_unit`, `temperature_unit`; GET
// /session says which). Values arrive in their metric's canonical unit (glucose mg/dL,
// temperature °C) and are converted only for showing.
let UNITS = { glucose: 'mg/dL', temperature: 'celsius' };
// mg/dL per mmol/L of glucose (molar mass 180.156 g/mol), as the server converts.
const MGDL_PER_MMOLL = 18.0156;

/** Sets the clinic's display units from the session (`{glucose, temperature}`). */
export function setUnits(units) {
  if (units) UNITS = { ...UNITS, ...units };
}

/** The display unit of a converted metric, else null. */
function displayUnit(metric) {
  if (metric === 'glucose' && UNITS.glucose === 'mmol/L') return { unit: 'mmol/L', digits: 1 };
  if (metric === 'body_temperature' && UNITS.temperature === 'fahrenheit') return { unit: '°F', digits: 1 };
  return null;
}

/** A canonical value as a number in the clinic's display unit (charts plot these). */
export function toDisplay(metric, value) {
  if (value === null || value === undefined) return value;
  const d = displayUnit(metric);
  if (!d) return value;
  return metric === 'glucose' ? value / MGDL_PER_MMOLL : value * 9 / 5 + 32;
}

/** Whether the clinic reads `metric` in a unit other than the one Vigil stores. */
export function isConverted(metric) {
  return displayUnit(metric) !== null;
}

/**
 * A value typed in the clinic's display unit, as the canonical value Vigil stores: glucose to
 * 0.1 mg/dL, temperature to 0.01 °C (finer than any meter reads).
 */
export function fromDisplay(metric, shown) {
  if (shown === null || shown === undefined || Number.isNaN(shown) || !displayUnit(metric)) return shown;
  if (metric === 'glucose') return Math.round(shown * MGDL_PER_MMOLL * 10) / 10;
  return Math.round((shown - 32) * 5 / 9 * 100) / 100;
}

/** A canonical difference (a rise or a fall) in the clinic's display unit. */
export function deltaToDisplay(metric, delta) {
  if (delta === null || delta === undefined || !displayUnit(metric)) return delta;
  return metric === 'glucose' ? delta / MGDL_PER_MMOLL : delta * 9 / 5;
}

export function unitLabel(unit, metric) {
  const d = displayUnit(metric);
  if (d) return d.unit;
  if (unit === undefined || unit === null) return METRICS[metric]?.unit ?? '';
  return unit in UCUM_DISPLAY ? UCUM_DISPLAY[unit] : unit;
}

const ACVPU = ['Alert', 'New confusion', 'Voice', 'Pain', 'Unresponsive'];

/** A value already in the display unit, with the decimals worth showing. */
export function formatShown(metric, shown) {
  if (shown === null || shown === undefined || Number.isNaN(shown)) return '–';
  if (metric === 'consciousness') return ACVPU[Math.round(shown)] ?? String(shown);
  if (metric === 'on_oxygen') return shown >= 1 ? 'Yes' : 'No';
  const digits = displayUnit(metric)?.digits ?? METRICS[metric]?.digits ?? 1;
  return Number(shown).toFixed(digits);
}

/** A canonical value written in the clinic's display unit (without the unit). */
export function formatValue(metric, value) {
  return formatShown(metric, toDisplay(metric, value));
}

/**
 * Where a canonical value sits in a care plan's range for its metric (`ranges` of the panel or
 * the care plan: `{above: {value, inclusive}, below: {...}}`): null inside it, else
 * `{side: 'high'|'low', word, limit}` with the limit in words ("above 180 mmHg").
 */
export function outOfRange(metric, value, range) {
  if (!range || value === null || value === undefined || Number.isNaN(value)) return null;
  const { above, below } = range;
  const u = unitLabel(null, metric);
  const lim = (l) => `${formatValue(metric, l.value)}${u ? ` ${u}` : ''}`;
  if (above && (above.inclusive ? value >= above.value : value > above.value)) {
    return { side: 'high', word: 'High', limit: `${above.inclusive ? 'at or above' : 'above'} ${lim(above)}` };
  }
  if (below && (below.inclusive ? value <= below.value : value < below.value)) {
    return { side: 'low', word: 'Low', limit: `${below.inclusive ? 'at or below' : 'below'} ${lim(below)}` };
  }
  return null;
}

export function sortMetrics(list) {
  return [...list].sort((a, b) => {
    const ia = METRIC_ORDER.indexOf(a), ib = METRIC_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
}

export const SEVERITY_RANK = { high: 3, medium: 2, low: 1 };

export function severityRank(s) {
  return SEVERITY_RANK[s] ?? 0;
}

export function parseTime(t) {
  if (t === null || t === undefined) return NaN;
  if (typeof t === 'number') return t;
  return Date.parse(t);
}

/** "12 s ago", "4 min ago", "3 h ago", "2 d ago" (compact: "12s", "4m", "3h", "2d"). */
export function age(t, now = Date.now(), compact = false) {
  const ms = now - parseTime(t);
  if (!Number.isFinite(ms)) return '';
  const s = Math.max(0, Math.round(ms / 1000));
  const [n, unit] = s < 60 ? [s, 's'] : s < 3600 ? [Math.round(s / 60), 'min'] : s < 48 * 3600 ? [Math.round(s / 3600), 'h'] : [Math.round(s / 86400), 'd'];
  return compact ? `${n}${unit === 'min' ? 'm' : unit}` : `${n} ${unit} ago`;
}

const dtf = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
});

export function formatTime(t) {
  const ms = parseTime(t);
  return Number.isFinite(ms) ? dtf.format(new Date(ms)) : '';
}

const dueFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short', hour: '2-digit', minute: '2-digit' });

/**
 * How a device stands, in words, and whether it needs looking at. A spot-check device (a cuff,
 * a scale, a meter: the profile's `spot_check`) connects for a reading and goes, so being
 * offline is as expected until its reporting interval has passed twice since it was last heard
 * from (the server's "stale" uses the same limit); a continuous one offline is offline.
 */
export function deviceState(d, now = Date.now()) {
  if (d.revoked) return { state: 'revoked', text: 'revoked', trouble: false };
  const seen = parseTime(d.last_seen);
  const limit = Math.max(300, 2 * (d.reporting_interval_s || 3600)) * 1000;
  const overdue = Number.isFinite(seen) && now - seen > limit;
  const due = Number.isFinite(seen) ? dueFmt.format(new Date(seen + limit)) : '';
  if (d.online === true) {
    return overdue ? { state: 'quiet', text: 'connected, no reading lately', trouble: true } : { state: 'connected', text: 'connected', trouble: false };
  }
  if (d.spot_check) {
    if (!Number.isFinite(seen)) return { state: 'waiting', text: 'no reading yet', trouble: false };
    return overdue ? { state: 'overdue', text: `reading overdue since ${due}`, trouble: true }
      : { state: 'as_expected', text: `as expected, next by ${due}`, trouble: false };
  }
  return { state: 'offline', text: 'offline', trouble: true };
}

/** An element that shows how old `t` is and keeps itself current (see refreshAges). */
export function ageEl(t, compact = false) {
  const ms = parseTime(t);
  const el = h('time', { class: 'age', datetime: Number.isFinite(ms) ? new Date(ms).toISOString() : null, title: formatTime(ms) }, age(ms, Date.now(), compact));
  el.dataset.t = String(ms);
  if (compact) el.dataset.compact = '1';
  return el;
}

/** Refreshes every `.age[data-t]` under `root`; cheap enough for thousands every 15 s. */
export function refreshAges(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll('.age[data-t]')) {
    const text = age(Number(el.dataset.t), now, el.dataset.compact === '1');
    if (el.textContent !== text) el.textContent = text;
  }
}

let announceTimer = null;

/** Says `text` to screen readers through the page's polite live region. */
export function announce(text) {
  const el = document.getElementById('announcer');
  if (!el) return;
  clearTimeout(announceTimer);
  el.textContent = '';
  announceTimer = setTimeout(() => { el.textContent = text; }, 50);
}

/** Copies text; falls back to a selection copy where the Clipboard API is not allowed (plain http). */
export async function copyText(text, fallbackField) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch { /* fall through */ }
  if (fallbackField) {
    fallbackField.focus();
    fallbackField.select();
    try {
      return document.execCommand('copy');
    } catch {
      return false;
    }
  }
  return false;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** A labelled form field: <div class="field"><label for>…</label><input id …></div>. */
let fieldSeq = 0;
export function field(label, control, hint = null) {
  const id = control.id || `f${++fieldSeq}`;
  control.id = id;
  const kids = [h('label', { for: id }, label), control];
  if (hint) {
    const hid = `${id}-hint`;
    control.setAttribute('aria-describedby', hid);
    kids.push(h('p', { class: 'hint', id: hid }, hint));
  }
  return h('div', { class: 'field' }, kids);
}

/** An error/success message line bound to a form (role=alert on error so it is read out). */
export function messageLine() {
  const el = h('p', { class: 'msg', 'aria-live': 'polite' });
  return {
    el,
    error(text) { el.className = 'msg error'; el.setAttribute('role', 'alert'); el.textContent = text; },
    ok(text) { el.className = 'msg ok'; el.removeAttribute('role'); el.textContent = text; },
    clear() { el.className = 'msg'; el.removeAttribute('role'); el.textContent = ''; },
  };
}

/**
 * A read-only field holding a value to copy (a secret shown once, a command), with a Copy button
 * and a polite status: <div class="field copy-row"> with the input as `#{id}`.
 */
export function copyField(label, value, id, multiline = false) {
  const input = multiline
    ? h('textarea', { id, readonly: true, rows: 4, class: 'code' })
    : h('input', { id, readonly: true, class: 'code' });
  input.value = value;
  const status = h('span', { class: 'copy-status', 'aria-live': 'polite' });
  const btn = h('button', { type: 'button', class: 'btn-quiet', 'aria-label': `Copy ${label.toLowerCase()}` }, 'Copy');
  btn.addEventListener('click', async () => {
    status.textContent = (await copyText(value, input)) ? 'Copied' : 'Select and copy by hand';
  });
  return h('div', { class: 'field copy-row' }, h('label', { for: id }, label), h('div', { class: 'copy-line' }, input, btn, status));
}

/**
 * A confirmation step for something that cannot be undone, shown in `box` (which it replaces
 * the content of): the question, what will happen, a danger button and Cancel. Focus goes to
 * Cancel, the safe choice; on cancel it returns to `trigger` (an element, or a function that
 * finds it again when the page was redrawn meanwhile). `onConfirm()` may throw: its
 * message is shown and the buttons work again. After it succeeds, focus stays where it put it,
 * or (if it was lost with the step) goes to the element it returned, or to `trigger`.
 */
export function confirmStep(box, { id, question, detail, confirmLabel, trigger, onConfirm }) {
  const msg = messageLine();
  const qid = `${id}-q`;
  const yes = h('button', { type: 'button', class: 'btn btn-danger', id: `${id}-yes` }, confirmLabel);
  const no = h('button', { type: 'button', class: 'btn-quiet', id: `${id}-no` }, 'Cancel');
  const close = () => {
    clear(box);
    box.hidden = true;
  };
  const triggerEl = () => (typeof trigger === 'function' ? trigger() : trigger);
  no.addEventListener('click', () => {
    close();
    const t = triggerEl();
    if (t?.isConnected) t.focus();
  });
  yes.addEventListener('click', async () => {
    yes.disabled = no.disabled = true;
    msg.clear();
    try {
      const next = await onConfirm();
      close();
      const active = document.activeElement;
      if (!active || active === document.body) {
        const target = [next, triggerEl()].find((el) => el?.isConnected);
        target?.focus();
      }
    } catch (e) {
      msg.error(e.message);
      yes.disabled = no.disabled = false;
    }
  });
  clear(box).append(h('div', { class: 'confirm', id, role: 'group', 'aria-labelledby': qid, 'aria-describedby': `${id}-d` },
    h('p', { id: qid, class: 'confirm-q' }, question),
    h('p', { id: `${id}-d` }, detail),
    h('div', { class: 'buttons' }, yes, no), msg.el));
  box.hidden = false;
  no.focus();
}

/** The IANA zones the browser knows, for the time-zone field's suggestions. */
export function zoneList(id) {
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  return h('datalist', { id }, zones.map((z) => h('option', { value: z })));
}
