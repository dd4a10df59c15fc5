// The parts of a video visit's screen both pages show — the patient's page (visit.js) and the
// clinician's view in the dashboard (visitview.js): the videos (the others, each in its own
// <video> with their name, role and mute state, and a self view), the microphone, camera and
// leave buttons, and the connection-quality indicator.

import { h } from './util.js';

export const ROLE_TEXT = { patient: 'Patient', clinician: 'Clinician', guest: 'Guest' };

export function displayName(p) {
  if (!p) return 'Someone';
  return p.name ? `${p.name} (${ROLE_TEXT[p.role] || p.role})` : (ROLE_TEXT[p.role] || p.role || 'Someone');
}

/**
 * The video area. `call` is a Call; the stage follows its remote streams and roster.
 * `selfLabel` names the self view.
 */
export class Stage {
  constructor(call, { selfLabel = 'You', emptyText = 'Nobody else is in the call yet.' } = {}) {
    this.call = call;
    this.tiles = new Map(); // participant id -> {el, video, name, state, soundBtn}
    this.grid = h('div', { class: 'vt-grid', id: 'remote-videos', 'aria-label': 'The others in the call', role: 'list' });
    this.empty = h('p', { class: 'vt-empty', id: 'stage-empty' }, emptyText);
    this.selfVideo = h('video', { class: 'vt-video', id: 'self-video', playsinline: true, autoplay: true, muted: true, 'aria-label': 'Your camera (self view)' });
    this.selfVideo.muted = true;
    this.selfOff = h('div', { class: 'vt-off', 'aria-hidden': 'true' }, 'Camera off');
    this.self = h('figure', { class: 'vt vt-self', id: 'self-view' },
      this.selfVideo, this.selfOff, h('figcaption', {}, h('span', { class: 'vt-name' }, selfLabel)));
    this.el = h('div', { class: 'stage' }, this.grid, this.empty, this.self);
    this.unsubs = [
      call.on('remote', ({ participant, stream }) => this.showRemote(participant, stream)),
      call.on('remote-gone', ({ participant }) => this.removeRemote(participant)),
      call.on('roster', () => this.updateLabels()),
    ];
    this.setSelf(call.stream);
  }

  destroy() {
    for (const u of this.unsubs) u();
    for (const id of [...this.tiles.keys()]) this.removeRemote(id);
    this.selfVideo.srcObject = null;
  }

  setSelf(stream) {
    this.selfVideo.srcObject = stream || null;
    this.updateSelf();
  }

  updateSelf() {
    const on = this.call.videoEnabled;
    this.self.dataset.video = on ? 'on' : 'off';
    this.selfOff.hidden = on;
  }

  showRemote(id, stream) {
    let t = this.tiles.get(id);
    if (!t) {
      const video = h('video', { class: 'vt-video remote', playsinline: true, autoplay: true, dataset: { participant: id } });
      const name = h('span', { class: 'vt-name' });
      const state = h('span', { class: 'vt-state' });
      const off = h('div', { class: 'vt-off', 'aria-hidden': 'true', hidden: true }, 'Camera off');
      const soundBtn = h('button', { type: 'button', class: 'btn vt-sound', hidden: true }, 'Tap to turn on sound');
      const el = h('figure', { class: 'vt', role: 'listitem', dataset: { participant: id } },
        video, off, soundBtn, h('figcaption', {}, name, state));
      t = { el, video, name, state, off, soundBtn, stream: null };
      soundBtn.addEventListener('click', () => {
        video.muted = false;
        video.play().then(() => { soundBtn.hidden = true; }).catch(() => {});
      });
      this.tiles.set(id, t);
      this.grid.append(el);
      watchFirstFrame(video, () => this.call.mark(`first_frame_${id}`));
    }
    if (t.stream !== stream || t.video.srcObject !== stream) {
      t.stream = stream;
      t.video.srcObject = stream;
      // Autoplay with sound needs a user gesture in some browsers (Safari, a reloaded page):
      // then play muted and offer a button for the sound.
      t.video.play().catch(() => {
        t.video.muted = true;
        t.soundBtn.hidden = false;
        t.video.play().catch(() => {});
      });
    }
    this.updateLabels();
  }

  removeRemote(id) {
    const t = this.tiles.get(id);
    if (!t) return;
    t.video.srcObject = null;
    t.el.remove();
    this.tiles.delete(id);
    this.updateLabels();
  }

