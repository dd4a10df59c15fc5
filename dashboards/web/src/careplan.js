// The care-plan editor for clinicians: threshold rules as form rows (metric, comparison,
// value, how long, severity), the other kinds as sentences kept as they are, a programme's plan
// or the default one click away, and the API's refusal shown beside the field it names. The
// JSON stays available to admins (docs/dashboard.md, "The care plan"). Values are shown and typed
// in the clinic's display units (glucose mmol/L, temperature °F where it reads them) and saved
// in the units Vigil stores; a value left as it was is saved exactly as it was.

import { get, put, seg } from './api.js';
import {
  announce, deltaToDisplay, formatShown, fromDisplay, h, isConverted, messageLine, metricLabel,
  toDisplay, unitLabel,
} from './util.js';

const OPS = [['<', 'below'], ['<=', 'at or below'], ['>', 'above'], ['>=', 'at or above']];
const SEVERITIES = [['low', 'Low'], ['medium', 'Medium'], ['high', 'High']];
/** The metrics a threshold can watch, in the order a clinician looks for them. */
const THRESHOLD_METRICS = ['spo2', 'heart_rate', 'respiratory_rate', 'bp_systolic', 'bp_diastolic',
  'body_temperature', 'glucose', 'body_weight', 'steps'];

const opText = (op) => (OPS.find(([o]) => o === op) || [op, op])[1];
const unitOf = (m) => unitLabel(null, m);
/** A stored value as the form shows it: converted and rounded, or exactly as stored. */
const shown = (m, v) => (isConverted(m) ? formatShown(m, toDisplay(m, v)) : String(v));
/** A stored rise or fall as the form shows it. */
const shownDelta = (m, d) => (isConverted(m) ? formatShown(m, deltaToDisplay(m, d)) : String(d));

/**
 * The API's refusal of a threshold's value restated in the display unit: it checks the stored
 * value ("value 5404.7 is outside what a glucose reading can be (10 to 1500 mg/dL)"), while the
 * clinician typed 300 mmol/L. Any other sentence is left as it is.
 */
function restated(text, metric, typed) {
  const m = /^(.*?)value \S+ is outside what an? (.+) reading can be \((\S+) to (\S+) [^)]*\)$/.exec(text);
  if (!m || !isConverted(metric)) return text;
  return `${m[1]}value ${typed} is outside what a ${m[2]} reading can be (${shown(metric, Number(m[3]))} to ${shown(metric, Number(m[4]))} ${unitOf(metric)})`;
}

/** A sentence for a rule the form does not edit field by field. */
export function ruleSentence(r) {
  const sev = r.severity ? ` (${r.severity})` : '';
  switch (r.kind) {
    case 'threshold': return `${metricLabel(r.metric)} ${opText(r.op)} ${shown(r.metric, r.value)} ${unitOf(r.metric)}${r.for_s ? ` for ${Math.round(r.for_s / 60)} min` : ''}${sev}`;
    case 'rate': return `${metricLabel(r.metric)} ${r.rise !== undefined ? `up ${shownDelta(r.metric, r.rise)}` : `down ${shownDelta(r.metric, r.fall)}`} ${unitOf(r.metric)} within ${r.window_h} h${sev}`;
    case 'news2': return `NEWS2 score: medium at 5–6 or a single 3, high at 7 or more${r.severity ? `, at most ${r.severity}` : ''}`;
    case 'missing': return `No ${metricLabel(r.metric).toLowerCase()} reading for ${Math.round(r.after_s / 60)} min${sev}`;
    case 'drift': return `${metricLabel(r.metric)} drifting ${r.direction} from the patient's own baseline${sev}`;
    case 'macd': return `Weight trending up (MACD)${sev}`;
    case 'forecast': return `Glucose forecast${r.low ? ` below ${shown('glucose', r.low)}` : ''}${r.low && r.high ? ' or' : ''}${r.high ? ` above ${shown('glucose', r.high)}` : ''} ${unitOf('glucose')} within ${r.horizon_min || 30} min${sev}`;
    default: return r.kind;
  }
}

