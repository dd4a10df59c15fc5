// The clinician's side of a video visit, in the dashboard (`#/visits/{id}`): the patient's join
// link to send (and a link for a guest), the waiting room with an Admit button per person, the
// call (the others' videos, a self view, microphone, camera, leave, end for everyone), the
// connection quality, and the patient's live vitals beside the video — the panel's tile, fed by
// the same store and live feed, so readings taken during the call appear as they arrive.
//
// The clinician joins the signalling socket with the session cookie (`{"type":"join"}`) and is
// admitted at once. Leaving the page leaves the call (the visit goes on until someone ends it).

import { ApiError, get, post, seg } from './api.js';
import { Call, getBestMedia, MediaProblem, stopStream } from './call.js';
import { Controls, QualityIndicator, Stage, displayName } from './callview.js';
import { buildTile, forgetTile, updateTile } from './panel.js';
import { announce, clear, copyText, formatTime, h, messageLine } from './util.js';

const linksKey = (id) => `vigil-visit-links:${id}`;

/**
 * Keeps a new visit's patient link for its view (this tab only): the API gives it once, when the
 * visit is created.
 */
export function rememberVisit(v) {
  try {
    sessionStorage.setItem(linksKey(v.id), JSON.stringify({ patient_join_url: v.patient_join_url }));
  } catch { /* private mode: the view says the link is not available */ }
}

function rememberedLinks(id) {
  try {
    return JSON.parse(sessionStorage.getItem(linksKey(id)) || 'null');
  } catch {
    return null;
  }
}

export class VisitView {
  constructor(root, store, id, opts = {}) {
    this.root = root;
    this.store = store;
    this.id = id;
    this.user = opts.user;
    this.abort = new AbortController();
    this.call = null;
    this.stream = null;
    this.tile = null;
    this.waitingSeen = new Set();
    this.unsubStore = store.subscribe((c) => this.onStore(c));
    window.vigil.visit = this;
    this.load();
  }

  destroy() {
    this.destroyed = true;
    this.abort.abort();
    this.unsubStore();
    clearTimeout(this.endTimer);
    if (this.call && ['waiting', 'in_call', 'connecting'].includes(this.call.state)) this.call.leave();
    this.call?.close(true);
    this.stage?.destroy();
    this.quality?.destroy();
    stopStream(this.stream);
    if (this.tile) forgetTile(this.tile);
    if (window.vigil.visit === this) window.vigil.visit = null;
  }

  /** For the browser tests: the call's step times. */
  get marks() {
    return this.call?.marks ?? {};
  }

  async load() {
    clear(this.root).append(h('p', { class: 'loading' }, 'Loading the visit…'));
    let v;
    try {
      v = await get(`/visits/${seg(this.id)}`, { signal: this.abort.signal });
    } catch (e) {
      if (e.name === 'AbortError') return;
      const gone = e instanceof ApiError && (e.status === 404 || e.status === 403 || e.status === 400);
      document.title = 'Visit not found · Vigil';
      clear(this.root).append(
        h('div', { class: 'view-head' }, h('h1', { id: 'visit-not-found' }, gone ? 'Visit not found' : 'The visit could not be loaded')),
        h('p', { role: 'alert' }, e.message),
        h('p', {}, h('a', { href: '#/panel' }, 'Back to the panel')));
      return;
    }
    if (this.destroyed) return;
    this.visit = v;
    this.render();
    if (v.status === 'ended' || v.status === 'expired') this.showEnded(v.status === 'expired' ? 'The visit’s links have expired.' : null);
    else this.startCall();
  }

  patientName() {
    return this.store.patients.get(this.visit.patient_id)?.name || this.visit.patient_id;
  }

