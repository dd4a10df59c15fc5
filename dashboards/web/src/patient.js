// The patient view: vitals charts (uPlot) over 6 h / 24 h / 7 d / 30 d with zoom, care-plan
// thresholds drawn on them, the record's timeline, devices (for admins: rotate a device's secret
// or revoke it), the care-plan editor, notes, the video visit button and, when the care plan
// has a news2 rule, the NEWS2 card (news2card.js).
//
// Charts ask the server for at most about one point per pixel (`/series`, downsampled
// server-side: mean with a min–max band). Zooming (drag across a chart) fetches the zoomed
// window again at full resolution, for every chart at once; double-click or "Reset zoom" goes
// back. Live readings of this patient are appended while the window ends at "now".

import { notificationSteps } from './notifysteps.js';
import { CarePlanEditor } from './careplan.js';
import { Timeline } from './timeline.js';
import { TimerBox } from './timerbox.js';
import { News2Card } from './news2card.js';
import uPlot from '/assets/vendor/uPlot.esm.js';
import { showCredentials } from './admin.js';
import { ApiError, get, post, put, seg } from './api.js';
import { patientForm } from './patientform.js';
import { rememberVisit } from './visitview.js';
import {
  ageEl, announce, clear, confirmStep, deviceState, formatShown, formatTime, formatValue, h, messageLine,
  metricLabel, parseTime, sortMetrics, toDisplay, unitLabel,
} from './util.js';

const RANGES = [
  { id: '6h', label: '6 h', ms: 6 * 3600e3 },
  { id: '24h', label: '24 h', ms: 24 * 3600e3 },
  { id: '7d', label: '7 d', ms: 7 * 86400e3 },
  { id: '30d', label: '30 d', ms: 30 * 86400e3 },
];
const CHART_METRICS = ['heart_rate', 'spo2', 'respiratory_rate', 'bp_systolic', 'bp_diastolic', 'body_temperature', 'glucose', 'body_weight', 'bp_mean', 'steps'];

let profilesCache = null;
let seriesMissing = false; // the server predates /series: fall back to raw observations

async function profiles() {
  if (!profilesCache) {
    profilesCache = get('/profiles').then((r) => new Map((r.profiles || []).map((p) => [p.id, p]))).catch(() => new Map());
  }
  return profilesCache;
}

export class PatientView {
  constructor(root, store, id, opts = {}) {
    this.root = root;
    this.store = store;
    this.id = id;
    this.user = opts.user;
    this.range = RANGES[0];
    this.window = null; // {from, to, zoomed}
    this.charts = new Map(); // metric -> {u, box, data, note}
    this.recordTimer = null;
    this.abort = new AbortController();
    this.unsub = store.subscribe((c) => this.onLive(c));
    this.resizeObs = new ResizeObserver(() => this.resize());
    this.load();
  }

  destroy() {
    this.destroyed = true;
    this.unsub();
    this.abort.abort();
    this.resizeObs.disconnect();
    clearTimeout(this.recordTimer);
    this.timerBox?.destroy();
    this.news2Card?.destroy();
    for (const c of this.charts.values()) c.u.destroy();
    this.charts.clear();
  }

  async load() {
    clear(this.root).append(h('p', { class: 'loading' }, 'Loading the record…'));
    let rec;
    try {
      rec = await get(`/patients/${seg(this.id)}/record`, { signal: this.abort.signal });
    } catch (e) {
      if (e.name === 'AbortError') return;
      this.renderError(e);
      return;
    }
    this.record = rec;
    this.render();
  }

  renderError(e) {
    const notFound = e instanceof ApiError && (e.status === 404 || e.status === 403);
    clear(this.root).append(
      h('div', { class: 'view-head' }, h('h1', { id: 'not-found' }, notFound ? 'Patient not found' : 'The record could not be loaded')),
      h('p', { role: 'alert' }, notFound
        ? `There is no patient “${this.id}” on your panel. They may belong to another care team.`
        : e.message),
      h('p', {}, h('a', { href: '#/panel' }, 'Back to the panel')),
    );
    document.title = 'Not found · Vigil';
  }

