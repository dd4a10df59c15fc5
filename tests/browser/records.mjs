// Records a clinic can keep, in headless Chromium against a running Vigil that
// tests/it/records_browser.rs set up (a care team, an admin, a clinician, a patient with a
// device): the admin adds a patient with an MRN and demographics (a refusal first, shown beside
// the field it names), edits them on the patient's page, discharges the other patient (who
// leaves the panel and is listed as discharged), disables the clinician (who then cannot sign
// in) and resets a password; the device inventory filters on a desktop and on a 390×844 phone;
// axe-core (WCAG 2.1 A/AA) finds nothing on the new views.
//
// Environment: BASE_URL, ADMIN_USER/PASS, CLIN_USER/PASS, TEAM, PATIENT (with DEVICE).

import { axe, launch, need, newPage, pageFetch, scenarios, signIn, until } from './lib.mjs';

const BASE = need('BASE_URL').replace(/\/$/, '');
const TEAM = need('TEAM');
const PATIENT = need('PATIENT');
const DEVICE = need('DEVICE');
const CLIN = need('CLIN_USER');
const { results, scenario } = scenarios();
const problems = [];
const axeFound = {};
const axePasses = {};

async function checkAxe(page, name) {
  const r = await axe(page, '#main');
  if (r.passes < 5) throw new Error(`axe checked only ${r.passes} rules on ${name}`);
  if (r.violations.length) axeFound[name] = r.violations;
  axePasses[name] = r.passes;
}

const text = (page, sel) => page.textContent(sel).then((t) => (t || '').replace(/\s+/g, ' ').trim());
const NEW = 'p-new';

/** The admin's scenarios on a page of the given size (desktop, then a phone). */
async function adminScenarios(admin, label, stamp) {
  const pid = `${NEW}-${stamp}`;
  await scenario(`admin_adds_a_patient_with_mrn_and_demographics_${label}`, async () => {
    await admin.goto(`${BASE}/#/admin`);
    await admin.waitForSelector('#new-patient', { timeout: 10000 });
    // A taken MRN: the API's refusal beside the MRN field, which is marked and focused.
    await admin.fill('#np-id', pid);
    await admin.fill('#np-name', `Grace Hopper ${stamp}`);
    await admin.fill('#np-mrn', 'MRN-TAKEN');
    await admin.click('#np-save');
    const err = await until('the MRN refusal', 10000, async () => {
      const hidden = await admin.getAttribute('#np-mrn-err', 'hidden');
      return hidden === null ? text(admin, '#np-mrn-err') : null;
    });
    if (!/another patient with this mrn/.test(err)) throw new Error(`the MRN field says: ${err}`);
    if ((await admin.getAttribute('#np-mrn', 'aria-invalid')) !== 'true') throw new Error('the MRN field is not marked');
    const focused = await admin.evaluate(() => document.activeElement?.id);
    if (focused !== 'np-mrn') throw new Error(`focus is on ${focused}`);
    const described = await admin.getAttribute('#np-mrn', 'aria-describedby');
    if (!described.includes('np-mrn-err')) throw new Error(`the error is not tied to the field: ${described}`);
    if (label === 'desktop') await checkAxe(admin, 'add patient with a refusal');
    // A good one: every demographic field.
    await admin.fill('#np-mrn', `MRN-${stamp}`);
    await admin.fill('#np-birth', '1956-12-09');
    await admin.selectOption('#np-sex', 'female');
    await admin.fill('#np-phone', '+1 312 555 0199');
    await admin.fill('#np-email', `grace-${stamp}@example.org`);
    await admin.fill('#np-address', '1 Navy Yard, Arlington');
    await admin.selectOption('#np-pref', 'email');
    await admin.selectOption('#np-team', TEAM);
    if (label === 'phone') await admin.tap('#np-save');
    else await admin.click('#np-save');
    await until('the patient added', 10000, async () => (await admin.$('#np-added')) !== null);
    const r = await pageFetch(admin, 'GET', `/api/v1/patients/${pid}`);
    const p = r.body || {};
    const want = { mrn: `MRN-${stamp}`, birth_date: '1956-12-09', gender: 'female', email: `grace-${stamp}@example.org`, address: '1 Navy Yard, Arlington', contact_preference: 'email', care_team: TEAM };
    for (const [k, v] of Object.entries(want)) if (p[k] !== v) throw new Error(`${k} is ${p[k]}, not ${v}: ${JSON.stringify(p)}`);
    if (label === 'phone') {
      const width = await admin.evaluate(() => document.documentElement.scrollWidth);
      if (width > 390) throw new Error(`the admin page is ${width} px wide on a 390 px phone`);
      await checkAxe(admin, 'admin (phone)');
    }
    return { id: pid };
  });

  await scenario(`admin_edits_the_demographics_on_the_patients_page_${label}`, async () => {
    await admin.goto(`${BASE}/#/patients/${pid}`);
    await admin.waitForSelector('#edit-details', { timeout: 10000 });
    await admin.click('#edit-details');
    await admin.waitForSelector('#edit-patient');
    if ((await admin.evaluate(() => document.activeElement?.id)) !== 'pe-name') throw new Error('focus did not go to the form');
    await admin.fill('#pe-email', 'not an address');
    await admin.click('#pe-save');
    const err = await until('the email refusal', 10000, async () => {
      const hidden = await admin.getAttribute('#pe-email-err', 'hidden');
      return hidden === null ? text(admin, '#pe-email-err') : null;
    });
    if (label === 'desktop') await checkAxe(admin, 'edit details with a refusal');
    await admin.fill('#pe-email', `hopper-${stamp}@example.org`);
    await admin.fill('#pe-phone', '+1 312 555 0100');
    await admin.click('#pe-save');
    await until('saved', 10000, async () => {
      const r = await pageFetch(admin, 'GET', `/api/v1/patients/${pid}`);
      return r.body?.email === `hopper-${stamp}@example.org` && r.body?.phone === '+1 312 555 0100';
    });
    const facts = await text(admin, '.facts');
    if (!facts.includes(`hopper-${stamp}@example.org`)) throw new Error(`the page shows ${facts}`);
    return { refusal: err };
  });
}