  updateLabels() {
    const roster = new Map(this.call.participants.map((p) => [p.id, p]));
    for (const [id, t] of this.tiles) {
      const p = roster.get(id);
      const name = displayName(p);
      if (t.name.textContent !== name) t.name.textContent = name;
      // In the roster `true` means muted / camera off (as in `mute`).
      const audioOff = p?.audio === true;
      const videoOff = p?.video === true;
      t.el.dataset.audio = audioOff ? 'off' : 'on';
      t.el.dataset.video = videoOff ? 'off' : 'on';
      t.el.dataset.role = p?.role || '';
      const state = [audioOff ? 'microphone off' : '', videoOff ? 'camera off' : ''].filter(Boolean).join(', ');
      t.state.textContent = state ? ` · ${state}` : '';
      t.off.hidden = !videoOff;
      t.video.setAttribute('aria-label', `${name}${state ? `, ${state}` : ''}`);
    }
    this.empty.hidden = this.tiles.size > 0;
    this.grid.dataset.count = String(this.tiles.size);
  }
}

/** Calls `fn` once, when the first frame of `video` is shown (or decoded, where that is all we can tell). */
function watchFirstFrame(video, fn) {
  if (typeof video.requestVideoFrameCallback === 'function') {
    video.requestVideoFrameCallback(() => fn());
    return;
  }
  const poll = () => {
    if (video.videoWidth > 0) fn();
    else setTimeout(poll, 20);
  };
  poll();
}

/**
 * Microphone, camera and leave buttons. `onLeave` is called on "Leave"; the buttons say what
 * they will do and `data-on` says what is on now.
 */
export class Controls {
  constructor(call, { onLeave, onChange = () => {}, leaveText = 'Leave' } = {}) {
    this.call = call;
    this.onChange = onChange;
    this.mic = h('button', { type: 'button', class: 'ctl', id: 'mic-toggle', dataset: { kind: 'mic' }, onclick: () => this.toggle('audio') });
    this.cam = h('button', { type: 'button', class: 'ctl', id: 'cam-toggle', dataset: { kind: 'cam' }, onclick: () => this.toggle('video') });
    this.leaveBtn = h('button', { type: 'button', class: 'ctl ctl-leave', id: 'leave', dataset: { kind: 'leave' }, 'aria-label': 'Leave the call', onclick: () => onLeave() },
      h('span', { class: 'ctl-icon', 'aria-hidden': 'true' }), h('span', {}, leaveText));
    this.el = h('div', { class: 'controls', role: 'group', 'aria-label': 'Call controls' }, this.mic, this.cam, this.leaveBtn);
    this.update();
  }

  toggle(kind) {
    const on = kind === 'audio' ? this.call.audioEnabled : this.call.videoEnabled;
    this.call.setEnabled(kind, !on);
    this.update();
    this.onChange(kind, !on);
  }

  update() {
    const set = (btn, has, on, what) => {
      btn.disabled = !has;
      btn.dataset.on = String(has && on);
      // Short words (they fit three buttons across a phone); the label says it in full.
      btn.replaceChildren(
        h('span', { class: 'ctl-icon', 'aria-hidden': 'true' }),
        h('span', {}, !has ? `No ${what}` : on ? labels[0] : labels[1]));
      btn.setAttribute('aria-label', !has ? `There is no ${what} in this call` : on ? `Turn your ${what} off` : `Turn your ${what} on`);
      btn.title = !has ? `There is no ${what} in this call` : on ? `Your ${what} is on` : `Your ${what} is off`;
    };
    let labels = ['Mute', 'Unmute'];
    set(this.mic, this.call.hasAudio, this.call.audioEnabled, 'microphone');
    labels = ['Stop video', 'Start video'];
    set(this.cam, this.call.hasVideo, this.call.videoEnabled, 'camera');
  }
}

const LEVEL_TEXT = { good: 'good', fair: 'fair', poor: 'poor', unknown: 'checking…' };

/** "Connection: good / fair / poor", the numbers in the tooltip; said aloud only when the level changes. */
export class QualityIndicator {
  constructor(call) {
    this.dot = h('span', { class: 'q-dot', 'aria-hidden': 'true' });
    this.text = h('span', { class: 'q-text' }, 'Connection: checking…');
    this.el = h('div', { class: 'quality', id: 'quality', role: 'status', 'aria-live': 'polite', dataset: { level: 'unknown' }, title: 'Measuring the connection…' }, this.dot, this.text);
    this.unsub = call.on('quality', (q) => this.show(q));
    this.unsubState = call.on('state', ({ state }) => { if (state !== 'in_call') this.show({ level: 'unknown', text: '' }); });
  }

  show(q) {
    this.el.title = q.text ? `Connection ${LEVEL_TEXT[q.level]}: ${q.text}` : 'Measuring the connection…';
    this.el.dataset.loss = q.loss == null ? '' : q.loss.toFixed(1);
    this.el.dataset.rtt = q.rtt == null ? '' : String(Math.round(q.rtt));
    this.el.dataset.kbps = q.kbps == null ? '' : String(Math.round(q.kbps));
    if (this.el.dataset.level === q.level) return;
    this.el.dataset.level = q.level;
    this.text.textContent = `Connection: ${LEVEL_TEXT[q.level]}`;
  }

  destroy() {
    this.unsub();
    this.unsubState();
  }
}