  render() {
    const { patient } = this.record;
    document.title = `${patient.name} · Vigil`;
    this.visitMsg = messageLine();
    const visitBtn = h('button', { type: 'button', class: 'btn', id: 'start-visit', onclick: () => this.startVisit(visitBtn) }, 'Start video visit');
    const facts = [
      ['Id', patient.id], ['MRN', patient.mrn], ['Born', patient.birth_date], ['Sex', patient.gender], ['Care team', patient.care_team],
      ['Phone', patient.phone], ['Email', patient.email], ['Address', patient.address], ['Contact', patient.contact_preference],
      ['Contact notes', patient.contact_notes],
    ].filter(([, v]) => v);
    // Demographics are edited by admins (the API's rule); discharge and readmission by the
    // patient's clinicians too (a clinical decision, as the care plan is).
    const admin = this.user?.role === 'admin';
    this.detailsBox = h('div', { id: 'patient-details-edit', hidden: true });
    const editBtn = admin ? h('button', {
      type: 'button', class: 'btn btn-secondary', id: 'edit-details', 'aria-expanded': 'false', 'aria-controls': 'patient-details-edit',
      onclick: () => this.toggleDetails(editBtn),
    }, 'Edit details') : null;
    this.dischargeBox = h('div', { class: 'device-confirm', id: 'discharge-box', hidden: true });
    const discharged = patient.discharged;
    const dischargeBtn = discharged
      ? h('button', { type: 'button', class: 'btn btn-secondary', id: 'readmit', onclick: () => this.askReadmit(dischargeBtn) }, 'Readmit')
      : h('button', { type: 'button', class: 'btn btn-secondary btn-secondary-danger', id: 'discharge', onclick: () => this.askDischarge(dischargeBtn) }, 'Discharge');
    const dischargedNote = discharged ? h('p', { class: 'discharged-note', id: 'discharged-note', role: 'status' },
      h('strong', {}, 'Discharged'), ` on ${discharged.date} by ${discharged.by}`,
      discharged.reason ? `: ${discharged.reason}` : '',
      '. Not on the panel or the worklist and raises no alerts; readings from their devices are still stored.') : null;
    this.rangeGroup = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Time range' },
      RANGES.map((r) => h('button', {
        type: 'button', class: 'seg', 'aria-pressed': String(r === this.range), dataset: { range: r.id },
        onclick: () => this.setRange(r),
      }, r.label)));
    this.resetZoom = h('button', { type: 'button', class: 'btn-quiet', hidden: true, onclick: () => this.setRange(this.range) }, 'Reset zoom');
    this.windowLabel = h('span', { class: 'muted small', id: 'chart-window' });
    this.chartsBox = h('div', { class: 'charts', id: 'charts' });
    // Shown once the patient is known to have glucose (a device that measures it, or a reading).
    this.agpLink = h('a', { class: 'btn btn-secondary', id: 'patient-agp', href: `#/patients/${seg(patient.id)}/agp`, hidden: true }, 'Glucose profile (AGP)');
    // The readings of the chosen period as a file (the session cookie authenticates the link).
    this.csvLink = h('a', { class: 'btn btn-secondary', id: 'patient-csv', href: `/api/v1/patients/${seg(patient.id)}/observations.csv`, download: '' }, 'Download readings (CSV)');
    this.alertsBox = h('section', { class: 'card', 'aria-labelledby': 'pv-alerts' });
    // The device table is redrawn whenever the record is (a device going offline does that);
    // the confirmation step and a rotated secret live beside it, so neither is lost to a redraw.
    this.devicesTable = h('div', { class: 'scroll' });
    this.deviceConfirm = h('div', { class: 'device-confirm', hidden: true });
    this.deviceSecret = h('div', { id: 'rotated-secret' });
    this.devicesBox = h('section', { class: 'card', 'aria-labelledby': 'pv-devices' },
      h('h2', { id: 'pv-devices', tabindex: '-1' }, 'Devices'), this.devicesTable, this.deviceConfirm, this.deviceSecret);
    this.timeline = new Timeline(patient.id);
    this.timerBox?.destroy();
    this.timerBox = new TimerBox(patient.id);
    // Shown only when the care plan in force has a news2 rule (news2card.js).
    this.news2Card?.destroy();
    this.news2Card = new News2Card(patient.id, this.abort.signal);
    clear(this.root).append(
      h('div', { class: 'view-head' },
        h('div', {}, h('h1', { id: 'patient-name' }, patient.name),
          h('dl', { class: 'facts' }, facts.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))))),
        h('div', { class: 'head-actions' }, visitBtn,
          h('a', { class: 'btn btn-secondary', id: 'patient-billing', href: `#/billing/${seg(patient.id)}` }, 'Billing evidence'),
          editBtn, dischargeBtn,
          h('a', { class: 'btn btn-secondary', id: 'patient-summary', href: `#/patients/${seg(patient.id)}/summary` }, 'Printable summary'),
          this.agpLink,
          this.visitMsg.el)),
      // (append() would write a missing note as the text "null")
      ...(dischargedNote ? [dischargedNote] : []),
      this.dischargeBox,
      this.detailsBox,
      this.alertsBox,
      h('section', { class: 'card', 'aria-labelledby': 'pv-charts' },
        h('div', { class: 'card-head' }, h('h2', { id: 'pv-charts' }, 'Vitals'), this.rangeGroup, this.resetZoom, this.windowLabel, this.csvLink),
        h('p', { class: 'hint' }, 'Drag across a chart to zoom in (every chart follows); double-click or “Reset zoom” to go back. Dashed lines are the care plan’s thresholds.'),
        this.chartsBox),
      h('div', { class: 'two-col' },
        h('section', { class: 'card', 'aria-labelledby': 'pv-timeline' },
          h('h2', { id: 'pv-timeline' }, 'Record'), this.noteForm(), this.timeline.el),
        h('div', {}, this.news2Card.el, this.timerBox.el, this.devicesBox, this.planEditor(), this.accessReport())),
    );
    this.renderAlerts();
    this.renderDevices();
    // Whether a device is a spot-check one is its profile's: redraw once the profiles are in.
    profiles().then((m) => {
      this.profileMap = m;
      if (this.devicesTable.isConnected) this.renderDevices();
    });
    this.timeline.set(this.record.timeline || []);
    this.setRange(this.range);
  }

  renderAlerts() {
    const open = (this.record.open_alerts || []);
    // A list of notifications someone opened stays open through a redraw.
    const wasOpen = new Set([...this.alertsBox.querySelectorAll('details.notify-steps[open]')].map((d) => d.dataset.alertId));
    clear(this.alertsBox).append(h('h2', { id: 'pv-alerts' }, 'Unresolved alerts'));
    this.alertsBox.hidden = open.length === 0;
    this.alertsBox.append(h('ul', { class: 'plain' }, open.map((a) => h('li', { class: `mini-alert sev-${a.severity}` },
      h('span', { class: `badge sev-${a.severity}` }, a.severity.toUpperCase()), ' ', a.message, ' · ',
      a.status === 'acknowledged' ? `acknowledged by ${a.acknowledged_by || '?'} · ` : '',
      'opened ', ageEl(a.opened_at), ' · ', h('a', { href: '#/inbox' }, 'handle in the inbox'),
      notificationSteps(a.id, `${a.severity} alert: ${a.message}`)))));
    for (const d of this.alertsBox.querySelectorAll('details.notify-steps')) if (wasOpen.has(d.dataset.alertId)) d.open = true;
  }

  renderDevices() {
    const devs = this.record.devices || [];
    const admin = this.user?.role === 'admin';
    clear(this.devicesTable);
    if (!devs.length) {
      this.devicesTable.append(h('p', { class: 'muted' }, 'No devices.'));
      return;
    }
    const cols = ['Device', 'Type', 'Status', 'Battery', 'Last seen'];
    if (admin) cols.push('Credentials');
    this.devicesTable.append(h('table', { class: 'table', id: 'devices' },
      h('caption', { class: 'visually-hidden' }, 'The patient’s devices'),
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, devs.map((d) => h('tr', { dataset: { deviceId: d.id, revoked: String(Boolean(d.revoked)) } },
        h('th', { scope: 'row' }, d.id),
        h('td', {}, d.profile),
        h('td', { dataset: { state: this.deviceStateOf(d).state } }, d.revoked ? h('span', { class: 'badge revoked' }, 'revoked') : this.deviceStateOf(d).text),
        h('td', { class: typeof d.battery === 'number' && d.battery <= 20 ? 'warn' : '' }, typeof d.battery === 'number' ? `${d.battery}%` : '–'),
        h('td', {}, d.last_seen ? ageEl(d.last_seen) : 'never'),
        admin ? h('td', { class: 'device-actions' }, d.revoked
          ? h('span', { class: 'muted small' }, 'Cannot connect')
          : h('div', { class: 'device-buttons' },
            h('button', { type: 'button', class: 'btn-quiet', dataset: { action: 'rotate' }, 'aria-label': `Rotate secret of ${d.id}`, onclick: (e) => this.askRotate(d, e.currentTarget) }, 'Rotate secret'),
            h('button', { type: 'button', class: 'btn-quiet btn-quiet-danger', dataset: { action: 'revoke' }, 'aria-label': `Revoke ${d.id}`, onclick: (e) => this.askRevoke(d, e.currentTarget) }, 'Revoke'))) : null)))));
  }

  /** How a device stands in words (util.js `deviceState`), with what its profile says. */
  deviceStateOf(d) {
    const p = this.profileMap?.get(d.profile);
    return deviceState({ ...d, spot_check: p?.spot_check, reporting_interval_s: p?.reporting_interval_s });
  }

  /** The action button of a device, found again after a redraw of the table. */
  deviceButton(id, action) {
    return [...this.devicesTable.querySelectorAll(`tr[data-device-id] button[data-action="${action}"]`)]
      .find((b) => b.closest('tr').dataset.deviceId === id);
  }

  askRotate(d, trigger) {
    confirmStep(this.deviceConfirm, {
      id: 'rotate-confirm',
      question: `Rotate the secret of ${d.id}?`,
      detail: 'Its MQTT connection ends now. It cannot connect again until the new secret — shown once, on this page — is entered in the device; until then it sends no readings. The old secret stops working at once.',
      confirmLabel: `Rotate the secret of ${d.id}`,
      trigger: () => (trigger.isConnected ? trigger : this.deviceButton(d.id, 'rotate')),
      onConfirm: async () => {
        const dev = await post(`/devices/${seg(d.id)}/rotate`);
        const profile = (await profiles()).get(dev.profile);
        const box = h('div', {});
        clear(this.deviceSecret).append(h('h3', { class: 'secret-title' }, `New secret for ${dev.id}`),
          h('p', { class: 'small' }, 'Enter it in the device now: it is disconnected until it uses this secret.'), box);
        showCredentials(box, dev, profile, `New credentials for ${dev.id}`);
        announce(`The secret of ${dev.id} was rotated. The new one is shown once.`);
        this.reloadRecord(0);
      },
    });
  }

  askRevoke(d, trigger) {
    const name = this.record.patient?.name || this.id;
    confirmStep(this.deviceConfirm, {
      id: 'revoke-confirm',
      question: `Revoke ${d.id}?`,
      detail: `Its MQTT connection ends now and it can never connect again: it stops sending ${name}’s readings. The readings it sent stay in the record. To replace it, add a new device on the admin page.`,
      confirmLabel: `Revoke ${d.id}`,
      trigger: () => (trigger.isConnected ? trigger : this.deviceButton(d.id, 'revoke')),
      onConfirm: async () => {
        const dev = await post(`/devices/${seg(d.id)}/revoke`);
        // A secret shown for this device no longer opens anything.
        if (this.deviceSecret.querySelector('#cred-user')?.value === dev.id) clear(this.deviceSecret);
        const mine = (this.record.devices || []).find((x) => x.id === dev.id);
        if (mine) mine.revoked = true;
        this.renderDevices();
        announce(`${dev.id} is revoked: it can no longer connect.`);
        this.reloadRecord(0);
        return this.devicesBox.querySelector('#pv-devices');
      },
    });
  }

  /** Opens or closes the details form under the heading. */
  toggleDetails(btn) {
    const open = this.detailsBox.hidden;
    clear(this.detailsBox);
    this.detailsBox.hidden = !open;
    btn.setAttribute('aria-expanded', String(open));
    if (!open) return;
    const close = () => {
      clear(this.detailsBox);
      this.detailsBox.hidden = true;
      btn.setAttribute('aria-expanded', 'false');
      btn.focus();
    };
    this.detailsBox.append(h('section', { class: 'card', 'aria-labelledby': 'pv-details' },
      h('h2', { id: 'pv-details' }, 'Edit details'),
      patientForm({
        mode: 'edit',
        prefix: 'pe',
        patient: this.record.patient,
        onCancel: close,
        onSaved: (saved) => {
          announce('Details saved.');
          this.record.patient = saved;
          this.render();
          this.root.querySelector('#edit-details')?.focus();
        },
      })));
    this.detailsBox.querySelector('#pe-name').focus();
  }

  /** Asks for the reason and date, then discharges: off the panel, the worklist and alerting. */
  askDischarge(trigger) {
    const name = this.record.patient?.name || this.id;
    const msg = messageLine();
    const today = new Date();
    const iso = `${today.getFullYear()}-${String(today.getMonth() + 1).padStart(2, '0')}-${String(today.getDate()).padStart(2, '0')}`;
    const reason = h('textarea', { id: 'discharge-reason', rows: 2, maxlength: 500, 'aria-describedby': 'discharge-reason-hint' });
    const date = h('input', { id: 'discharge-date', type: 'date', value: iso, max: iso, required: true });
    const yes = h('button', { type: 'submit', class: 'btn btn-danger', id: 'discharge-yes' }, `Discharge ${name}`);
    const no = h('button', { type: 'button', class: 'btn-quiet', id: 'discharge-no' }, 'Cancel');
    const close = () => {
      clear(this.dischargeBox);
      this.dischargeBox.hidden = true;
    };
    no.addEventListener('click', () => {
      close();
      trigger.focus();
    });
    const form = h('form', { class: 'confirm', id: 'discharge-form', 'aria-labelledby': 'discharge-q', 'aria-describedby': 'discharge-d', novalidate: true },
      h('p', { id: 'discharge-q', class: 'confirm-q' }, `Discharge ${name} from remote monitoring?`),
      h('p', { id: 'discharge-d' }, 'Their unresolved alerts are resolved ("patient discharged"), they leave the panel and the worklist, and they raise no alerts. Their devices stay provisioned and readings are still stored; the record stays readable. You can readmit them later.'),
      h('div', { class: 'field' }, h('label', { for: 'discharge-reason' }, 'Reason (optional)'), reason,
        h('p', { class: 'hint', id: 'discharge-reason-hint' }, 'For example: programme completed; admitted to hospital.')),
      h('div', { class: 'field' }, h('label', { for: 'discharge-date' }, 'Date of discharge'), date),
      h('div', { class: 'buttons' }, yes, no), msg.el);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      msg.clear();
      date.removeAttribute('aria-invalid');
      yes.disabled = no.disabled = true;
      try {
        const body = { date: date.value };
        if (reason.value.trim()) body.reason = reason.value.trim();
        const p = await post(`/patients/${seg(this.id)}/discharge`, body);
        announce(`${name} is discharged.${p.resolved_alerts?.length ? ` ${p.resolved_alerts.length} alert(s) resolved.` : ''}`);
        this.store.load().catch(() => {});
        await this.load();
        this.root.querySelector('#readmit')?.focus();
      } catch (err) {
        if (err.message.startsWith('date')) {
          date.setAttribute('aria-invalid', 'true');
          date.focus();
        }
        msg.error(err.message);
        yes.disabled = no.disabled = false;
      }
    });
    clear(this.dischargeBox).append(form);
    this.dischargeBox.hidden = false;
    reason.focus();
  }

  askReadmit(trigger) {
    const name = this.record.patient?.name || this.id;
    confirmStep(this.dischargeBox, {
      id: 'readmit-confirm',
      question: `Readmit ${name} to remote monitoring?`,
      detail: 'They come back to the panel and the worklist, and their care plan raises alerts again from their next readings.',
      confirmLabel: `Readmit ${name}`,
      trigger,
      onConfirm: async () => {
        await post(`/patients/${seg(this.id)}/readmit`, {});
        announce(`${name} is readmitted.`);
        this.store.load().catch(() => {});
        await this.load();
        return this.root.querySelector('#discharge');
      },
    });
  }

  noteForm() {
    const ta = h('textarea', { id: 'note-text', rows: 3, maxlength: 10000, required: true });
    const msg = messageLine();
    const form = h('form', { class: 'note-form', id: 'note-form' },
      h('div', { class: 'field' }, h('label', { for: 'note-text' }, 'Add a note to the record'), ta),
      h('button', { type: 'submit', class: 'btn' }, 'Add note'), msg.el);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const text = ta.value.trim();
      if (!text) {
        msg.error('Write the note first.');
        ta.focus();
        return;
      }
      try {
        await post(`/patients/${seg(this.id)}/notes`, { text });
        ta.value = '';
        msg.ok('Note added.');
        this.reloadRecord(0);
      } catch (err) {
        msg.error(err.message);
      }
    });
    return form;
  }

  planEditor() {
    // Admins and the patient's own clinicians may change it (a clinical decision); the API
    // decides, and its refusal is shown beside the field it names (careplan.js).
    this.planForm = new CarePlanEditor(this.id, this.record.care_plan, this.user?.role === 'admin', (saved) => {
      this.record.care_plan = saved;
      this.news2Card?.refresh();
      this.drawAllCharts();
      this.reloadRecord(0);
    });
    return this.planForm.el;
  }

  async startVisit(btn) {
    btn.disabled = true;
    this.visitMsg.clear();
    try {
      const v = await post('/visits', { patient_id: this.id });
      // The visit opens here, in the dashboard (#/visits/{id}), with the patient's link to send.
      rememberVisit(v);
      location.hash = `#/visits/${encodeURIComponent(v.id)}`;
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 501)) this.visitMsg.error('Video visits are not available on this Vigil server yet.');
      else this.visitMsg.error(e.message);
      btn.disabled = false;
    }
  }

  /**
   * Admins: who was shown or read this patient's data lately (the audit trail filtered by the
   * patient: the panel, the alert list and the live feed name the patients they show), with a
   * link to the whole trail for the patient.
   */
  accessReport() {
    if (this.user?.role !== 'admin') return null;
    const box = h('div', { class: 'scroll', role: 'region', tabindex: '0', 'aria-labelledby': 'pv-access' }, h('p', { class: 'muted' }, 'Loading…'));
    const section = h('section', { class: 'card', id: 'access-report', 'aria-labelledby': 'pv-access' },
      h('h2', { id: 'pv-access' }, 'Access report'),
      h('p', { class: 'small muted' }, 'Who saw or changed this patient’s data, newest first. Views on the panel, the alert list and the live feed are recorded at most once per user every 15 minutes.'),
      box,
      h('p', {}, h('a', { href: `#/audit?patient_id=${seg(this.id)}`, id: 'access-report-all' }, 'The whole access report for this patient')));
    get(`/audit?patient_id=${seg(this.id)}&order=newest&limit=25`, { signal: this.abort.signal }).then((r) => {
      if (this.destroyed) return;
      const lines = r.audit || [];
      clear(box).append(lines.length
        ? h('table', { class: 'table access-report' },
          h('caption', { class: 'visually-hidden' }, 'Latest access to this patient’s data'),
          h('thead', {}, h('tr', {}, ['When', 'Who', 'What'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, lines.map((l) => h('tr', { dataset: { action: l.action } },
            h('td', {}, h('time', { datetime: l.time }, formatTime(l.time))),
            h('td', {}, l.actor),
            h('td', { class: 'code' }, l.action)))))
        : h('p', { class: 'muted' }, 'No access recorded.'));
    }).catch((e) => {
      if (e.name !== 'AbortError' && !this.destroyed) clear(box).append(h('p', { role: 'alert' }, `The access report could not be loaded: ${e.message}`));
    });
    return section;
  }

  // --- charts ---

  async metrics() {
    const set = new Set();
    const prof = await profiles();
    for (const d of this.record.devices || []) for (const m of prof.get(d.profile)?.metrics || []) set.add(m);
    const p = this.store.patients.get(this.id);
    if (p) for (const m of Object.keys(p.latest || {})) set.add(m);
    // The metrics behind unresolved alerts come first: that is what the clinician came for.
    const alerting = new Set((this.record.open_alerts || []).map((a) => a.trigger?.metric).filter(Boolean));
    const list = sortMetrics([...set].filter((m) => CHART_METRICS.includes(m)));
    this.metricOrder = [...list.filter((m) => alerting.has(m)), ...list.filter((m) => !alerting.has(m))];
    return this.metricOrder;
  }

  setRange(r) {
    this.range = r;
    for (const b of this.rangeGroup.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.range === r.id));
    const to = Date.now();
    this.window = { from: to - r.ms, to, zoomed: false };
    this.loadCharts();
  }

  zoomTo(from, to) {
    if (!(to - from > 1000)) return;
    this.window = { from, to, zoomed: true };
    this.loadCharts();
  }

  async loadCharts() {
    const win = this.window;
    this.resetZoom.hidden = !win.zoomed;
    this.windowLabel.textContent = `${formatTime(win.from)} – ${formatTime(win.to)}`;
    const q = new URLSearchParams({ from: new Date(win.from).toISOString(), to: new Date(win.to).toISOString() });
    this.csvLink.href = `/api/v1/patients/${seg(this.id)}/observations.csv?${q}`;
    this.csvLink.setAttribute('aria-label', `Download readings (CSV), ${formatTime(win.from)} to ${formatTime(win.to)}`);
    const metrics = await this.metrics();
    if (this.destroyed || this.window !== win) return;
    this.agpLink.hidden = !metrics.includes('glucose');
    if (!metrics.length) {
      clear(this.chartsBox).append(h('p', { class: 'muted' }, 'No vitals yet: this patient has no devices that measure them.'));
      return;
    }
    const width = Math.max(300, Math.floor(this.chartsBox.clientWidth / (this.chartsBox.clientWidth > 1100 ? 2 : 1) || 800));
    const results = await Promise.all(metrics.map((m) => this.fetchSeries(m, win, Math.min(2000, width)).catch((e) => e)));
    if (this.destroyed || this.window !== win) return; // left the page, or a newer request won
    for (const [i, m] of metrics.entries()) {
      const res = results[i];
      if (res instanceof Error) {
        if (res.name === 'AbortError') return;
        this.chartFor(m).note.textContent = `Could not load: ${res.message}`;
        continue;
      }
      this.setChartData(m, res);
    }
  }

  async fetchSeries(metric, win, points) {
    const q = `metric=${metric}&from=${encodeURIComponent(new Date(win.from).toISOString())}&to=${encodeURIComponent(new Date(win.to).toISOString())}`;
    if (!seriesMissing) {
      try {
        const r = await get(`/patients/${seg(this.id)}/series?${q}&points=${points}`, { signal: this.abort.signal });
        return { unit: r.unit, points: r.points || [] };
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 404 && /route/.test(e.message))) throw e;
        seriesMissing = true;
      }
    }
    const r = await get(`/patients/${seg(this.id)}/observations?${q}&limit=100000`, { signal: this.abort.signal });
    const obs = r.observations || [];
    return { unit: obs[0]?.unit, points: downsample(obs.map((o) => [parseTime(o.time), o.value]), points) };
  }

  chartFor(metric) {
    let c = this.charts.get(metric);
    if (c) return c;
    const titleId = `chart-${metric}-title`;
    const plot = h('div', { class: 'plot' });
    const note = h('p', { class: 'chart-note muted small' });
    const thresholds = h('p', { class: 'small thresholds' });
    // The points outside the care plan's range, in words (the plot marks them ▲ and ▼ too).
    const outside = h('p', { class: 'small chart-outside', hidden: true });
    const box = h('figure', { class: 'chart', dataset: { metric }, 'aria-labelledby': titleId },
      h('figcaption', { id: titleId }, metricLabel(metric)), plot, note, outside, thresholds);
    // Keep the charts in the order metrics() chose.
    const order = this.metricOrder || sortMetrics([...this.charts.keys(), metric]);
    const next = order.slice(order.indexOf(metric) + 1).find((m) => this.charts.has(m));
    this.chartsBox.insertBefore(box, next ? this.charts.get(next).box : null);
    const view = this;
    const u = new uPlot({
      width: chartWidth(box),
      height: 200,
      ms: 1,
      cursor: {
        sync: { key: `pv-${this.id}` },
        drag: { x: true, y: false, setScale: false },
        bind: { dblclick: () => () => { view.setRange(view.range); return null; } },
      },
      scales: {
        x: { time: true, range: () => [view.window.from, view.window.to] },
        y: { range: (u, lo, hi) => yRange(lo, hi, view.thresholdsFor(metric)) },
      },
      axes: [
        { stroke: '#3b4652', grid: { stroke: '#e3e7ec' }, ticks: { stroke: '#c9d0d8' } },
        { stroke: '#3b4652', grid: { stroke: '#e3e7ec' }, ticks: { stroke: '#c9d0d8' }, size: 52 },
      ],
      series: [
        { label: 'Time', value: (u, v) => (v == null ? '–' : formatTime(v)) },
        { label: 'Mean', stroke: '#1d4e89', width: 2, points: { show: (u) => u.data[0].length < 120, size: 5, fill: '#1d4e89' }, spanGaps: false },
        { label: 'Min', stroke: 'rgba(29,78,137,0.35)', width: 1 },
        { label: 'Max', stroke: 'rgba(29,78,137,0.35)', width: 1 },
      ],
      bands: [{ series: [3, 2], fill: 'rgba(29,78,137,0.12)' }],
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 4) return;
          const from = u.posToVal(u.select.left, 'x');
          const to = u.posToVal(u.select.left + u.select.width, 'x');
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          view.zoomTo(Math.round(from), Math.round(to));
        }],
        draw: [(u) => {
          drawThresholds(u, view.thresholdsFor(metric));
          drawOutside(u, view.rangeFor(metric));
        }],
      },
    }, [[], [], [], []], plot);
    c = { u, box, plot, note, thresholds, outside, metric };
    this.charts.set(metric, c);
    this.resizeObs.observe(this.chartsBox);
    return c;
  }

  setChartData(metric, res) {
    const c = this.chartFor(metric);
    // Plotted in the clinic's display units (glucose mg/dL or mmol/L, temperature °C or °F).
    const shown = (v) => toDisplay(metric, v);
    const pts = res.points.map((p) => [p[0], shown(p[1]), shown(p[2] ?? p[1]), shown(p[3] ?? p[1])]);
    c.unit = res.unit;
    c.data = [pts.map((p) => p[0]), pts.map((p) => p[1]), pts.map((p) => p[2]), pts.map((p) => p[3])];
    c.u.setData(c.data);
    c.box.dataset.points = String(pts.length);
    // An empty chart is one line of text, not 200 px of grid (but a zoomed one keeps its plot).
    c.plot.hidden = pts.length === 0 && !this.window.zoomed;
    c.box.querySelector('figcaption').textContent = `${metricLabel(metric)}${res.unit ? ` (${unitLabel(res.unit, metric)})` : ''}`;
    if (!pts.length) {
      c.note.textContent = 'No readings in this period.';
    } else {
      let lo = Infinity, hi = -Infinity;
      for (const p of pts) {
        lo = Math.min(lo, p[2] ?? p[1]);
        hi = Math.max(hi, p[3] ?? p[1]);
      }
      const last = pts[pts.length - 1];
      c.note.textContent = `${pts.length} points · latest ${formatShown(metric, last[1])} ${unitLabel(res.unit, metric)} at ${formatTime(last[0])} · lowest ${formatShown(metric, lo)}, highest ${formatShown(metric, hi)}`;
    }
    this.describeOutside(c);
    const th = this.thresholdsFor(metric);
    c.thresholds.textContent = th.length ? `Thresholds: ${th.map((t) => `${t.label}`).join('; ')}` : '';
  }

  /** The sentence under a chart naming its points outside the care plan's range. */
  describeOutside(c) {
    const text = outsideText(c.metric, c.data, this.rangeFor(c.metric));
    c.outside.hidden = !text;
    c.outside.textContent = text;
  }

  /** The care plan's range of `metric` in display units (`ranges` of the care plan). */
  rangeFor(metric) {
    const r = this.record?.care_plan?.ranges?.[metric];
    if (!r) return null;
    const side = (l) => (l ? { ...l, value: toDisplay(metric, l.value) } : null);
    return { above: side(r.above), below: side(r.below) };
  }

  drawAllCharts() {
    for (const [m, c] of this.charts) {
      if (c.data) this.describeOutside(c);
      const th = this.thresholdsFor(m);
      c.thresholds.textContent = th.length ? `Thresholds: ${th.map((t) => t.label).join('; ')}` : '';
      c.u.redraw(true, true);
    }
  }

  thresholdsFor(metric) {
    const rules = this.record?.care_plan?.rules || [];
    return rules
      .filter((r) => r.kind === 'threshold' && r.metric === metric && typeof r.value === 'number')
      .map((r) => ({ value: toDisplay(metric, r.value), severity: r.severity, label: `${r.id}: ${r.op} ${formatValue(metric, r.value)} (${r.severity})` }));
  }

  resize() {
    for (const c of this.charts.values()) {
      const w = chartWidth(c.box);
      if (Math.abs(c.u.width - w) > 2) c.u.setSize({ width: w, height: 200 });
    }
  }

  onLive(change) {
    let reload = false;
    for (const msg of change.events || []) {
      if (msg.type === 'observation' && msg.patient_id === this.id) {
        this.news2Card?.onReading(msg.metric);
        const c = this.charts.get(msg.metric);
        const t = parseTime(msg.time);
        if (c && c.data && !this.window.zoomed) {
          if (t > this.window.to) {
            const span = this.window.to - this.window.from;
            this.window.to = Math.max(t, Date.now());
            this.window.from = this.window.to - span;
          }
          if (t >= this.window.from) {
            insertPoint(c.data, t, toDisplay(msg.metric, msg.value));
            c.dirty = true;
          }
        }
      } else if ((msg.type === 'alert' && msg.alert?.patient_id === this.id) || (msg.type === 'device_status' && msg.patient_id === this.id)) {
        reload = true;
      }
    }
    for (const c of this.charts.values()) {
      if (c.dirty) {
        c.dirty = false;
        c.u.setData(c.data);
        c.box.dataset.points = String(c.data[0].length);
        this.describeOutside(c);
        if (c.plot.hidden) {
          c.plot.hidden = false;
          c.note.textContent = '';
          c.u.setSize({ width: chartWidth(c.box), height: 200 });
        }
      }
    }
    if (change.patients === 'all') reload = true;
    if (reload) this.reloadRecord(300);
  }

  reloadRecord(delay) {
    clearTimeout(this.recordTimer);
    this.recordTimer = setTimeout(async () => {
      try {
        const rec = await get(`/patients/${seg(this.id)}/record`, { signal: this.abort.signal });
        this.record = rec;
        this.renderAlerts();
        this.renderDevices();
        this.timeline.set(rec.timeline || []);
      } catch (e) {
        if (e.name !== 'AbortError') announce(`The record could not be refreshed: ${e.message}`);
      }
    }, delay);
  }
}

