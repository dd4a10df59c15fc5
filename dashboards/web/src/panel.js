// The panel: one tile per patient, sickest first, updated in place from the live feed.
//
// Tiles are built once and kept in a Map by patient id. A batch of live messages touches only
// the tiles of the patients it names, and only the rows of the metrics that changed; the grid
// is re-ordered by moving the tiles that are out of place, never rebuilt.

import { drawSpark, forget, sparkCanvas } from './spark.js';
import {
  NO_TEAM, ageEl, announce, clear, deviceState, field, formatValue, h, metricLabel, metricShort,
  onNoTeam, outOfRange, parseTime, severityRank, sortMetrics, unitLabel,
} from './util.js';

/** The care-team filter's choice for the patients no clinician can see (admins); no team id has a colon. */
const UNSEEN = ':unseen';

const SEVERITY_TEXT = { high: 'High alert', medium: 'Medium alert', low: 'Low alert' };

export class PanelView {
  constructor(root, store) {
    this.root = root;
    this.store = store;
    this.tiles = new Map(); // id -> {el, rows: Map(metric -> row)}
    this.filter = { q: '', show: 'all', team: '' };
    this.unsub = store.subscribe((c) => this.onChange(c));
    this.render();
  }

  destroy() {
    this.unsub();
    for (const t of this.tiles.values()) for (const r of t.rows.values()) forget(r.canvas);
  }

  render() {
    clear(this.root);
    const search = h('input', { type: 'search', id: 'panel-search', autocomplete: 'off', placeholder: 'Name or id', value: this.filter.q });
    search.addEventListener('input', () => { this.filter.q = search.value.trim().toLowerCase(); this.applyFilter(true); });
    const show = h('select', { id: 'panel-show' },
      h('option', { value: 'all' }, 'All patients'),
      h('option', { value: 'alerts' }, 'With unresolved alerts'),
      h('option', { value: 'high' }, 'High alerts'),
      h('option', { value: 'stale' }, 'Devices offline or overdue'));
    show.value = this.filter.show;
    show.addEventListener('change', () => { this.filter.show = show.value; this.applyFilter(true); });
    this.teamSelect = h('select', { id: 'panel-team' }, h('option', { value: '' }, 'All care teams'));
    this.teamSelect.addEventListener('change', () => { this.filter.team = this.teamSelect.value; this.applyFilter(true); });
    this.summary = h('p', { class: 'summary', id: 'panel-summary' });
    this.grid = h('div', { class: 'tiles', id: 'tiles', role: 'list', 'aria-label': 'Patients, sickest first' });
    this.root.append(
      h('div', { class: 'view-head' },
        h('h1', {}, 'Patient panel'),
        h('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
          field('Search', search), field('Show', show), field('Care team', this.teamSelect))),
      this.summary,
      // Discharged patients leave the panel; their records stay readable there.
      h('p', { class: 'muted small' }, h('a', { href: '#/discharged', id: 'panel-discharged' }, 'Discharged patients')),
      this.grid,
    );
    if (this.store.loaded) this.onChange({ patients: 'all' });
    else this.summary.textContent = 'Loading the panel…';
  }

  onChange(change) {
    if (!change.patients) return;
    if (change.patients === 'all') {
      this.rebuild();
      return;
    }
    if (change.patients.size === 0) return;
    let reorder = false;
    // A highlight on each changed value helps the eye when a few change, not when hundreds do.
    this.flashing = change.patients.size <= 20;
    for (const id of change.patients) {
      const p = this.store.patients.get(id);
      const tile = this.tiles.get(id);
      if (!p || !tile) continue;
      const key = sortKey(p);
      if (key !== tile.key) reorder = true;
      this.updateTile(tile, p);
    }
    if (reorder) this.reorder();
    this.applyFilter(false, change.patients);
  }

