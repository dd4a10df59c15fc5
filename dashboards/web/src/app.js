// Vigil's clinician dashboard: the shell. Restores the session, signs in and out, routes by the
// URL hash (#/panel, #/worklist, #/billing, #/population, #/inbox, #/patients/{id}[/summary|/agp], #/visits/{id}, #/admin, #/audit, #/tokens,
// #/on-call[/{team}], #/me, #/ack/{token}, #/devices, #/discharged — every page is served by "/"; the hash survives sign-in, so a notification's
// link opens its page once the user has signed in), owns the live feed and the store, and makes a new high alert impossible to miss.

import { ApiError, del, get, post, setCsrfToken, setUnauthorizedHandler } from './api.js';
import { AckView } from './ack.js';
import { AdminView } from './admin.js';
import { AgpView } from './agp.js';
import { AuditView } from './audit.js';
import { BillingView } from './billing.js';
import { DevicesView } from './devices.js';
import { DischargedView } from './discharged.js';
import { InboxView } from './inbox.js';
import { Live } from './live.js';
import { MyDetailsView } from './mydetails.js';
import { OnCallView } from './oncall.js';
import { PanelView } from './panel.js';
import { PatientView } from './patient.js';
import { PopulationView } from './population.js';
import { Store } from './store.js';
import { SummaryView } from './summary.js';
import { TokensView } from './tokens.js';
import { VisitView } from './visitview.js';
import { WorklistView } from './worklist.js';
import { announce, clear, field, h, messageLine, refreshAges, setUnits } from './util.js';

const main = document.getElementById('main');
const topbar = document.getElementById('topbar');
const banner = document.getElementById('banner');
const coverage = document.getElementById('coverage');
const conn = document.getElementById('conn');
const connText = document.getElementById('conn-text');
const inboxCount = document.getElementById('inbox-count');

const state = { user: null, view: null, store: null, live: null, resyncTimer: null, bannerAlerts: new Map() };

// For the browser tests and for curious clinicians: read-only handles, no secrets.
window.vigil = {
  get user() { return state.user; },
  get store() { return state.store; },
  get liveState() { return conn.dataset.state; },
  dropLive: () => state.live?.drop(),
  visit: null, // the open video visit view (visitview.js sets it)
};

setUnauthorizedHandler(() => {
  if (state.user) signedOut('Your session ended. Sign in again.');
});

async function boot() {
  try {
    const s = await get('/session', { quiet401: true });
    signedIn(s);
  } catch (e) {
    showSignIn(e instanceof ApiError && e.status === 401 ? null : e.message);
  }
}

function showSignIn(message) {
  destroyView();
  topbar.hidden = true;
  banner.hidden = true;
  renderCoverage();
  document.title = 'Sign in · Vigil';
  const msg = messageLine();
  if (message) msg.error(message);
  const user = h('input', { id: 'signin-user', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const pass = h('input', { id: 'signin-pass', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const btn = h('button', { type: 'submit', class: 'btn btn-wide', id: 'signin-submit' }, 'Sign in');
  const form = h('form', { class: 'signin', id: 'signin-form', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }), 'Vigil'),
    h('p', { class: 'muted' }, 'Remote monitoring for your patients. Sign in with your Vigil account.'),
    location.hash.startsWith('#/ack/') ? h('p', { id: 'signin-ack' }, 'Sign in to acknowledge the alert you were notified about. You come back to it after signing in.') : null,
    field('Username', user), field('Password', pass), btn, msg.el);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    btn.disabled = true;
    msg.clear();
    try {
      const s = await post('/session', { username: user.value.trim(), password: pass.value }, { quiet401: true });
      pass.value = '';
      signedIn(s);
    } catch (err) {
      if (err.status === 401) msg.error('The username or password is not right.');
      else if (err.status === 429) {
        const secs = Number(err.retryAfter);
        msg.error(`Too many failed sign-ins. Try again ${Number.isFinite(secs) && secs > 0 ? `in ${secs} s` : 'later'}.`);
      } else msg.error(err.message);
      pass.select();
      pass.focus();
    } finally {
      btn.disabled = false;
    }
  });
  clear(main).append(form);
  user.focus();
}

/** Where a user lands: a clinician on the worklist (who needs action first), an admin on the
 * panel. */
function landing() {
  return state.user?.role === 'clinician' ? '#/worklist' : '#/panel';
}

/**
 * A temporary password (an admin's reset) must be replaced before anything else: the API
 * refuses everything but this. The new session it answers with signs the user in.
 */