function chartWidth(box) {
  return Math.max(260, Math.floor(box.clientWidth) - 18);
}

function insertPoint(data, t, v) {
  const xs = data[0];
  let i = xs.length;
  while (i > 0 && xs[i - 1] > t) i -= 1;
  if (i > 0 && xs[i - 1] === t) return;
  for (const [k, arr] of data.entries()) arr.splice(i, 0, k === 0 ? t : v);
}

/** Which points of a chart's data lie outside `range` (display units): indices per side. */
function outsidePoints(data, range) {
  const high = [], low = [];
  if (!range || !data) return { high, low };
  const past = (l, v, up) => (up ? (l.inclusive ? v >= l.value : v > l.value) : (l.inclusive ? v <= l.value : v < l.value));
  for (let i = 0; i < data[0].length; i += 1) {
    const max = data[3][i] ?? data[1][i], min = data[2][i] ?? data[1][i];
    if (range.above && max != null && past(range.above, max, true)) high.push(i);
    else if (range.below && min != null && past(range.below, min, false)) low.push(i);
  }
  return { high, low };
}

/** "2 of 48 points above the care plan's 180 mmHg (highest 208)", or '' when none is outside. */
function outsideText(metric, data, range) {
  const { high, low } = outsidePoints(data, range);
  if (!high.length && !low.length) return '';
  const n = data[0].length;
  const of = `of ${n} ${n === 1 ? 'point' : 'points'}`;
  const u = unitLabel(null, metric);
  const val = (v) => `${formatShown(metric, v)}${u ? ` ${u}` : ''}`;
  const parts = [];
  if (high.length) {
    const top = Math.max(...high.map((i) => data[3][i] ?? data[1][i]));
    parts.push(`▲ ${high.length} ${of} above the care plan’s ${val(range.above.value)} (highest ${val(top)})`);
  }
  if (low.length) {
    const bottom = Math.min(...low.map((i) => data[2][i] ?? data[1][i]));
    parts.push(`▼ ${low.length} ${of} below the care plan’s ${val(range.below.value)} (lowest ${val(bottom)})`);
  }
  return `Outside the range: ${parts.join('; ')}.`;
}

