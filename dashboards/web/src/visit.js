// The video visit page a join link opens (`/visit/{id}#<token>`): for patients and guests, on
// a phone or a laptop, with nothing to install and no account. The token is in the URL's
// fragment, which never reaches a server; the page takes it, drops it from the address bar (it
// stays in this tab's sessionStorage so a reload still works), checks it with
// `GET /api/v1/visits/{id}/join`, then: the camera and microphone check with a self view, the
// waiting room, the call, and the "left" and "ended" screens. The call itself is call.js.

import { get, seg } from './api.js';
import { Call, getBestMedia, getMedia, MediaProblem, stopStream } from './call.js';
import { Controls, QualityIndicator, Stage, displayName } from './callview.js';
import { clear, h } from './util.js';

const main = document.getElementById('main');
const announcer = document.getElementById('announcer');

const match = location.pathname.match(/^\/visit\/([^/]+)\/?$/);
const visitId = match ? decodeURIComponent(match[1]) : '';
const storeKey = `vigil-visit-token:${visitId}`;

const state = {
  token: '',
  role: null,
  stream: null,
  problem: null, // a MediaProblem when the camera or microphone is missing or refused
  call: null,
  stage: null,
  controls: null,
  quality: null,
  screen: null,
};

// For the browser tests: read-only handles, no token.
window.vigilVisit = {
  get screen() { return state.screen; },
  get marks() { return state.call?.marks ?? {}; },
  get participant() { return state.call?.me ?? null; },
  get callState() { return state.call?.state ?? null; },
};