function showChangePassword(s, message = null) {
  destroyView();
  topbar.hidden = true;
  setCsrfToken(s.csrf_token);
  document.title = 'Choose a new password · Vigil';
  const msg = messageLine();
  if (message) msg.error(message);
  const current = h('input', { id: 'cp-current', type: 'password', autocomplete: 'current-password', required: true });
  const next = h('input', { id: 'cp-new', type: 'password', autocomplete: 'new-password', required: true, minlength: 12 });
  const again = h('input', { id: 'cp-again', type: 'password', autocomplete: 'new-password', required: true });
  const btn = h('button', { type: 'submit', class: 'btn btn-wide', id: 'cp-submit' }, 'Save my new password');
  const form = h('form', { class: 'signin', id: 'change-password-form', 'aria-labelledby': 'cp-title', novalidate: true },
    h('h1', { id: 'cp-title' }, 'Choose a new password'),
    h('p', { class: 'muted' }, `Signed in as ${s.user.name} with a temporary password from an administrator. Choose your own to go on.`),
    field('Temporary password', current), field('New password', next, '12 characters or more; not your username; not a common password.'),
    field('New password again', again), btn,
    h('button', { type: 'button', class: 'btn-quiet', id: 'cp-signout', onclick: () => del('/session').catch(() => {}).finally(() => signedOut(null)) }, 'Sign out'),
    msg.el);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    msg.clear();
    for (const el of [current, next, again]) el.removeAttribute('aria-invalid');
    const bad = !current.value ? current : next.value.length < 12 ? next : next.value !== again.value ? again : null;
    if (bad) {
      bad.setAttribute('aria-invalid', 'true');
      msg.error(bad === current ? 'Enter the temporary password.' : bad === next ? 'The new password needs 12 characters or more.' : 'The two new passwords differ.');
      bad.focus();
      return;
    }
    btn.disabled = true;
    try {
      const fresh = await post('/session/password', { current_password: current.value, new_password: next.value }, { quiet401: true });
      current.value = next.value = again.value = '';
      announce('Your new password is saved.');
      signedIn(fresh);
    } catch (err) {
      const target = err.message.startsWith('current_password') ? current : next;
      target.setAttribute('aria-invalid', 'true');
      msg.error(err.message);
      target.focus();
    } finally {
      btn.disabled = false;
    }
  });
  clear(main).append(form);
  current.focus();
}

function signedIn(s) {
  if (s.user.must_change_password) {
    showChangePassword(s);
    return;
  }
  state.user = s.user;
  setCsrfToken(s.csrf_token);
  setUnits(s.units);
  topbar.hidden = false;
  document.getElementById('who-name').textContent = `${s.user.name} (${s.user.role})`;
  document.getElementById('nav-admin').hidden = s.user.role !== 'admin';
  document.getElementById('nav-audit').hidden = s.user.role !== 'admin';
  state.store = new Store();
  state.store.subscribe(onStoreChange);
  state.live = new Live({
    onState: setConnState,
    onResync: () => resync(),
    checkSession: async () => {
      try {
        await get('/session', { quiet401: true });
        return true;
      } catch (e) {
        if (e.status === 401) {
          signedOut('Your session ended. Sign in again.');
          return false;
        }
        return true;
      }
    },
  });
  state.live.subscribe((batch) => {
    // The server says it had to drop events for this connection: reload what is shown.
    if (batch.some((m) => m.type === 'resync')) resync();
    state.store.apply(batch);
  });
  state.live.start();
  resync();
  if (!location.hash || location.hash === '#' || location.hash === '#/') location.replace(landing());
  route();
}

async function resync() {
  if (!state.store) return;
  clearTimeout(state.resyncTimer);
  try {
    await state.store.load();
  } catch (e) {
    if (e.status === 401) return;
    announce(`The panel could not be loaded: ${e.message}`);
    state.resyncTimer = setTimeout(resync, 5000);
    return;
  }
  // Stale flags and ages come from the server: refresh them now and then.
  state.resyncTimer = setTimeout(resync, 120000);
}

function signedOut(message) {
  state.live?.stop();
  state.live = null;
  state.user = null;
  state.store = null;
  clearTimeout(state.resyncTimer);
  setCsrfToken(null);
  state.bannerAlerts.clear();
  showSignIn(message);
}

document.getElementById('sign-out').addEventListener('click', async () => {
  try {
    await del('/session', { quiet401: true });
  } catch (e) {
    if (e.status !== 401) {
      announce(`Signing out failed: ${e.message}`);
      return;
    }
  }
  signedOut(null);
  // The next user lands on their own first page.
  history.replaceState(null, '', location.pathname);
});

function setConnState(s, info = {}) {
  conn.dataset.state = s;
  connText.textContent = {
    connecting: 'Connecting…',
    live: 'Live',
    reconnecting: `Reconnecting…${info.attempt > 1 ? ` (attempt ${info.attempt})` : ''}`,
    stopped: 'Offline',
  }[s] || s;
  conn.title = s === 'reconnecting' && info.reason ? `Live updates paused: ${info.reason}` : '';
}

