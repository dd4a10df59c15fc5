// One participant's side of a video visit: the camera and microphone, the signalling WebSocket
// (`/api/v1/visits/{id}/signal`, see docs/video.md) and the one RTCPeerConnection to Vigil's
// relay. Used by the patient's page (visit.js, a join link) and the clinician's view in the
// dashboard (visitview.js, the session cookie). No DOM here but what the caller is handed.
//
// The protocol in short: `join` → `hello` (ice servers) → `waiting` (patients and guests, until a
// clinician admits them) → `admitted` → we send our one `offer` and trickle candidates; every
// later negotiation is an `offer` from the server that we answer. Muting disables the local
// track and tells the others (`mute`); we never renegotiate.

const QUALITY_EVERY_MS = 2000;

/** Why the camera or microphone could not be used, in a form the pages can explain. */
export class MediaProblem extends Error {
  constructor(kind, message, cause = null) {
    super(message);
    this.kind = kind; // 'denied' | 'missing' | 'busy' | 'insecure' | 'unsupported' | 'other'
    this.cause = cause;
  }
}

function mediaProblem(e) {
  const name = e?.name || '';
  if (name === 'NotAllowedError' || name === 'SecurityError' || name === 'PermissionDeniedError') {
    return new MediaProblem('denied', 'The browser was not allowed to use the camera or microphone.', e);
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError' || name === 'DevicesNotFoundError') {
    return new MediaProblem('missing', 'No camera or microphone was found.', e);
  }
  if (name === 'NotReadableError' || name === 'TrackStartError' || name === 'AbortError') {
    return new MediaProblem('busy', 'The camera or microphone is in use by another app, or could not be started.', e);
  }
  return new MediaProblem('other', `The camera or microphone could not be started (${name || e?.message || 'unknown error'}).`, e);
}

/**
 * Asks for the camera and microphone. `want` is {audio, video}. Resolves to a MediaStream;
 * rejects with a MediaProblem.
 */
export async function getMedia(want = { audio: true, video: true }) {
  if (!window.isSecureContext) {
    throw new MediaProblem('insecure', 'Camera and microphone work only on a secure (https) page.');
  }
  if (!navigator.mediaDevices?.getUserMedia || typeof RTCPeerConnection !== 'function') {
    throw new MediaProblem('unsupported', 'This browser cannot make video calls.');
  }
  if (!want.audio && !want.video) return new MediaStream();
  const constraints = {
    audio: want.audio ? { echoCancellation: true, noiseSuppression: true, autoGainControl: true } : false,
    video: want.video ? { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24, max: 30 }, facingMode: 'user' } : false,
  };
  try {
    return await navigator.mediaDevices.getUserMedia(constraints);
  } catch (e) {
    throw mediaProblem(e);
  }
}

/**
 * The camera and microphone, falling back to what there is: both, else the microphone alone
 * when there is no camera (or it is busy). Resolves to {stream, problem}: `problem` says what is
 * missing when the stream is partial; rejects (MediaProblem) when nothing could be had.
 */
export async function getBestMedia() {
  try {
    return { stream: await getMedia({ audio: true, video: true }), problem: null };
  } catch (e) {
    if (!(e instanceof MediaProblem) || (e.kind !== 'missing' && e.kind !== 'busy')) throw e;
    try {
      const stream = await getMedia({ audio: true, video: false });
      return { stream, problem: new MediaProblem(e.kind, e.kind === 'missing'
        ? 'No camera was found: you will be heard but not seen.'
        : 'The camera is in use by another app: you will be heard but not seen.', e.cause) };
    } catch {
      throw e;
    }
  }
}

export function stopStream(stream) {
  for (const t of stream?.getTracks() || []) t.stop();
}

/** `participant-p1` → `p1` (the relay names each participant's MediaStream so). */
export function participantOfStream(id) {
  return id.startsWith('participant-') ? id.slice('participant-'.length) : id;
}

/**
 * A call. Events (subscribe with on(type, fn)):
 * - state: {state} — 'connecting' | 'waiting' | 'in_call' | 'left' | 'ended' | 'failed' | 'lost'
 * - hello: {participant, role, visit}
 * - roster: {participants}
 * - remote: {participant, stream} (a participant's stream appeared or changed its tracks)
 * - remote-gone: {participant}
 * - quality: {level, loss, rtt, kbps, text}
 * - error: {message, fatal, code}
 * - ended: {reason}
 */