  render() {
    const v = this.visit;
    const name = this.patientName();
    document.title = `Visit: ${name} · Vigil`;
    this.title = h('h1', { id: 'visit-title' }, `Video visit with ${name}`);
    this.statusBadge = h('span', { class: 'badge', id: 'visit-status' }, statusText(v.status));
    this.callStatus = h('p', { class: 'call-status', id: 'call-status', 'aria-live': 'polite' }, 'Starting your camera and microphone…');
    this.mediaNote = h('div', { class: 'media-help', id: 'media-help', hidden: true });
    this.callBox = h('div', { class: 'call-box' });
    this.endMsg = messageLine();
    this.endBtn = h('button', { type: 'button', class: 'btn btn-danger', id: 'end-visit', onclick: () => this.askEnd() }, 'End visit');
    this.endConfirm = h('div', { class: 'end-confirm', id: 'end-confirm', hidden: true, role: 'group', 'aria-labelledby': 'end-confirm-q' },
      h('p', { id: 'end-confirm-q' }, 'End the visit for everyone? The links stop working.'),
      h('button', { type: 'button', class: 'btn btn-danger', id: 'end-confirm-yes', onclick: () => this.endVisit() }, 'End the visit for everyone'),
      h('button', { type: 'button', class: 'btn-quiet', id: 'end-confirm-no', onclick: () => this.cancelEnd() }, 'Cancel'));
    this.waitingList = h('ul', { class: 'plain people', id: 'waiting-room' });
    this.rosterList = h('ul', { class: 'plain people', id: 'roster' });
    this.vitalsBox = h('div', { class: 'visit-vitals', id: 'visit-vitals' });
    this.quality = null;

    clear(this.root).append(
      h('div', { class: 'view-head' },
        h('div', {}, this.title,
          h('p', { class: 'muted small' }, this.statusBadge, ' Started ', formatTime(v.created_at), ' by ', v.created_by || '?',
            ' · links work until ', formatTime(v.expires_at), ' · ',
            h('a', { href: `#/patients/${encodeURIComponent(v.patient_id)}`, target: '_blank', rel: 'noopener' }, 'Patient record (new tab)'))),
        h('div', { class: 'head-actions' }, this.endBtn, this.endConfirm, this.endMsg.el)),
      h('div', { class: 'visit-layout' },
        h('section', { class: 'card call-card', 'aria-labelledby': 'visit-call-title' },
          h('h2', { id: 'visit-call-title', class: 'visually-hidden' }, 'Call'),
          this.mediaNote, this.callBox),
        h('aside', { class: 'visit-side' },
          h('section', { class: 'card', 'aria-labelledby': 'visit-waiting-title' },
            h('h2', { id: 'visit-waiting-title' }, 'Waiting room'), this.waitingList,
            h('h2', { id: 'visit-roster-title', class: 'section-title' }, 'In the call'), this.rosterList),
          h('section', { class: 'card', 'aria-labelledby': 'visit-vitals-title' },
            h('h2', { id: 'visit-vitals-title' }, 'Live vitals'), this.vitalsBox),
          this.linksCard())),
    );
    this.renderPeople();
    this.renderVitals();
  }