function takeToken() {
  let token = location.hash.replace(/^#/, '');
  if (token) {
    // Off the address bar (and out of history) at once: screenshots, shoulder surfers.
    history.replaceState(null, '', location.pathname + location.search);
    try {
      sessionStorage.setItem(storeKey, token);
    } catch { /* private mode: a reload will need the link again */ }
  } else {
    try {
      token = sessionStorage.getItem(storeKey) || '';
    } catch {
      token = '';
    }
  }
  return token;
}

function forgetToken() {
  try {
    sessionStorage.removeItem(storeKey);
  } catch { /* nothing stored */ }
}

let sayTimer = null;
/** The polite status line for screen readers. */
function say(text) {
  clearTimeout(sayTimer);
  announcer.textContent = '';
  sayTimer = setTimeout(() => { announcer.textContent = text; }, 50);
}

/** Replaces the page's content with a screen and moves focus to its heading. */
function show(name, ...children) {
  state.screen = name;
  document.body.dataset.screen = name;
  const screen = h('section', { class: `vscreen vscreen-${name}`, id: `screen-${name}`, 'aria-labelledby': `${name}-title` }, ...children);
  clear(main).append(screen);
  const title = screen.querySelector(`#${name}-title`);
  if (title) {
    title.setAttribute('tabindex', '-1');
    // Screen readers and keyboards follow the change of screen (not on the first one: the page
    // has just loaded and reads from the top anyway).
    if (show.count++ > 0) title.focus({ preventScroll: true });
  }
  return screen;
}

show.count = 0;

async function boot() {
  state.token = takeToken();
  if (!visitId || !state.token) {
    refused('This link is not complete. Open the whole link from your message again, or ask your clinic for a new one.');
    return;
  }
  let info;
  try {
    info = await get(`/visits/${seg(visitId)}/join`, { quiet401: true, headers: { Authorization: `Visit ${state.token}` } });
  } catch (e) {
    if (e.status === 409) {
      ended(e.message);
      return;
    }
    if (e.status === 401 || e.status === 404 || e.status === 400) forgetToken();
    refused(e.message);
    return;
  }
  if (info.status === 'ended' || info.status === 'expired') {
    ended(info.status === 'expired' ? 'this visit has expired' : 'this visit has ended');
    return;
  }
  state.role = info.role;
  prejoin();
}

function refused(sentence) {
  stopMedia();
  document.title = 'Cannot join · Vigil';
  show('refused',
    h('h1', { id: 'refused-title' }, 'This visit link does not work'),
    h('p', { class: 'visit-error', id: 'visit-error', role: 'alert' }, capitalise(sentence)),
    h('p', {}, 'Ask your clinic for a new link. A link works for one visit, for a limited time, and only exactly as it was sent.'));
}

// --- the camera and microphone check ---

function prejoin() {
  document.title = 'Video visit · Vigil';
  const name = h('input', { id: 'your-name', name: 'name', autocomplete: 'name', maxlength: 60, autocapitalize: 'words', 'aria-describedby': 'your-name-hint' });
  const preview = h('video', { class: 'preview-video', id: 'preview', playsinline: true, autoplay: true, muted: true, 'aria-label': 'Your camera (self view)' });
  preview.muted = true;
  const previewOff = h('div', { class: 'vt-off', id: 'preview-off' }, 'Your camera is not on');
  const mediaStatus = h('p', { class: 'media-status', id: 'media-status', role: 'status', 'aria-live': 'polite' }, 'Asking for your camera and microphone… Your browser may ask you to allow them.');
  const help = h('div', { class: 'media-help', id: 'media-help', hidden: true });
  const joinBtn = h('button', { type: 'submit', class: 'btn btn-big', id: 'join', disabled: true }, 'Join the visit');
  const form = h('form', { class: 'prejoin-form', id: 'prejoin-form' },
    h('div', { class: 'field' },
      h('label', { for: 'your-name' }, 'Your name (optional)'),
      name,
      h('p', { class: 'hint', id: 'your-name-hint' }, `Shown to your ${state.role === 'guest' ? 'care team' : 'clinician'} in the call.`)),
    help, joinBtn);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    join(name.value.trim());
  });
  show('prejoin',
    h('h1', { id: 'prejoin-title' }, state.role === 'guest' ? 'Join the video visit' : 'Your video visit'),
    h('p', { class: 'lead' }, 'Check that you can see yourself below, then join. Your clinician will let you in.'),
    h('div', { class: 'prejoin' },
      h('figure', { class: 'preview' }, preview, previewOff, mediaStatus),
      form));

  const showHelp = (problem) => {
    clear(help).append(...mediaHelp(problem, {
      retry: () => acquire(),
      audioOnly: async () => {
        try {
          setStream(await getMedia({ audio: true, video: false }), null);
          join(name.value.trim());
        } catch (err) {
          showHelp(err instanceof MediaProblem ? err : new MediaProblem('other', err.message));
        }
      },
      noMedia: () => {
        setStream(new MediaStream(), null);
        join(name.value.trim());
      },
    }));
    help.hidden = false;
  };

  const acquire = async () => {
    help.hidden = true;
    joinBtn.disabled = true;
    mediaStatus.textContent = 'Asking for your camera and microphone… Your browser may ask you to allow them.';
    try {
      const { stream, problem } = await getBestMedia();
      if (state.screen !== 'prejoin') {
        stopStream(stream);
        return;
      }
      setStream(stream, problem);
      preview.srcObject = stream;
      previewOff.hidden = stream.getVideoTracks().length > 0;
      mediaStatus.textContent = problem ? problem.message : 'Your camera and microphone are ready.';
      joinBtn.disabled = false;
      if (problem) showHelp(problem);
    } catch (err) {
      if (state.screen !== 'prejoin') return;
      const problem = err instanceof MediaProblem ? err : new MediaProblem('other', err.message);
      state.problem = problem;
      mediaStatus.textContent = problem.message;
      previewOff.hidden = false;
      showHelp(problem);
    }
  };
  acquire();
}

function setStream(stream, problem) {
  if (state.stream && state.stream !== stream) stopStream(state.stream);
  state.stream = stream;
  state.problem = problem;
}

function stopMedia() {
  stopStream(state.stream);
  state.stream = null;
}

