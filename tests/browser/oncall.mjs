// On-call cover, notifications and contact details in headless Chromium, against a running
// Vigil that tests/it/oncall_browser.rs set up (an SMS channel to a local receiver; the nurse
// has a mobile number): the clinician sees the gap in cover; the admin adds a rota slot (a
// refusal first, shown in words beside the form); the clinician sees who is on call; a reading
// raises a high alert whose SMS step shows under the alert in the inbox and on the patient's
// page; a user keeps their own quiet hours, on a desktop and a 390×844 phone; the
// acknowledgement link's page keeps the link through sign-in, acknowledges, and says why a dead
// link fails; axe-core (WCAG 2.1 A/AA) finds nothing on the new views.
//
// The link acknowledged is the real one, read from the SMS the nurse received (the local
// receiver's state at SMS_STATE_URL), against the real API.
//
// Environment: BASE_URL, ADMIN_USER/PASS, CLIN_USER/PASS (on the team, with a phone number),
// OTHER_USER/PASS (on the team), TEAM, PATIENT, DEVICE, DEVICE_SECRET, MQTT_PORT, SMS_STATE_URL.

import { axe, launch, need, newPage, pageFetch, runProcess, scenarios, signIn, until } from './lib.mjs';

const BASE = need('BASE_URL').replace(/\/$/, '');
const TEAM = need('TEAM');
const CLIN = need('CLIN_USER');
const PATIENT = need('PATIENT');
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