  /**
   * After a (re)load of the panel: tiles are updated in place, added and removed — not rebuilt,
   * so a resync every few minutes neither flickers nor takes keyboard focus away.
   */
  rebuild() {
    const seen = new Set();
    const teams = new Set();
    for (const p of this.store.patients.values()) {
      seen.add(p.id);
      if (p.care_team) teams.add(p.care_team);
      const tile = this.tiles.get(p.id);
      if (tile) this.updateTile(tile, p, true);
      else this.tiles.set(p.id, this.buildTile(p));
    }
    for (const [id, t] of this.tiles) {
      if (seen.has(id)) continue;
      for (const r of t.rows.values()) forget(r.canvas);
      t.el.remove();
      this.tiles.delete(id);
    }
    this.reorder();
    const current = this.teamSelect.value;
    // Admins also get the patients no clinician can see (no team, no such team, or none of
    // the team's members a clinician).
    const unseen = this.store.unseen?.patients;
    this.unseenIds = new Set((unseen || []).map((p) => p.id));
    this.teamSelect.replaceChildren(h('option', { value: '' }, 'All care teams'),
      ...[...teams].sort().map((t) => h('option', { value: t }, t)),
      unseen ? h('option', { value: UNSEEN }, `Seen by no clinician (${unseen.length})`) : null);
    this.teamSelect.value = teams.has(current) || (current === UNSEEN && unseen) ? current : '';
    this.filter.team = this.teamSelect.value;
    this.applyFilter(false);
  }

  sorted() {
    return [...this.store.patients.values()].sort(comparePatients);
  }

  reorder() {
    const want = this.sorted().map((p) => this.tiles.get(p.id)).filter(Boolean);
    // Move only what is out of place; a tile that keeps its position is not touched.
    let cursor = this.grid.firstElementChild;
    for (const t of want) {
      if (t.el === cursor) {
        cursor = cursor.nextElementSibling;
      } else {
        this.grid.insertBefore(t.el, cursor);
      }
    }
  }

  buildTile(p) {
    return buildTile(p);
  }

  updateTile(tile, p, first = false) {
    updateTile(tile, p, first, this.flashing);
  }

  applyFilter(announceCount, only = null) {
    const { q, show, team } = this.filter;
    const test = (p) => {
      if (q && !(p.name || '').toLowerCase().includes(q) && !p.id.toLowerCase().includes(q)) return false;
      if (team === UNSEEN) {
        if (!this.unseenIds?.has(p.id)) return false;
      } else if (team && p.care_team !== team) return false;
      if (show === 'alerts' && !p.alert) return false;
      if (show === 'high' && p.alert?.severity !== 'high') return false;
      if (show === 'stale' && !p.stale && !p.devices.some((d) => deviceState(d).trouble)) return false;
      return true;
    };
    const ids = only || this.tiles.keys();
    for (const id of ids) {
      const p = this.store.patients.get(id);
      const t = this.tiles.get(id);
      if (p && t) t.el.hidden = !test(p);
    }
    let shown = 0;
    for (const t of this.tiles.values()) if (!t.el.hidden) shown += 1;
    const total = this.tiles.size;
    const text = total === 0
      ? (onNoTeam(this.store) ? NO_TEAM : 'No patients on your panel yet.')
      : `Showing ${shown} of ${total} patients${this.store.openCount() ? ` · ${this.store.openCount()} open alerts` : ''}.`;
    if (this.summary.textContent !== text) this.summary.textContent = text;
    if (announceCount) announce(text);
  }
}

/** One patient's tile: name, alert badge, a row per vital (value, unit, age, sparkline), devices. */
export function buildTile(p) {
  const nameId = `tile-${cssId(p.id)}-name`;
  const el = h('article', { class: 'tile', role: 'listitem', 'aria-labelledby': nameId, dataset: { patientId: p.id } });
  const link = h('a', { href: `#/patients/${encodeURIComponent(p.id)}`, id: nameId }, p.name || p.id);
  const badge = h('span', { class: 'badge' });
  const staleBadge = h('span', { class: 'badge stale', hidden: true }, 'Stale');
  const alertLine = h('p', { class: 'alert-line' });
  const vitals = h('dl', { class: 'vitals' });
  const foot = h('p', { class: 'tile-foot' });
  el.append(
    h('div', { class: 'tile-head' }, h('h2', {}, link), h('span', { class: 'badges' }, badge, staleBadge)),
    alertLine, vitals, foot,
  );
  const tile = { el, link, badge, staleBadge, alertLine, vitals, foot, rows: new Map(), key: '' };
  for (const m of sortMetrics(Object.keys(p.latest))) ensureRow(tile, p, m);
  updateTile(tile, p, true);
  return tile;
}