/** What to do when the camera or microphone cannot be used: steps for the usual browsers. */
function mediaHelp(problem, { retry, audioOnly, noMedia }) {
  const retryBtn = h('button', { type: 'button', class: 'btn btn-secondary', id: 'retry-media', onclick: retry }, 'Try again');
  const audioBtn = h('button', { type: 'button', class: 'btn btn-secondary', id: 'join-audio-only', onclick: audioOnly }, 'Join with audio only');
  const noneBtn = h('button', { type: 'button', class: 'btn-quiet', id: 'join-without-media', onclick: noMedia }, 'Join without camera or microphone');
  const steps = {
    denied: [
      h('p', {}, h('strong', {}, 'Your browser blocked the camera or microphone for this page.'), ' To allow them:'),
      h('ul', {},
        h('li', {}, h('strong', {}, 'Chrome or Edge on a computer: '), 'click the camera icon (or the padlock) at the left or right end of the address bar, choose “Always allow”, then press “Try again”.'),
        h('li', {}, h('strong', {}, 'iPhone or iPad (Safari): '), 'tap “aA” in the address bar, then “Website Settings”, and set Camera and Microphone to “Allow”. Then press “Try again”.'),
        h('li', {}, h('strong', {}, 'Android (Chrome): '), 'tap the icon at the left of the address, then “Permissions”, and allow Camera and Microphone.'),
        h('li', {}, h('strong', {}, 'Firefox: '), 'click the crossed-out camera icon in the address bar and clear the block.'),
        h('li', {}, 'If they are blocked for every website, allow them in the browser’s settings (Privacy, Site settings), or in the phone’s settings for the browser.')),
    ],
    missing: [h('p', {}, 'No camera or microphone was found. Plug one in or switch it on, then press “Try again”. Phones, tablets and most laptops have them built in.')],
    busy: [h('p', {}, 'Another app may be using your camera or microphone (another video call, for example). Close it, then press “Try again”.')],
    insecure: [h('p', {}, 'Your browser allows the camera only on a secure page (an address starting with https://). Ask your clinic for a new link.')],
    unsupported: [h('p', {}, 'This browser cannot make video calls. Open the link in a recent Chrome, Edge, Firefox or Safari.')],
    other: [h('p', {}, problem.message, ' Press “Try again”, or restart the browser.')],
  }[problem.kind] || [];
  const partial = state.stream && state.stream.getAudioTracks().length > 0;
  return [
    h('div', { class: 'help-box', role: 'alert' }, ...steps),
    h('div', { class: 'buttons' },
      retryBtn,
      partial || problem.kind === 'unsupported' || problem.kind === 'insecure' ? null : audioBtn,
      problem.kind === 'unsupported' ? null : noneBtn),
  ];
}

// --- the call ---

function join(name) {
  if (!state.stream) return;
  const call = new Call(visitId, { token: state.token, name, stream: state.stream });
  state.call = call;
  state.name = name;
  call.on('state', ({ state: s }) => onCallState(call, s));
  call.on('ended', ({ reason }) => ended(reason));
  call.on('error', ({ message, fatal }) => {
    if (fatal) return; // the state change shows it
    say(message);
    const line = document.getElementById('call-status');
    if (line) line.textContent = message;
  });
  call.on('roster', () => describeCall(call));
  call.join();
}

function onCallState(call, s) {
  if (call !== state.call) return;
  if (s === 'connecting') {
    show('connecting', h('h1', { id: 'connecting-title' }, 'Connecting to the visit…'), selfPreview());
  } else if (s === 'waiting') {
    document.title = 'Waiting · Video visit · Vigil';
    show('waiting',
      h('h1', { id: 'waiting-title' }, 'Waiting for your clinician to let you in'),
      h('p', { class: 'lead' }, 'Please stay on this page. The call starts by itself when your clinician lets you in.'),
      h('div', { class: 'waiting-spinner', 'aria-hidden': 'true' }),
      selfPreview(),
      h('div', { class: 'buttons' }, h('button', { type: 'button', class: 'btn-quiet', id: 'leave-waiting', onclick: () => call.leave() }, 'Leave')));
    say('You are in the waiting room. Your clinician will let you in.');
  } else if (s === 'in_call') {
    inCall(call);
  } else if (s === 'left') {
    left();
  } else if (s === 'lost' || s === 'failed') {
    const message = call.lastError || 'The connection to the visit was lost.';
    if (s === 'failed' && !call.pc && call.marks.hello === undefined) {
      refused(message);
      return;
    }
    tearDownCall();
    show('lost',
      h('h1', { id: 'lost-title' }, 'The call was interrupted'),
      h('p', { role: 'alert', id: 'visit-error' }, capitalise(message)),
      h('div', { class: 'buttons' }, h('button', { type: 'button', class: 'btn btn-big', id: 'rejoin', onclick: rejoin }, 'Join again')));
  }
}