export class CarePlanEditor {
  /** `plan`: the record's care plan ({rules, default, source}); `admin`: may edit the JSON. */
  constructor(patientId, plan, admin, onSaved) {
    this.id = patientId;
    this.onSaved = onSaved;
    this.admin = admin;
    this.rows = [];
    this.msg = messageLine();
    this.list = h('ol', { class: 'plan-rows', id: 'plan-rows' });
    this.status = h('p', { class: 'muted small', id: 'plan-status' });
    this.source = h('select', { id: 'plan-source' }, h('option', { value: '' }, 'Choose…'), h('option', { value: 'default' }, 'The default care plan'));
    this.json = h('textarea', { id: 'plan-json', rows: 12, spellcheck: 'false', class: 'code', 'aria-describedby': 'plan-json-hint' });
    this.form = h('form', { id: 'plan-form', novalidate: true },
      this.status, this.list,
      h('div', { class: 'buttons' },
        h('button', { type: 'button', class: 'btn btn-secondary', id: 'plan-add', onclick: () => this.addRow() }, 'Add a threshold rule')),
      h('div', { class: 'plan-start' },
        h('div', { class: 'field' }, h('label', { for: 'plan-source' }, 'Start from a programme’s plan'), this.source),
        h('button', { type: 'button', class: 'btn btn-secondary', id: 'plan-use', onclick: () => this.useSource() }, 'Use these rules')),
      this.msg.el,
      h('button', { type: 'submit', class: 'btn', id: 'plan-save' }, 'Save care plan'));
    this.form.addEventListener('submit', (e) => { e.preventDefault(); this.save(this.collect()); });
    const jsonBox = admin ? h('details', { class: 'plan-json' },
      h('summary', {}, 'Edit as JSON (administrators)'),
      h('div', { class: 'field' }, h('label', { for: 'plan-json' }, 'Rules (JSON)'),
        h('p', { class: 'hint', id: 'plan-json-hint' }, 'Values in the JSON are in the units Vigil stores: glucose in mg/dL, temperature in °C.'),
        this.json),
      h('button', { type: 'button', class: 'btn btn-secondary', id: 'plan-json-save', onclick: () => this.saveJson() }, 'Save the JSON')) : null;
    this.el = h('section', { class: 'card', 'aria-labelledby': 'pv-plan' }, h('h2', { id: 'pv-plan' }, 'Care plan'), this.form, jsonBox);
    this.show(plan);
    this.loadProgrammes();
  }

  async loadProgrammes() {
    try {
      const r = await get('/care-plans');
      this.programmes = r.plans || [];
      this.defaultRules = r.default?.rules;
      for (const p of this.programmes) this.source.append(h('option', { value: p.id }, p.name));
    } catch { /* the default plan stays on offer */ }
  }

  show(plan) {
    this.plan = plan || { rules: [] };
    const rules = this.plan.rules || [];
    this.status.textContent = this.plan.default ? 'This patient follows the default care plan; saving makes it their own.'
      : this.plan.source === 'programme' ? `This patient follows the ${this.plan.programme || 'programme'}’s care plan; saving makes it their own.`
        : 'This patient has a care plan of their own.';
    this.rows = [];
    this.list.replaceChildren();
    for (const r of rules) this.addRow(r, false);
    this.json.value = JSON.stringify({ rules }, null, 2);
  }

