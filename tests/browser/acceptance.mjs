// The dashboard's acceptance scenarios in headless Chromium, against a running Vigil that
// tests/it/dashboard.rs set up (users, care teams, patients, devices). Prints one JSON line per
// scenario, then a summary line with the publish-to-tile latency; exits 1 if any scenario failed.
//
// Environment: BASE_URL, ADMIN_USER, ADMIN_PASS, CLIN_USER, CLIN_PASS, OWN_PATIENT (in the
// clinician's team), OTHER_PATIENT (not, and on a team without clinicians), DEFAULT_USER,
// DEFAULT_PASS (a clinician created without a team: on the default team), NOTEAM_USER,
// NOTEAM_PASS (a clinician on no team), MQTT_PORT, LAT_PATIENT, LAT_DEVICE, LAT_SECRET (a
// device that measures heart_rate), LAT_READINGS (default 100), SIM_BIN, SIM_CREDENTIALS
// (from `vigil-sim provision`), SIM_PREFIX (default sim), SIM_SCENARIO (default
// hypoglycaemia), SCREENSHOT_DIR (optional: panel.png, inbox.png, patient.png).

import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { launch, need, newPage, pageFetch, percentile, publisher, runProcess, scenarios, signIn, until } from './lib.mjs';

const BASE = need('BASE_URL').replace(/\/$/, '');
const env = (k, d) => process.env[k] || d;
const SHOTS = process.env.SCREENSHOT_DIR;
const { results, scenario } = scenarios();
const problems = [];
let latency = null;

const tileValue = (pid, metric) => `[data-patient-id="${pid}"] [data-metric="${metric}"] .v`;

/** One QoS 1 publish as `device` with `secret` (its own connection): resolves to the exit code. */
async function publishOnce(device, secret, reading) {
  const r = await runProcess('mosquitto_pub', ['-h', '127.0.0.1', '-p', need('MQTT_PORT'), '-V', 'mqttv311', '-q', '1',
    '-i', `${device}-once-${Math.random().toString(36).slice(2, 8)}`, '-u', device, '-P', secret,
    '-t', `vigil/v1/devices/${device}/readings`, '-m', JSON.stringify(reading)], { timeout: 15000 });
  return { code: r.code, err: r.err.trim() };
}

