// @ts-check
// The patient's details form, shared by "Add patient" (admin page) and "Edit details" (the
// patient's page): id (when adding), name, birth date, MRN, sex, phone, email, address, contact
// preference and notes. Each field has its error line right under it: the browser's own checks
// and the API's refusal ("mrn may contain only …", "another patient with this mrn already
// exists", "email … is not an e-mail address") are shown beside the field they name, the
// field is marked `aria-invalid` and focused, so a screen reader hears what is wrong where.

import { patch, post, seg } from './api.js';
import { h, messageLine } from './util.js';

// The medical record number: as the registry checks it (1–64 of letters, digits, . _ - /).
export const MRN_PATTERN = '[A-Za-z0-9._\\-\\/]{1,64}';
export const MRN_HINT = 'The number the clinic\'s record system knows the patient by (optional): letters, digits, . _ - /. Unique in the clinic.';

const SEXES = [['', 'Not recorded'], ['female', 'Female'], ['male', 'Male'], ['other', 'Other'], ['unknown', 'Unknown']];
const PREFERENCES = [['', 'No preference'], ['phone', 'Phone call'], ['sms', 'Text message'], ['email', 'Email'], ['post', 'Post']];

/**
 * Which field an API refusal is about, from its first words (the API names the field first).
 * @param {string} message
 * @returns {string | null}
 */
function fieldOf(message) {
  const m = message.toLowerCase();
  if (m.includes('mrn')) return 'mrn';
  if (m.startsWith('patient id') || (m.startsWith('patient ') && m.includes('already exists'))) return 'id';
  if (m.startsWith('name')) return 'name';
  if (m.startsWith('birth_date')) return 'birth_date';
  if (m.startsWith('gender')) return 'gender';
  if (m.startsWith('phone')) return 'phone';
  if (m.startsWith('email')) return 'email';
  if (m.startsWith('address')) return 'address';
  if (m.startsWith('contact_preference')) return 'contact_preference';
  if (m.startsWith('contact_notes')) return 'contact_notes';
  if (m.startsWith('care team') || m.startsWith('care_team')) return 'care_team';
  return null;
}

/**
 * A labelled control with its hint and its error line, both tied to it by aria-describedby.
 * @param {string} label
 * @param {HTMLElement} control
 * @param {string | null} hint
 */
function fieldWithError(label, control, hint = null) {
  const err = h('p', { class: 'field-error', id: `${control.id}-err`, hidden: true });
  const described = [hint ? `${control.id}-hint` : null, `${control.id}-err`].filter(Boolean).join(' ');
  control.setAttribute('aria-describedby', described);
  const el = h('div', { class: 'field' }, h('label', { for: control.id }, label), control,
    hint ? h('p', { class: 'hint', id: `${control.id}-hint` }, hint) : null, err);
  return {
    el,
    /** @param {string | null} text */
    error(text) {
      err.textContent = text || '';
      err.hidden = !text;
      if (text) control.setAttribute('aria-invalid', 'true');
      else control.removeAttribute('aria-invalid');
    },
  };
}

/**
 * The form. `mode` "create" adds a patient (POST /patients, with `teamSelect` for the care
 * team); "edit" changes `patient` (PATCH /patients/{id}: only the fields that changed, an
 * emptied field clears). `onSaved(patient)` runs after the API accepted it.
 * @param {{ mode: 'create' | 'edit', patient?: any, teamSelect?: HTMLSelectElement | null,
 *           onSaved: (p: any) => void, onCancel?: () => void, prefix?: string }} opts
 */
