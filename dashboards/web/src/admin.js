// Administration: patients, devices (the MQTT secret is shown once, here — and, after a rotation,
// on the patient view, through showCredentials), users and care teams.

import { ApiError, get, patch, post, seg } from './api.js';
import { MRN_HINT, MRN_PATTERN, patientForm } from './patientform.js';
import { announce, clear, confirmStep, copyField, field, h, messageLine } from './util.js';

export class AdminView {
  constructor(root, store, { user, onChanged }) {
    this.root = root;
    this.store = store;
    this.user = user;
    this.onChanged = onChanged;
    this.render();
  }

  destroy() {}

  async render() {
    clear(this.root);
    if (this.user.role !== 'admin') {
      this.root.append(h('h1', {}, 'Administration'), h('p', { role: 'alert' }, 'This needs the admin role.'));
      return;
    }
    this.teamsBox = h('section', { class: 'card', 'aria-labelledby': 'ad-teams' });
    this.usersBox = h('section', { class: 'card', 'aria-labelledby': 'ad-users' });
    this.patientsBox = h('section', { class: 'card', 'aria-labelledby': 'ad-patients' });
    this.deviceBox = h('section', { class: 'card', 'aria-labelledby': 'ad-devices' });
    this.root.append(h('div', { class: 'view-head' }, h('h1', {}, 'Administration')),
      h('div', { class: 'two-col' }, h('div', {}, this.deviceBox, this.patientsBox), h('div', {}, this.usersBox, this.teamsBox)));
    await this.reload();
  }

  async reload() {
    const [teams, users, patients, profiles] = await Promise.all([
      get('/teams').catch((e) => e), get('/users').catch((e) => e), get('/patients').catch((e) => e), get('/profiles').catch(() => ({ profiles: [] })),
    ]);
    this.teams = teams instanceof Error ? null : teams.teams || [];
    this.users = users instanceof Error ? null : users.users || [];
    this.patients = patients instanceof Error ? [] : patients.patients || [];
    this.profiles = profiles.profiles || [];
    this.renderPatients();
    this.renderDevices();
    this.renderUsers(users instanceof Error ? users : null);
    this.renderTeams(teams instanceof Error ? teams : null);
  }

  /**
   * A choice of care team. There is no "none": every patient belongs to a team (the default
   * team unless another is chosen). A team the patient names that does not exist stays shown.
   */
  teamSelect(id, value = 'default') {
    const teams = this.teams || [];
    const unknown = this.teams && value && !teams.some((t) => t.id === value) ? h('option', { value }, `${value} (no such team)`) : null;
    const sel = h('select', { id }, teams.map((t) => h('option', { value: t.id }, `${t.name} (${t.id})`)), unknown);
    sel.value = value || 'default';
    return sel;
  }

  renderPatients() {
    // Add a patient with their MRN and demographics; each refusal shows beside its field.
    const form = patientForm({
      mode: 'create',
      prefix: 'np',
      teamSelect: this.teamSelect('np-team'),
      onSaved: async (saved) => {
        this.added = `Added ${saved.name} (${saved.id}).`;
        this.onChanged();
        await this.reload();
        announce(this.added);
        this.patientsBox.querySelector('#np-id')?.focus();
      },
    });
    const rows = this.patients.map((p) => {
      const sel = this.teamSelect(`pt-team-${p.id}`, p.care_team);
      sel.setAttribute('aria-label', `Care team of ${p.name}`);
      sel.addEventListener('change', async () => {
        try {
          await patch(`/patients/${seg(p.id)}`, { care_team: sel.value });
          announce(`${p.name} moved to ${sel.value}.`);
          p.care_team = sel.value;
          this.onChanged();
        } catch (err) {
          announce(err.message);
          sel.value = p.care_team || 'default';
        }
      });
      return h('tr', {}, h('th', { scope: 'row' }, h('a', { href: `#/patients/${encodeURIComponent(p.id)}` }, p.name)), h('td', {}, p.id),
        h('td', {}, this.mrnInput(p)), h('td', {}, sel));
    });
    clear(this.patientsBox).append(h('h2', { id: 'ad-patients' }, 'Patients'),
      h('h3', { class: 'sub' }, 'Add a patient'), form,
      this.added ? h('p', { class: 'msg ok', id: 'np-added' }, this.added) : null,
      h('p', { class: 'muted small' }, 'Discharged patients are listed on ', h('a', { href: '#/discharged' }, 'Discharged patients'), '. Edit a patient\'s details on their page.'),
      h('div', { class: 'scroll tall', tabindex: '0', role: 'region', 'aria-label': 'Patients' }, h('table', { class: 'table' },
        h('caption', { class: 'visually-hidden' }, 'Patients, their MRNs and care teams'),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Id'), h('th', { scope: 'col' }, 'MRN'), h('th', { scope: 'col' }, 'Care team'))),
        h('tbody', {}, rows))));
  }

