// The caseload worklist (GET /api/v1/worklist, docs/worklist.md): one row per enrolled patient,
// most urgent first, each saying why. Keyboard-driven: ArrowDown/j and ArrowUp/k move between
// rows, Enter opens the patient, "a" acknowledges the row's most urgent alert. Rows update live:
// an alert raised or changed, or a reading from a patient with a silent device, refetches the list
// within a second; otherwise it is refetched each minute.

import { get, post, seg } from './api.js';
import { NO_TEAM, announce, clear, h, messageLine, onNoTeam } from './util.js';

const TIER_LABEL = {
  high_alert: 'High alert',
  medium_alert: 'Medium alert',
  low_alert: 'Low alert',
  silent: 'Silent',
  at_risk: 'Days at risk',
  no_contact: 'No contact',
  stable: 'Stable',
};
const TIER_CLASS = { high_alert: 'sev-high', medium_alert: 'sev-medium', low_alert: 'sev-low', silent: 'stale' };

export class WorklistView {
  constructor(root, store) {
    this.root = root;
    this.store = store;
    this.filters = { program: '', team: '' };
    this.rows = [];
    this.focused = null; // patient id of the focused row
    this.timer = null;
    this.unsub = store.subscribe((c) => {
      if (c.alerts || c.patients === 'all' || this.quietAmong(c.patients)) this.soon();
    });
    // Silence comes with time passing, and a day's first reading adds a day: a refetch each
    // minute keeps both current without refetching for every reading of a busy fleet.
    this.every = setInterval(() => this.load(), 60_000);
    this.render();
    this.load();
  }

  destroy() {
    this.unsub();
    clearTimeout(this.timer);
    clearInterval(this.every);
    this.destroyed = true;
  }

  /** Whether a reading for one of `patients` may change its row at once: it has a silent device. */
  quietAmong(patients) {
    if (!patients || !patients.size) return false;
    return this.rows.some((r) => r.silent_devices > 0 && patients.has(r.patient_id));
  }

  /** Refetches within a second, once however many changes arrive meanwhile. */
  soon() {
    if (this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; this.load(); }, 1000);
  }

  render() {
    clear(this.root);
    this.msg = messageLine();
    this.summary = h('p', { class: 'summary', id: 'worklist-summary', 'aria-live': 'polite' });
    this.programSel = h('select', { id: 'worklist-program' }, h('option', { value: '' }, 'All programmes'));
    this.teamSel = h('select', { id: 'worklist-team' }, h('option', { value: '' }, 'All my teams'));
    for (const [sel, key] of [[this.programSel, 'program'], [this.teamSel, 'team']]) {
      sel.addEventListener('change', () => { this.filters[key] = sel.value; this.load(); });
    }
    this.list = h('ol', { class: 'worklist', id: 'worklist', 'aria-label': 'Patients, most urgent first' });
    this.list.addEventListener('keydown', (e) => this.key(e));
    this.root.append(
      h('div', { class: 'view-head' }, h('h1', {}, 'Worklist')),
      h('p', { class: 'muted' }, 'Who needs action first. Move with the arrow keys or j and k; Enter opens the patient; a acknowledges the row\'s alert.'),
      h('div', { class: 'filters' },
        h('label', { for: 'worklist-program' }, 'Programme'), this.programSel,
        h('label', { for: 'worklist-team' }, 'Care team'), this.teamSel),
      this.summary, this.msg.el, this.list);
    get('/programs').then((v) => {
      for (const p of v.programs) this.programSel.append(h('option', { value: p.id }, p.name));
    }).catch(() => {});
    for (const t of this.store.careTeams || []) this.teamSel.append(h('option', { value: t }, t));
  }

  async load() {
    const q = new URLSearchParams();
    if (this.filters.program) q.set('program', this.filters.program);
    if (this.filters.team) q.set('team', this.filters.team);
    try {
      const v = await get(`/worklist${q.toString() ? `?${q}` : ''}`);
      if (this.destroyed) return;
      this.msg.clear();
      this.show(v.items);
    } catch (e) {
      if (!this.destroyed) this.msg.error(e.message);
    }
  }

  show(items) {
    this.rows = items;
    const hadFocus = this.list.contains(document.activeElement);
    const els = items.map((it) => this.row(it));
    this.list.replaceChildren(...els);
    if (!items.length) {
      const noTeam = onNoTeam(this.store);
      this.list.replaceChildren(h('li', { class: 'empty' }, noTeam ? NO_TEAM : 'No enrolled patients to show.'));
    }
    const urgent = items.filter((i) => i.tier !== 'stable').length;
    this.summary.textContent = `${items.length} patient${items.length === 1 ? '' : 's'}, ${urgent} needing action.`;
    // The roving focus stays on the same patient across a refresh.
    const keep = els.find((el) => el.dataset.patientId === this.focused) || els[0];
    for (const el of els) el.tabIndex = el === keep ? 0 : -1;
    if (hadFocus && keep) keep.focus();
  }

  row(it) {
    const reasons = it.reasons || [];
    const el = h('li', {
      class: `worklist-row ${TIER_CLASS[it.tier] || ''}`,
      dataset: { patientId: it.patient_id, rank: String(it.rank), tier: it.tier },
      'aria-label': `${it.rank}. ${it.name}: ${reasons[0] || ''}`,
    },
    h('span', { class: 'rank', 'aria-hidden': 'true' }, String(it.rank)),
    h('div', { class: 'who' },
      h('a', { href: `#/patients/${seg(it.patient_id)}`, tabindex: '-1' }, it.name),
      h('span', { class: `badge ${TIER_CLASS[it.tier] || ''}` }, TIER_LABEL[it.tier] || it.tier),
      h('span', { class: 'muted' }, ` ${it.program}`)),
    h('ul', { class: 'reasons' }, ...reasons.map((r, i) => h('li', { class: i === 0 ? 'first' : '' }, r))));
    if (it.top_alert) {
      el.append(h('button', { type: 'button', class: 'btn btn-secondary', tabindex: '-1', onclick: () => this.ack(it) }, 'Acknowledge alert'));
    }
    el.addEventListener('focus', () => { this.focused = it.patient_id; });
    el.addEventListener('click', (e) => {
      if (e.target.closest('button, a')) return;
      el.focus();
    });
    return el;
  }

  key(e) {
    const rows = [...this.list.querySelectorAll('.worklist-row')];
    const i = rows.indexOf(document.activeElement);
    if (i < 0) return;
    const move = (j) => {
      const next = rows[Math.max(0, Math.min(rows.length - 1, j))];
      rows[i].tabIndex = -1;
      next.tabIndex = 0;
      next.focus();
      e.preventDefault();
    };
    const it = this.rows.find((r) => r.patient_id === rows[i].dataset.patientId);
    switch (e.key) {
      case 'ArrowDown': case 'j': move(i + 1); break;
      case 'ArrowUp': case 'k': move(i - 1); break;
      case 'Home': move(0); break;
      case 'End': move(rows.length - 1); break;
      case 'Enter':
        e.preventDefault();
        location.hash = `#/patients/${seg(it.patient_id)}`;
        break;
      case 'a':
        if (it?.top_alert) { e.preventDefault(); this.ack(it); }
        break;
      default:
    }
  }

  async ack(it) {
    try {
      await post(`/alerts/${seg(it.top_alert)}/ack`, { note: 'acknowledged from the worklist' });
      announce(`Alert for ${it.name} acknowledged.`);
      this.load();
    } catch (e) {
      this.msg.error(e.message);
    }
  }
}