  linksCard() {
    const links = rememberedLinks(this.id);
    const kids = [h('h2', { id: 'visit-links-title' }, 'Invite')];
    if (links?.patient_join_url) {
      kids.push(copyLine('Patient’s link', 'visit-patient-link', links.patient_join_url,
        'Send it to the patient by text or e-mail. It opens the visit in their browser; nothing to install.'));
    } else {
      // Another tab or window (the link is kept in this tab's sessionStorage): the server signs
      // the patient's link again on request (the same link: same visit, role and expiry).
      const box = h('div', { id: 'patient-link-box' });
      const pmsg = messageLine();
      const pbtn = h('button', { type: 'button', class: 'btn btn-secondary', id: 'patient-link-btn' }, 'Show the patient’s link');
      pbtn.addEventListener('click', async () => {
        pbtn.disabled = true;
        pmsg.clear();
        try {
          const r = await post(`/visits/${seg(this.id)}/links`, { role: 'patient' });
          clear(box).append(copyLine('Patient’s link', 'visit-patient-link', r.join_url,
            'Send it to the patient by text or e-mail. It opens the visit in their browser; nothing to install.'));
          pbtn.hidden = true;
        } catch (e) {
          pmsg.error(e.message);
        } finally {
          pbtn.disabled = false;
        }
      });
      kids.push(h('div', { class: 'buttons' }, pbtn), pmsg.el, box);
    }
    const guestBox = h('div', { id: 'guest-link-box' });
    const msg = messageLine();
    const btn = h('button', { type: 'button', class: 'btn btn-secondary', id: 'guest-link-btn' }, 'Link for a guest');
    btn.addEventListener('click', async () => {
      btn.disabled = true;
      msg.clear();
      try {
        const r = await post(`/visits/${seg(this.id)}/links`, { role: 'guest' });
        clear(guestBox).append(copyLine('Guest’s link', 'visit-guest-link', r.join_url,
          `For an interpreter or a family member${r.expires_at ? `; works until ${formatTime(r.expires_at)}` : ''}.`));
      } catch (e) {
        msg.error(e.message);
      } finally {
        btn.disabled = false;
      }
    });
    kids.push(h('div', { class: 'buttons' }, btn), msg.el, guestBox);
    return h('section', { class: 'card', 'aria-labelledby': 'visit-links-title' }, kids);
  }

  // --- the live vitals (the panel's tile) ---

  renderVitals() {
    const p = this.store.patients.get(this.visit?.patient_id);
    if (!p) {
      if (!this.tile) clear(this.vitalsBox).append(h('p', { class: 'muted' }, this.store.loaded ? 'No vitals for this patient on your panel.' : 'Loading…'));
      return;
    }
    if (!this.tile) {
      this.tile = buildTile(p);
      // The tile's name opens the record in another tab: following it here would end the call.
      this.tile.link.target = '_blank';
      this.tile.link.rel = 'noopener';
      clear(this.vitalsBox).append(h('div', { role: 'list', 'aria-label': 'The patient’s latest vitals' }, this.tile.el));
    } else {
      updateTile(this.tile, p, true);
    }
    if (this.title && this.title.textContent !== `Video visit with ${p.name || p.id}`) this.title.textContent = `Video visit with ${p.name || p.id}`;
  }

  onStore(change) {
    if (!this.visit || !this.vitalsBox) return;
    if (change.patients === 'all') {
      this.renderVitals();
    } else if (change.patients?.has?.(this.visit.patient_id)) {
      const p = this.store.patients.get(this.visit.patient_id);
      if (p && this.tile) updateTile(this.tile, p, false, true);
      else this.renderVitals();
    }
  }

  // --- the call ---

  async startCall() {
    let stream;
    try {
      const { stream: s, problem } = await getBestMedia();
      stream = s;
      if (problem) this.showMediaNote(problem);
    } catch (e) {
      // Join anyway: the clinician still sees and hears the patient, and can admit them.
      stream = new MediaStream();
      this.showMediaNote(e instanceof MediaProblem ? e : new MediaProblem('other', e.message));
    }
    if (this.destroyed) {
      stopStream(stream);
      return;
    }
    this.stream = stream;
    this.join();
  }

  showMediaNote(problem) {
    const what = {
      denied: 'The browser blocked your camera or microphone: click the camera icon in the address bar, allow them, and join again (Leave, then Rejoin).',
      missing: 'No camera or microphone was found.',
      busy: 'Your camera or microphone is in use by another app.',
      insecure: 'Camera and microphone need the dashboard on https.',
      unsupported: 'This browser cannot make video calls.',
      other: problem.message,
    }[problem.kind] || problem.message;
    clear(this.mediaNote).append(h('p', { role: 'alert' }, h('strong', {}, 'The patient may not see or hear you. '), what));
    this.mediaNote.hidden = false;
  }

  join() {
    const call = new Call(this.id, { stream: this.stream });
    this.call = call;
    call.on('state', ({ state }) => this.onCallState(call, state));
    call.on('hello', ({ visit }) => {
      if (visit?.status) this.setStatus(visit.status);
    });
    call.on('roster', () => this.renderPeople());
    call.on('ended', ({ reason }) => this.showEnded(reason));
    call.on('error', ({ message, fatal }) => {
      if (!fatal) this.callStatus.textContent = message;
    });
    call.join();
  }