function ensureRow(tile, p, metric) {
  let row = tile.rows.get(metric);
  if (row) return row;
  const v = h('span', { class: 'v' });
  const u = h('span', { class: 'u' });
  // "High" or "Low" in words when the value is outside the care plan's range (not colour alone).
  const mark = h('span', { class: 'oor', hidden: true });
  const agebox = h('span', { class: 'agebox' });
  const canvas = sparkCanvas(`${metricLabel(metric)}, last 6 hours`);
  const el = h('div', { class: 'vital', dataset: { metric } },
    h('dt', { title: metricLabel(metric) }, h('abbr', { title: metricLabel(metric) }, metricShort(metric))),
    h('dd', {}, v, ' ', u, ' ', mark, agebox), h('dd', { class: 'sparkbox' }, canvas));
  row = { el, v, u, mark, agebox, canvas, time: null };
  tile.rows.set(metric, row);
  // Keep the rows in the clinical order.
  const order = sortMetrics([...tile.rows.keys()]);
  const next = order[order.indexOf(metric) + 1];
  tile.vitals.insertBefore(el, next ? tile.rows.get(next).el : null);
  return row;
}

/**
 * Brings a tile up to date with its patient: everything when `first`, else what the store marked
 * as changed (the marks are consumed). `flashing` highlights changed values.
 */
export function updateTile(tile, p, first = false, flashing = false) {
  const changedMetrics = first ? new Set(Object.keys(p.latest)) : (p._changedMetrics || new Set());
  for (const m of changedMetrics) {
    const latest = p.latest[m];
    if (!latest) continue;
    const row = ensureRow(tile, p, m);
    const text = formatValue(m, latest.value);
    if (row.v.textContent !== text) {
      row.v.textContent = text;
      if (!first && flashing) flash(row.v);
    }
    const unit = unitLabel(latest.unit, m);
    if (row.u.textContent !== unit) row.u.textContent = unit;
    const out = outOfRange(m, latest.value, p.ranges?.[m]);
    row.el.classList.toggle('out-high', out?.side === 'high');
    row.el.classList.toggle('out-low', out?.side === 'low');
    row.mark.hidden = !out;
    if (out) {
      row.mark.replaceChildren(h('span', { 'aria-hidden': 'true' }, out.side === 'high' ? '▲ ' : '▼ '), out.word,
        h('span', { class: 'visually-hidden' }, `, ${out.limit}`));
      row.mark.title = `Outside the care plan's range: ${out.limit}`;
    } else {
      row.mark.replaceChildren();
    }
    if (row.time !== latest.time) {
      row.time = latest.time;
      row.agebox.replaceChildren(ageEl(latest.time, true));
    }
  }
  const sparkMetrics = first ? Object.keys(p.spark) : [...(p._sparkChanged || [])];
  for (const m of sparkMetrics) {
    const row = tile.rows.get(m) || (p.spark[m]?.length ? ensureRow(tile, p, m) : null);
    if (row) drawSpark(row.canvas, p.spark[m], !first);
  }
  p._changedMetrics = null;
  p._sparkChanged = null;

  if (first && tile.link.textContent !== (p.name || p.id)) tile.link.textContent = p.name || p.id;
  if (first || p._alertChanged) {
    p._alertChanged = false;
    const a = p.alert;
    const sev = a ? a.severity : '';
    tile.el.classList.remove('sev-high', 'sev-medium', 'sev-low');
    if (sev) tile.el.classList.add(`sev-${sev}`);
    tile.el.dataset.severity = sev || 'none';
    tile.badge.hidden = !a;
    tile.badge.className = `badge sev-${sev}`;
    const extra = p.open_alerts > 1 ? ` (+${p.open_alerts - 1})` : '';
    tile.badge.textContent = a ? `${SEVERITY_TEXT[sev] || sev}${a.status === 'acknowledged' ? ', acknowledged' : ''}${extra}` : '';
    tile.alertLine.textContent = a ? a.message : '';
    tile.alertLine.hidden = !a;
  }
  tile.staleBadge.hidden = !p.stale;
  tile.el.classList.toggle('is-stale', !!p.stale);
  if (first || p._devicesChanged) {
    p._devicesChanged = false;
    tile.foot.replaceChildren(...deviceSummary(p.devices));
  }
  tile.key = sortKey(p);
}