/** Marks points outside the range: ▲ over a high one, ▼ under a low one (shape, not colour alone). */
function drawOutside(u, range) {
  const { high, low } = outsidePoints(u.data, range);
  if (!high.length && !low.length) return;
  const { ctx } = u;
  const dpr = devicePixelRatio;
  const { left, top, width, height } = u.bbox;
  const s = 5 * dpr;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  const mark = (i, up) => {
    const x = Math.round(u.valToPos(u.data[0][i], 'x', true));
    const v = up ? (u.data[3][i] ?? u.data[1][i]) : (u.data[2][i] ?? u.data[1][i]);
    const y = Math.round(u.valToPos(v, 'y', true)) + (up ? -s - 2 * dpr : s + 2 * dpr);
    ctx.beginPath();
    ctx.moveTo(x - s, up ? y + s / 2 : y - s / 2);
    ctx.lineTo(x + s, up ? y + s / 2 : y - s / 2);
    ctx.lineTo(x, up ? y - s : y + s);
    ctx.closePath();
    ctx.fill();
  };
  ctx.fillStyle = '#8c1d17';
  for (const i of high) mark(i, true);
  ctx.fillStyle = '#174a7c';
  for (const i of low) mark(i, false);
  ctx.restore();
}

function yRange(lo, hi, thresholds) {
  let min = lo, max = hi;
  for (const t of thresholds) {
    if (min == null || t.value < min) min = t.value;
    if (max == null || t.value > max) max = t.value;
  }
  if (min == null || max == null) return [0, 1];
  const pad = Math.max((max - min) * 0.08, Math.abs(max) * 0.02, 0.5);
  return [min - pad, max + pad];
}