const browser = await launch();
try {
  const { page: clin } = await newPage(browser, problems);
  const { page: admin } = await newPage(browser, problems);
  await signIn(clin, BASE, CLIN, need('CLIN_PASS'));
  await signIn(admin, BASE, need('ADMIN_USER'), need('ADMIN_PASS'));
  let alertId = null;

  await scenario('clinician_sees_the_gap_in_cover', async () => {
    await clin.goto(`${BASE}/#/on-call`);
    const card = `.oncall-status[data-team="${TEAM}"]`;
    await clin.waitForSelector(card, { timeout: 10000 });
    if ((await clin.getAttribute(card, 'data-gap')) !== 'yes') throw new Error('no gap shown while nobody is on the rota');
    const warning = await text(clin, `#oc-${TEAM}-gap p`);
    if (!/^Gap in cover: nobody is on call/.test(warning)) throw new Error(`the warning says: ${warning}`);
    if ((await clin.getAttribute(`#oc-${TEAM}-gap`, 'role')) !== 'alert') throw new Error('the warning is not announced');
    const nav = await clin.getAttribute('[data-route="on-call"]', 'aria-current');
    await checkAxe(clin, 'on-call with a gap (clinician)');
    return { warning, nav };
  });

  await scenario('admin_adds_a_rota_slot', async () => {
    await admin.goto(`${BASE}/#/on-call/${TEAM}`);
    await admin.waitForSelector('#rota-form', { timeout: 10000 });
    await admin.fill('#rota-timezone', 'UTC');
    await admin.click('#rota-add');
    const slot = '#rota-slots fieldset.slot:last-child';
    const focused = await admin.evaluate(() => document.activeElement?.closest('fieldset.slot')?.querySelector('legend')?.textContent);
    if (focused !== 'Slot 1') throw new Error(`focus went to ${focused}, not the new slot`);
    // Saved with no day ticked: the API's refusal, in its words, beside the form.
    await admin.fill(`${slot} input.slot-start`, '00:00');
    await admin.fill(`${slot} input.slot-end`, '00:00');
    await admin.selectOption(`${slot} select.slot-user`, CLIN);
    await admin.click('#rota-save');
    const refusal = await until('the refusal', 10000, async () => {
      const t = await text(admin, '#rota-form .msg');
      return t.includes('not saved') ? t : null;
    });
    if (!/slot 1: days must name at least one/.test(refusal)) throw new Error(`the refusal says: ${refusal}`);
    for (const d of ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun']) await admin.check(`${slot} input[value="${d}"]`);
    await admin.click('#rota-save');
    const ok = await until('saved', 10000, async () => {
      const t = await text(admin, '#rota-form .msg');
      return t === 'The rota saved.' ? t : null;
    });
    await admin.waitForSelector(`#oncall-status li[data-user="${CLIN}"][data-level="1"][data-source="rota"]`, { timeout: 5000 });
    const api = await pageFetch(admin, 'GET', `/api/v1/teams/${TEAM}/on-call`);
    const weekly = api.body.rota?.weekly || [];
    if (weekly.length !== 1 || weekly[0].user !== CLIN || weekly[0].days.length !== 7) throw new Error(`rota: ${JSON.stringify(api.body.rota)}`);
    if (api.body.gap) throw new Error(`still a gap: ${api.body.gap}`);
    return { refusal, ok, rota: api.body.rota };
  });

  await scenario('clinician_sees_who_is_on_call', async () => {
    await clin.goto(`${BASE}/#/on-call`);
    await clin.reload();
    const card = `.oncall-status[data-team="${TEAM}"]`;
    await clin.waitForSelector(`${card}[data-gap="no"]`, { timeout: 10000 });
    const who = await text(clin, `${card} li[data-user="${CLIN}"]`);
    if (!/^Level 1 nurse-a from the rota until /.test(who)) throw new Error(`shown: ${who}`);
    if (await clin.$(`#oc-${TEAM}-gap`)) throw new Error('the gap warning is still shown');
    // The team's page shows the rota in words to a clinician, with no editor.
    await clin.click(`${card} a.team-link`);
    await clin.waitForSelector('#oc-rota-ro', { timeout: 10000 });
    if (await clin.$('#rota-form')) throw new Error('a clinician is offered the rota editor');
    return { who };
  });

  await scenario('alert_shows_its_notification_steps', async () => {
    const r = await runProcess('mosquitto_pub', ['-h', '127.0.0.1', '-p', need('MQTT_PORT'), '-V', 'mqttv311', '-q', '1',
      '-i', `${need('DEVICE')}-browser`, '-u', need('DEVICE'), '-P', need('DEVICE_SECRET'),
      '-t', `vigil/v1/devices/${need('DEVICE')}/readings`, '-m', JSON.stringify({ metric: 'spo2', value: 84 })], { timeout: 15000 });
    if (r.code !== 0) throw new Error(`mosquitto_pub: ${r.err}`);
    alertId = await until('the high alert', 20000, async () => {
      const a = await pageFetch(clin, 'GET', `/api/v1/alerts?patient_id=${PATIENT}`);
      return a.body?.alerts?.[0]?.id;
    }, 200);
    await clin.goto(`${BASE}/#/inbox`);
    const item = `.alert-item[data-alert-id="${alertId}"]`;
    await clin.waitForSelector(`${item} details.notify-steps`, { timeout: 10000 });
    await clin.click(`${item} details.notify-steps summary`);
    const delivered = `${item} .notify-item[data-status="delivered"][data-channel="sms"][data-user="${CLIN}"]`;
    const line = await until('the SMS delivered under the alert', 30000, async () => {
      if (await clin.$(delivered)) return text(clin, delivered);
      await clin.click(`${item} .notify-refresh`);
      return null;
    }, 500);
    if (!/^Step 1 · \d\d:\d\d · nurse-a · SMS delivered \d\d:\d\d$/.test(line)) throw new Error(`the step reads: ${line}`);
    // A clinician is never shown the address.
    const api = await pageFetch(clin, 'GET', `/api/v1/alerts/${alertId}/notifications`);
    const raw = JSON.stringify(api.body);
    if (api.status !== 200 || raw.includes('+1312') || raw.includes('address')) throw new Error(`the API answered ${api.status}: ${raw}`);
    await checkAxe(clin, 'inbox with notifications');
    // The patient's page shows the same under the alert.
    await clin.goto(`${BASE}/#/patients/${PATIENT}`);
    await clin.waitForSelector('#main details.notify-steps', { timeout: 10000 });
    await clin.click('#main details.notify-steps summary');
    const onPatient = await until('the step on the patient page', 10000, async () => {
      const el = await clin.$(`#main .notify-item[data-status="delivered"][data-user="${CLIN}"]`);
      return el ? (await el.textContent()).trim() : null;
    });
    return { alertId, line, onPatient, steps: api.body.steps.length };
  });

  await scenario('user_keeps_their_own_quiet_hours', async () => {
    await clin.goto(`${BASE}/#/me`);
    await clin.waitForSelector('#my-details', { timeout: 10000 });
    const phone = await clin.inputValue('#me-phone');
    if (phone !== '+13125550123') throw new Error(`the form starts with phone ${phone}`);
    // A number not in international form: the API's reason, and the field marked.
    await clin.fill('#me-phone', '3125550123');
    await clin.click('#me-save');
    const refusal = await until('the refusal', 10000, async () => {
      const t = await text(clin, '#my-details .msg');
      return t.startsWith('Not saved') ? t : null;
    });
    if (!refusal.includes('international number')) throw new Error(`refusal: ${refusal}`);
    if ((await clin.getAttribute('#me-phone', 'aria-invalid')) !== 'true') throw new Error('the phone field is not marked');
    if (!(await clin.evaluate(() => document.activeElement?.id === 'me-phone'))) throw new Error('focus is not on the phone field');
    await clin.fill('#me-phone', '+13125550123');
    await clin.fill('#me-quiet-from', '22:00');
    await clin.fill('#me-quiet-to', '07:00');
    await clin.fill('#me-timezone', 'Europe/London');
    await clin.click('#me-save');
    const ok = await until('saved', 10000, async () => {
      const t = await text(clin, '#my-details .msg');
      return t.startsWith('Saved') ? t : null;
    });
    const s = await pageFetch(clin, 'GET', '/api/v1/session');
    const c = s.body.user.contact;
    if (c.quiet?.from !== '22:00' || c.quiet?.to !== '07:00' || c.timezone !== 'Europe/London' || c.phone !== '+13125550123') {
      throw new Error(`stored: ${JSON.stringify(c)}`);
    }
    await clin.reload();
    await clin.waitForSelector('#my-details', { timeout: 10000 });
    const after = [await clin.inputValue('#me-quiet-from'), await clin.inputValue('#me-quiet-to'), await clin.inputValue('#me-timezone')];
    if (after.join(' ') !== '22:00 07:00 Europe/London') throw new Error(`after a reload: ${after}`);
    await checkAxe(clin, 'my details (desktop)');
    return { refusal, ok, contact: c };
  });

  await scenario('contact_form_on_a_phone', async () => {
    const { page: phone } = await newPage(browser, problems, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    await signIn(phone, BASE, need('OTHER_USER'), need('OTHER_PASS'));
    await phone.goto(`${BASE}/#/me`);
    await phone.waitForSelector('#my-details', { timeout: 10000 });
    await phone.fill('#me-email', 'nurse-b@clinic.example');
    await phone.fill('#me-quiet-from', '21:00');
    await phone.fill('#me-quiet-to', '06:30');
    if (process.env.SHOTS) await phone.screenshot({ path: `${process.env.SHOTS}/phone-me.png`, fullPage: true });
    await phone.tap('#me-save');
    await until('saved', 10000, async () => (await text(phone, '#my-details .msg')).startsWith('Saved'));
    const s = await pageFetch(phone, 'GET', '/api/v1/session');
    if (s.body.user.contact.email !== 'nurse-b@clinic.example' || s.body.user.contact.quiet?.from !== '21:00') throw new Error(JSON.stringify(s.body.user.contact));
    const width = await phone.evaluate(() => document.documentElement.scrollWidth);
    if (width > 390) throw new Error(`the page is ${width} px wide on a 390 px phone`);
    const box = await phone.locator('#me-save').boundingBox();
    if (box.height < 40) throw new Error(`the save button is ${box.height} px high`);
    await checkAxe(phone, 'my details (phone)');
    await phone.context().close();
    return { width, contact: s.body.user.contact };
  });

  // The link in the SMS the nurse received about the alert.
  const { page: ack } = await newPage(browser, problems);
  const smsLink = async () => {
    const r = await fetch(need('SMS_STATE_URL'));
    const st = await r.json();
    const body = (st.sms || []).map((m) => m.body).find((b) => b.includes('#/ack/'));
    return body ? body.slice(body.indexOf('#/ack/') + '#/ack/'.length).split(/\s/)[0] : null;
  };
  let token = null;

  await scenario('ack_link_survives_sign_in_and_acknowledges', async () => {
    if (!alertId) throw new Error('no alert to acknowledge');
    token = await until('the SMS with its link', 20000, smsLink);
    await ack.goto(`${BASE}/#/ack/${token}`);
    await ack.waitForSelector('#signin-form', { timeout: 10000 });
    const hint = await text(ack, '#signin-ack');
    await ack.fill('#signin-user', CLIN);
    await ack.fill('#signin-pass', need('CLIN_PASS'));
    await ack.press('#signin-pass', 'Enter');
    await ack.waitForSelector('#ack-button', { timeout: 10000 });
    const hash = await ack.evaluate(() => location.hash);
    if (hash !== `#/ack/${token}`) throw new Error(`after sign-in the page is ${hash}`);
    const card = await until('the patient named', 10000, async () => {
      const t = await text(ack, '#ack-card');
      return t.includes('Olive Cover') ? t : null;
    });
    for (const want of ['High', 'spo2-low', 'Opened', 'Open, not yet acknowledged']) if (!card.includes(want)) throw new Error(`"${want}" missing: ${card}`);
    const title = await text(ack, '#ack-title');
    if (!(await ack.evaluate(() => document.activeElement?.id === 'ack-button'))) throw new Error('focus is not on the Acknowledge button');
    await checkAxe(ack, 'acknowledgement link');
    await ack.fill('#ack-note', 'calling her now');
    await ack.focus('#ack-button');
    await ack.keyboard.press('Enter');
    await ack.waitForSelector('#ack-confirmed', { timeout: 10000 });
    const done = await text(ack, '#ack-confirmed');
    if (!/^You acknowledged the high alert for Olive Cover/.test(done)) throw new Error(`confirmation: ${done}`);
    if ((await ack.getAttribute('#ack-patient', 'href')) !== `#/patients/${PATIENT}`) throw new Error('no link to the patient');
    const a = await pageFetch(clin, 'GET', `/api/v1/alerts/${alertId}`);
    if (a.body.status !== 'acknowledged' || a.body.acknowledged_by !== CLIN || a.body.ack_note !== 'calling her now') throw new Error(`the alert: ${JSON.stringify(a.body)}`);
    await checkAxe(ack, 'acknowledgement confirmed');
    await ack.click('#ack-patient');
    await ack.waitForSelector('#patient-name', { timeout: 10000 });
    return { hint, title, done };
  });

  await scenario('ack_link_refusals_in_words', async () => {
    const seen = {};
    if (!token) throw new Error('no link was used');
    // The same link with its signature changed, and something that is not a link at all.
    const tag = token.slice(token.lastIndexOf('.') + 1);
    const altered = token.slice(0, token.lastIndexOf('.') + 1) + (tag[0] === 'A' ? 'B' : 'A') + tag.slice(1);
    for (const [bad, want] of [[altered, /^This link cannot be used by you: the link's signature does not match/],
      ['x', /^This is not a working acknowledgement link/]]) {
      await ack.goto(`${BASE}/#/ack/${bad}`);
      const t = await until(`the refusal of ${bad}`, 10000, async () => {
        const el = await ack.$('#ack-error');
        return el ? (await el.textContent()).trim() : null;
      });
      if (!want.test(t)) throw new Error(`${bad}: ${t}`);
      seen[bad === 'x' ? 'malformed' : 'altered'] = t;
    }
    // The used link says by whom, and offers the patient instead of the button.
    await ack.goto(`${BASE}/#/ack/${token}`);
    await ack.waitForSelector('#ack-used', { timeout: 10000 });
    if (await ack.$('#ack-button')) throw new Error('a used link still offers the button');
    seen.used = await text(ack, '#ack-used');
    return seen;
  });

  await scenario('oncall_pages_pass_axe', async () => {
    await admin.goto(`${BASE}/#/on-call`);
    await admin.waitForSelector(`.oncall-status[data-team="${TEAM}"]`, { timeout: 10000 });
    await checkAxe(admin, 'on-call (admin)');
    await admin.goto(`${BASE}/#/on-call/${TEAM}`);
    await admin.waitForSelector('#policy-form', { timeout: 10000 });
    await admin.click('#shift-add');
    await checkAxe(admin, 'team cover editor (admin)');
    await clin.goto(`${BASE}/#/on-call/${TEAM}`);
    await clin.waitForSelector('#oc-rota-ro', { timeout: 10000 });
    await checkAxe(clin, 'team cover (clinician)');
    if (Object.keys(axeFound).length) throw new Error(`axe violations: ${JSON.stringify(axeFound)}`);
    return { passes: axePasses };
  });
} finally {
  await browser.close();
}

const failed = results.filter((r) => !r.ok).map((r) => r.scenario);
console.log(JSON.stringify({ summary: { passed: results.length - failed.length, failed }, problems }));
process.exit(failed.length ? 1 : 0);