let lastUnknownResync = 0;

function onStoreChange(change) {
  if (change.unknown && Date.now() - lastUnknownResync > 10000) {
    lastUnknownResync = Date.now();
    resync();
  }
  const n = state.store.openCount();
  inboxCount.textContent = String(n);
  inboxCount.setAttribute('aria-label', `${n} open alert${n === 1 ? '' : 's'}`);
  inboxCount.dataset.n = String(n);
  document.title = document.title.replace(/^\(\d+\) /, '');
  if (n) document.title = `(${n}) ${document.title}`;
  for (const { event, alert } of change.newAlerts || []) {
    if (alert.severity === 'high') raiseBanner(alert, event);
    else announce(`${alert.severity} alert for ${state.store.patientName(alert.patient_id)}: ${alert.message}`);
  }
  // An alert acknowledged or resolved leaves the banner.
  for (const id of [...state.bannerAlerts.keys()]) {
    const a = state.store.alerts.get(id);
    if (!a || a.status !== 'open') state.bannerAlerts.delete(id);
  }
  renderBanner();
  if (change.patients === 'all') renderCoverage();
}

const UNSEEN_REASON = {
  no_clinician: (p) => `care team ${p.care_team} has no clinician`,
  no_such_team: (p) => `care team ${p.care_team} does not exist`,
  no_team: () => 'on no care team',
};

/**
 * Admins: the patients no clinician can see, from the panel's `unseen` (their alerts reach only
 * admins), under the top bar on every page until fixed. Redrawn only when the list changes, so
 * screen readers are not told again at every resync.
 */
function renderCoverage() {
  const unseen = state.user?.role === 'admin' ? state.store?.unseen : null;
  const list = unseen?.patients || [];
  const key = JSON.stringify(list);
  if (coverage.dataset.key === key) return;
  coverage.dataset.key = key;
  if (!list.length) {
    coverage.hidden = true;
    clear(coverage);
    return;
  }
  const n = list.length;
  const open = unseen.open_alerts || 0;
  const plural = (k, one, many) => `${k} ${k === 1 ? one : many}`;
  const shown = list.slice(0, 5);
  clear(coverage).append(
    h('span', { class: 'banner-icon', 'aria-hidden': 'true' }, '!'),
    h('div', {},
      h('h2', { id: 'coverage-title' }, `No clinician can see ${plural(n, 'patient', 'patients')}${open ? ` with ${plural(open, 'open alert', 'open alerts')}` : ''}`),
      h('p', {}, 'Only admins see them and their alerts. Move them to a care team with clinicians, or add clinicians to their team.'),
      h('ul', { id: 'coverage-list' }, shown.map((p) => h('li', { dataset: { patientId: p.id, reason: p.reason } },
        h('a', { href: `#/patients/${encodeURIComponent(p.id)}` }, p.name || p.id), ` (${p.id}): `,
        (UNSEEN_REASON[p.reason] || (() => p.reason))(p),
        p.open_alerts ? `, ${plural(p.open_alerts, 'open alert', 'open alerts')}` : ''))),
      n > shown.length ? h('p', {}, `and ${n - shown.length} more (the panel's care-team filter "Seen by no clinician" shows them all).`) : null),
    h('a', { class: 'btn btn-secondary', href: '#/admin' }, 'Open Administration'),
  );
  coverage.hidden = false;
}

function raiseBanner(alert, event) {
  state.bannerAlerts.set(alert.id, { alert, event });
  renderBanner();
  beep();
}

function renderBanner() {
  const items = [...state.bannerAlerts.values()];
  if (!items.length) {
    banner.hidden = true;
    clear(banner);
    return;
  }
  const newest = items[items.length - 1];
  const name = state.store?.patientName(newest.alert.patient_id) ?? newest.alert.patient_id;
  const what = newest.event === 'alert.escalated' ? 'High alert, not yet acknowledged' : 'New high alert';
  clear(banner).append(
    h('span', { class: 'banner-icon', 'aria-hidden': 'true' }, '!'),
    h('p', {}, h('strong', {}, `${what}: ${name}. `), newest.alert.message,
      items.length > 1 ? ` (${items.length} high alerts waiting)` : ''),
    h('a', { class: 'btn btn-invert', href: '#/inbox' }, 'Open the inbox'),
    h('button', { type: 'button', class: 'btn-quiet btn-invert', onclick: () => { state.bannerAlerts.clear(); renderBanner(); } }, 'Dismiss'),
  );
  banner.hidden = false;
}

