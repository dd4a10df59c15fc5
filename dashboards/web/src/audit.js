// The audit trail (#/audit, admins): who read or changed what, when and from where. Filter by
// patient, user and dates; check the hash chain ("Verify chain"); download the trail as NDJSON
// for the period (a plain link: the session cookie authenticates GETs, and the server names
// the file). Reading, verifying and exporting the trail are themselves audited.

import { get } from './api.js';
import { clear, field, formatTime, h, messageLine } from './util.js';

const LIMIT = 1000;

export class AuditView {
  constructor(root, store, { user }) {
    this.root = root;
    this.store = store;
    this.user = user;
    this.seq = 0;
    this.render();
  }

  destroy() {
    this.destroyed = true;
  }

  render() {
    clear(this.root);
    if (this.user.role !== 'admin') {
      this.root.append(h('h1', {}, 'Audit trail'), h('p', { role: 'alert' }, 'This needs the admin role.'));
      return;
    }
    // No pattern: a bad id gets the API's reason, which says what an id may hold.
    this.patient = h('input', { id: 'au-patient', autocomplete: 'off', list: 'au-patients', spellcheck: 'false' });
    const patients = h('datalist', { id: 'au-patients' },
      [...(this.store?.patients?.values() || [])].map((p) => h('option', { value: p.id }, p.name)));
    this.actor = h('input', { id: 'au-user', autocomplete: 'off', list: 'au-users', spellcheck: 'false', autocapitalize: 'none' });
    this.users = h('datalist', { id: 'au-users' });
    this.from = h('input', { id: 'au-from', type: 'date' });
    this.to = h('input', { id: 'au-to', type: 'date' });
    this.msg = messageLine();
    const form = h('form', { id: 'audit-filter', class: 'grid-form' },
      field('Patient id', this.patient, 'Empty for every patient'), patients,
      field('User', this.actor, 'A username, or empty for everyone'), this.users,
      field('From (date)', this.from, 'Whole days, in this browser’s time zone'), field('To (date, inclusive)', this.to, 'Empty for up to now'),
      h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'btn' }, 'Show'),
        h('button', { type: 'button', class: 'btn-quiet', id: 'audit-clear', onclick: () => { form.reset(); this.syncExport(); this.load(); } }, 'Clear filters')),
      this.msg.el);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.load();
    });
    for (const d of [this.from, this.to]) for (const ev of ['input', 'change']) d.addEventListener(ev, () => this.syncExport());

    this.verifyBtn = h('button', { type: 'button', class: 'btn', id: 'audit-verify', onclick: () => this.verify() }, 'Verify chain');
    this.verifyOut = h('p', { id: 'audit-verify-result', class: 'verify-result', role: 'status', 'aria-live': 'polite' });
    this.exportLink = h('a', { class: 'btn btn-secondary', id: 'audit-export', href: '/api/v1/audit/export', download: '' }, 'Export (NDJSON)');
    this.exportMsg = messageLine();
    this.exportLink.addEventListener('click', (e) => {
      const range = this.range();
      if (range.error) {
        e.preventDefault();
        this.exportMsg.error(range.error);
      } else {
        this.exportMsg.clear();
      }
    });
    this.summary = h('p', { class: 'summary', id: 'audit-summary', 'aria-live': 'polite' });
    this.tableBox = h('div', { class: 'scroll tall', tabindex: '0', role: 'region', 'aria-label': 'Audit lines' });

    this.root.append(
      h('div', { class: 'view-head' }, h('div', {}, h('h1', {}, 'Audit trail'),
        h('p', { class: 'muted' }, 'Every read and change of patient data, sign-in and administration, in a hash chain that shows any later change.'))),
      h('section', { class: 'card', 'aria-labelledby': 'au-chain' },
        h('h2', { id: 'au-chain' }, 'Integrity and export'),
        h('div', { class: 'buttons' }, this.verifyBtn, this.exportLink),
        this.verifyOut, this.exportMsg.el,
        h('p', { class: 'hint' }, 'The export covers the dates chosen below (all of the trail when none), in chain order, with what is needed to recompute every hash (see docs/security.md).')),
      h('section', { class: 'card', 'aria-labelledby': 'au-lines' },
        h('h2', { id: 'au-lines' }, 'Lines'), form, this.summary, this.tableBox));
    // A link may name the patient (#/audit?patient_id=p1, the patient page's access report).
    const asked = new URLSearchParams(location.hash.split('?')[1] || '').get('patient_id');
    if (asked) this.patient.value = asked;
    this.syncExport();
    get('/users').then((r) => {
      if (!this.destroyed) this.users.replaceChildren(...(r.users || []).map((u) => h('option', { value: u.name })));
    }).catch(() => {});
    this.load();
  }

  /** The chosen dates as RFC 3339 instants (local midnight; `to` is the end of its day). */
  range() {
    const day = (v, end) => {
      if (!v) return null;
      const [y, m, d] = v.split('-').map(Number);
      return new Date(y, m - 1, end ? d + 1 : d, 0, 0, 0, end ? -1 : 0);
    };
    const from = day(this.from.value, false), to = day(this.to.value, true);
    if (from && to && from > to) return { error: 'The “From” date is after the “To” date.' };
    return { from: from?.toISOString() ?? null, to: to?.toISOString() ?? null };
  }

  syncExport() {
    const { from, to, error } = this.range();
    const q = new URLSearchParams();
    if (!error) {
      if (from) q.set('from', from);
      if (to) q.set('to', to);
    }
    const qs = q.toString();
    this.exportLink.href = `/api/v1/audit/export${qs ? `?${qs}` : ''}`;
  }

  async load() {
    const seq = ++this.seq;
    this.msg.clear();
    const range = this.range();
    if (range.error) {
      this.msg.error(range.error);
      this.to.focus();
      return;
    }
    const q = new URLSearchParams({ limit: String(LIMIT), order: 'newest' });
    if (this.patient.value.trim()) q.set('patient_id', this.patient.value.trim());
    if (this.actor.value.trim()) q.set('user', this.actor.value.trim());
    if (range.from) q.set('from', range.from);
    if (range.to) q.set('to', range.to);
    this.summary.textContent = 'Loading…';
    let res;
    try {
      res = await get(`/audit?${q}`);
    } catch (e) {
      if (this.destroyed || seq !== this.seq) return;
      this.summary.textContent = '';
      clear(this.tableBox);
      this.msg.error(e.message);
      return;
    }
    if (this.destroyed || seq !== this.seq) return;
    this.renderLines(res.audit || []);
  }

  renderLines(lines) {
    this.summary.textContent = lines.length >= LIMIT
      ? `The latest ${LIMIT} lines that match, newest first: narrow the filters or the dates to see earlier ones.`
      : `${lines.length} line${lines.length === 1 ? '' : 's'}, newest first.`;
    if (!lines.length) {
      clear(this.tableBox).append(h('p', { class: 'muted' }, 'No lines match.'));
      return;
    }
    clear(this.tableBox).append(h('table', { class: 'table', id: 'audit-lines' },
      h('caption', { class: 'visually-hidden' }, 'Audit lines, newest first'),
      h('thead', {}, h('tr', {}, ['Time', 'Who', 'Action', 'Patient', 'Target', 'From'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, lines.map((l) => h('tr', { dataset: { auditId: String(l.id), action: l.action } },
        h('td', {}, h('time', { datetime: l.time }, formatTime(l.time))),
        h('td', {}, l.actor),
        h('td', { class: 'code' }, l.action),
        h('td', {}, l.patient_id ? h('a', { href: `#/patients/${encodeURIComponent(l.patient_id)}` }, l.patient_id) : '–'),
        h('td', { class: 'code audit-target' }, l.target),
        h('td', {}, l.remote))))));
  }

  async verify() {
    this.verifyBtn.disabled = true;
    this.verifyOut.className = 'verify-result';
    this.verifyOut.textContent = 'Checking every line of the chain…';
    try {
      const r = await get('/audit/verify');
      if (this.destroyed) return;
      if (r.intact) {
        this.verifyOut.className = 'verify-result ok';
        this.verifyOut.dataset.intact = 'true';
        this.verifyOut.textContent = `Intact: all ${r.lines} lines match the chain.`;
      } else {
        this.verifyOut.className = 'verify-result error';
        this.verifyOut.dataset.intact = 'false';
        this.verifyOut.textContent = `Not intact: ${r.error}.`;
      }
    } catch (e) {
      if (this.destroyed) return;
      this.verifyOut.className = 'verify-result error';
      delete this.verifyOut.dataset.intact;
      this.verifyOut.textContent = `The chain could not be checked: ${e.message}`;
    } finally {
      this.verifyBtn.disabled = false;
    }
  }
}