  onCallState(call, state) {
    if (call !== this.call || this.destroyed) return;
    if (state === 'connecting') {
      this.callStatus.textContent = 'Connecting to the visit…';
      clear(this.callBox).append(this.callStatus);
    } else if (state === 'in_call') {
      this.stage?.destroy();
      this.quality?.destroy();
      this.stage = new Stage(call, { selfLabel: 'You', emptyText: 'Nobody else is in the call yet. Admit the patient from the waiting room when they arrive.' });
      this.quality = new QualityIndicator(call);
      this.controls = new Controls(call, { onLeave: () => call.leave(), onChange: () => this.stage.updateSelf(), leaveText: 'Leave' });
      this.callStatus.textContent = 'You are in the call.';
      clear(this.callBox).append(
        h('div', { class: 'call-bar' }, this.callStatus, this.quality.el),
        this.stage.el, this.controls.el);
      this.setStatus('in_progress');
    } else if (state === 'waiting') {
      // Clinicians are admitted at once; a clinician link would wait like a patient.
      this.callStatus.textContent = 'Waiting to be admitted…';
    } else if (state === 'left' || state === 'lost' || state === 'failed') {
      this.stage?.destroy();
      this.quality?.destroy();
      this.stage = this.quality = this.controls = null;
      stopStream(this.stream);
      this.stream = null;
      const text = state === 'left'
        ? 'You have left the call. The visit goes on: the others stay connected until you end it.'
        : call.lastError || 'The connection to the visit was lost.';
      const rejoin = h('button', { type: 'button', class: 'btn', id: 'rejoin', onclick: () => this.rejoin(rejoin) }, 'Rejoin the call');
      this.callStatus.textContent = text;
      clear(this.callBox).append(h('div', { class: 'call-left', id: 'call-left' }, this.callStatus, h('div', { class: 'buttons' }, rejoin)));
      this.renderPeople();
      if (state !== 'left') announce(text);
    }
  }

  async rejoin(btn) {
    btn.disabled = true;
    this.mediaNote.hidden = true;
    await this.startCall();
  }

  setStatus(status) {
    if (this.statusBadge) {
      this.statusBadge.textContent = statusText(status);
      this.statusBadge.dataset.status = status;
    }
  }

  renderPeople() {
    if (!this.waitingList) return;
    const people = this.call?.participants || [];
    const waiting = people.filter((p) => p.state === 'waiting');
    const inCall = people.filter((p) => p.state === 'in_call');
    const admitting = this.call?.state === 'in_call';
    clear(this.waitingList).append(...(waiting.length
      ? waiting.map((p) => h('li', { class: 'person', dataset: { participant: p.id, role: p.role } },
        h('span', { class: 'person-name' }, displayName(p)),
        h('button', {
          type: 'button', class: 'btn admit', dataset: { participant: p.id }, disabled: !admitting,
          'aria-label': `Admit ${displayName(p)}`, onclick: (e) => this.admit(p, e.currentTarget),
        }, 'Admit')))
      : [h('li', { class: 'muted empty' }, 'Nobody is waiting.')]));
    clear(this.rosterList).append(...(inCall.length
      ? inCall.map((p) => {
        const me = p.id === this.call?.me;
        // `true` in the roster: muted / camera off.
        const audio = p.audio === true ? 'microphone off' : 'microphone on';
        const video = p.video === true ? 'camera off' : 'camera on';
        return h('li', { class: 'person', dataset: { participant: p.id, role: p.role, audio: p.audio === true ? 'off' : 'on', video: p.video === true ? 'off' : 'on' } },
          h('span', { class: 'person-name' }, me ? `You${p.name ? ` (${p.name})` : ''}` : displayName(p)),
          ' ', h('span', { class: 'person-state muted small' }, `${audio}, ${video}`));
      })
      : [h('li', { class: 'muted empty' }, 'Nobody is in the call.')]));
    // Say it when someone new starts waiting.
    for (const p of waiting) {
      if (!this.waitingSeen.has(p.id)) {
        this.waitingSeen.add(p.id);
        announce(`${displayName(p)} is waiting to be admitted.`);
      }
    }
    for (const id of [...this.waitingSeen]) if (!waiting.some((p) => p.id === id)) this.waitingSeen.delete(id);
    const n = waiting.length;
    this.root.dataset.waiting = String(n);
  }