const SEV_COLOURS = { high: '#b3261e', medium: '#8a5300', low: '#1f5fa8' };

function drawThresholds(u, thresholds) {
  if (!thresholds.length) return;
  const { ctx } = u;
  const dpr = devicePixelRatio;
  const { left, top, width, height } = u.bbox;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  ctx.lineWidth = 1.5 * dpr;
  ctx.font = `600 ${12 * dpr}px system-ui, sans-serif`;
  const placed = []; // label boxes already drawn, so close lines do not print over each other
  const lines = thresholds.map((t) => ({ t, y: Math.round(u.valToPos(t.value, 'y', true)) })).sort((a, b) => a.y - b.y);
  for (const { t, y } of lines) {
    ctx.strokeStyle = SEV_COLOURS[t.severity] || '#444';
    ctx.fillStyle = ctx.strokeStyle;
    ctx.setLineDash([6 * dpr, 4 * dpr]);
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + width, y);
    ctx.stroke();
    // Above the line, or below it when the line is at the top of the plot; on the left, or
    // on the right when a label already sits there.
    const above = y - 16 * dpr > top;
    const ly = above ? y - 3 * dpr : y + 3 * dpr;
    const w = ctx.measureText(t.label).width;
    const h = 14 * dpr;
    const box = (x0) => ({ x0, x1: x0 + w, y0: above ? ly - h : ly, y1: above ? ly : ly + h });
    const hits = (b) => placed.some((p) => b.x0 < p.x1 && p.x0 < b.x1 && b.y0 < p.y1 && p.y0 < b.y1);
    let b = box(left + 6 * dpr);
    if (hits(b)) b = box(left + width - 6 * dpr - w);
    placed.push(b);
    ctx.fillStyle = 'rgba(255, 255, 255, 0.8)';
    ctx.fillRect(b.x0 - 2 * dpr, b.y0, w + 4 * dpr, h);
    ctx.fillStyle = ctx.strokeStyle;
    ctx.textAlign = 'left';
    ctx.textBaseline = above ? 'bottom' : 'top';
    ctx.fillText(t.label, b.x0, ly);
  }
  ctx.restore();
}

/** Client-side fallback for servers without /series: mean/min/max per bucket. */
function downsample(raw, points) {
  if (raw.length <= points) return raw.map(([t, v]) => [t, v, v, v]);
  const t0 = raw[0][0], t1 = raw[raw.length - 1][0];
  const step = Math.max(1, (t1 - t0) / points);
  const out = [];
  let cur = null;
  for (const [t, v] of raw) {
    const b = t0 + Math.floor((t - t0) / step) * step;
    if (!cur || cur.b !== b) {
      if (cur) out.push([cur.b, cur.sum / cur.n, cur.min, cur.max]);
      cur = { b, sum: 0, n: 0, min: Infinity, max: -Infinity };
    }
    cur.sum += v;
    cur.n += 1;
    cur.min = Math.min(cur.min, v);
    cur.max = Math.max(cur.max, v);
  }
  if (cur) out.push([cur.b, cur.sum / cur.n, cur.min, cur.max]);
  return out;
}