const browser = await launch();
try {
  const { page: admin } = await newPage(browser, problems);
  await signIn(admin, BASE, need('ADMIN_USER'), need('ADMIN_PASS'));
  const stamp = Date.now().toString(36);
  let temporary = null;
  await adminScenarios(admin, 'desktop', stamp);

  await scenario('admin_discharges_a_patient_who_leaves_the_panel', async () => {
    await admin.goto(`${BASE}/#/panel`);
    await admin.waitForSelector(`[data-patient-id="${PATIENT}"], #tiles [data-id="${PATIENT}"]`, { timeout: 10000 }).catch(() => null);
    const before = await admin.evaluate((id) => window.vigil.store.patients.has(id), PATIENT);
    if (!before) throw new Error('the patient is not on the panel before the discharge');
    await admin.goto(`${BASE}/#/patients/${PATIENT}`);
    await admin.waitForSelector('#discharge', { timeout: 10000 });
    await admin.click('#discharge');
    await admin.waitForSelector('#discharge-form');
    if ((await admin.evaluate(() => document.activeElement?.id)) !== 'discharge-reason') throw new Error('focus is not on the reason');
    await checkAxe(admin, 'discharge confirmation');
    // Cancel first: nothing happens, focus returns.
    await admin.click('#discharge-no');
    if ((await admin.evaluate(() => document.activeElement?.id)) !== 'discharge') throw new Error('focus did not return to Discharge');
    await admin.click('#discharge');
    await admin.fill('#discharge-reason', 'Programme completed');
    await admin.click('#discharge-yes');
    await admin.waitForSelector('#discharged-note', { timeout: 10000 });
    const note = await text(admin, '#discharged-note');
    if (!/Discharged on \d{4}-\d{2}-\d{2} by .*: Programme completed/.test(note)) throw new Error(`the page says ${note}`);
    await admin.waitForSelector('#readmit');
    await checkAxe(admin, 'discharged patient');
    await until('the panel without the patient', 10000, async () => {
      await admin.goto(`${BASE}/#/panel`);
      await admin.waitForFunction(() => window.vigil?.store?.loaded === true);
      return admin.evaluate((id) => !window.vigil.store.patients.has(id), PATIENT);
    });
    const tiles = await admin.$$eval('#tiles > *', (els) => els.map((e) => e.textContent));
    if (tiles.some((t) => t.includes(PATIENT))) throw new Error('a tile still shows the patient');
    await admin.click('#panel-discharged');
    await admin.waitForSelector(`#discharged tr[data-patient="${PATIENT}"]`, { timeout: 10000 });
    const row = await text(admin, `#discharged tr[data-patient="${PATIENT}"]`);
    if (!row.includes('Programme completed')) throw new Error(`the list says ${row}`);
    await checkAxe(admin, 'discharged patients');
    return { note, row };
  });

  await scenario('admin_disables_a_user_who_then_cannot_sign_in', async () => {
    const { page: clin } = await newPage(browser, problems);
    await signIn(clin, BASE, CLIN, need('CLIN_PASS'));
    await admin.goto(`${BASE}/#/admin`);
    const row = `#users tr[data-user="${CLIN}"]`;
    await admin.waitForSelector(row, { timeout: 10000 });
    await admin.fill(`${row} input.display-name`, 'Dr Nora Nurse');
    await admin.check(`${row} input[type="checkbox"][id^="ux-"]`);
    await admin.click(`${row} button[aria-label="Save ${CLIN}"]`);
    await until('saved', 10000, async () => (await text(admin, `${row} .msg`)).startsWith('Saved'));
    const state = await text(admin, `${row} .user-state`);
    if (state !== 'Disabled') throw new Error(`the row says ${state}`);
    await checkAxe(admin, 'users with a disabled user');
    // Her open page finds itself signed out; a new sign-in is refused in a wrong password's words.
    await until('the clinician signed out', 15000, async () => {
      const r = await pageFetch(clin, 'GET', '/api/v1/session', undefined, false);
      return r.status === 401;
    });
    await clin.goto(`${BASE}/`);
    await clin.waitForSelector('#signin-form', { timeout: 10000 });
    await clin.fill('#signin-user', CLIN);
    await clin.fill('#signin-pass', need('CLIN_PASS'));
    await clin.click('#signin-submit');
    const refusal = await until('the refusal', 10000, async () => {
      const t = await text(clin, '#signin-form .msg');
      return t ? t : null;
    });
    // The same words as for a wrong password: the page does not tell a disabled account apart.
    if (!/username or password is not right/i.test(refusal)) throw new Error(`sign-in said: ${refusal}`);
    await clin.context().close();
    const users = await pageFetch(admin, 'GET', '/api/v1/users');
    const u = users.body.users.find((x) => x.name === CLIN);
    if (!u.disabled || u.display_name !== 'Dr Nora Nurse') throw new Error(JSON.stringify(u));
    return { refusal };
  });

  await scenario('admin_resets_a_password_shown_once', async () => {
    const row = `#users tr[data-user="${CLIN}"]`;
    await admin.click(`${row} button[data-action="reset"]`);
    await admin.waitForSelector('#reset-confirm');
    if ((await admin.evaluate(() => document.activeElement?.id)) !== 'reset-confirm-no') throw new Error('focus is not on Cancel');
    await checkAxe(admin, 'password reset confirmation');
    await admin.click('#reset-confirm-yes');
    await admin.waitForSelector('#reset-pass', { timeout: 10000 });
    const pass = await admin.inputValue('#reset-pass');
    if (!/^[a-z2-9]{5}(-[a-z2-9]{5}){3}$/.test(pass)) throw new Error(`the temporary password is ${pass}`);
    await checkAxe(admin, 'temporary password');
    temporary = pass;
    return { length: pass.length };
  });

  await scenario('a_temporary_password_is_replaced_at_the_next_sign_in', async () => {
    // Enabled again, she signs in with the temporary password and must choose her own first.
    const r = await pageFetch(admin, 'PATCH', `/api/v1/users/${CLIN}`, { disabled: false });
    if (r.status !== 200) throw new Error(JSON.stringify(r));
    const { page: clin } = await newPage(browser, problems, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    await clin.goto(`${BASE}/`);
    await clin.waitForSelector('#signin-form', { timeout: 10000 });
    await clin.fill('#signin-user', CLIN);
    await clin.fill('#signin-pass', temporary);
    await clin.click('#signin-submit');
    await clin.waitForSelector('#change-password-form', { timeout: 10000 });
    if ((await clin.evaluate(() => document.activeElement?.id)) !== 'cp-current') throw new Error('focus is not on the temporary password');
    await checkAxe(clin, 'choose a new password (phone)');
    await clin.fill('#cp-current', temporary);
    await clin.fill('#cp-new', 'short');
    await clin.fill('#cp-again', 'short');
    await clin.tap('#cp-submit');
    const local = await text(clin, '#change-password-form .msg');
    if (!/12 characters/.test(local)) throw new Error(`the form says ${local}`);
    await clin.fill('#cp-new', 'Password1234');
    await clin.fill('#cp-again', 'Password1234');
    await clin.tap('#cp-submit');
    const refusal = await until('the policy refusal', 10000, async () => {
      const t = await text(clin, '#change-password-form .msg');
      return /common/.test(t) ? t : null;
    });
    if ((await clin.getAttribute('#cp-new', 'aria-invalid')) !== 'true') throw new Error('the new password is not marked');
    await clin.fill('#cp-new', 'lilac ferry morning tide');
    await clin.fill('#cp-again', 'lilac ferry morning tide');
    await clin.tap('#cp-submit');
    await clin.waitForSelector('#topbar:not([hidden])', { timeout: 10000 });
    await clin.waitForFunction(() => window.vigil?.store?.loaded === true, null, { timeout: 10000 });
    await clin.context().close();
    return { refusal };
  });

  await scenario('device_inventory_filters', async () => {
    await admin.goto(`${BASE}/#/devices`);
    await admin.waitForSelector('#device-table', { timeout: 10000 });
    const rows = await admin.$$eval('#device-table tbody tr', (els) => els.map((e) => e.dataset.device));
    if (!rows.includes(DEVICE)) throw new Error(`the table lists ${rows}`);
    const status = await text(admin, `#device-table tr[data-device="${DEVICE}"] td:nth-child(4)`);
    if (!['online', 'offline', 'revoked'].includes(status)) throw new Error(`the status reads ${status}`);
    await admin.selectOption('#dv-status', 'revoked');
    await until('the filtered table', 10000, async () => (await text(admin, '#devices-summary')) === '0 devices.');
    await admin.selectOption('#dv-status', '');
    await admin.check('#dv-low');
    await until('the battery filter', 10000, async () => /^\d+ devices?\.$/.test(await text(admin, '#devices-summary')));
    await admin.uncheck('#dv-low');
    await admin.waitForSelector('#device-table', { timeout: 10000 });
    await checkAxe(admin, 'devices');
    return { rows, status };
  });

  await scenario('admin_views_on_a_phone', async () => {
    const { page: phone } = await newPage(browser, problems, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    await signIn(phone, BASE, need('ADMIN_USER'), need('ADMIN_PASS'));
    await adminScenarios(phone, 'phone', `${stamp}p`);
    for (const [route, sel] of [['#/devices', '#device-table'], ['#/discharged', '#discharged']]) {
      await phone.goto(`${BASE}/${route}`);
      await phone.waitForSelector(sel, { timeout: 10000 });
      const width = await phone.evaluate(() => document.documentElement.scrollWidth);
      if (width > 390) throw new Error(`${route} is ${width} px wide on a 390 px phone`);
      await checkAxe(phone, `${route} (phone)`);
    }
    if (process.env.SHOTS) await phone.screenshot({ path: `${process.env.SHOTS}/phone-devices.png`, fullPage: true });
    await phone.context().close();
    return 'ok';
  });

  await scenario('records_pages_pass_axe', async () => {
    if (Object.keys(axeFound).length) throw new Error(`axe violations: ${JSON.stringify(axeFound)}`);
    return { passes: axePasses };
  });
} finally {
  await browser.close();
}

const failed = results.filter((r) => !r.ok).map((r) => r.scenario);
console.log(JSON.stringify({ summary: { passed: results.length - failed.length, failed }, problems }));
process.exit(failed.length ? 1 : 0);
