// The care programme's pages in headless Chromium, against a running Vigil that
// tests/it/programme_browser.rs set up: the clinician's worklist ranks, moves with the keyboard,
// acknowledges, opens a patient, and updates live when a reading raises an alert; the care
// timer on a patient's page survives a reload and logs its time; the month's billing evidence
// prints one page per patient; the population page's figures and charts render.
//
// Environment: BASE_URL, CLIN_USER, CLIN_PASS, MQTT_PORT, HIGH_PATIENT (an unacknowledged high
// alert), STABLE_PATIENT, STABLE_DEVICE, STABLE_SECRET (its cuff: a systolic above 180 raises a
// high alert), OTHER_PATIENT (another team's).

import { axe, launch, need, newPage, runProcess, scenarios, signIn, until } from './lib.mjs';

const BASE = need('BASE_URL').replace(/\/$/, '');
const { results, scenario } = scenarios();
const problems = [];

const order = (page) => page.$$eval('#worklist .worklist-row', (rows) => rows.map((r) => r.dataset.patientId));
const focusedRow = (page) => page.evaluate(() => document.activeElement?.closest?.('.worklist-row')?.dataset.patientId || null);

const browser = await launch();
try {
  const { page } = await newPage(browser, problems);
  await signIn(page, BASE, need('CLIN_USER'), need('CLIN_PASS'));

  await scenario('clinician_lands_on_the_worklist', async () => {
    await until('the worklist page', 10000, () => page.evaluate(() => document.querySelector('#worklist') !== null),
      100).catch(async (e) => { throw new Error(`${e.message}; the page is ${await page.evaluate(() => `${location.hash} ${document.title}`)}`); });
    const current = await page.getAttribute('[data-route="worklist"]', 'aria-current');
    if (current !== 'page') throw new Error(`the worklist link is not marked current (${current})`);
    return { title: await page.title() };
  });

  await scenario('worklist_ranks', async () => {
    await page.goto(`${BASE}/#/worklist`);
    await page.waitForSelector('#worklist .worklist-row');
    const rows = await until('both patients listed', 10000, async () => {
      const o = await order(page);
      return o.length >= 2 ? o : null;
    });
    if (rows[0] !== need('HIGH_PATIENT')) throw new Error(`first row is ${rows[0]}, not the patient with the high alert`);
    if (rows.includes(need('OTHER_PATIENT'))) throw new Error('another team\'s patient is listed');
    const reason = await page.textContent(`#worklist .worklist-row[data-patient-id="${rows[0]}"] .reasons .first`);
    if (!reason.startsWith('Unacknowledged high alert')) throw new Error(`first reason: ${reason}`);
    const nav = await page.getAttribute('[data-route="worklist"]', 'aria-current');
    return { rows, reason, nav };
  });

  await scenario('worklist_keyboard', async () => {
    await page.focus('#worklist .worklist-row[tabindex="0"]');
    const first = await focusedRow(page);
    await page.keyboard.press('j');
    const second = await focusedRow(page);
    await page.keyboard.press('ArrowUp');
    const back = await focusedRow(page);
    if (!(first && second && first !== second && back === first)) throw new Error(`focus moved ${first} → ${second} → ${back}`);
    // "a" acknowledges the focused row's alert; the list refetches and the row says so.
    if (first !== need('HIGH_PATIENT')) throw new Error(`focus began on ${first}`);
    await page.keyboard.press('a');
    const tier = await until('the acknowledged alert off the row', 10000, async () => {
      const t = await page.getAttribute(`#worklist .worklist-row[data-patient-id="${first}"]`, 'data-tier');
      return t && t !== 'high_alert' ? t : null;
    });
    const alerts = await page.evaluate(async (pid) => (await fetch(`/api/v1/alerts?patient_id=${pid}`)).json(), first);
    if (alerts.alerts[0]?.status !== 'acknowledged') throw new Error(`the alert is ${alerts.alerts[0]?.status}`);
    return { first, second, tier, rows: await order(page) };
  });

  await scenario('worklist_live', async () => {
    // A reading raising a high alert for the stable patient moves them to the top, no reload.
    await page.evaluate(() => { window.__stillHere = true; });
    const r = await runProcess('mosquitto_pub', ['-h', '127.0.0.1', '-p', need('MQTT_PORT'), '-V', 'mqttv311', '-q', '1',
      '-i', `${need('STABLE_DEVICE')}-browser`, '-u', need('STABLE_DEVICE'), '-P', need('STABLE_SECRET'),
      '-t', `vigil/v1/devices/${need('STABLE_DEVICE')}/readings`, '-m', JSON.stringify({ metric: 'bp_systolic', value: 196 })], { timeout: 15000 });
    if (r.code !== 0) throw new Error(`mosquitto_pub: ${r.err}`);
    const before = await order(page);
    if (before[0] === need('STABLE_PATIENT')) throw new Error(`already first: ${before}`);
    const rows = await until('the stable patient at the top', 15000, async () => {
      const o = await order(page);
      return o[0] === need('STABLE_PATIENT') ? o : null;
    }, 100);
    if (!(await page.evaluate(() => window.__stillHere))) throw new Error('the page reloaded');
    return { rows };
  });

  await scenario('worklist_enter_opens_the_patient', async () => {
    await page.focus('#worklist .worklist-row[tabindex="0"]');
    const id = await focusedRow(page);
    await page.keyboard.press('Enter');
    await until('the patient page', 10000, () => page.evaluate(() => location.hash));
    const hash = await page.evaluate(() => location.hash);
    if (hash !== `#/patients/${id}`) throw new Error(`Enter went to ${hash}`);
    return { hash };
  });

  await scenario('timer_survives_a_reload_and_logs_its_time', async () => {
    const pid = need('HIGH_PATIENT');
    await page.goto(`${BASE}/#/patients/${pid}`);
    await page.waitForSelector('#timer-start');
    await page.selectOption('#timer-activity', 'call');
    await page.click('#timer-start');
    await page.waitForSelector('#timer-clock');
    await page.reload();
    await page.waitForSelector('#timer-clock', { timeout: 10000 });
    const clock = await page.textContent('#timer-clock');
    await page.check('#timer-interactive');
    await page.fill('#timer-note', 'talked through the morning readings');
    await page.click('#timer-stop');
    const logged = await page.waitForSelector('#timer-logged', { timeout: 10000 }).then((e) => e.textContent());
    const time = await page.evaluate(async (p) => (await fetch(`/api/v1/patients/${p}/time`)).json(), pid);
    const e = time.entries.find((x) => x.note === 'talked through the morning readings');
    if (!e || e.activity !== 'call' || e.interactive !== true || e.minutes < 1) throw new Error(`entry: ${JSON.stringify(time.entries)}`);
    const after = await page.evaluate(async () => (await fetch('/api/v1/timer')).json());
    if (after.timer !== null) throw new Error(`the timer still runs: ${JSON.stringify(after)}`);
    // The patient's own billing page is a link away.
    await page.click('#patient-billing');
    await page.waitForSelector(`.billing-sheet[data-patient-id="${pid}"]`, { timeout: 10000 });
    return { clock, logged, minutes: e.minutes };
  });

  await scenario('billing_prints_one_page_per_patient', async () => {
    const month = await page.evaluate(() => {
      const d = new Date();
      return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}`;
    });
    await page.goto(`${BASE}/#/billing?month=${month}`);
    const sheets = await until('a sheet per enrolled patient', 10000, async () => {
      const ids = await page.$$eval('.billing-sheet', (els) => els.map((e) => e.dataset.patientId));
      return ids.length >= 2 ? ids : null;
    });
    if (sheets.includes(need('OTHER_PATIENT'))) throw new Error('another team\'s patient is on the billing pages');
    const text = await page.textContent(`.billing-sheet[data-patient-id="${need('HIGH_PATIENT')}"]`);
    if (!/Management time this month: [1-9]\d* min; with a live conversation/.test(text)) throw new Error(`sheet: ${text}`);
    const pdf = await page.pdf({ format: 'A4', printBackground: true });
    const pages = (pdf.toString('latin1').match(/\/Type\s*\/Page[^s]/g) || []).length;
    if (pages !== sheets.length) throw new Error(`${pages} printed pages for ${sheets.length} patients`);
    const csv = await page.getAttribute('#billing-csv', 'href');
    return { sheets, pages, bytes: pdf.length, csv };
  });

  await scenario('population_charts_render', async () => {
    await page.goto(`${BASE}/#/population`);
    await page.waitForSelector('#chart-risk li', { timeout: 10000 });
    const api = await page.evaluate(async () => (await fetch('/api/v1/population')).json());
    const f = api.figures;
    const shown = await page.textContent('#pop-patients dd');
    if (shown !== String(f.patients) || f.patients < 2) throw new Error(`patients shown ${shown}, API ${f.patients}`);
    const risk = await page.$$eval('#chart-risk li', (lis) => lis.map((l) => Number(l.dataset.value)));
    const want = [f.risk_tiers.high, f.risk_tiers.medium, f.risk_tiers.low, f.risk_tiers.none];
    if (JSON.stringify(risk) !== JSON.stringify(want)) throw new Error(`risk bars ${risk}, figures ${want}`);
    const rates = await page.$$eval('#chart-alert-rates li', (lis) => lis.length);
    if (rates !== f.alert_rates.length || rates < 1) throw new Error(`${rates} alert-rate bars for ${f.alert_rates.length} rules`);
    // Each bar as wide as its value makes it: the largest full, an empty one nothing.
    const widths = await page.$$eval('#chart-risk li', (lis) => lis.map((l) => {
      const track = l.querySelector('.bar-track').getBoundingClientRect().width;
      return Math.round((100 * l.querySelector('.bar').getBoundingClientRect().width) / track);
    }));
    const top = Math.max(...want);
    const expected = want.map((v) => Math.round((100 * v) / Math.max(1, top)));
    if (JSON.stringify(widths) !== JSON.stringify(expected)) throw new Error(`bar widths ${widths} %, values ${want}`);
    return { patients: f.patients, risk, rates, widths };
  });

  await scenario('programme_pages_pass_axe', async () => {
    // WCAG 2.1 AA on each page this work added, as a clinician sees it.
    const found = {};
    const passes = {};
    for (const [route, ready] of [
      ['#/worklist', '#worklist .worklist-row'],
      [`#/patients/${need('STABLE_PATIENT')}`, '#care-timer button'],
      ['#/billing', '#billing-month'],
      ['#/population', '#chart-risk li'],
    ]) {
      await page.goto(`${BASE}/${route}`);
      await page.waitForSelector(ready, { timeout: 10000 });
      const r = await axe(page, '#main');
      if (r.passes < 5) throw new Error(`axe checked only ${r.passes} rules on ${route}`);
      if (r.violations.length) found[route] = r.violations;
      passes[route] = r.passes;
    }
    if (Object.keys(found).length) throw new Error(`axe violations: ${JSON.stringify(found)}`);
    return { passes };
  });
} finally {
  await browser.close();
}

const failed = results.filter((r) => !r.ok).map((r) => r.scenario);
console.log(JSON.stringify({ summary: { passed: results.length - failed.length, failed }, problems }));
process.exit(failed.length ? 1 : 0);
