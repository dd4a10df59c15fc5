// Who was told about an alert: the escalation steps taken and each notification they sent
// (GET /alerts/{id}/notifications), as a short list under the alert in the inbox and on the
// patient's page — "Step 1 · 22:03 · nurse-a · sms delivered 22:03". A disclosure, loaded when
// opened (each open is an audited read), refreshed while a notification is still pending.

import { get, seg } from './api.js';
import { clear, formatTime, h, parseTime } from './util.js';

const hhmm = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });

/** "22:03", or the date too when it is not today. */
function shortTime(t) {
  const ms = parseTime(t);
  if (!Number.isFinite(ms)) return '';
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? hhmm.format(d) : formatTime(ms);
}

const CHANNEL = { email: 'email', sms: 'SMS', none: 'no channel' };

/** One notification in words: "nurse-a · SMS delivered 22:03". */
export function notificationText(n) {
  const how = CHANNEL[n.channel] || n.channel;
  const to = n.address ? ` (${n.address})` : '';
  const tries = n.attempts > 1 ? `, ${n.attempts} attempts` : '';
  switch (n.status) {
    case 'delivered':
      return `${n.user}${to} · ${how} delivered ${shortTime(n.settled_at)}${tries}`;
    case 'failed':
      return `${n.user}${to} · ${how} failed${n.last_error ? `: ${n.last_error}` : ''}${tries}`;
    case 'cancelled':
      return `${n.user}${to} · ${how} cancelled (the alert was handled)`;
    default:
      return `${n.user}${to} · ${how} pending${n.attempts ? ` (attempt ${n.attempts} failed${n.last_error ? `: ${n.last_error}` : ''}; next ${shortTime(n.next_at)})` : ` (due ${shortTime(n.next_at)})`}`;
  }
}

/**
 * A `<details>` listing the notification steps of alert `alertId`; `label` names the alert for
 * screen readers ("high alert for Hana High").
 */
export function notificationSteps(alertId, label) {
  const list = h('div', { class: 'notify-list', 'aria-live': 'polite' });
  const refresh = h('button', { type: 'button', class: 'btn-quiet btn-small notify-refresh' }, 'Refresh');
  refresh.setAttribute('aria-label', `Refresh the notifications of the ${label}`);
  const summary = h('summary', {}, 'Who was notified');
  const el = h('details', { class: 'notify-steps', dataset: { alertId } }, summary, list, refresh);
  let timer = null;
  let loading = false;

  async function load() {
    clearTimeout(timer);
    if (!el.isConnected || !el.open || loading) return;
    loading = true;
    let v;
    try {
      v = await get(`/alerts/${seg(alertId)}/notifications`);
    } catch (e) {
      clear(list).append(h('p', { class: 'msg error' }, `The notifications could not be loaded: ${e.message}`));
      return;
    } finally {
      loading = false;
    }
    const steps = v.steps || [];
    if (!steps.length) {
      clear(list).append(h('p', { class: 'muted small notify-none' }, 'Nobody has been notified about this alert yet.'));
    } else {
      clear(list).append(h('ol', { class: 'plain notify-items' }, steps.flatMap((s) => {
        const first = Math.min(...s.notifications.map((n) => parseTime(n.created_at)).filter(Number.isFinite));
        const head = `Step ${s.step + 1}${Number.isFinite(first) ? ` · ${shortTime(first)}` : ''}`;
        if (!s.notifications.length) return [h('li', { dataset: { step: s.step } }, `${head} · nobody to notify`)];
        return s.notifications.map((n) => h('li', { class: `notify-item status-${n.status}`, dataset: { step: s.step, status: n.status, channel: n.channel, user: n.user } },
          `${head} · ${notificationText(n)}`));
      })));
    }
    // While something is still to be sent, look again now and then.
    if (steps.some((s) => s.notifications.some((n) => n.status === 'pending'))) timer = setTimeout(load, 5000);
  }

  el.addEventListener('toggle', load);
  refresh.addEventListener('click', load);
  return el;
}