/** A request from this script (not the page: no cookie) with an API token. */
async function withToken(token, method, urlPath, body = undefined) {
  const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(`${BASE}${urlPath}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch { /* empty */ }
  return { status: r.status, body: data };
}

/** Today in the browser's time zone, as a date input's value. */
const today = (page) => page.evaluate(() => {
  const d = new Date();
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
});

async function shot(page, name) {
  if (!SHOTS) return;
  await page.evaluate(() => document.activeElement?.blur());
  await page.screenshot({ path: path.join(SHOTS, name) });
}

const browser = await launch();
let sim = null;
try {
  const { page } = await newPage(browser, problems);

  await scenario('sign_in', async () => {
    // A wrong password is refused in words, and nothing else happens.
    await page.goto(`${BASE}/`);
    await page.waitForSelector('#signin-form');
    await page.fill('#signin-user', need('ADMIN_USER'));
    await page.fill('#signin-pass', `${need('ADMIN_PASS')}-wrong`);
    await page.click('#signin-submit');
    const refused = await page.waitForSelector('#signin-form .msg.error', { timeout: 10000 }).then((e) => e.textContent());
    await signIn(page, BASE, need('ADMIN_USER'), need('ADMIN_PASS'));
    const who = await page.textContent('#who-name');
    if (!who.includes(need('ADMIN_USER'))) throw new Error(`signed-in name shows ${who}`);
    await page.evaluate(() => { window.__noReload = 'still-here'; });
    await until('the live feed', 10000, () => page.evaluate(() => window.vigil.liveState === 'live'));
    return { who, wrong_password: refused };
  });

  await scenario('csrf_required', async () => {
    const pid = need('LAT_PATIENT');
    const without = await pageFetch(page, 'POST', `/api/v1/patients/${pid}/notes`, { text: 'no token' }, false);
    if (without.status !== 403) throw new Error(`POST without X-CSRF-Token answered ${without.status}, not 403`);
    const withTok = await pageFetch(page, 'POST', `/api/v1/patients/${pid}/notes`, { text: 'CSRF check (browser test)' }, true);
    if (withTok.status >= 300) throw new Error(`POST with the token answered ${withTok.status}: ${JSON.stringify(withTok.body)}`);
    return { without: without.status, with: withTok.status };
  });

  await scenario('live_tile_and_latency', async () => {
    const pid = need('LAT_PATIENT');
    const n = Number(env('LAT_READINGS', '100'));
    await page.waitForSelector(`[data-patient-id="${pid}"]`, { state: 'attached' });
    await page.evaluate((sel) => {
      window.__seen = {};
      const check = () => {
        const el = document.querySelector(sel);
        if (el && !(el.textContent in window.__seen)) window.__seen[el.textContent] = Date.now();
      };
      window.__latObs = new MutationObserver(check);
      window.__latObs.observe(document.getElementById('tiles'), { subtree: true, childList: true, characterData: true });
    }, tileValue(pid, 'heart_rate'));
    const pub = publisher({ port: need('MQTT_PORT'), device: need('LAT_DEVICE'), secret: need('LAT_SECRET') });
    const samples = [];
    try {
      // Warm-up: the first line also waits for mosquitto_pub to connect; not counted.
      pub.publish({ metric: 'heart_rate', value: 59, time: new Date().toISOString() });
      await until('the warm-up reading on the tile', 10000, () => page.evaluate(() => window.__seen['59']), 5);
      for (let i = 0; i < n; i += 1) {
        const value = 60 + (i % 50);
        // Distinct from whatever the tile shows now, so the change is ours.
        await page.evaluate((v) => { delete window.__seen[String(v)]; }, value);
        const sent = pub.publish({ metric: 'heart_rate', value, time: new Date().toISOString() });
        const seenAt = await until(`heart rate ${value} on the tile`, 10000,
          () => page.evaluate((v) => window.__seen[String(v)], value), 5);
        samples.push(seenAt - sent);
      }
    } finally {
      const r = await pub.close();
      if (r.code !== 0 && r.code !== null) problems.push(`mosquitto_pub exited ${r.code}: ${r.stderr}`);
    }
    await page.evaluate(() => window.__latObs.disconnect());
    if ((await page.evaluate(() => window.__noReload)) !== 'still-here') throw new Error('the page reloaded');
    const sorted = [...samples].sort((a, b) => a - b);
    latency = {
      readings: samples.length, p50_ms: percentile(sorted, 50), p90_ms: percentile(sorted, 90),
      p99_ms: percentile(sorted, 99), max_ms: sorted[sorted.length - 1], min_ms: sorted[0],
    };
    return latency;
  });

  await scenario('reconnect', async () => {
    await page.evaluate(() => {
      window.__connStates = [];
      window.__connObs = new MutationObserver(() => window.__connStates.push(document.getElementById('conn').dataset.state));
      window.__connObs.observe(document.getElementById('conn'), { attributes: true, attributeFilter: ['data-state'] });
      window.vigil.dropLive();
    });
    await until('the reconnecting state', 5000, () => page.evaluate(() => window.__connStates.includes('reconnecting')));
    const shown = await page.textContent('#conn-text');
    await until('live again', 15000, () => page.evaluate(() => window.vigil.liveState === 'live'));
    const pid = need('LAT_PATIENT');
    const pub = publisher({ port: need('MQTT_PORT'), device: need('LAT_DEVICE'), secret: need('LAT_SECRET') });
    try {
      pub.publish({ metric: 'heart_rate', value: 55, time: new Date().toISOString() });
      await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === '55', tileValue(pid, 'heart_rate'), { timeout: 10000 });
    } finally {
      await pub.close();
    }
    const states = await page.evaluate(() => { window.__connObs.disconnect(); return window.__connStates; });
    return { states, shown_while_down: shown };
  });

  let simPatients = [];
  await scenario('sim_readings_live', async () => {
    const prefix = env('SIM_PREFIX', 'sim');
    simPatients = await page.$$eval(`[data-patient-id^="${prefix}"]`, (els) => els.map((e) => e.dataset.patientId));
    if (!simPatients.length) throw new Error(`no tiles for the simulator's patients (${prefix}-…) on the panel`);
    const before = await page.$$eval(`[data-patient-id^="${prefix}"] .vital .v`, (els) => els.length);
    const args = ['run', '--credentials', need('SIM_CREDENTIALS'), '--mqtt', `mqtt://127.0.0.1:${need('MQTT_PORT')}`,
      '--duration', env('SIM_DURATION', '20s'), '--speed', env('SIM_SPEED', '600'), '--scenario', env('SIM_SCENARIO', 'hypoglycaemia')];
    let simErr = '';
    sim = spawn(need('SIM_BIN'), args, { stdio: ['ignore', 'ignore', 'pipe'] });
    sim.stderr.on('data', (d) => { simErr += d; });
    sim.done = new Promise((r) => sim.on('exit', (code) => r(code)));
    await until('every simulated patient\'s tile to show readings', 30000, () => page.evaluate(({ ids }) => ids.every((id) => document.querySelectorAll(`[data-patient-id="${id}"] .vital .v`).length > 0), { ids: simPatients }), 100)
      .catch((e) => { throw new Error(`${e.message}; vigil-sim stderr: ${simErr.slice(-500)}`); });
    if ((await page.evaluate(() => window.__noReload)) !== 'still-here') throw new Error('the page reloaded');
    const after = await page.$$eval(`[data-patient-id^="${prefix}"] .vital .v`, (els) => els.length);
    return { patients: simPatients.length, values_before: before, values_after: after };
  });

  let acked = null;
  await scenario('alert_inbox_ack_record', async () => {
    const prefix = env('SIM_PREFIX', 'sim');
    await page.click('a[data-route="inbox"]');
    const sel = `#inbox-open li.alert-item:has(a[href^="#/patients/${prefix}"])`;
    await page.waitForSelector(sel, { timeout: 60000 });
    // Let the story play out (its worst alert comes last), then take the first: the most severe.
    if (!sim) throw new Error('vigil-sim did not run');
    const code = await Promise.race([sim.done, new Promise((r) => setTimeout(() => r('running'), 60000))]);
    if (code !== 0) throw new Error(`vigil-sim run ended with ${code}`);
    await page.waitForTimeout(500);
    const banner = await page.evaluate(() => {
      const b = document.getElementById('banner');
      return b.hidden ? null : b.textContent;
    });
    const item = await page.$(sel);
    const id = await item.getAttribute('data-alert-id');
    const severity = await page.$eval(`li[data-alert-id="${id}"] .badge`, (e) => e.textContent);
    if (severity === 'HIGH' && !banner) throw new Error('a high alert is open but no banner shows');
    await shot(page, 'inbox.png');
    const note = `Rang the patient, glucose tablets taken (browser test ${Date.now()})`;
    // By keyboard: type the note, Tab to "Acknowledge", press Enter.
    await page.focus(`li[data-alert-id="${id}"] textarea`);
    await page.keyboard.type(note);
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => document.activeElement?.textContent);
    if (focused !== 'Acknowledge') throw new Error(`Tab from the note reached ${JSON.stringify(focused)}, not Acknowledge`);
    await page.keyboard.press('Enter');
    await page.waitForSelector(`#inbox-acked li[data-alert-id="${id}"][data-status="acknowledged"]`, { timeout: 10000 });
    const api = await pageFetch(page, 'GET', `/api/v1/alerts/${id}`);
    if (api.body?.status !== 'acknowledged' || api.body?.ack_note !== note) throw new Error(`API shows the alert as ${JSON.stringify(api.body)}`);
    const pid = api.body.patient_id;
    await page.click(`li[data-alert-id="${id}"] h3 a`);
    await page.waitForSelector(`.tl-item[data-kind="alert.acknowledged"]:has-text("${note}")`, { timeout: 10000 });
    acked = { id, patient: pid, severity, banner: banner ? banner.slice(0, 120) : null };
    return acked;
  });

  await scenario('patient_chart', async () => {
    const pid = acked?.patient || need('LAT_PATIENT');
    if (!page.url().includes(`#/patients/${pid}`)) await page.evaluate((p) => { location.hash = `#/patients/${p}`; }, pid);
    await page.waitForSelector('.chart[data-points]:not([data-points="0"])', { timeout: 15000 });
    await page.waitForTimeout(500);
    const charts = await page.$$eval('.chart', (els) => els.map((e) => {
      const c = e.querySelector('canvas');
      let blue = 0;
      if (c) {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i + 2] > d[i] + 60) blue += 1;
      }
      return { metric: e.dataset.metric, points: Number(e.dataset.points || 0), drawn_pixels: blue };
    }));
    const drawn = charts.filter((c) => c.points > 0 && c.drawn_pixels > 20);
    if (!drawn.length) throw new Error(`no chart drew its points: ${JSON.stringify(charts)}`);
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot(page, 'patient.png');
    // The latency patient's heart rate too (readings from mosquitto_pub).
    await page.evaluate((p) => { location.hash = `#/patients/${p}`; }, need('LAT_PATIENT'));
    await page.waitForSelector('.chart[data-metric="heart_rate"][data-points]:not([data-points="0"])', { timeout: 15000 });
    const hr = await page.$eval('.chart[data-metric="heart_rate"]', (e) => Number(e.dataset.points));
    // Zoom: drag across the chart; every chart refetches that window; double-click goes back.
    const before = await page.textContent('#chart-window');
    const over = await page.$('.chart[data-metric="heart_rate"] .u-over');
    const box = await over.boundingBox();
    await page.mouse.move(box.x + box.width * 0.55, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.75, box.y + box.height / 2, { steps: 5 });
    await page.mouse.up();
    await page.waitForFunction((b) => document.getElementById('chart-window').textContent !== b, before, { timeout: 10000 });
    const zoomed = await page.textContent('#chart-window');
    if (!(await page.isVisible('button:has-text("Reset zoom")'))) throw new Error('no Reset zoom after zooming');
    await page.dblclick('.chart[data-metric="heart_rate"] .u-over');
    await page.waitForSelector('button:has-text("Reset zoom")', { state: 'hidden', timeout: 10000 });
    return { charts, heart_rate_points: hr, zoom: { before, zoomed } };
  });

  await scenario('panel_screenshot', async () => {
    await page.click('a[data-route="panel"]');
    await page.waitForSelector('.tile');
    await page.waitForTimeout(800);
    await shot(page, 'panel.png');
    return { tiles: await page.$$eval('.tile', (e) => e.length) };
  });

  await scenario('admin_and_care_plan', async () => {
    const stamp = Date.now().toString(36);
    const team = `team-${stamp}`, pid = `pat-${stamp}`, dev = `ox-${stamp}`;
    await page.click('a[data-route="admin"]');
    await page.waitForSelector('#new-team');
    await page.fill('#nt-id', team);
    await page.fill('#nt-name', `Ward ${stamp}`);
    await page.click('#new-team button[type="submit"]');
    await page.waitForSelector(`#np-team option[value="${team}"]`, { state: 'attached', timeout: 10000 });
    await page.fill('#np-id', pid);
    await page.fill('#np-name', `Grace ${stamp}`);
    await page.fill('#np-mrn', `MRN-${stamp}`);
    await page.selectOption('#np-team', team);
    await page.click('#new-patient button[type="submit"]');
    await page.waitForSelector(`#nd-patient option[value="${pid}"]`, { state: 'attached', timeout: 10000 });
    // The MRN the clinic's record knows the patient by: given with the patient, changed in the
    // table (saved on leaving the field), and kept by the API.
    const mrnField = `#pt-mrn-${pid}`;
    await page.waitForSelector(mrnField, { timeout: 10000 });
    const mrnGiven = await page.inputValue(mrnField);
    if (mrnGiven !== `MRN-${stamp}`) throw new Error(`the table shows MRN ${mrnGiven}`);
    await page.fill(mrnField, `MRN-${stamp}-2`);
    await page.press(mrnField, 'Tab');
    const mrnSaved = await until('the MRN saved', 10000, async () => {
      const r = await pageFetch(page, 'GET', `/api/v1/patients/${pid}/record`);
      return r.body?.patient?.mrn === `MRN-${stamp}-2` ? r.body.patient.mrn : null;
    });
    // A duplicate patient is refused with the API's reason, shown by the form.
    await page.fill('#np-id', pid);
    await page.fill('#np-name', 'Duplicate');
    await page.click('#new-patient button[type="submit"]');
    const dupError = await page.waitForSelector('#new-patient .msg.error', { timeout: 10000 }).then((e) => e.textContent());
    await page.fill('#nd-id', dev);
    await page.selectOption('#nd-patient', pid);
    await page.selectOption('#nd-profile', 'pulse-oximeter');
    await page.click('#new-device button[type="submit"]');
    await page.waitForSelector('#cred-pass', { timeout: 10000 });
    const password = await page.inputValue('#cred-pass');
    const example = await page.inputValue('#cred-example');
    // The gateway's real MQTT listener (a free port, not 1883), plain: no --cafile.
    const host = new URL(BASE).hostname;
    if (!password || !example.includes(`-h ${host} -p ${need('MQTT_PORT')} `) || example.includes('--cafile') || !example.includes(password)) {
      throw new Error(`credentials box: password ${password ? 'shown' : 'missing'}, example ${example}`);
    }
    const endpoint = await page.textContent('#cred-endpoint');
    if (!endpoint.includes(`${host}, port ${need('MQTT_PORT')}`) || !/without TLS/.test(endpoint)) throw new Error(`the box says ${endpoint}`);
    // The credentials work: publish with them, and the new patient's tile shows it.
    const pub = publisher({ port: need('MQTT_PORT'), device: dev, secret: password });
    try {
      pub.publish({ metric: 'spo2', value: 93, time: new Date().toISOString() });
      await page.click('a[data-route="panel"]');
      await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === '93', tileValue(pid, 'spo2'), { timeout: 15000 });
    } finally {
      await pub.close();
    }
    // Care plan: a bad rule shows the API's reason; a good one is saved and drawn.
    await page.evaluate((p) => { location.hash = `#/patients/${p}`; }, pid);
    // The admin edits the rules as JSON (folded away below the clinicians' form).
    await page.click('details.plan-json summary');
    await page.waitForSelector('#plan-json');
    const bad = { rules: [{ id: 'spo2-low', kind: 'threshold', metric: 'spo2', op: '<', value: 900, for_s: 0, severity: 'high' }] };
    await page.fill('#plan-json', JSON.stringify(bad));
    await page.click('#plan-json-save');
    const planError = await page.waitForSelector('#plan-form .msg.error', { timeout: 10000 }).then((e) => e.textContent());
    if (!/spo2-low|900/.test(planError)) throw new Error(`the refusal does not name the rule: ${planError}`);
    const good = { rules: [{ id: 'spo2-low', kind: 'threshold', metric: 'spo2', op: '<', value: 92, for_s: 0, severity: 'medium' }] };
    await page.fill('#plan-json', JSON.stringify(good));
    await page.click('#plan-json-save');
    await page.waitForSelector('#plan-form .msg.ok', { timeout: 10000 });
    await page.waitForSelector('.chart[data-metric="spo2"] .thresholds:has-text("spo2-low")', { timeout: 10000 });
    await page.waitForSelector('.tl-item[data-kind="care_plan.updated"]', { timeout: 10000 });
    // Video visits: the visit opens in the dashboard with the patient's link to send (the call
    // itself is tests/browser/visit.mjs); leaving the page leaves the call.
    await page.click('#start-visit');
    await page.waitForURL(/#\/visits\/vis_[0-9a-f]{32}$/, { timeout: 10000 });
    const link = await page.waitForSelector('#visit-patient-link', { timeout: 10000 }).then((e) => e.inputValue());
    if (!/\/visit\/vis_[0-9a-f]{32}#./.test(link)) throw new Error(`the patient's link is ${link}`);
    const visit = new URL(link).pathname;
    await page.evaluate((p) => { location.hash = `#/patients/${p}`; }, pid);
    await page.waitForSelector('#start-visit', { timeout: 10000 });
    const mrnShown = await page.textContent('dl.facts');
    if (!mrnShown.includes(`MRN-${stamp}-2`)) throw new Error(`the patient view does not show the MRN: ${mrnShown}`);
    return { team, patient: pid, device: dev, duplicate_refused: dupError, plan_refused: planError, visit, mrn_given: mrnGiven, mrn_saved: mrnSaved };
  });


  // A patient (created without a care team: on the default team) with a device, for the admin
  // scenarios below.
  let adminPatient = null;
  async function ensureAdminPatient() {
    if (adminPatient) return adminPatient;
    const stamp = Date.now().toString(36);
    const pid = `pat-adm-${stamp}`, dev = `ox-adm-${stamp}`;
    const p = await pageFetch(page, 'POST', '/api/v1/patients', { id: pid, name: `Rosa ${stamp}` });
    if (p.status !== 201) throw new Error(`creating ${pid}: ${p.status} ${JSON.stringify(p.body)}`);
    const d = await pageFetch(page, 'POST', '/api/v1/devices', { id: dev, patient_id: pid, profile: 'pulse-oximeter' });
    if (d.status !== 201) throw new Error(`creating ${dev}: ${d.status} ${JSON.stringify(d.body)}`);
    adminPatient = { pid, dev, secret: d.body.mqtt.password };
    return adminPatient;
  }
  const stored = async (pid, value) => {
    const o = await pageFetch(page, 'GET', `/api/v1/patients/${pid}/observations?metric=spo2`);
    return (o.body?.observations || []).some((x) => x.value === value);
  };

  await scenario('device_rotate_revoke', async () => {
    const { pid, dev, secret: oldSecret } = await ensureAdminPatient();
    const row = `#devices tr[data-device-id="${dev}"]`;
    // A connection with the first secret, which works.
    const pub = publisher({ port: need('MQTT_PORT'), device: dev, secret: oldSecret });
    let oldRefused, newSecret;
    try {
      pub.publish({ metric: 'spo2', value: 95, time: new Date().toISOString() });
      await until('a reading sent with the first secret', 10000, () => stored(pid, 95), 100);
      await page.evaluate((p) => { location.hash = `#/patients/${p}`; }, pid);
      await page.click(`${row} button[data-action="rotate"]`);
      const ask = await page.waitForSelector('#rotate-confirm', { timeout: 10000 }).then((e) => e.textContent());
      if (!/connection ends now/.test(ask) || !/new secret/.test(ask)) throw new Error(`the rotation's confirmation says: ${ask}`);
      const safe = await page.evaluate(() => document.activeElement?.id);
      if (safe !== 'rotate-confirm-no') throw new Error(`focus is on ${safe}, not Cancel`);
      await page.click('#rotate-confirm-yes');
      await page.waitForSelector('#rotated-secret #cred-pass', { timeout: 10000 });
      newSecret = await page.inputValue('#cred-pass');
      if (!newSecret || newSecret === oldSecret) throw new Error('no new secret shown');
      if ((await page.evaluate(() => document.activeElement?.id)) !== 'cred-pass') throw new Error('focus is not on the new secret');
      if (!(await page.inputValue('#cred-example')).includes(newSecret)) throw new Error('the example does not use the new secret');
      // The old connection is ended: what it sends now is never stored.
      try {
        pub.publish({ metric: 'spo2', value: 91, time: new Date().toISOString() });
      } catch { /* mosquitto_pub already gave up: the connection is gone */ }
      // The old secret is refused; the new one works.
      const old = await publishOnce(dev, oldSecret, { metric: 'spo2', value: 92, time: new Date().toISOString() });
      if (old.code === 0) throw new Error('the old secret still connects');
      const fresh = await publishOnce(dev, newSecret, { metric: 'spo2', value: 96, time: new Date().toISOString() });
      if (fresh.code !== 0) throw new Error(`the new secret is refused: ${fresh.err}`);
      await until('the reading sent with the new secret', 10000, () => stored(pid, 96), 100);
      await page.waitForTimeout(500);
      if (await stored(pid, 91)) throw new Error('the connection made with the old secret still delivered a reading');
      if (await stored(pid, 92)) throw new Error('a reading sent with the old secret was stored');
      oldRefused = old.err;
    } finally {
      await pub.close();
    }
    const audit = await pageFetch(page, 'GET', `/api/v1/audit?patient_id=${pid}`);
    if (!(audit.body?.audit || []).some((l) => l.action === 'device.rotate' && l.target === `device/${dev}` && l.actor === need('ADMIN_USER'))) {
      throw new Error(`no device.rotate line in the audit trail: ${JSON.stringify(audit.body)}`);
    }
    // Shown once: back on the page, the secret is gone.
    await page.click('a[data-route="panel"]');
    await page.waitForSelector('.tile');
    await page.evaluate((p) => { location.hash = `#/patients/${p}`; }, pid);
    await page.waitForSelector(`${row} button[data-action="revoke"]`, { timeout: 10000 });
    if (await page.$('#cred-pass')) throw new Error('the rotated secret shows again');
    // Revoke: the row says so, the actions go, the API agrees and the device cannot connect.
    await page.click(`${row} button[data-action="revoke"]`);
    const askRevoke = await page.waitForSelector('#revoke-confirm', { timeout: 10000 }).then((e) => e.textContent());
    if (!/never connect again/.test(askRevoke) || !/stops sending/.test(askRevoke)) throw new Error(`the revocation's confirmation says: ${askRevoke}`);
    await page.click('#revoke-confirm-yes');
    await page.waitForSelector(`${row}[data-revoked="true"]`, { timeout: 10000 });
    const status = await page.textContent(`${row} td:nth-of-type(2)`);
    if (status !== 'revoked') throw new Error(`the revoked device's status reads ${status}`);
    if (await page.$(`${row} button`)) throw new Error('a revoked device still has Rotate/Revoke buttons');
    const api = await pageFetch(page, 'GET', `/api/v1/devices/${dev}`);
    if (api.body?.revoked !== true) throw new Error(`GET /devices/${dev}: ${JSON.stringify(api.body)}`);
    await page.waitForSelector('.tl-item[data-kind="device.revoked"]', { timeout: 10000 });
    const after = await publishOnce(dev, newSecret, { metric: 'spo2', value: 90 });
    if (after.code === 0) throw new Error('a revoked device connected');
    return { device: dev, old_secret: oldRefused, revoked_secret: after.err, revoked: api.body.revoked };
  });

  let clinicianToken = null;
  await scenario('api_tokens', async () => {
    const { pid } = await ensureAdminPatient();
    const stamp = Date.now().toString(36);
    const label = `Browser test import ${stamp}`;
    await page.click('a[data-route="tokens"]');
    await page.waitForSelector('#new-token');
    await page.fill('#nk-label', label);
    await page.selectOption('#nk-scope', 'read');
    await page.fill('#nk-days', '7');
    await page.click('#new-token button[type="submit"]');
    await page.waitForSelector('#token-secret', { timeout: 10000 });
    const secret = await page.inputValue('#token-secret');
    if (!secret.startsWith('vgt_')) throw new Error(`the secret shown is ${secret.slice(0, 8)}…`);
    if ((await page.evaluate(() => document.activeElement?.id)) !== 'token-secret') throw new Error('focus is not on the new token');
    const row = `#tokens tr:has(th:text-is("${label}"))`;
    await page.waitForSelector(`${row}[data-state="active"]`, { timeout: 10000 });
    const cells = await page.$$eval(`${row} td`, (tds) => tds.map((td) => td.textContent));
    if (cells[0] !== 'read only' || cells[1] !== need('ADMIN_USER')) throw new Error(`the token's row reads ${JSON.stringify(cells)}`);
    // The token reads as its user (audited as such) but may not change anything.
    const list = await withToken(secret, 'GET', '/api/v1/patients');
    if (list.status !== 200 || !Array.isArray(list.body?.patients)) throw new Error(`GET /patients with the token: ${list.status}`);
    const one = await withToken(secret, 'GET', `/api/v1/patients/${pid}`);
    const obs = await withToken(secret, 'GET', `/api/v1/patients/${pid}/observations?metric=spo2`);
    if (one.status !== 200 || obs.status !== 200) throw new Error(`reads of ${pid} with the token: ${one.status}, ${obs.status}`);
    const write = await withToken(secret, 'POST', '/api/v1/patients', { id: `tok-${stamp}`, name: 'Never created' });
    if (write.status !== 403 || !/read-only/.test(write.body?.error || '')) throw new Error(`POST with a read token: ${write.status} ${JSON.stringify(write.body)}`);
    // Revoke it in the page: confirmation, then the row says revoked and the token is refused.
    await page.click(`${row} button[data-action="revoke"]`);
    const ask = await page.waitForSelector('#token-revoke-confirm', { timeout: 10000 }).then((e) => e.textContent());
    if (!/stops working at once/.test(ask)) throw new Error(`the confirmation says: ${ask}`);
    await page.click('#token-revoke-confirm-yes');
    await page.waitForSelector(`${row}[data-state="revoked"]`, { timeout: 10000 });
    if (await page.$('#token-secret')) throw new Error('the revoked token\'s secret still shows');
    const revoked = await withToken(secret, 'GET', '/api/v1/patients');
    if (revoked.status !== 401) throw new Error(`GET /patients with the revoked token: ${revoked.status}`);
    // An admin makes a token for another user, and sees it with its owner.
    const forClin = `Clinician's script ${stamp}`;
    await page.fill('#nk-label', forClin);
    await page.waitForSelector(`#nk-user option[value="${need('CLIN_USER')}"]`, { state: 'attached', timeout: 10000 });
    await page.selectOption('#nk-user', need('CLIN_USER'));
    await page.click('#new-token button[type="submit"]');
    const clinRow = `#tokens tr:has(th:text-is("${forClin}"))`;
    await page.waitForSelector(clinRow, { timeout: 10000 });
    const owner = await page.textContent(`${clinRow} .token-owner`);
    if (owner !== need('CLIN_USER')) throw new Error(`the clinician's token shows owner ${owner}`);
    // The API's refusal is shown in words (a label of spaces passes the form, not the API).
    await page.fill('#nk-label', '   ');
    await page.click('#new-token button[type="submit"]');
    const refused = await page.waitForSelector('#new-token .msg.error', { timeout: 10000 }).then((e) => e.textContent());
    if (!/label/.test(refused)) throw new Error(`a too-long label is refused with: ${refused}`);
    clinicianToken = forClin;
    return { scope_read: list.status, write: write.status, after_revoke: revoked.status, other_owner: owner, refused };
  });

  await scenario('audit_trail', async () => {
    const { pid, dev } = await ensureAdminPatient();
    await page.click('a[data-route="audit"]');
    await page.waitForSelector('#audit-filter');
    // A bad filter: the API's reason is shown.
    await page.fill('#au-patient', 'no such id!');
    await page.click('#audit-filter button[type="submit"]');
    const bad = await page.waitForSelector('#audit-filter .msg.error', { timeout: 10000 }).then((e) => e.textContent());
    const apiBad = await pageFetch(page, 'GET', `/api/v1/audit?patient_id=${encodeURIComponent('no such id!')}`);
    if (!bad || bad !== apiBad.body?.error) throw new Error(`shown: ${bad}; the API says: ${JSON.stringify(apiBad.body)}`);
    // The patient's lines of today by the admin: the token's reads and the device's rotation and
    // revocation are among them.
    const day = await today(page);
    await page.fill('#au-patient', pid);
    await page.fill('#au-user', need('ADMIN_USER'));
    await page.fill('#au-from', day);
    await page.fill('#au-to', day);
    await page.click('#audit-filter button[type="submit"]');
    await page.waitForSelector('#audit-lines tr[data-action="observations.read"]', { timeout: 10000 });
    const lines = await page.$$eval('#audit-lines tbody tr', (trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent)));
    const actions = new Set(lines.map((l) => l[2]));
    for (const want of ['patient.read', 'observations.read', 'device.rotate', 'device.revoke']) {
      if (!actions.has(want)) throw new Error(`no ${want} line for ${pid}: ${[...actions].join(', ')}`);
    }
    // The user's own lines, and those of their API tokens, which name the token too.
    const admin = need('ADMIN_USER');
    const byToken = (actor) => actor.startsWith(`${admin} (token:tok_`) && actor.endsWith(')');
    const strays = lines.filter((l) => (l[1] !== admin && !byToken(l[1])) || l[3] !== pid);
    if (strays.length) throw new Error(`lines outside the filter: ${JSON.stringify(strays.slice(0, 3))}`);
    if (!lines.some((l) => byToken(l[1]) && l[2] === 'patient.read')) throw new Error('the token\'s reads are not told apart from the user\'s own');
    if (!lines.some((l) => l[2] === 'device.rotate' && l[4] === `device/${dev}` && l[5] === '127.0.0.1')) throw new Error('the rotation\'s line lacks its target or address');
    const summary = await page.textContent('#audit-summary');
    // Verify the chain.
    await page.click('#audit-verify');
    await page.waitForSelector('#audit-verify-result[data-intact]', { timeout: 30000 });
    const verdict = await page.textContent('#audit-verify-result');
    if (!/^Intact: all \d+ lines match the chain\.$/.test(verdict)) throw new Error(`Verify says: ${verdict}`);
    // Export today's lines: a download whose first line is JSON with its hash.
    const href = await page.getAttribute('#audit-export', 'href');
    if (!/from=.*&to=/.test(href)) throw new Error(`the export link does not carry the dates: ${href}`);
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: 15000 }), page.click('#audit-export')]);
    const file = await download.path();
    const text = fs.readFileSync(file, 'utf8');
    const first = JSON.parse(text.split('\n')[0]);
    if (!/^[0-9a-f]{64}$/.test(first.hash || '')) throw new Error(`the export's first line: ${text.split('\n')[0]}`);
    const from = new Date(`${day}T00:00:00`).getTime();
    if (!(first.time_ms >= from)) throw new Error(`the export starts before the chosen day: ${first.time}`);
    if (!/\.ndjson$/.test(download.suggestedFilename())) throw new Error(`the download is named ${download.suggestedFilename()}`);
    return { refused: bad, lines: lines.length, summary, verdict, export: { file: download.suggestedFilename(), lines: text.trim().split('\n').length } };
  });

  await scenario('clinician_scope', async () => {
    const { context, page: cp } = await newPage(browser, problems);
    try {
      await signIn(cp, BASE, need('CLIN_USER'), need('CLIN_PASS'));
      // Clinicians land on the worklist; the panel is one click away.
      await cp.click('a[data-route="panel"]');
      await cp.waitForSelector(`[data-patient-id="${need('OWN_PATIENT')}"]`, { state: 'attached', timeout: 10000 });
      const otherTile = await cp.$(`[data-patient-id="${need('OTHER_PATIENT')}"]`);
      if (otherTile) throw new Error('another team\'s patient is on the clinician\'s panel');
      const adminLink = await cp.isVisible('#nav-admin');
      if (adminLink) throw new Error('a clinician sees the admin link');
      await cp.evaluate((p) => { location.hash = `#/patients/${p}`; }, need('OTHER_PATIENT'));
      await cp.waitForSelector('#not-found', { timeout: 10000 });
      const heading = await cp.textContent('#not-found');
      const api = await pageFetch(cp, 'GET', `/api/v1/patients/${need('OTHER_PATIENT')}/record`);
      // The brief asks for 404 (existence not revealed); Vigil answers 403 today. Either refuses.
      if (api.status !== 404 && api.status !== 403) throw new Error(`API answered ${api.status} for another team's patient`);
      if (api.body?.patient || api.body?.timeline) throw new Error('the refusal carries the record');
      const own = await pageFetch(cp, 'GET', `/api/v1/patients/${need('OWN_PATIENT')}/record`);
      if (own.status !== 200) throw new Error(`API answered ${own.status} for the clinician's own patient`);
      const users = await pageFetch(cp, 'GET', '/api/v1/users');
      if (users.status !== 403) throw new Error(`a clinician listing users got ${users.status}, not 403`);
      return { ui: heading, api_other: api.status, api_own: own.status, api_users: users.status };
    } finally {
      await context.close();
    }
  });

  await scenario('clinician_no_admin_controls', async () => {
    const { context, page: cp } = await newPage(browser, problems);
    try {
      await signIn(cp, BASE, need('CLIN_USER'), need('CLIN_PASS'));
      if (await cp.isVisible('#nav-audit')) throw new Error('a clinician sees the audit trail link');
      if (!(await cp.isVisible('#nav-tokens'))) throw new Error('a clinician has no API tokens link');
      // Their own patient's devices: listed, without Rotate or Revoke.
      await cp.evaluate((p) => { location.hash = `#/patients/${p}`; }, need('OWN_PATIENT'));
      await cp.waitForSelector(`#devices tr[data-device-id="${need('LAT_DEVICE')}"]`, { timeout: 10000 });
      const buttons = await cp.$$eval('#devices button', (b) => b.length);
      const heads = await cp.$$eval('#devices thead th', (t) => t.map((x) => x.textContent));
      if (buttons || heads.includes('Credentials')) throw new Error(`a clinician sees device controls: ${buttons} buttons, columns ${heads}`);
      // The audit page refuses in words and shows no controls; so does the API.
      await cp.evaluate(() => { location.hash = '#/audit'; });
      await cp.waitForSelector('.view-audit p[role="alert"]', { timeout: 10000 });
      const said = await cp.textContent('.view-audit p[role="alert"]');
      if (await cp.$('#audit-verify, #audit-export, #audit-filter')) throw new Error('a clinician sees the audit controls');
      const api = {};
      for (const path of ['/api/v1/audit', '/api/v1/audit/verify', '/api/v1/audit/export']) api[path] = (await pageFetch(cp, 'GET', path)).status;
      api.rotate = (await pageFetch(cp, 'POST', `/api/v1/devices/${need('LAT_DEVICE')}/rotate`, {})).status;
      api.revoke = (await pageFetch(cp, 'POST', `/api/v1/devices/${need('LAT_DEVICE')}/revoke`, {})).status;
      if (Object.values(api).some((st) => st !== 403)) throw new Error(`the API answered a clinician ${JSON.stringify(api)}`);
      // Their tokens: the one an admin made for them, no owner column, nobody else's.
      await cp.click('a[data-route="tokens"]');
      await cp.waitForSelector('#new-token');
      if (clinicianToken) await cp.waitForSelector(`#tokens tr:has(th:text-is("${clinicianToken}"))`, { timeout: 10000 });
      const labels = await cp.$$eval('#tokens tbody th', (t) => t.map((x) => x.textContent));
      if (labels.some((l) => l.startsWith('Browser test import'))) throw new Error(`a clinician sees the admin's tokens: ${labels}`);
      if (await cp.$('#tokens .token-owner, #nk-user')) throw new Error('a clinician sees owners or the For user choice');
      return { audit_page: said, api, tokens: labels };
    } finally {
      await context.close();
    }
  });

  await scenario('default_team_clinician', async () => {
    // The simulator's patients were created without a care team: they are on the default team,
    // whose clinician sees their tiles and their alerts (the admin acknowledged one of them).
    const prefix = env('SIM_PREFIX', 'sim');
    const { context, page: cp } = await newPage(browser, problems);
    try {
      await signIn(cp, BASE, need('DEFAULT_USER'), need('DEFAULT_PASS'));
      // Clinicians land on the worklist; the panel is one click away.
      await cp.click('a[data-route="panel"]');
      const ids = simPatients.length ? simPatients : [`${prefix}-0001`];
      await until('the default team\'s patients on the panel', 10000,
        () => cp.evaluate((list) => list.every((id) => document.querySelector(`[data-patient-id="${id}"]`)), ids));
      if (await cp.$(`[data-patient-id="${need('OWN_PATIENT')}"]`)) throw new Error('another team\'s patient is on the default team\'s panel');
      await cp.click('a[data-route="inbox"]');
      const item = `li.alert-item:has(a[href^="#/patients/${prefix}"])`;
      await cp.waitForSelector(item, { timeout: 10000 });
      const inbox = await cp.$$eval(item, (els) => els.map((e) => ({ status: e.dataset.status, text: e.querySelector('.alert-message')?.textContent })));
      // The inbox's open count agrees with the open alerts it lists (the story's one alert
      // episode may be the one the admin acknowledged, and then none is open).
      const count = Number(await cp.textContent('#inbox-count'));
      const open = inbox.filter((a) => a.status === 'open').length;
      if (!inbox.length || count < open) throw new Error(`the inbox holds ${JSON.stringify(inbox)}, the count says ${count}`);
      const api = await pageFetch(cp, 'GET', '/api/v1/alerts');
      const theirs = (api.body?.alerts || []).filter((a) => a.patient_id.startsWith(prefix) && a.status !== 'resolved');
      if (theirs.length !== inbox.length) throw new Error(`GET /alerts holds ${theirs.length} unresolved, the inbox ${inbox.length}: ${JSON.stringify(api.body)}`);
      return { tiles: ids.length, inbox: inbox.length, open_count: count };
    } finally {
      await context.close();
    }
  });

  await scenario('no_team_clinician', async () => {
    // A clinician on no care team is told so, not "No open alerts" on an empty inbox.
    const { context, page: cp } = await newPage(browser, problems);
    try {
      await signIn(cp, BASE, need('NOTEAM_USER'), need('NOTEAM_PASS'));
      // Clinicians land on the worklist; the panel is one click away.
      await cp.click('a[data-route="panel"]');
      await cp.waitForFunction(() => /not on a care team/.test(document.getElementById('panel-summary')?.textContent), null, { timeout: 10000 });
      const panel = await cp.textContent('#panel-summary');
      await cp.click('a[data-route="inbox"]');
      const inbox = await cp.waitForSelector('#inbox-open #no-team', { timeout: 10000 }).then((e) => e.textContent());
      if (!/Ask an administrator/.test(inbox) || /No open alerts/.test(await cp.textContent('#inbox-open'))) throw new Error(`the inbox says ${inbox}`);
      return { panel, inbox };
    } finally {
      await context.close();
    }
  });

  await scenario('unseen_warning', async () => {
    // The other team has no clinician: the admin is warned on every page, the panel's filter
    // shows exactly those patients, and moving the patient to a team with a clinician ends it.
    const other = need('OTHER_PATIENT');
    const li = `#coverage:not([hidden]) #coverage-list li[data-patient-id="${other}"]`;
    await page.click('a[data-route="panel"]');
    await page.waitForSelector(li, { timeout: 10000 });
    const said = await page.textContent(li);
    const reason = await page.getAttribute(li, 'data-reason');
    if (reason !== 'no_clinician' || !/has no clinician/.test(said)) throw new Error(`the warning says ${said} (${reason})`);
    const title = await page.textContent('#coverage-title');
    await page.selectOption('#panel-team', ':unseen');
    const shown = await page.$$eval('.tile', (els) => els.filter((e) => !e.hidden).map((e) => e.dataset.patientId));
    const unseen = await page.evaluate(() => window.vigil.store.unseen.patients.map((p) => p.id).sort());
    if (JSON.stringify([...shown].sort()) !== JSON.stringify(unseen) || !shown.includes(other)) {
      throw new Error(`the filter shows ${shown}, the panel's unseen list is ${unseen}`);
    }
    await page.selectOption('#panel-team', '');
    await page.click('a[data-route="admin"]');
    await page.waitForSelector(`#pt-team-${other}`);
    if (await page.$(`#pt-team-${other} option[value=""]`)) throw new Error('a patient\'s team can be set to none');
    await page.selectOption(`#pt-team-${other}`, 'default');
    await page.waitForSelector(`#coverage-list li[data-patient-id="${other}"]`, { state: 'detached', timeout: 10000 });
    const after = await pageFetch(page, 'GET', '/api/v1/panel');
    if ((after.body?.unseen?.patients || []).some((p) => p.id === other)) throw new Error('the API still lists the moved patient');
    return { title, said, filtered: shown, left: (after.body?.unseen?.patients || []).map((p) => p.id) };
  });

  await scenario('sign_out', async () => {
    await page.click('#sign-out');
    await page.waitForSelector('#signin-form', { timeout: 10000 });
    const panel = await pageFetch(page, 'GET', '/api/v1/panel');
    const session = await pageFetch(page, 'GET', '/api/v1/session');
    if (panel.status !== 401 || session.status !== 401) throw new Error(`after sign-out: panel ${panel.status}, session ${session.status}`);
    return { panel: panel.status, session: session.status };
  });
} finally {
  if (sim) {
    const code = await Promise.race([sim.done, new Promise((r) => setTimeout(() => r('running'), 30000))]);
    if (code === 'running') sim.kill();
  }
  await browser.close();
}

const failed = results.filter((r) => !r.ok).map((r) => r.scenario);
console.log(JSON.stringify({ summary: { passed: results.length - failed.length, failed }, latency, problems }));
process.exit(failed.length ? 1 : 0);
