// The care-management timer on a patient's page (docs/programme.md): start it, see it run (it
// is kept by Vigil, so a reload or another browser shows the same timer), stop it to log the
// minutes as a time entry. One timer per user: when it runs on another patient, this says where.

import { ApiError, get, post, seg } from './api.js';
import { announce, h, messageLine } from './util.js';

const ACTIVITIES = [['review', 'Reviewing data'], ['call', 'Phone call'], ['video', 'Video visit'], ['coordination', 'Care coordination']];

function elapsed(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  const two = (n) => String(n).padStart(2, '0');
  return hh ? `${hh}:${two(mm)}:${two(ss)}` : `${two(mm)}:${two(ss)}`;
}

export class TimerBox {
  constructor(patientId) {
    this.patientId = patientId;
    this.msg = messageLine();
    this.body = h('div', { id: 'timer-body' });
    this.el = h('section', { class: 'card timer', id: 'care-timer', 'aria-labelledby': 'pv-timer' },
      h('h2', { id: 'pv-timer' }, 'Care time'), this.body, this.msg.el);
    this.tick = null;
    this.refresh();
  }

  destroy() {
    clearInterval(this.tick);
  }

  async refresh() {
    try {
      const v = await get('/timer');
      this.show(v.timer);
    } catch (e) {
      this.msg.error(e.message);
    }
  }

  show(timer) {
    clearInterval(this.tick);
    this.body.replaceChildren();
    if (!timer) {
      const activity = h('select', { id: 'timer-activity' }, ACTIVITIES.map(([v, l]) => h('option', { value: v }, l)));
      const start = h('button', { type: 'button', class: 'btn', id: 'timer-start', onclick: () => this.start(activity.value, start) }, 'Start timer');
      this.body.append(h('div', { class: 'field' }, h('label', { for: 'timer-activity' }, 'What you are doing'), activity), start);
      return;
    }
    if (timer.patient_id !== this.patientId) {
      this.body.append(h('p', { id: 'timer-elsewhere' }, 'Your timer is running on another patient: ',
        h('a', { href: `#/patients/${seg(timer.patient_id)}` }, timer.patient_id), '. Stop it there first.'));
      return;
    }
    const started = Date.parse(timer.started_at);
    const clock = h('span', { class: 'timer-clock', id: 'timer-clock', role: 'timer', 'aria-live': 'off' }, elapsed(Date.now() - started));
    this.tick = setInterval(() => { clock.textContent = elapsed(Date.now() - started); }, 1000);
    const interactive = h('input', { type: 'checkbox', id: 'timer-interactive' });
    const note = h('input', { type: 'text', id: 'timer-note', maxlength: 2000 });
    const stop = h('button', { type: 'button', class: 'btn', id: 'timer-stop', onclick: () => this.stop(interactive.checked, note.value, stop) }, 'Stop and log');
    this.body.append(
      h('p', {}, 'Timer running: ', clock, ` (${timer.activity})`),
      h('div', { class: 'field check' }, interactive, h('label', { for: 'timer-interactive' }, 'I spoke with the patient or their carer (live, by phone or video)')),
      h('div', { class: 'field' }, h('label', { for: 'timer-note' }, 'Note (optional)'), note),
      stop);
  }

  async start(activity, btn) {
    btn.disabled = true;
    this.msg.clear();
    try {
      const t = await post(`/patients/${seg(this.patientId)}/timer`, { activity });
      announce('Timer started.');
      this.show(t);
    } catch (e) {
      this.msg.error(e instanceof ApiError && e.status === 409 ? 'You already have a timer running. Stop it first.' : e.message);
      btn.disabled = false;
      this.refresh();
    }
  }

  async stop(interactive, note, btn) {
    btn.disabled = true;
    this.msg.clear();
    try {
      const e = await post('/timer/stop', { interactive, note: note.trim() || undefined });
      announce(`Timer stopped: ${e.minutes} minutes logged.`);
      this.show(null);
      this.body.prepend(h('p', { id: 'timer-logged' }, `Logged ${e.minutes} min on ${e.date}.`));
    } catch (err) {
      this.msg.error(err.message);
      btn.disabled = false;
    }
  }
}