export class Call {
  /**
   * @param visitId the visit
   * @param opts.token the join link's token (the patient's page), or none (the dashboard: cookie)
   * @param opts.name the display name to send (optional)
   * @param opts.stream the local MediaStream (camera and/or microphone; may have no tracks)
   */
  constructor(visitId, { token = null, name = '', stream = null } = {}) {
    this.visitId = visitId;
    this.token = token;
    this.name = name;
    this.stream = stream;
    this.listeners = new Map();
    this.ws = null;
    this.pc = null;
    this.state = 'idle';
    this.me = null; // my participant id
    this.role = null;
    this.visit = null;
    this.iceServers = [];
    this.participants = [];
    this.remotes = new Map(); // participant id -> MediaStream
    this.remoteSince = new Map(); // participant id -> when their stream arrived (performance.now())
    this.chain = Promise.resolve();
    this.pendingCandidates = [];
    this.lastError = null;
    this.qualityTimer = null;
    this.prevStats = null;
    // Times (ms since the epoch) of the steps, for the tests and for curious people.
    this.marks = {};
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  emit(type, detail = {}) {
    for (const fn of this.listeners.get(type) || []) {
      try {
        fn(detail);
      } catch (e) {
        console.error(`call listener for ${type} failed`, e);
      }
    }
  }

  mark(what) {
    if (!(what in this.marks)) this.marks[what] = Date.now();
  }

  setState(state, extra = {}) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', { state, ...extra });
  }

  get audioEnabled() {
    return this.stream?.getAudioTracks().some((t) => t.enabled && t.readyState === 'live') ?? false;
  }

  get videoEnabled() {
    return this.stream?.getVideoTracks().some((t) => t.enabled && t.readyState === 'live') ?? false;
  }

  get hasAudio() {
    return (this.stream?.getAudioTracks().length ?? 0) > 0;
  }

  get hasVideo() {
    return (this.stream?.getVideoTracks().length ?? 0) > 0;
  }