  /**
   * The patient's MRN, saved when it is changed (on leaving the field or pressing Enter); an
   * empty field clears it. A refusal (an MRN another patient has) puts the old one back.
   */
  mrnInput(p) {
    const input = h('input', {
      id: `pt-mrn-${p.id}`, class: 'mrn', pattern: MRN_PATTERN, maxlength: '64', autocomplete: 'off',
      value: p.mrn || '', 'aria-label': `MRN of ${p.name}`,
    });
    input.addEventListener('change', async () => {
      const value = input.value.trim();
      if (!input.checkValidity()) {
        announce(`Not saved: ${MRN_HINT}`);
        input.value = p.mrn || '';
        return;
      }
      try {
        await patch(`/patients/${seg(p.id)}`, { mrn: value || null });
        p.mrn = value || null;
        announce(value ? `MRN of ${p.name} saved.` : `MRN of ${p.name} cleared.`);
      } catch (err) {
        announce(`Not saved: ${err.message}`);
        input.value = p.mrn || '';
      }
    });
    return input;
  }

  renderDevices() {
    const msg = messageLine();
    const id = h('input', { id: 'nd-id', required: true, pattern: '[A-Za-z0-9._\\-]{1,64}', autocomplete: 'off' });
    const patient = h('select', { id: 'nd-patient', required: true }, this.patients.map((p) => h('option', { value: p.id }, `${p.name} (${p.id})`)));
    const profile = h('select', { id: 'nd-profile', required: true }, this.profiles.map((p) => h('option', { value: p.id }, p.name ? `${p.name} (${p.id})` : p.id)));
    const out = h('div', { id: 'device-credentials' });
    const form = h('form', { id: 'new-device', class: 'grid-form' },
      field('Device id', id, 'Also its MQTT username'), field('Patient', patient), field('Device type', profile),
      h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'btn' }, 'Add device')), msg.el);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        const d = await post('/devices', { id: id.value.trim(), patient_id: patient.value, profile: profile.value });
        msg.ok(`Added device ${d.id}.`);
        id.value = '';
        showCredentials(out, d, this.profiles.find((p) => p.id === d.profile));
        this.onChanged();
      } catch (err) {
        msg.error(err.message);
      }
    });
    clear(this.deviceBox).append(h('h2', { id: 'ad-devices' }, 'Add a device'), form, out);
  }

  renderUsers(err) {
    clear(this.usersBox).append(h('h2', { id: 'ad-users' }, 'Users'));
    if (err) {
      this.usersBox.append(h('p', { class: 'msg error' }, unavailable(err)));
      return;
    }
    const msg = messageLine();
    const name = h('input', { id: 'nu-name', required: true, autocomplete: 'off' });
    const pass = h('input', { id: 'nu-pass', type: 'password', required: true, autocomplete: 'new-password', minlength: 12 });
    const role = h('select', { id: 'nu-role' }, h('option', { value: 'clinician' }, 'Clinician'), h('option', { value: 'admin' }, 'Admin'));
    const teams = this.teamChecks('nu-teams', [], 'Care teams (a clinician given none joins the default team)');
    const form = h('form', { id: 'new-user', class: 'grid-form' },
      field('Username', name), field('Password', pass, '12 characters or more'), field('Role', role), teams.el,
      h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'btn' }, 'Add user')), msg.el);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        await post('/users', { name: name.value.trim(), password: pass.value, role: role.value, teams: teams.value() });
        msg.ok(`Added ${name.value.trim()}.`);
        form.reset();
        await this.reload();
      } catch (er) {
        msg.error(er.message);
      }
    });
    // Each user: role, care teams, the name patients see, whether they may sign in; a password
    // reset asks first, then shows the temporary password once.
    this.userConfirm = h('div', { class: 'device-confirm', id: 'user-confirm', hidden: true });
    this.userSecret = h('div', { id: 'user-secret' });
    const rows = this.users.map((u) => {
      const key = u.name.replace(/[^A-Za-z0-9_-]/g, '_');
      const r = h('select', { 'aria-label': `Role of ${u.name}` }, h('option', { value: 'clinician' }, 'Clinician'), h('option', { value: 'admin' }, 'Admin'));
      r.value = u.role;
      const tc = this.teamChecks(`ut-${u.name}`, u.teams || [], `Teams of ${u.name}`);
      const shown = h('input', {
        id: `ud-${key}`, class: 'display-name', maxlength: '100', autocomplete: 'off', value: u.display_name || '',
        'aria-label': `Name patients see for ${u.name}`, placeholder: u.name,
      });
      const disabled = h('input', { type: 'checkbox', id: `ux-${key}`, checked: Boolean(u.disabled), 'aria-label': `Sign-in disabled for ${u.name}` });
      const m = messageLine();
      const save = h('button', { type: 'button', class: 'btn-quiet', 'aria-label': `Save ${u.name}` }, 'Save');
      save.addEventListener('click', async () => {
        const body = { role: r.value, teams: tc.value() };
        if ((u.display_name || '') !== shown.value.trim()) body.display_name = shown.value.trim();
        if (Boolean(u.disabled) !== disabled.checked) body.disabled = disabled.checked;
        shown.removeAttribute('aria-invalid');
        try {
          const saved = await patch(`/users/${seg(u.name)}`, body);
          Object.assign(u, saved);
          m.ok(body.disabled === true ? 'Saved. Disabled: signed out everywhere, API tokens stopped.' : 'Saved.');
          this.renderUserState(u, state);
        } catch (er) {
          if (er.message.startsWith('display_name')) {
            shown.setAttribute('aria-invalid', 'true');
            shown.focus();
          }
          m.error(er.message);
        }
      });
      const reset = h('button', { type: 'button', class: 'btn-quiet', dataset: { action: 'reset' }, 'aria-label': `Reset password of ${u.name}` }, 'Reset password');
      reset.addEventListener('click', () => this.askReset(u, reset));
      const state = h('span', { class: 'user-state', id: `us-${key}` });
      this.renderUserState(u, state);
      return h('tr', { dataset: { user: u.name } },
        h('th', { scope: 'row' }, u.name, h('br'), state),
        h('td', {}, shown),
        h('td', {}, r),
        h('td', {}, tc.el),
        h('td', {}, h('span', { class: 'check' }, disabled, h('label', { for: `ux-${key}` }, 'Disabled'))),
        h('td', { class: 'user-actions' }, save, reset, m.el));
    });
    this.usersBox.append(form, h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': 'Users' }, h('table', { class: 'table', id: 'users' },
      h('caption', { class: 'visually-hidden' }, 'Users: display name, role, care teams, whether they may sign in'),
      h('thead', {}, h('tr', {}, ['User', 'Name patients see', 'Role', 'Care teams', 'Sign-in', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows))), this.userConfirm, this.userSecret);
  }

  /** "Disabled" in words beside the name (not colour alone). */
  renderUserState(u, el) {
    clear(el).append(u.disabled ? h('span', { class: 'badge revoked' }, 'Disabled') : h('span', { class: 'muted small' }, 'Active'));
  }

  askReset(u, trigger) {
    confirmStep(this.userConfirm, {
      id: 'reset-confirm',
      question: `Reset the password of ${u.name}?`,
      detail: `${u.name} is signed out everywhere now and their old password stops working. Vigil makes a temporary password, shown once here: give it to them in person or by phone. API tokens keep working.`,
      confirmLabel: `Reset the password of ${u.name}`,
      trigger,
      onConfirm: async () => {
        const r = await post(`/users/${seg(u.name)}/password-reset`, {});
        clear(this.userSecret).append(h('div', { class: 'credentials', role: 'region', 'aria-label': `Temporary password for ${u.name}` },
          h('p', { class: 'warn-text' }, h('strong', {}, 'Shown once. '), `The temporary password of ${u.name}. Vigil keeps only a hash.`),
          copyField('Temporary password', r.password, 'reset-pass')));
        const input = this.userSecret.querySelector('#reset-pass');
        input.focus();
        return input;
      },
    });
  }

  teamChecks(prefix, selected, legend = 'Care teams') {
    const boxes = (this.teams || []).map((t) => {
      const id = `${prefix}-${t.id}`.replace(/[^A-Za-z0-9_-]/g, '_');
      const cb = h('input', { type: 'checkbox', id, value: t.id, checked: selected.includes(t.id) });
      return h('span', { class: 'check' }, cb, h('label', { for: id }, t.name));
    });
    const el = h('fieldset', { class: 'checks' }, h('legend', {}, legend), boxes.length ? boxes : h('span', { class: 'muted small' }, 'No care teams yet.'));
    return { el, value: () => [...el.querySelectorAll('input:checked')].map((c) => c.value) };
  }

  renderTeams(err) {
    clear(this.teamsBox).append(h('h2', { id: 'ad-teams' }, 'Care teams'));
    if (err) {
      this.teamsBox.append(h('p', { class: 'msg error' }, unavailable(err)));
      return;
    }
    const msg = messageLine();
    const id = h('input', { id: 'nt-id', required: true, pattern: '[A-Za-z0-9._\\-]{1,64}', autocomplete: 'off' });
    const name = h('input', { id: 'nt-name', required: true, autocomplete: 'off' });
    const form = h('form', { id: 'new-team', class: 'grid-form' }, field('Team id', id), field('Name', name),
      h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'btn' }, 'Add care team')), msg.el);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        await post('/teams', { id: id.value.trim(), name: name.value.trim() });
        msg.ok(`Added ${name.value.trim()}.`);
        await this.reload();
      } catch (er) {
        msg.error(er.message);
      }
    });
    this.teamsBox.append(form, h('table', { class: 'table' },
      h('caption', { class: 'visually-hidden' }, 'Care teams'),
      h('thead', {}, h('tr', {}, ['Team', 'Id', 'Members'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, this.teams.map((t) => h('tr', {}, h('th', { scope: 'row' }, t.name), h('td', {}, t.id), h('td', {}, (t.members || []).join(', ') || '–'))))));
  }
}