export function patientForm({ mode, patient = {}, teamSelect = null, onSaved, onCancel, prefix = 'pf' }) {
  const creating = mode === 'create';
  const msg = messageLine();
  const ctl = {
    id: creating ? h('input', { id: `${prefix}-id`, required: true, pattern: '[A-Za-z0-9._\\-]{1,64}', autocomplete: 'off', spellcheck: 'false' }) : null,
    name: h('input', { id: `${prefix}-name`, required: true, maxlength: '200', autocomplete: 'off', value: patient.name || '' }),
    birth_date: h('input', { id: `${prefix}-birth`, type: 'date', value: patient.birth_date || '' }),
    mrn: h('input', { id: `${prefix}-mrn`, pattern: MRN_PATTERN, maxlength: '64', autocomplete: 'off', spellcheck: 'false', value: patient.mrn || '' }),
    gender: h('select', { id: `${prefix}-sex` }, SEXES.map(([v, l]) => h('option', { value: v }, l))),
    phone: h('input', { id: `${prefix}-phone`, type: 'tel', autocomplete: 'off', maxlength: '500', value: patient.phone || '' }),
    email: h('input', { id: `${prefix}-email`, type: 'email', autocomplete: 'off', maxlength: '500', spellcheck: 'false', value: patient.email || '' }),
    address: h('textarea', { id: `${prefix}-address`, rows: 2, maxlength: '500' }),
    contact_preference: h('select', { id: `${prefix}-pref` }, PREFERENCES.map(([v, l]) => h('option', { value: v }, l))),
    contact_notes: h('input', { id: `${prefix}-notes`, maxlength: '500', autocomplete: 'off', value: patient.contact_notes || '' }),
    care_team: creating ? teamSelect : null,
  };
  /** @type {HTMLSelectElement} */ (ctl.gender).value = patient.gender || '';
  /** @type {HTMLSelectElement} */ (ctl.contact_preference).value = patient.contact_preference || '';
  /** @type {HTMLTextAreaElement} */ (ctl.address).value = patient.address || '';
  /** @type {Record<string, ReturnType<typeof fieldWithError>>} */
  const fields = {};
  const add = (key, label, hint = null) => {
    const c = ctl[key];
    if (!c) return null;
    fields[key] = fieldWithError(label, c, hint);
    return fields[key].el;
  };
  const submit = h('button', { type: 'submit', class: 'btn', id: `${prefix}-save` }, creating ? 'Add patient' : 'Save details');
  const cancel = onCancel ? h('button', { type: 'button', class: 'btn-quiet', id: `${prefix}-cancel`, onclick: onCancel }, 'Cancel') : null;
  const form = h('form', { id: creating ? 'new-patient' : 'edit-patient', class: 'grid-form patient-form', novalidate: true },
    add('id', 'Patient id', '1–64 letters, digits, . _ -'),
    add('name', 'Name'),
    add('birth_date', 'Birth date'),
    add('mrn', 'MRN (medical record number)', MRN_HINT),
    add('gender', 'Sex'),
    add('phone', 'Phone'),
    add('email', 'Email'),
    add('address', 'Address'),
    add('contact_preference', 'Contact preference'),
    add('contact_notes', 'Contact notes', 'For example: mornings only; daughter is the carer.'),
    add('care_team', 'Care team'),
    h('div', { class: 'buttons' }, submit, cancel), msg.el);

  /** The browser's own checks, in words, beside each field; the first failing field. */
  const checkLocally = () => {
    let first = null;
    for (const [key, f] of Object.entries(fields)) {
      const c = /** @type {HTMLInputElement} */ (ctl[key]);
      let text = null;
      if (c.validity && !c.validity.valid) {
        if (c.validity.valueMissing) text = `Enter the ${key === 'id' ? 'patient id' : key.replace('_', ' ')}.`;
        else if (key === 'mrn') text = 'Only letters, digits and . _ - / (at most 64).';
        else if (key === 'id') text = 'Only letters, digits and . _ - (1 to 64).';
        else if (key === 'email') text = 'Enter an email address like ada@example.org, or leave it empty.';
        else text = c.validationMessage;
      }
      f.error(text);
      if (text && !first) first = c;
    }
    return first;
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    msg.clear();
    const bad = checkLocally();
    if (bad) {
      msg.error('Not saved: correct the marked fields.');
      bad.focus();
      return;
    }
    /** @type {Record<string, any>} */
    const body = {};
    const val = (/** @type {string} */ key) => /** @type {HTMLInputElement} */ (ctl[key]).value.trim();
    if (creating) {
      body.id = val('id');
      body.name = val('name');
      for (const key of ['birth_date', 'mrn', 'gender', 'phone', 'email', 'address', 'contact_preference', 'contact_notes']) {
        if (val(key)) body[key] = val(key);
      }
      body.care_team = ctl.care_team?.value || 'default';
    } else {
      for (const key of ['name', 'birth_date', 'mrn', 'gender', 'phone', 'email', 'address', 'contact_preference', 'contact_notes']) {
        const now = val(key);
        if (now !== (patient[key] || '')) body[key] = key === 'mrn' && !now ? null : now;
      }
      if (body.birth_date === '') {
        delete body.birth_date; // a birth date is changed, not cleared
      }
      if (!Object.keys(body).length) {
        msg.ok('Nothing changed.');
        return;
      }
    }
    submit.disabled = true;
    try {
      const saved = creating ? await post('/patients', body) : await patch(`/patients/${seg(patient.id)}`, body);
      msg.ok(creating ? `Added ${saved.name} (${saved.id}).` : 'Details saved.');
      if (creating) {
        form.reset();
        if (ctl.care_team) ctl.care_team.value = 'default';
      }
      onSaved(saved);
    } catch (err) {
      const key = fieldOf(err.message);
      if (key && fields[key]) {
        fields[key].error(err.message);
        ctl[key].focus();
      }
      msg.error(`Not saved: ${err.message}`);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