function selfPreview() {
  const v = h('video', { class: 'preview-video', playsinline: true, autoplay: true, muted: true, 'aria-label': 'Your camera (self view)' });
  v.muted = true;
  v.srcObject = state.stream;
  const hasVideo = state.stream?.getVideoTracks().length > 0;
  return h('figure', { class: 'preview preview-small' }, v, hasVideo ? null : h('div', { class: 'vt-off' }, 'Your camera is not on'));
}

function inCall(call) {
  tearDownCallUi();
  document.title = 'In the call · Video visit · Vigil';
  state.stage = new Stage(call, { selfLabel: state.name ? `You (${state.name})` : 'You', emptyText: 'Connecting you to your clinician…' });
  state.quality = new QualityIndicator(call);
  state.controls = new Controls(call, {
    onLeave: () => call.leave(),
    onChange: () => state.stage.updateSelf(),
  });
  show('call',
    h('h1', { id: 'call-title', class: 'visually-hidden' }, 'In the video visit'),
    h('div', { class: 'call-bar' },
      h('p', { class: 'call-status', id: 'call-status' }, 'You are in the call.'),
      state.quality.el),
    state.stage.el,
    state.controls.el);
  describeCall(call);
  say('You are in the call.');
}

function describeCall(call) {
  const line = document.getElementById('call-status');
  if (!line || state.screen !== 'call') return;
  const others = call.participants.filter((p) => p.id !== call.me && p.state === 'in_call');
  line.textContent = others.length
    ? `In the call with ${others.map(displayName).join(', ')}.`
    : 'You are in the call. Waiting for the others to connect…';
}

function tearDownCallUi() {
  state.stage?.destroy();
  state.quality?.destroy();
  state.stage = state.quality = state.controls = null;
}

function tearDownCall() {
  tearDownCallUi();
  state.call?.close(true);
  stopMedia();
}

function left() {
  tearDownCall();
  document.title = 'You left · Video visit · Vigil';
  show('left',
    h('h1', { id: 'left-title' }, 'You have left the visit'),
    h('p', { class: 'lead' }, 'Your camera and microphone are off. If you left by mistake, you can join again while the visit goes on.'),
    h('div', { class: 'buttons' }, h('button', { type: 'button', class: 'btn btn-big', id: 'rejoin', onclick: rejoin }, 'Rejoin the visit')));
  say('You have left the visit.');
}

async function rejoin(ev) {
  const btn = ev?.currentTarget;
  if (btn) btn.disabled = true;
  try {
    const { stream } = await getBestMedia();
    setStream(stream, null);
  } catch {
    // Without the camera and microphone now: back to the check, which explains.
    prejoin();
    return;
  }
  join(state.name || '');
}

function ended(reason) {
  tearDownCall();
  forgetToken();
  document.title = 'Visit ended · Vigil';
  show('ended',
    h('h1', { id: 'ended-title' }, 'The visit has ended'),
    reason ? h('p', { id: 'ended-reason' }, capitalise(reason)) : null,
    h('p', { class: 'lead' }, 'Thank you. You can close this page now. Your camera and microphone are off.'));
  say('The visit has ended.');
}

function capitalise(s) {
  const t = String(s || '').trim();
  if (!t) return t;
  const c = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(c) ? c : `${c}.`;
}

window.addEventListener('pagehide', () => {
  // Closing the tab leaves the call at once instead of when the server notices.
  if (state.call && ['waiting', 'in_call', 'connecting'].includes(state.call.state)) state.call.leave();
});

boot();