  admit(p, btn) {
    if (!this.call) return;
    btn.disabled = true;
    if (!this.call.admit(p.id)) {
      btn.disabled = false;
      this.callStatus.textContent = 'Not connected to the visit: rejoin the call to admit.';
    }
  }

  askEnd() {
    this.endBtn.hidden = true;
    this.endConfirm.hidden = false;
    this.endConfirm.querySelector('#end-confirm-yes').focus();
  }

  cancelEnd() {
    this.endConfirm.hidden = true;
    this.endBtn.hidden = false;
    this.endBtn.focus();
  }

  async endVisit() {
    this.endMsg.clear();
    for (const b of this.endConfirm.querySelectorAll('button')) b.disabled = true;
    // Through the call when connected (everyone is told at once); the server's `ended` closes
    // it. Otherwise, or when no `ended` comes, through the API.
    if (this.call?.endVisit()) {
      this.endTimer = setTimeout(() => this.endByApi(), 5000);
    } else {
      await this.endByApi();
    }
  }

  async endByApi() {
    try {
      const v = await post(`/visits/${seg(this.id)}/end`);
      this.showEnded(null, v);
    } catch (e) {
      if (this.destroyed) return;
      for (const b of this.endConfirm.querySelectorAll('button')) b.disabled = false;
      this.endMsg.error(e.message);
    }
  }

  showEnded(reason, v = null) {
    if (this.destroyed) return;
    clearTimeout(this.endTimer);
    this.call?.close(true);
    this.stage?.destroy();
    this.quality?.destroy();
    this.stage = this.quality = this.controls = null;
    stopStream(this.stream);
    this.stream = null;
    this.setStatus('ended');
    this.endBtn.hidden = true;
    this.endConfirm.hidden = true;
    const duration = v?.duration_s ?? null;
    clear(this.callBox).append(h('div', { class: 'call-ended', id: 'call-ended' },
      h('h2', { id: 'call-ended-title', tabindex: '-1' }, 'The visit has ended'),
      reason ? h('p', {}, reason) : null,
      duration !== null ? h('p', {}, `Duration: ${Math.floor(duration / 60)} min ${duration % 60} s.`) : null,
      h('p', {}, 'It is recorded on ', h('a', { href: `#/patients/${encodeURIComponent(this.visit.patient_id)}` }, 'the patient’s timeline'), '.')));
    clear(this.waitingList).append(h('li', { class: 'muted empty' }, 'The visit has ended.'));
    clear(this.rosterList);
    this.callBox.querySelector('#call-ended-title').focus();
    announce('The visit has ended.');
  }
}

function statusText(s) {
  return { waiting: 'Waiting', in_progress: 'In progress', ended: 'Ended', expired: 'Expired' }[s] || s;
}

/** A read-only link with a Copy button. */
function copyLine(label, id, url, hint) {
  const input = h('input', { id, readonly: true, value: url, class: 'code', 'aria-describedby': `${id}-hint` });
  const status = h('span', { class: 'copy-status', 'aria-live': 'polite' });
  const btn = h('button', { type: 'button', class: 'btn btn-secondary', id: `${id}-copy` }, 'Copy');
  btn.addEventListener('click', async () => {
    const ok = await copyText(url, input);
    status.textContent = ok ? 'Copied.' : 'Select the link and copy it.';
  });
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    h('div', { class: 'copy-line' }, input, btn, status),
    h('p', { class: 'hint', id: `${id}-hint` }, hint));
}