  /** A row: a threshold rule's fields, or another kind's sentence (kept as it is). */
  addRow(rule = null, focus = true) {
    const i = this.rows.length;
    const row = { rule, errors: {} };
    const remove = h('button', { type: 'button', class: 'btn-quiet plan-remove', onclick: () => this.removeRow(row) }, 'Remove');
    if (rule && rule.kind !== 'threshold') {
      row.el = h('li', { class: 'plan-row plan-row-kept', dataset: { kind: rule.kind } },
        h('p', {}, h('strong', {}, ruleSentence(rule)), ' ', h('span', { class: 'muted small' }, `(${rule.id})`)),
        row.errorLine = h('p', { class: 'field-error', id: `rule-${i}-error` }), remove);
      remove.setAttribute('aria-label', `Remove the rule ${rule.id}`);
    } else {
      const r = rule || { kind: 'threshold', metric: 'spo2', op: '<', value: '', for_s: 0, severity: 'high' };
      const id = (f) => `rule-${i}-${f}`;
      const control = {
        metric: h('select', { id: id('metric') }, THRESHOLD_METRICS.map((m) => h('option', { value: m }, `${metricLabel(m)}${unitOf(m) ? ` (${unitOf(m)})` : ''}`))),
        op: h('select', { id: id('op') }, OPS.map(([o, t]) => h('option', { value: o }, t))),
        value: h('input', { id: id('value'), type: 'number', step: 'any', inputmode: 'decimal', required: true }),
        for_s: h('input', { id: id('for_s'), type: 'number', min: 0, step: 1, inputmode: 'numeric' }),
        severity: h('select', { id: id('severity') }, SEVERITIES.map(([v, t]) => h('option', { value: v }, t))),
      };
      control.metric.value = r.metric;
      control.op.value = r.op;
      control.value.value = r.value === '' ? '' : shown(r.metric, r.value);
      // What the row showed at first: a value left as it was is saved exactly as stored, not
      // converted back from its rounded display.
      row.first = { metric: r.metric, text: control.value.value };
      control.for_s.value = String(Math.round((r.for_s || 0) / 60));
      control.severity.value = r.severity;
      const unit = h('span', { class: 'unit', id: id('unit') }, unitOf(r.metric));
      control.metric.addEventListener('change', () => { unit.textContent = unitOf(control.metric.value); });
      control.value.setAttribute('aria-describedby', id('unit'));
      row.control = control;
      const fieldOf = (f, label, after = null) => {
        const err = h('p', { class: 'field-error', id: `${id(f)}-error` });
        row.errors[f] = err;
        return h('div', { class: `field field-${f}` }, h('label', { for: id(f) }, label), control[f], after, err);
      };
      row.errorLine = h('p', { class: 'field-error', id: `rule-${i}-error` });
      row.el = h('li', { class: 'plan-row', dataset: { kind: 'threshold' } },
        h('fieldset', {}, h('legend', {}, rule ? `Rule ${i + 1}: ${rule.id}` : `Rule ${i + 1} (new)`),
          h('div', { class: 'plan-fields' },
            fieldOf('metric', 'Reading'), fieldOf('op', 'When it is'), fieldOf('value', 'Value', unit),
            fieldOf('for_s', 'For at least (minutes)'), fieldOf('severity', 'Severity')),
          row.errorLine, remove));
      remove.setAttribute('aria-label', `Remove rule ${i + 1}`);
    }
    this.rows.push(row);
    this.list.append(row.el);
    if (focus && row.control) row.control.metric.focus();
    return row;
  }

  removeRow(row) {
    this.rows = this.rows.filter((r) => r !== row);
    row.el.remove();
    announce('Rule removed; save the care plan to keep the change.');
    this.form.querySelector('#plan-add')?.focus();
  }

