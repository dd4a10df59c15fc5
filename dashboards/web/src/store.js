// What the dashboard knows, shared by the views: the panel (one entry per patient the user may
// see) and the unresolved alerts. Live messages are applied here in batches; views subscribe
// and get told which patients changed, so they touch only those tiles.

import { get } from './api.js';
import { parseTime, severityRank } from './util.js';

const SPARK_WINDOW_MS = 6 * 3600 * 1000;
const BUCKET_MS = 5 * 60 * 1000;

export class Store {
  constructor() {
    this.patients = new Map(); // id -> panel entry (+ local fields)
    this.alerts = new Map(); // id -> unresolved alert
    this.generatedAt = null;
    this.loaded = false;
    this.careTeams = null; // a clinician's care teams ([] when on none); null for an admin
    this.unseen = null; // admins: {patients, open_alerts} that no clinician can see
    this.listeners = new Set();
  }

  /** fn({patients: Set<id>|'all', alerts: bool, newAlerts: alert[], events: msg[]}) */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(change) {
    for (const fn of this.listeners) {
      try {
        fn(change);
      } catch (e) {
        console.error('store listener failed', e);
      }
    }
  }

  /** Loads the panel and the unresolved alerts (at start and after a reconnect). */
  async load() {
    // Loads can overlap (reconnect, resync message, timer): only the newest one is applied.
    const seq = (this.loadSeq = (this.loadSeq || 0) + 1);
    const [panel, open, acked] = await Promise.all([
      get('/panel'),
      get('/alerts?status=open'),
      get('/alerts?status=acknowledged'),
    ]);
    if (seq !== this.loadSeq) return;
    this.patients = new Map();
    for (const p of panel.patients || []) {
      p.latest = p.latest || {};
      p.spark = p.spark || {};
      p.devices = p.devices || [];
      // Patients on the default plan share its ranges, sent once.
      p.ranges = p.ranges || panel.default_ranges || {};
      this.patients.set(p.id, p);
    }
    this.alerts = new Map();
    for (const a of [...(open.alerts || []), ...(acked.alerts || [])]) this.alerts.set(a.id, a);
    for (const p of this.patients.values()) this.recomputeAlert(p);
    this.generatedAt = panel.generated_at;
    this.careTeams = panel.care_teams ?? null;
    this.unseen = panel.unseen ?? null;
    this.loaded = true;
    this.emit({ patients: 'all', alerts: true, newAlerts: [], events: [] });
  }

  /** The worst unresolved alert of a patient and how many there are. */
  recomputeAlert(p) {
    let worst = null;
    let n = 0;
    for (const a of this.alerts.values()) {
      if (a.patient_id !== p.id) continue;
      n += 1;
      if (!worst || alertOrder(a, worst) < 0) worst = a;
    }
    if (n === 0 && p.alert && !this.loaded) return; // before alerts are known, keep the panel's
    p.alert = worst;
    p.open_alerts = n;
  }

  patientName(id) {
    return this.patients.get(id)?.name ?? id;
  }

  /** Applies one batch of live messages. */
  apply(batch) {
    const changed = new Set();
    let alertsChanged = false;
    const newAlerts = [];
    const events = [];
    let unknown = false; // a patient the panel does not hold yet (new, or moved to our team)
    for (const msg of batch) {
      events.push(msg);
      if (msg.type === 'observation') {
        const p = this.patients.get(msg.patient_id);
        if (!p) {
          unknown = true;
          continue;
        }
        const t = parseTime(msg.time);
        const cur = p.latest[msg.metric];
        if (!cur || parseTime(cur.time) <= t) {
          p.latest[msg.metric] = { value: msg.value, unit: msg.unit, time: msg.time, device_id: msg.device_id };
        }
        addToSpark(p, msg.metric, t, msg.value);
        const d = p.devices.find((x) => x.id === msg.device_id);
        if (d && (!d.last_seen || parseTime(d.last_seen) < t)) {
          d.last_seen = msg.time;
          d.online = true;
        }
        (p._changedMetrics ||= new Set()).add(msg.metric);
        changed.add(p.id);
      } else if (msg.type === 'alert' && msg.alert) {
        const a = msg.alert;
        const before = this.alerts.get(a.id);
        if (a.status === 'resolved') this.alerts.delete(a.id);
        else this.alerts.set(a.id, a);
        alertsChanged = true;
        const loud = ['alert.opened', 'alert.raised', 'alert.escalated'].includes(msg.event);
        if (loud && (!before || severityRank(a.severity) > severityRank(before.severity) || msg.event === 'alert.escalated')) {
          newAlerts.push({ event: msg.event, alert: a });
        }
        const p = this.patients.get(a.patient_id);
        if (p) {
          this.recomputeAlert(p);
          p._alertChanged = true;
          changed.add(p.id);
        }
      } else if (msg.type === 'device_status') {
        const p = this.patients.get(msg.patient_id);
        if (!p) continue;
        let d = p.devices.find((x) => x.id === msg.device_id);
        if (!d) {
          d = { id: msg.device_id };
          p.devices.push(d);
        }
        for (const k of ['online', 'battery', 'last_seen']) if (k in msg) d[k] = msg[k];
        p._devicesChanged = true;
        changed.add(p.id);
      }
    }
    if (changed.size || alertsChanged || events.length) {
      this.emit({ patients: changed, alerts: alertsChanged, newAlerts, events, unknown });
    }
  }

  /** Replaces one alert after an ack/resolve from this browser (before the live echo arrives). */
  updateAlert(a) {
    if (a.status === 'resolved') this.alerts.delete(a.id);
    else this.alerts.set(a.id, a);
    const p = this.patients.get(a.patient_id);
    if (p) {
      this.recomputeAlert(p);
      p._alertChanged = true;
    }
    this.emit({ patients: new Set(p ? [p.id] : []), alerts: true, newAlerts: [], events: [] });
  }

  /** Unresolved alerts: open before acknowledged, then most severe, then newest. */
  sortedAlerts() {
    return [...this.alerts.values()].sort(alertOrder);
  }

  openCount() {
    let n = 0;
    for (const a of this.alerts.values()) if (a.status === 'open') n += 1;
    return n;
  }
}

export function alertOrder(a, b) {
  const sa = a.status === 'open' ? 0 : 1, sb = b.status === 'open' ? 0 : 1;
  return sa - sb
    || severityRank(b.severity) - severityRank(a.severity)
    || parseTime(b.opened_at) - parseTime(a.opened_at)
    || a.id.localeCompare(b.id);
}

/** Folds a live reading into the 5-minute mean buckets of the sparkline. */
function addToSpark(p, metric, t, value) {
  if (!Number.isFinite(t) || typeof value !== 'number') return;
  const pts = (p.spark[metric] ||= []);
  const counts = (p._sparkCounts ||= {});
  const bucket = Math.floor(t / BUCKET_MS) * BUCKET_MS;
  const last = pts[pts.length - 1];
  if (last && last[0] === bucket) {
    const n = (counts[metric] ?? 1) + 1;
    last[1] += (value - last[1]) / n;
    counts[metric] = n;
  } else if (!last || last[0] < bucket) {
    pts.push([bucket, value]);
    counts[metric] = 1;
    const cutoff = bucket - SPARK_WINDOW_MS;
    while (pts.length && pts[0][0] < cutoff) pts.shift();
  }
  (p._sparkChanged ||= new Set()).add(metric);
}