// Sound: browsers allow audio only after the user has interacted with the page; the context is
// created on the first interaction and reused. Where it is not allowed, the banner still shows.
let audio = null;
function unlockAudio() {
  if (!audio && (window.AudioContext || window.webkitAudioContext)) {
    try {
      audio = new (window.AudioContext || window.webkitAudioContext)();
    } catch {
      audio = null;
    }
  }
  if (audio && audio.state === 'suspended') audio.resume().catch(() => {});
}
window.addEventListener('pointerdown', unlockAudio, { capture: true });
window.addEventListener('keydown', unlockAudio, { capture: true });

function beep() {
  if (!audio || audio.state !== 'running') return;
  const t = audio.currentTime;
  for (const [i, f] of [880, 660, 880].entries()) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = f;
    osc.type = 'sine';
    gain.gain.setValueAtTime(0.0001, t + i * 0.22);
    gain.gain.exponentialRampToValueAtTime(0.3, t + i * 0.22 + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.22 + 0.2);
    osc.connect(gain).connect(audio.destination);
    osc.start(t + i * 0.22);
    osc.stop(t + i * 0.22 + 0.21);
  }
}

function destroyView() {
  if (state.view) {
    state.view.destroy();
    state.view = null;
  }
}

function route() {
  if (!state.user) return;
  const hash = location.hash.replace(/^#/, '') || landing().slice(1);
  // A query after the path (#/billing?month=2026-11) is the view's to read.
  const parts = hash.split('?')[0].split('/').filter(Boolean);
  destroyView();
  for (const a of document.querySelectorAll('[data-route]')) {
    if (a.dataset.route === parts[0]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const container = h('div', { class: `view view-${parts[0] || 'panel'}` });
  clear(main).append(container);
  const ctx = { user: state.user, onChanged: () => resync() };
  switch (parts[0]) {
    case 'inbox':
      document.title = 'Alerts · Vigil';
      state.view = new InboxView(container, state.store, state.user);
      break;
    case 'patients':
      if (parts[1] && parts[2] === 'summary') {
        document.title = 'Patient summary · Vigil';
        state.view = new SummaryView(container, decodeURIComponent(parts[1]));
        break;
      }
      if (parts[1] && parts[2] === 'agp') {
        document.title = 'Glucose profile · Vigil';
        state.view = new AgpView(container, decodeURIComponent(parts[1]));
        break;
      }
      if (parts[1]) {
        state.view = new PatientView(container, state.store, decodeURIComponent(parts[1]), ctx);
        break;
      }
      location.replace('#/panel');
      return;
    case 'visits':
      if (parts[1]) {
        document.title = 'Video visit · Vigil';
        state.view = new VisitView(container, state.store, decodeURIComponent(parts[1]), ctx);
        break;
      }
      location.replace('#/panel');
      return;
    case 'billing':
      document.title = 'Billing · Vigil';
      state.view = new BillingView(container, state.store, parts[1] ? decodeURIComponent(parts[1]) : null);
      break;
    case 'population':
      document.title = 'Population · Vigil';
      state.view = new PopulationView(container);
      break;
    case 'worklist':
      document.title = 'Worklist · Vigil';
      state.view = new WorklistView(container, state.store);
      break;
    case 'devices':
      state.view = new DevicesView(container);
      break;
    case 'discharged':
      state.view = new DischargedView(container);
      break;
    case 'admin':
      document.title = 'Admin · Vigil';
      state.view = new AdminView(container, state.store, ctx);
      break;
    case 'audit':
      document.title = 'Audit trail · Vigil';
      state.view = new AuditView(container, state.store, ctx);
      break;
    case 'on-call':
      document.title = 'On call · Vigil';
      state.view = new OnCallView(container, ctx, parts[1] ? decodeURIComponent(parts[1]) : null);
      break;
    case 'me':
      document.title = 'My details · Vigil';
      state.view = new MyDetailsView(container, ctx);
      break;
    case 'ack':
      if (parts[1]) {
        document.title = 'Acknowledge an alert · Vigil';
        state.view = new AckView(container, state.store, decodeURIComponent(parts.slice(1).join('/')));
        break;
      }
      location.replace('#/inbox');
      return;
    case 'tokens':
      document.title = 'API tokens · Vigil';
      state.view = new TokensView(container, state.store, ctx);
      break;
    case 'panel':
    default:
      document.title = 'Panel · Vigil';
      state.view = new PanelView(container, state.store);
  }
  onStoreChange({});
  // Move focus to the new page for keyboard and screen-reader users (not on first load).
  if (route.count++ > 0) main.focus({ preventScroll: false });
}
route.count = 0;

window.addEventListener('hashchange', route);
setInterval(() => refreshAges(main), 15000);
boot();