/**
 * Shows a device's MQTT credentials once — from `POST /devices` or `POST /devices/{id}/rotate`,
 * the only answers that carry the password — in `out`, with copy buttons, where the device
 * connects and a `mosquitto_pub` example, and puts focus on the password. The server says the
 * port and whether it is TLS (its real listeners, or the external broker's); the host too unless
 * it listens on every interface, when it is the host this page was loaded from. `profile`: the
 * device's profile (its first metric makes the example); `title`: what the box is called to
 * screen readers.
 */
export function showCredentials(out, d, profile, title = 'New device credentials') {
  const metric = profile?.metrics?.[0] || 'heart_rate';
  const m = d.mqtt;
  // mosquitto_pub takes an IPv6 address without the URL's brackets.
  const host = (m.host || location.hostname).replace(/^\[(.*)\]$/, '$1');
  const tls = m.tls ? '--cafile ca.crt ' : '';
  const example = `mosquitto_pub -h ${host} -p ${m.port} ${tls}-V mqttv311 -q 1 -i ${m.username} -u ${m.username} -P '${m.password}' -t vigil/v1/devices/${d.id}/readings -m '{"metric":"${metric}","value":${sampleValue(metric)}}'`;
  clear(out).append(h('div', { class: 'credentials', role: 'region', 'aria-label': title },
    h('p', { class: 'warn-text' }, h('strong', {}, 'Shown once. '), 'Copy the password now: Vigil keeps only a hash and cannot show it again.'),
    h('p', { id: 'cred-endpoint' }, `The device connects to ${host}, port ${m.port}, ${m.tls ? 'over TLS (MQTTS)' : 'without TLS (plain MQTT)'}.`),
    copyField('MQTT username', m.username, 'cred-user'),
    copyField('MQTT password', m.password, 'cred-pass'),
    copyField('Example publish', example, 'cred-example', true),
    m.tls ? h('p', { class: 'muted small', id: 'cred-ca' }, 'ca.crt: the CA certificate that signed Vigil\'s MQTT server certificate (your administrator has it).') : null));
  out.querySelector('#cred-pass').focus();
}

function unavailable(err) {
  return err instanceof ApiError && err.status === 404 ? 'This Vigil server does not manage this yet.' : err.message;
}

function sampleValue(metric) {
  return { heart_rate: 72, spo2: 96, glucose: 110, body_weight: 72.5, body_temperature: 36.8, bp_systolic: 128, bp_diastolic: 82, respiratory_rate: 16, steps: 100 }[metric] ?? 1;
}