  /** Opens the signalling socket and joins (into the waiting room, or straight into the call). */
  join() {
    this.close(false);
    this.marks = {};
    this.lastError = null;
    this.participants = [];
    this.setState('connecting');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/api/v1/visits/${encodeURIComponent(this.visitId)}/signal`);
    this.ws = ws;
    ws.onopen = () => {
      const msg = { type: 'join' };
      if (this.token) msg.token = this.token;
      if (this.name) msg.name = this.name;
      this.send(msg);
      this.mark('join_sent');
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onSocketClosed(ev);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  onMessage(msg) {
    switch (msg.type) {
      case 'hello':
        this.me = msg.participant;
        this.role = msg.role;
        this.visit = msg.visit || null;
        this.iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers : [];
        this.mark('hello');
        this.emit('hello', { participant: msg.participant, role: msg.role, visit: msg.visit });
        break;
      case 'waiting':
        this.mark('waiting');
        this.setState('waiting');
        break;
      case 'admitted':
        this.mark('admitted');
        this.startPeer();
        break;
      case 'answer':
        this.mark('answer');
        this.queue(async () => {
          await this.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
          await this.flushCandidates();
        }, 'the answer');
        break;
      case 'offer':
        this.queue(async () => {
          await this.pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
          await this.flushCandidates();
          const answer = await this.pc.createAnswer();
          await this.pc.setLocalDescription(answer);
          this.send({ type: 'answer', sdp: this.pc.localDescription.sdp });
          this.pruneRemotes();
        }, 'a renegotiation');
        break;
      case 'candidate':
        if (!msg.candidate) break;
        this.queue(async () => {
          if (!this.pc.remoteDescription) this.pendingCandidates.push(msg.candidate);
          else await this.pc.addIceCandidate(msg.candidate);
        }, 'a relay candidate');
        break;
      case 'participants':
        this.participants = Array.isArray(msg.participants) ? msg.participants : [];
        this.emit('roster', { participants: this.participants });
        this.pruneRemotes();
        break;
      case 'ended':
        this.mark('ended');
        this.finish('ended');
        this.emit('ended', { reason: msg.reason || '' });
        break;
      case 'error':
        this.lastError = msg.message || 'The visit refused a request.';
        this.emit('error', { message: this.lastError, fatal: false });
        break;
      default:
        break;
    }
  }

  /** Runs negotiation steps one after another (messages arrive faster than they complete). */
  queue(fn, what) {
    this.chain = this.chain.then(async () => {
      if (!this.pc || this.pc.signalingState === 'closed') return;
      try {
        await fn();
      } catch (e) {
        this.emit('error', { message: `The call could not process ${what}: ${e.message}`, fatal: false });
      }
    });
  }

  async flushCandidates() {
    const list = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const c of list) await this.pc.addIceCandidate(c);
  }

  startPeer() {
    this.closePeer();
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pc = pc;
    this.remotes = new Map();
    this.remoteSince = new Map();
    this.pendingCandidates = [];
    this.chain = Promise.resolve();
    pc.onicecandidate = (ev) => {
      this.send({ type: 'candidate', candidate: ev.candidate ? ev.candidate.toJSON() : null });
    };
    pc.ontrack = (ev) => {
      const stream = ev.streams[0];
      if (!stream) return;
      this.mark('first_track');
      const id = participantOfStream(stream.id);
      if (this.remotes.get(id) !== stream) {
        this.remotes.set(id, stream);
        this.remoteSince.set(id, performance.now());
        stream.addEventListener('removetrack', () => {
          // A stream already dropped (its participant left) stays dropped.
          if (this.remotes.get(id) !== stream) return;
          if (stream.getTracks().length === 0) this.dropRemote(id, stream);
          else this.emit('remote', { participant: id, stream });
        });
      }
      ev.track.addEventListener('ended', () => this.pruneRemotes());
      this.emit('remote', { participant: id, stream });
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === 'connected') this.mark('connected');
      if (pc.connectionState === 'failed') {
        this.lastError = 'The call’s connection failed: the network may block video calls.';
        this.emit('error', { message: this.lastError, fatal: true });
        this.leave('failed');
      }
    };
    // Our camera and microphone, send-receive. Without a camera (or a microphone) we still
    // receive the others'.
    const tracks = this.stream ? this.stream.getTracks() : [];
    for (const t of tracks) pc.addTransceiver(t, { direction: 'sendrecv', streams: [this.stream] });
    if (!tracks.some((t) => t.kind === 'audio')) pc.addTransceiver('audio', { direction: 'recvonly' });
    if (!tracks.some((t) => t.kind === 'video')) pc.addTransceiver('video', { direction: 'recvonly' });
    this.setState('in_call');
    this.queue(async () => {
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      this.send({ type: 'offer', sdp: pc.localDescription.sdp });
      this.mark('offer_sent');
      // The others learn our mute state from the roster.
      this.sendMute();
    }, 'our offer');
    this.startQuality();
  }

  dropRemote(id, stream = null) {
    const cur = this.remotes.get(id);
    if (!cur || (stream && cur !== stream)) return;
    this.remotes.delete(id);
    this.remoteSince.delete(id);
    this.emit('remote-gone', { participant: id });
  }

  /** Forgets remote streams whose tracks all ended or whose participant left the call. */
  pruneRemotes() {
    const inCall = new Set(this.participants.filter((p) => p.state === 'in_call').map((p) => p.id));
    for (const [id, stream] of this.remotes) {
      const live = stream.getTracks().some((t) => t.readyState === 'live');
      if (!live || (this.participants.length && !inCall.has(id))) this.dropRemote(id, stream);
    }
  }

  /** Turns the microphone (kind 'audio') or the camera ('video') on or off. */
  setEnabled(kind, on) {
    const tracks = kind === 'audio' ? this.stream?.getAudioTracks() : this.stream?.getVideoTracks();
    for (const t of tracks || []) t.enabled = on;
    this.sendMute();
  }

  sendMute() {
    this.send({ type: 'mute', audio: !this.audioEnabled, video: !this.videoEnabled });
  }

  admit(participant) {
    this.mark(`admit_${participant}`);
    return this.send({ type: 'admit', participant });
  }

  /** Ends the visit for everyone (clinicians). False when the socket is not open. */
  endVisit() {
    return this.send({ type: 'end' });
  }

  /** Leaves the call; the visit goes on for the others. */
  leave(state = 'left') {
    this.send({ type: 'leave' });
    this.finish(state);
  }

  finish(state) {
    this.close(true);
    this.setState(state);
  }

  onSocketClosed(ev) {
    if (['left', 'ended', 'failed', 'idle'].includes(this.state)) return;
    // The server's sentence: an `error` message before the close, or the close's reason.
    const message = this.lastError || capitalised(ev.reason) || closeReason(ev.code);
    this.closePeer();
    if (ev.code === 4009) {
      this.setState('ended');
      this.emit('ended', { reason: message });
      return;
    }
    const fatal = ev.code >= 4000 && ev.code < 4100;
    this.emit('error', { message, fatal: true, code: ev.code });
    this.setState(fatal ? 'failed' : 'lost', { message, code: ev.code });
  }

  closePeer() {
    clearInterval(this.qualityTimer);
    this.qualityTimer = null;
    this.prevStats = null;
    if (this.pc) {
      this.pc.onicecandidate = null;
      this.pc.ontrack = null;
      this.pc.onconnectionstatechange = null;
      this.pc.close();
      this.pc = null;
    }
    for (const id of [...this.remotes.keys()]) this.dropRemote(id);
  }

  /** Closes the socket and the peer connection (the local media stays: the caller owns it). */
  close(sayBye = true) {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000, sayBye ? 'leaving' : 'rejoining');
    }
    this.closePeer();
  }

  // --- connection quality ---

  startQuality() {
    clearInterval(this.qualityTimer);
    this.prevStats = null;
    this.qualityTimer = setInterval(() => this.sampleQuality(), QUALITY_EVERY_MS);
  }

  async sampleQuality() {
    const pc = this.pc;
    if (!pc) return;
    let report;
    try {
      report = await pc.getStats();
    } catch {
      return;
    }
    if (pc !== this.pc) return;
    let recv = 0, lost = 0, bytes = 0, rtt = null, inbound = 0;
    let pairId = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        inbound += 1;
        recv += s.packetsReceived || 0;
        lost += Math.max(0, s.packetsLost || 0);
        bytes += s.bytesReceived || 0;
      } else if (s.type === 'transport' && s.selectedCandidatePairId) {
        pairId = s.selectedCandidatePairId;
      }
    });
    report.forEach((s) => {
      if (s.type !== 'candidate-pair') return;
      if ((pairId && s.id === pairId) || (!pairId && s.nominated && s.state === 'succeeded')) {
        if (typeof s.currentRoundTripTime === 'number') rtt = s.currentRoundTripTime * 1000;
      }
    });
    const now = performance.now();
    const prev = this.prevStats;
    this.prevStats = { now, recv, lost, bytes };
    if (!prev) return;
    const dt = (now - prev.now) / 1000;
    const dRecv = Math.max(0, recv - prev.recv);
    const dLost = Math.max(0, lost - prev.lost);
    const loss = dRecv + dLost > 0 ? (100 * dLost) / (dRecv + dLost) : null;
    const kbps = inbound && dt > 0 ? (8 * Math.max(0, bytes - prev.bytes)) / 1000 / dt : null;
    // The received bitrate says something only once someone's camera has been sending for a
    // while (a video starts low and ramps up over the first seconds).
    const settled = [...this.remoteSince].some(([id, t]) => now - t > 6000
      && this.participants.some((p) => p.id === id && p.state === 'in_call' && p.video !== true));
    this.emit('quality', grade({ loss, rtt, kbps, expectVideo: settled }));
  }
}

/** good / fair / poor from packet loss (%), round trip (ms) and received bitrate (kbit/s). */
export function grade({ loss, rtt, kbps, expectVideo }) {
  const RANK = ['good', 'fair', 'poor'];
  let rank = -1; // unknown until there is something to judge
  const judge = (r) => { rank = Math.max(rank, r); };
  if (loss !== null) judge(loss >= 8 ? 2 : loss >= 2 ? 1 : 0);
  if (rtt !== null) judge(rtt >= 500 ? 2 : rtt >= 250 ? 1 : 0);
  if (expectVideo && kbps !== null) judge(kbps < 80 ? 2 : kbps < 200 ? 1 : 0);
  const level = rank < 0 ? 'unknown' : RANK[rank];
  const parts = [];
  if (loss !== null) parts.push(`packet loss ${loss.toFixed(1)} %`);
  if (rtt !== null) parts.push(`round trip ${Math.round(rtt)} ms`);
  if (kbps !== null) parts.push(kbps >= 1000 ? `receiving ${(kbps / 1000).toFixed(1)} Mbit/s` : `receiving ${Math.round(kbps)} kbit/s`);
  return { level, loss, rtt, kbps, text: parts.join(' · ') };
}

function capitalised(s) {
  const t = String(s || '').trim();
  return t ? `${t[0].toUpperCase()}${t.slice(1)}${/[.!?]$/.test(t) ? '' : '.'}` : '';
}

function closeReason(code) {
  switch (code) {
    case 4001: return 'The visit link or your session is not valid.';
    case 4003: return 'You are not allowed to join this visit.';
    case 4004: return 'There is no such visit.';
    case 4009: return 'The visit has ended.';
    default: return 'The connection to the visit was lost.';
  }
}