/** Forgets a tile's sparkline canvases (before it is thrown away). */
export function forgetTile(tile) {
  for (const r of tile.rows.values()) forget(r.canvas);
}

function deviceSummary(devices) {
  if (!devices.length) return ['No devices'];
  const now = Date.now();
  const quiet = (d) => deviceState(d, now).trouble;
  const low = (d) => typeof d.battery === 'number' && d.battery <= 20;
  if (devices.length <= 2) {
    return devices.map((d) => h('span', { class: `dev${quiet(d) ? ' offline' : ''}${low(d) ? ' low' : ''}`, title: `${d.id} (${d.profile || 'device'})`, dataset: { state: deviceState(d, now).state } },
      d.profile || d.id,
      deviceState(d, now).state === 'connected' ? '' : ` · ${deviceState(d, now).text}`,
      typeof d.battery === 'number' ? ` · ${d.battery}%` : ''));
  }
  // Many devices: a summary line; the full list is in the patient view.
  const off = devices.filter(quiet).length;
  const batteries = devices.map((d) => d.battery).filter((b) => typeof b === 'number');
  const minBattery = batteries.length ? Math.min(...batteries) : null;
  const title = devices.map((d) => `${d.profile || d.id} (${deviceState(d, now).text})${typeof d.battery === 'number' ? ` ${d.battery}%` : ''}`).join(', ');
  return [
    h('span', { class: 'dev', title }, `${devices.length} devices`),
    off ? h('span', { class: 'dev offline' }, `${off} offline or overdue`) : null,
    minBattery !== null ? h('span', { class: `dev${minBattery <= 20 ? ' low' : ''}` }, `lowest battery ${minBattery}%`) : null,
  ].filter(Boolean);
}

const reducedMotion = matchMedia('(prefers-reduced-motion: reduce)');

function flash(el) {
  if (!el.animate || reducedMotion.matches) return;
  el.animate([{ backgroundColor: '#ffe58a' }, { backgroundColor: 'transparent' }], { duration: 1200, easing: 'ease-out' });
}

function cssId(id) {
  return id.replace(/[^A-Za-z0-9_-]/g, '_');
}

function sortKey(p) {
  return `${p.alert?.severity || ''}|${p.alert?.status || ''}|${p.open_alerts || 0}|${p.stale ? 1 : 0}`;
}

/** Sickest first: worst unresolved alert (open before acknowledged), more alerts, stale, then name. */
export function comparePatients(a, b) {
  const sa = severityRank(a.alert?.severity), sb = severityRank(b.alert?.severity);
  if (sa !== sb) return sb - sa;
  const oa = a.alert?.status === 'open' ? 1 : 0, ob = b.alert?.status === 'open' ? 1 : 0;
  if (oa !== ob) return ob - oa;
  if ((a.open_alerts || 0) !== (b.open_alerts || 0)) return (b.open_alerts || 0) - (a.open_alerts || 0);
  if (!!a.stale !== !!b.stale) return a.stale ? -1 : 1;
  if (a.alert && b.alert) {
    const d = parseTime(b.alert.opened_at) - parseTime(a.alert.opened_at);
    if (d) return d;
  }
  return (a.name || a.id).localeCompare(b.name || b.id) || a.id.localeCompare(b.id);
}