  /** The rules as the form holds them, in row order (the API's rule index is the row's). */
  collect() {
    const used = new Set(this.rows.filter((r) => r.rule).map((r) => r.rule.id));
    return this.rows.map((row) => {
      if (!row.control) return row.rule;
      const c = row.control;
      const text = c.value.value.trim();
      const kept = row.rule && row.first && c.metric.value === row.first.metric && text === row.first.text;
      const value = text === '' ? null : kept ? row.rule.value : fromDisplay(c.metric.value, Number(text));
      const minutes = Number(c.for_s.value || 0);
      let id = row.rule?.id;
      if (!id) {
        const side = c.op.value.startsWith('<') ? 'low' : 'high';
        const base = `${c.metric.value.replaceAll('_', '-')}-${side}`;
        id = base;
        for (let n = 2; used.has(id); n += 1) id = `${base}-${n}`;
        used.add(id);
      }
      const rule = { id, kind: 'threshold', metric: c.metric.value, op: c.op.value, value, for_s: Math.round(minutes * 60), severity: c.severity.value };
      if (row.rule?.hysteresis !== undefined) rule.hysteresis = row.rule.hysteresis;
      return rule;
    });
  }

  clearErrors() {
    this.msg.clear();
    for (const row of this.rows) {
      row.errorLine.textContent = '';
      for (const [f, el] of Object.entries(row.errors)) {
        el.textContent = '';
        row.control[f]?.removeAttribute('aria-invalid');
        row.control[f]?.setAttribute('aria-describedby', f === 'value' ? `${row.control[f].id.replace(/-value$/, '-unit')}` : '');
      }
    }
  }

  /** Shows the API's refusal beside the field it names, or on the rule, or above the button. */
  showError(e) {
    const body = e.body || {};
    const row = Number.isInteger(body.rule) ? this.rows[body.rule] : null;
    let text = e.message;
    if (row?.control && body.field === 'value') text = restated(text, row.control.metric.value, row.control.value.value.trim());
    // Beside its rule the sentence needs no "rule 9 ("id"): " (the API counts from 0, the form
    // from 1); above the button it names the rule as the form does.
    const own = row ? /^rule \d+ \("[^"]*"\): (.*)$/s.exec(text) : null;
    const top = own ? `rule ${body.rule + 1}: ${own[1]}` : text;
    if (own) text = own[1];
    if (row && body.field && row.errors[body.field]) {
      const input = row.control[body.field];
      row.errors[body.field].textContent = text;
      input.setAttribute('aria-invalid', 'true');
      const described = [input.getAttribute('aria-describedby'), row.errors[body.field].id].filter(Boolean).join(' ');
      input.setAttribute('aria-describedby', described);
      input.focus();
    } else if (row) {
      row.errorLine.textContent = text;
      row.el.querySelector('button, input, select')?.focus();
    }
    this.msg.error(`The care plan was not saved: ${top}`);
  }

  useSource() {
    const id = this.source.value;
    if (!id) return;
    const p = id === 'default' ? null : (this.programmes || []).find((x) => x.id === id);
    const rules = p ? p.plan.rules : this.defaultRules;
    if (!rules) return;
    this.rows = [];
    this.list.replaceChildren();
    for (const r of rules) this.addRow(structuredClone(r), false);
    this.msg.ok(`The ${p ? p.name : 'default'} plan’s ${rules.length} rules are in the form; save to give them to this patient.`);
    this.list.querySelector('input, select, button')?.focus();
  }

  async save(rules, fromJson = false) {
    this.clearErrors();
    try {
      const saved = await put(`/patients/${seg(this.id)}/care-plan`, { rules });
      this.msg.ok('The care plan saved.');
      announce('The care plan saved.');
      this.show({ ...saved, default: false });
      this.msg.ok('The care plan saved.');
      this.onSaved?.(saved);
    } catch (e) {
      // A refusal of the JSON names a rule of the JSON, not of the form's rows.
      if (fromJson) this.msg.error(`The care plan was not saved: ${e.message}`);
      else this.showError(e);
    }
  }

  async saveJson() {
    let body;
    try {
      body = JSON.parse(this.json.value);
    } catch (err) {
      this.msg.error(`This is not valid JSON: ${err.message}`);
      this.json.setAttribute('aria-invalid', 'true');
      this.json.focus();
      return;
    }
    this.json.removeAttribute('aria-invalid');
    await this.save(Array.isArray(body) ? body : body.rules, true);
  }
}

