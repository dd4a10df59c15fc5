// The live feed: one WebSocket to /api/v1/live, authenticated by the session cookie.
//
// Messages are not handled one by one: they are queued and handed to subscribers in batches,
// once per animation frame (or every 250 ms when the tab is hidden and frames stop), so a burst
// of readings for 500 patients costs one DOM pass, not one per message.
//
// When the socket closes for any reason but sign-out (the server drops a consumer that falls
// behind with 4008 "too slow"; networks fail), it reconnects by itself with exponential backoff
// and jitter, shows "Reconnecting…", and after it is back tells subscribers to resync (reload
// the panel and the inbox), since anything sent in the gap is lost. A close with 4001 means the
// server found the credential ended (signed out elsewhere, expired, role changed): the session
// is checked at once, which shows the sign-in page when it is gone.

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;

export class Live {
  constructor({ onState, onResync, checkSession }) {
    this.onState = onState;
    this.onResync = onResync;
    this.checkSession = checkSession;
    this.subscribers = new Set();
    this.queue = [];
    this.scheduled = false;
    this.ws = null;
    this.stopped = true;
    this.attempt = 0;
    this.everOpened = false;
    this.retryTimer = null;
    this.lastMessageAt = 0;
  }

  /** fn(batch) gets arrays of messages, in arrival order. Returns an unsubscribe function. */
  subscribe(fn) {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000, 'signed out');
      this.ws = null;
    }
    this.queue = [];
    this.onState('stopped');
  }

  /** Drops the connection as a network failure would (used by the tests and "Reconnect"). */
  drop() {
    if (this.ws) this.ws.close(4000, 'dropped by client');
  }

  connect() {
    if (this.stopped) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${proto}//${location.host}/api/v1/live`);
    } catch {
      this.scheduleRetry(null);
      return;
    }
    this.ws = ws;
    this.onState(this.attempt === 0 && !this.everOpened ? 'connecting' : 'reconnecting', { attempt: this.attempt });
    ws.onopen = () => {
      const wasReconnect = this.everOpened || this.attempt > 0;
      this.attempt = 0;
      this.everOpened = true;
      this.onState('live');
      if (wasReconnect) this.onResync();
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.lastMessageAt = Date.now();
      this.queue.push(msg);
      this.schedule();
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.ws = null;
      if (this.stopped) return;
      this.scheduleRetry(ev);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  async scheduleRetry(ev) {
    this.attempt += 1;
    const reason = ev && ev.code === 4008 ? 'the connection fell behind' : 'the connection was lost';
    this.onState('reconnecting', { attempt: this.attempt, reason });
    // A socket that never opens may mean the session ended: ask once in a while, or at once
    // when the server said so.
    const ended = ev && ev.code === 4001;
    if ((ended || this.attempt % 3 === 0) && this.checkSession) {
      const ok = await this.checkSession();
      if (!ok || this.stopped) return;
    }
    const base = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** (this.attempt - 1));
    const delay = base / 2 + Math.random() * base / 2;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    let done = false;
    const flush = () => {
      if (done) return;
      done = true;
      this.scheduled = false;
      const batch = this.queue;
      this.queue = [];
      for (const fn of this.subscribers) {
        try {
          fn(batch);
        } catch (e) {
          console.error('live subscriber failed', e);
        }
      }
    };
    requestAnimationFrame(flush);
    // Frames stop in a hidden tab; the alerts must still arrive.
    setTimeout(flush, 250);
  }
}
