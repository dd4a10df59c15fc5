// On-call cover (#/on-call, #/on-call/{team}; docs/oncall.md). Everyone sees who is on call now
// for their care teams (admins: every team), with a warning in words when nobody is and the
// fallback is reached. On a team's page admins edit its weekly rota and fallback, its shifts
// for particular dates, and its escalation policy per severity; the API's refusal is shown
// beside the form it refused.

import { ApiError, get, put, seg } from './api.js';
import { clear, field, formatTime, h, messageLine, zoneList } from './util.js';

const DAYS = [['mon', 'Mon', 'Monday'], ['tue', 'Tue', 'Tuesday'], ['wed', 'Wed', 'Wednesday'], ['thu', 'Thu', 'Thursday'],
  ['fri', 'Fri', 'Friday'], ['sat', 'Sat', 'Saturday'], ['sun', 'Sun', 'Sunday']];
const LEVELS = [1, 2, 3, 4, 5];
const SEVERITIES = [['high', 'High alerts'], ['medium', 'Medium alerts'], ['low', 'Low alerts']];
const SOURCE = { rota: 'from the rota', shift: 'on a shift', fallback: 'as the fallback' };

let seq = 0;
const uid = (p) => `${p}-${++seq}`;

/** An RFC 3339 time as a `datetime-local` value on this browser's clocks. */
function toLocalInput(t) {
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** A `datetime-local` value (this browser's clocks) as RFC 3339 UTC; '' stays ''. */
function fromLocalInput(v) {
  if (!v) return '';
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? v : d.toISOString().replace('.000Z', 'Z');
}

/**
 * Who is on call for one team, as the API answered (`GET /teams/{id}/on-call`), in words: a
 * warning first when there is a gap in cover.
 */
export function coverStatus(c, teamName, headingLevel = 'h2') {
  const box = h('section', { class: 'card oncall-status', dataset: { team: c.team, gap: c.gap ? 'yes' : 'no' }, 'aria-labelledby': `oc-${c.team}-title` });
  box.append(h(headingLevel, { id: `oc-${c.team}-title` }, `${teamName}: on call now`));
  if (c.gap) {
    box.append(h('div', { class: 'gap-warning', role: 'alert', id: `oc-${c.team}-gap` },
      h('span', { class: 'banner-icon', 'aria-hidden': 'true' }, '!'),
      h('p', {}, h('strong', {}, 'Gap in cover: '), `${c.gap}.`)));
  }
  const people = c.on_call || [];
  if (people.length) {
    box.append(h('ul', { class: 'plain oncall-people' }, people.map((a) => h('li', { dataset: { user: a.user, level: a.level, source: a.source } },
      h('span', { class: 'badge' }, `Level ${a.level}`), ' ', h('strong', {}, a.user), ` ${SOURCE[a.source] || a.source}`,
      a.until ? ` until ${formatTime(a.until)}` : ''))));
  } else {
    box.append(h('p', { class: 'oncall-nobody' }, 'Nobody is on call and there is no fallback.'));
  }
  if (c.updated_by) box.append(h('p', { class: 'muted small' }, `Cover last changed by ${c.updated_by}${c.updated_at ? ` on ${formatTime(c.updated_at)}` : ''}.`));
  return box;
}

export class OnCallView {
  constructor(root, { user }, team = null) {
    this.root = root;
    this.user = user;
    this.team = team;
    this.admin = user.role === 'admin';
    this.render();
  }

  destroy() {}

  async render() {
    clear(this.root).append(h('p', { class: 'loading' }, 'Loading on-call cover…'));
    let teams;
    try {
      teams = (await get('/teams')).teams || [];
    } catch (e) {
      this.fail(e);
      return;
    }
    if (this.team) await this.renderTeam(teams.find((t) => t.id === this.team));
    else await this.renderAll(teams);
  }

  fail(e) {
    clear(this.root).append(h('div', { class: 'view-head' }, h('h1', {}, 'On call')),
      h('p', { role: 'alert', class: 'msg error' }, `On-call cover could not be loaded: ${e.message}`));
  }

  async renderAll(teams) {
    const cover = await Promise.all(teams.map((t) => get(`/teams/${seg(t.id)}/on-call`).catch((e) => e)));
    const head = h('div', { class: 'view-head' }, h('h1', {}, 'On call'));
    clear(this.root).append(head);
    if (!teams.length) {
      this.root.append(h('p', { id: 'oncall-no-team' }, this.admin ? 'There are no care teams yet.' : 'You are not on a care team. Ask an administrator to add you to one.'));
      return;
    }
    this.root.append(h('p', { class: 'summary' }, this.admin
      ? 'Who is on call now for each care team. Open a team to change its rota, shifts and escalation policy.'
      : 'Who is on call now for your care teams.'));
    const grid = h('div', { class: 'oncall-grid' });
    teams.forEach((t, i) => {
      const c = cover[i];
      const name = `${t.name}`;
      if (c instanceof Error) {
        grid.append(h('section', { class: 'card' }, h('h2', {}, name), h('p', { class: 'msg error' }, c.message)));
        return;
      }
      const box = coverStatus(c, name);
      box.append(h('p', {}, h('a', { href: `#/on-call/${seg(t.id)}`, class: 'team-link' }, this.admin ? `Edit the cover of ${t.name}` : `The cover of ${t.name}`)));
      grid.append(box);
    });
    this.root.append(grid);
  }

  async renderTeam(team) {
    if (!team) {
      clear(this.root).append(h('div', { class: 'view-head' }, h('h1', {}, 'On call')),
        h('p', { role: 'alert' }, `There is no care team “${this.team}” among yours.`), h('p', {}, h('a', { href: '#/on-call' }, 'Back to on call')));
      return;
    }
    let cover, users = [];
    try {
      [cover, users] = await Promise.all([get(`/teams/${seg(team.id)}/on-call`),
        this.admin ? get('/users').then((u) => u.users || []) : Promise.resolve([])]);
    } catch (e) {
      this.fail(e);
      return;
    }
    this.teamInfo = team;
    this.clinicians = users.filter((u) => u.role === 'clinician' && (u.teams || []).includes(team.id)).map((u) => u.name);
    if (!this.admin) this.clinicians = team.members || [];
    document.title = `On call: ${team.name} · Vigil`;
    this.statusBox = h('div', { id: 'oncall-status' });
    clear(this.root).append(
      h('div', { class: 'view-head' }, h('div', {},
        h('p', { class: 'crumbs' }, h('a', { href: '#/on-call' }, 'On call')),
        h('h1', { id: 'team-title' }, `On-call cover: ${team.name}`))),
      this.statusBox);
    this.showStatus(cover);
    if (this.admin) {
      this.root.append(this.rotaEditor(cover), this.shiftsEditor(cover), this.policyEditor(cover));
    } else {
      this.root.append(this.readOnly(cover));
    }
  }

  showStatus(cover) {
    clear(this.statusBox).append(coverStatus(cover, this.teamInfo.name));
  }

  /** For clinicians: the rota and shifts in words. */
  readOnly(c) {
    const box = h('section', { class: 'card', 'aria-labelledby': 'oc-rota-ro' }, h('h2', { id: 'oc-rota-ro' }, 'Weekly rota'));
    const slots = c.rota?.weekly || [];
    if (!slots.length) box.append(h('p', { class: 'muted' }, 'No weekly rota is set.'));
    else {
      box.append(h('p', { class: 'muted small' }, `Times on the team's clocks (${c.rota.timezone}).`),
        h('ul', {}, slots.map((s) => h('li', {}, `${s.days.map((d) => DAYS.find((x) => x[0] === d)?.[1] || d).join(', ')} ${s.start}–${s.end}: ${s.user} (level ${s.level || 1})`))));
    }
    if (c.rota?.fallback) box.append(h('p', {}, `Fallback: ${c.rota.fallback}.`));
    if ((c.shifts || []).length) {
      box.append(h('h3', {}, 'Shifts'), h('ul', {}, c.shifts.map((s) => h('li', {}, `${formatTime(s.start)} to ${formatTime(s.end)}: ${s.user} (level ${s.level || 1})`))));
    }
    return box;
  }

  /** A choice of the team's clinicians; `empty` names the choice of nobody, if allowed. */
  userSelect(id, value, label, empty = null) {
    const names = [...this.clinicians];
    const sel = h('select', { id, 'aria-label': label },
      empty ? h('option', { value: '' }, empty) : null,
      names.map((n) => h('option', { value: n }, n)),
      value && !names.includes(value) ? h('option', { value }, `${value} (not a clinician of this team)`) : null);
    sel.value = value || (empty ? '' : names[0] || '');
    return sel;
  }

  levelSelect(id, value, label) {
    const sel = h('select', { id, 'aria-label': label, class: 'level' }, LEVELS.map((l) => h('option', { value: String(l) }, `Level ${l}`)));
    sel.value = String(value || 1);
    return sel;
  }

  /** Saves with `send()`; the answer redraws who is on call; a refusal is shown in `msg`. */
  async save(btn, msg, send, what) {
    btn.disabled = true;
    msg.clear();
    try {
      const cover = await send();
      this.showStatus(cover);
      msg.ok(`${what} saved.`);
    } catch (e) {
      msg.error(`${what} not saved: ${e instanceof ApiError && e.status === 403 ? 'this needs the admin role.' : e.message}`);
    } finally {
      btn.disabled = false;
    }
  }

  rotaEditor(c) {
    const msg = messageLine();
    const rows = h('div', { class: 'slots', id: 'rota-slots' });
    const renumber = () => [...rows.children].forEach((r, i) => { r.querySelector('legend').textContent = `Slot ${i + 1}`; });
    const addRow = (s = { days: [], start: '08:00', end: '20:00', user: '', level: 1 }) => {
      const id = uid('slot');
      const days = h('fieldset', { class: 'days' }, h('legend', { class: 'visually-hidden' }, 'Days'),
        DAYS.map(([d, short, long]) => {
          const cid = `${id}-${d}`;
          return h('span', { class: 'check' }, h('input', { type: 'checkbox', id: cid, value: d, checked: s.days.includes(d) }),
            h('label', { for: cid }, h('abbr', { title: long }, short)));
        }));
      const start = h('input', { type: 'time', id: `${id}-start`, value: s.start, required: true, class: 'slot-start' });
      const end = h('input', { type: 'time', id: `${id}-end`, value: s.end, required: true, class: 'slot-end' });
      const user = this.userSelect(`${id}-user`, s.user, null);
      user.removeAttribute('aria-label');
      user.classList.add('slot-user');
      const level = this.levelSelect(`${id}-level`, s.level, null);
      level.removeAttribute('aria-label');
      const row = h('fieldset', { class: 'slot', dataset: { slot: id } }, h('legend', {}, 'Slot'),
        days, field('Start', start), field('End', end), field('Who', user), field('Level', level));
      const remove = h('button', { type: 'button', class: 'btn-quiet slot-remove' }, 'Remove');
      remove.addEventListener('click', () => {
        const next = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        renumber();
        (next?.querySelector('input') || add).focus();
      });
      row.append(h('div', { class: 'buttons' }, remove));
      row.value = () => ({
        days: [...days.querySelectorAll('input:checked')].map((x) => x.value),
        start: start.value, end: end.value, user: user.value, level: Number(level.value),
      });
      rows.append(row);
      renumber();
      remove.setAttribute('aria-label', `Remove ${row.querySelector('legend').textContent}`);
      return row;
    };
    for (const s of c.rota?.weekly || []) addRow(s);
    const add = h('button', { type: 'button', class: 'btn btn-secondary', id: 'rota-add' }, 'Add a slot');
    add.addEventListener('click', () => addRow().querySelector('input').focus());
    const tz = h('input', { id: 'rota-timezone', list: 'rota-zones', value: c.rota?.timezone || Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC', required: true, autocomplete: 'off', spellcheck: 'false' });
    const fallback = this.userSelect('rota-fallback', c.rota?.fallback || '', null, 'Nobody: every clinician of the team');
    fallback.removeAttribute('aria-label');
    const save = h('button', { type: 'submit', class: 'btn', id: 'rota-save' }, 'Save the rota');
    const form = h('form', { id: 'rota-form', 'aria-labelledby': 'rota-title', novalidate: true },
      h('p', { class: 'hint' }, 'Each slot covers its days from its start to its end on the team\'s clocks; an end not after the start is the next morning, and the same start and end is the whole day. Level 1 is reached first.'),
      field('Time zone of the rota', tz, 'The team\'s clocks, like America/Chicago.'), zoneList('rota-zones'),
      rows, h('div', { class: 'buttons' }, add),
      field('Fallback', fallback, 'Reached when nobody is on call at level 1.'),
      h('div', { class: 'buttons' }, save), msg.el);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const body = { timezone: tz.value.trim(), weekly: [...rows.children].map((r) => r.value()) };
      if (fallback.value) body.fallback = fallback.value;
      this.save(save, msg, () => put(`/teams/${seg(this.team)}/rota`, body), 'The rota');
    });
    return h('section', { class: 'card', 'aria-labelledby': 'rota-title' }, h('h2', { id: 'rota-title' }, 'Weekly rota'), form);
  }

  shiftsEditor(c) {
    const msg = messageLine();
    const rows = h('div', { class: 'slots', id: 'shift-rows' });
    const renumber = () => [...rows.children].forEach((r, i) => { r.querySelector('legend').textContent = `Shift ${i + 1}`; });
    const addRow = (s = { user: '', start: '', end: '', level: 1 }) => {
      const id = uid('shift');
      const user = this.userSelect(`${id}-user`, s.user, null);
      user.removeAttribute('aria-label');
      const level = this.levelSelect(`${id}-level`, s.level, null);
      level.removeAttribute('aria-label');
      const start = h('input', { type: 'datetime-local', id: `${id}-start`, value: s.start ? toLocalInput(s.start) : '', required: true });
      const end = h('input', { type: 'datetime-local', id: `${id}-end`, value: s.end ? toLocalInput(s.end) : '', required: true });
      const remove = h('button', { type: 'button', class: 'btn-quiet' }, 'Remove');
      const row = h('fieldset', { class: 'slot' }, h('legend', {}, 'Shift'),
        field('Who', user), field('Level', level), field('From', start), field('Until', end), h('div', { class: 'buttons' }, remove));
      remove.addEventListener('click', () => {
        const next = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        renumber();
        (next?.querySelector('select') || add).focus();
      });
      row.value = () => ({ user: user.value, level: Number(level.value), start: fromLocalInput(start.value), end: fromLocalInput(end.value) });
      rows.append(row);
      renumber();
      remove.setAttribute('aria-label', `Remove ${row.querySelector('legend').textContent}`);
      return row;
    };
    for (const s of c.shifts || []) addRow(s);
    const add = h('button', { type: 'button', class: 'btn btn-secondary', id: 'shift-add' }, 'Add a shift');
    add.addEventListener('click', () => addRow().querySelector('select').focus());
    const save = h('button', { type: 'submit', class: 'btn', id: 'shifts-save' }, 'Save the shifts');
    const form = h('form', { id: 'shifts-form', novalidate: true },
      h('p', { class: 'hint' }, 'A shift puts someone on call at its level instead of the rota\'s people at that level, for a swap or a holiday (at most 14 days). Times on this computer\'s clocks.'),
      rows, h('div', { class: 'buttons' }, add, save), msg.el);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const shifts = [...rows.children].map((r) => r.value());
      this.save(save, msg, () => put(`/teams/${seg(this.team)}/on-call`, { shifts }), 'The shifts');
    });
    return h('section', { class: 'card', 'aria-labelledby': 'shifts-title' }, h('h2', { id: 'shifts-title' }, 'Shifts for particular dates'), form);
  }

  policyEditor(c) {
    const msg = messageLine();
    const groups = {};
    const fieldsets = SEVERITIES.map(([sev, title]) => {
      const rows = h('ol', { class: 'plain steps', id: `policy-${sev}` });
      const renumber = () => [...rows.children].forEach((r, i) => { r.querySelector('.step-n').textContent = `Step ${i + 1}:`; });
      const add = h('button', { type: 'button', class: 'btn-quiet', id: `policy-${sev}-add` }, `Add a step for ${title.toLowerCase()}`);
      const addRow = (s = { after_min: 0, level: 1 }) => {
        const id = uid(`step-${sev}`);
        const after = h('input', { type: 'number', id: `${id}-after`, min: 0, max: 1440, step: 1, value: String(s.after_min), class: 'minutes', inputmode: 'numeric' });
        const level = this.levelSelect(`${id}-level`, s.level, null);
        level.removeAttribute('aria-label');
        const remove = h('button', { type: 'button', class: 'btn-quiet' }, 'Remove');
        // Each control is named with its step ("Step 2: after … minutes"), not a bare "after".
        after.setAttribute('aria-labelledby', `${id}-n ${id}-la ${id}-min`);
        level.setAttribute('aria-labelledby', `${id}-n ${id}-ll`);
        const li = h('li', { class: 'step' }, h('span', { class: 'step-n', id: `${id}-n` }, 'Step'),
          h('label', { for: after.id, id: `${id}-la` }, ' after '), after, h('span', { id: `${id}-min` }, ' minutes '),
          h('label', { for: level.id, id: `${id}-ll` }, ' notify '), level, remove);
        remove.addEventListener('click', () => {
          li.remove();
          renumber();
          add.focus();
        });
        li.value = () => ({ after_min: Number(after.value), level: Number(level.value) });
        rows.append(li);
        renumber();
        remove.setAttribute('aria-label', `Remove ${li.querySelector('.step-n').textContent.replace(':', '')} of ${title.toLowerCase()}`);
        return li;
      };
      add.addEventListener('click', () => addRow().querySelector('input').focus());
      for (const s of c.policy?.[sev] || []) addRow(s);
      groups[sev] = rows;
      return h('fieldset', { class: 'policy-sev' }, h('legend', {}, title), rows,
        sev === 'low' ? h('p', { class: 'hint' }, 'No steps: a low alert waits on the dashboard.') : null, add);
    });
    const save = h('button', { type: 'submit', class: 'btn', id: 'policy-save' }, 'Save the policy');
    const form = h('form', { id: 'policy-form', novalidate: true },
      h('p', { class: 'hint', id: 'policy-default' }, c.policy_is_default
        ? 'This team uses the default policy, shown here; saving makes it the team\'s own.'
        : 'Each step notifies the people on call at its level, that many minutes after the alert opened, if nobody has acknowledged it.'),
      fieldsets, h('div', { class: 'buttons' }, save), msg.el);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const body = Object.fromEntries(SEVERITIES.map(([sev]) => [sev, [...groups[sev].children].map((li) => li.value())]));
      this.save(save, msg, () => put(`/teams/${seg(this.team)}/policy`, body), 'The policy');
    });
    return h('section', { class: 'card', 'aria-labelledby': 'policy-title' }, h('h2', { id: 'policy-title' }, 'Escalation policy'), form);
  }
}
