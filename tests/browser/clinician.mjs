// The clinician's day in headless Chromium, against a running Vigil that
// tests/it/clinician_browser.rs set up: the oldest alert escalated unacknowledged (medium),
// three newer high ones. The nurse finds the escalated one first, takes it, acknowledges two at
// once, snoozes one (refused first without a reason, in words), resolves one and reads the
// resolved alerts with who resolved them and how long it took; the inbox fits a 390×844 phone;
// axe-core (WCAG 2.1 A/AA) finds nothing.
//
// Environment: BASE_URL, CLIN_USER/PASS, ESCALATED, ACK_A, ACK_B, SNOOZE (alert ids).

import { axe, launch, need, newPage, pageFetch, scenarios, signIn, until } from './lib.mjs';

const BASE = need('BASE_URL').replace(/\/$/, '');
const NURSE = need('CLIN_USER');
const [ESCALATED, ACK_A, ACK_B, SNOOZE] = ['ESCALATED', 'ACK_A', 'ACK_B', 'SNOOZE'].map(need);
const { results, scenario } = scenarios();
const problems = [];
const axeFound = {};
const axePasses = {};

const item = (id) => `li.alert-item[data-alert-id="${id}"]`;
const text = (page, sel) => page.textContent(sel).then((t) => (t || '').replace(/\s+/g, ' ').trim());

async function checkAxe(page, name) {
  const r = await axe(page, '#main');
  if (r.passes < 5) throw new Error(`axe checked only ${r.passes} rules on ${name}`);
  if (r.violations.length) axeFound[name] = r.violations;
  axePasses[name] = r.passes;
}

const browser = await launch();
try {
  const { page } = await newPage(browser, problems);
  await signIn(page, BASE, NURSE, need('CLIN_PASS'));
  await page.goto(`${BASE}/#/inbox`);
  await page.waitForSelector(item(SNOOZE), { timeout: 10000 });

  await scenario('escalated_alert_is_first', async () => {
    const order = await page.$$eval('#inbox-open > li.alert-item', (els) => els.map((e) => e.dataset.alertId));
    if (order[0] !== ESCALATED) throw new Error(`first is ${order[0]}, not the escalated ${ESCALATED}: ${order}`);
    if (order.length !== 4) throw new Error(`${order.length} alerts need action: ${order}`);
    const flag = await text(page, `${item(ESCALATED)} .flag-escalated`);
    if (!/^Escalated 1×, not acknowledged$/.test(flag)) throw new Error(`the flag says ${flag}`);
    const summary = await text(page, '#inbox-summary');
    if (!summary.startsWith('4 need action (1 escalated)')) throw new Error(summary);
    return { order, flag, summary };
  });

  await scenario('nurse_takes_it', async () => {
    await page.click(`${item(ESCALATED)} button.claim`);
    const flag = await until('taken', 10000, async () => {
      const el = await page.$(`${item(ESCALATED)} .flag-assigned`);
      return el ? (await el.textContent()).trim() : null;
    });
    if (flag !== 'Taken by you') throw new Error(flag);
    const button = await text(page, `${item(ESCALATED)} button.claim`);
    if (button !== 'Release') throw new Error(`the button now says ${button}`);
    // Still first and still open: taking it is not acknowledging it.
    const first = await page.$eval('#inbox-open > li.alert-item', (e) => e.dataset.alertId);
    if (first !== ESCALATED) throw new Error(`first is now ${first}`);
    return { flag, button };
  });

  await scenario('two_acknowledged_at_once', async () => {
    if (!(await page.isDisabled('#ack-selected'))) throw new Error('the button works with nothing selected');
    await page.check(`#select-${ACK_A}`);
    await page.check(`#select-${ACK_B}`);
    const label = await text(page, '#ack-selected');
    if (label !== 'Acknowledge 2 selected') throw new Error(label);
    await page.fill('#bulk-note', 'calling both now');
    await page.click('#ack-selected');
    const said = await until('the result', 10000, async () => {
      const t = await text(page, '.inbox-tools .msg');
      return t ? t : null;
    });
    if (said !== 'Acknowledged 2 alerts.') throw new Error(said);
    for (const id of [ACK_A, ACK_B]) {
      await page.waitForSelector(`#inbox-acked ${item(id)}`, { timeout: 10000 });
    }
    return { label, said };
  });

  await scenario('snooze_needs_a_reason_then_snoozes', async () => {
    await page.click(`${item(SNOOZE)} details.alert-more summary`);
    await page.selectOption(`#snooze-min-${SNOOZE}`, '60');
    await page.click(`${item(SNOOZE)} details.alert-more button:has-text("Snooze")`);
    const refusal = await text(page, `${item(SNOOZE)} .msg`);
    if (!refusal.startsWith('Say why it is snoozed')) throw new Error(`without a reason: ${refusal}`);
    await page.fill(`#snooze-why-${SNOOZE}`, 're-measuring after breakfast');
    await page.click(`${item(SNOOZE)} details.alert-more button:has-text("Snooze")`);
    await page.waitForSelector(`#inbox-snoozed ${item(SNOOZE)}`, { timeout: 10000 });
    const line = await text(page, `${item(SNOOZE)} .snooze-line`);
    if (!/^Snoozed until .+: re-measuring after breakfast$/.test(line)) throw new Error(line);
    const left = await page.$$eval('#inbox-open > li.alert-item', (els) => els.map((e) => e.dataset.alertId));
    if (left.join() !== ESCALATED) throw new Error(`still needing action: ${left}`);
    return { refusal, line };
  });

  await scenario('resolved_alerts_say_who_and_how_long', async () => {
    await page.fill(`#note-${ACK_A}`, 'glucose back to 110 after juice');
    await page.click(`${item(ACK_A)} button:has-text("Resolve")`);
    await until('resolved', 10000, async () => !(await page.$(item(ACK_A))));
    await page.click('#show-resolved');
    const row = await until('the resolved table', 10000, async () => {
      const rows = await page.$$eval('#inbox-resolved tbody tr', (els) => els.map((r) => [...r.cells].map((c) => c.textContent.trim())));
      return rows.find((r) => r[0] === 'Tom Two') || null;
    });
    if (!row[3].startsWith(NURSE) || !row[3].includes('glucose back to 110')) throw new Error(`resolved by: ${row}`);
    if (!/^\d+ (s|min)$/.test(row[4])) throw new Error(`time to resolve: ${row[4]}`);
    return { row };
  });

  await scenario('inbox_passes_axe', async () => {
    await checkAxe(page, 'inbox with escalated, taken, acknowledged, snoozed and resolved alerts');
    if (Object.keys(axeFound).length) throw new Error(`axe violations: ${JSON.stringify(axeFound)}`);
    return { passes: axePasses };
  });

  await scenario('timeline_folds_and_filters_device_noise', async () => {
    await page.goto(`${BASE}/#/patients/p-two`);
    await page.waitForSelector('#timeline li.tl-item', { timeout: 10000 });
    const rec = await pageFetch(page, 'GET', '/api/v1/patients/p-two/record');
    const mine = rec.body.timeline.filter((e) => e.device_id === 'gm-p-two-b');
    const off = mine.filter((e) => e.kind === 'device.offline').length;
    const on = mine.filter((e) => e.kind === 'device.online').length;
    if (off < 2) throw new Error(`the record has ${off} offline entries for the meter`);
    // One line for the meter's day, saying how often; none of its entries on a line of its own.
    const folds = await page.$$eval('#timeline li.tl-fold[data-device="gm-p-two-b"]', (els) => els.map((e) => e.querySelector('summary').textContent.trim()));
    if (folds.length !== 1) throw new Error(`${folds.length} folded lines: ${folds}`);
    const want = new RegExp(`^gm-p-two-b: offline ${off} times, back online ${on} time${on === 1 ? '' : 's'} on `);
    if (!want.test(folds[0])) throw new Error(`the fold says ${folds[0]}; the record has ${off} offline, ${on} online`);
    const loose = await page.$$eval('#timeline > li[data-kind="device.offline"], #timeline > li[data-kind="device.online"]', (els) => els.length);
    if (loose) throw new Error(`${loose} device entries on lines of their own`);
    // The filter hides device lines; the alert stays; the count says what is hidden.
    await page.uncheck('#tl-show-devices');
    const left = await page.$$eval('#timeline > li', (els) => els.map((e) => e.dataset.kind));
    if (left.some((k) => k.startsWith('device.'))) throw new Error(`device lines left: ${left}`);
    if (!left.includes('alert.opened')) throw new Error(`the alert went too: ${left}`);
    const count = await text(page, '#timeline-count');
    if (!/entries hidden by the filters\.$/.test(count)) throw new Error(count);
    await checkAxe(page, 'patient record with filters');
    await page.check('#tl-show-devices');
    if (Object.keys(axeFound).length) throw new Error(`axe violations: ${JSON.stringify(axeFound)}`);
    return { fold: folds[0], left, count };
  });

  await scenario('care_plan_form_saves_a_rule_and_shows_a_field_error', async () => {
    await page.goto(`${BASE}/#/patients/p-three`);
    await page.waitForSelector('#plan-form .plan-row', { timeout: 10000 });
    const before = await page.$$eval('#plan-rows > li', (els) => els.length);
    // A new rule, filled in as a nurse would: heart rate above 130 for 10 minutes, medium.
    await page.click('#plan-add');
    const i = before;
    await page.selectOption(`#rule-${i}-metric`, 'heart_rate');
    await page.selectOption(`#rule-${i}-op`, '>');
    await page.fill(`#rule-${i}-value`, '130');
    await page.fill(`#rule-${i}-for_s`, '10');
    await page.selectOption(`#rule-${i}-severity`, 'medium');
    // The clinic reads glucose in mmol/L: the default plan's 70 mg/dL shows as 3.9 mmol/L, and
    // a rule is typed in mmol/L.
    const low = await page.$$eval('#plan-rows > li', (els) => els.findIndex((li) => /glucose-low\b/.test(li.querySelector('legend')?.textContent || '')));
    if (low < 0) throw new Error('no glucose-low row');
    const lowShown = [await page.inputValue(`#rule-${low}-value`), await text(page, `#rule-${low}-unit`)];
    if (lowShown[0] !== '3.9' || lowShown[1] !== 'mmol/L') throw new Error(`glucose-low shows ${lowShown}`);
    const metricOption = await text(page, `#rule-${i}-metric option[value="glucose"]`);
    if (metricOption !== 'Glucose (mmol/L)') throw new Error(`the reading is offered as ${metricOption}`);
    await page.click('#plan-add');
    const g = before + 1;
    await page.selectOption(`#rule-${g}-metric`, 'glucose');
    await page.selectOption(`#rule-${g}-op`, '>');
    await page.fill(`#rule-${g}-value`, '13.9');
    await page.click('#plan-save');
    const saved = await until('saved', 10000, async () => {
      const t = await text(page, '#plan-form > .msg');
      return t === 'The care plan saved.' ? t : null;
    });
    const plan = await pageFetch(page, 'GET', '/api/v1/patients/p-three/care-plan');
    const rule = plan.body.rules.find((r) => r.metric === 'heart_rate');
    if (!rule || rule.op !== '>' || rule.value !== 130 || rule.for_s !== 600 || rule.severity !== 'medium') throw new Error(`saved as ${JSON.stringify(rule)}`);
    // Left as they were, 70 and 300 stay so (not 3.9 and 16.7 × 18.0156); the new 13.9 mmol/L
    // is stored as 250.4 mg/dL.
    const stored = Object.fromEntries(plan.body.rules.filter((r) => r.metric === 'glucose' && r.kind === 'threshold').map((r) => [r.id, r.value]));
    if (stored['glucose-low'] !== 70 || stored['glucose-high'] !== 300 || stored['glucose-high-2'] !== 250.4) throw new Error(`glucose stored as ${JSON.stringify(stored)}`);
    // An impossible glucose: the refusal is restated in the unit typed.
    await page.fill(`#rule-${g}-value`, '300');
    await page.click('#plan-save');
    const glucoseErr = await until('the glucose field error', 10000, async () => {
      const t = await text(page, `#rule-${g}-value-error`);
      return t ? t : null;
    });
    if (glucoseErr !== 'value 300 is outside what a glucose reading can be (0.6 to 83.3 mmol/L)') throw new Error(`the glucose field says ${glucoseErr}`);
    await page.fill(`#rule-${g}-value`, '13.9');
    // A value no SpO2 can be: the API's refusal beside the value of that rule, focus on it.
    await page.click('#plan-add');
    const j = before + 2;
    await page.selectOption(`#rule-${j}-metric`, 'spo2');
    await page.fill(`#rule-${j}-value`, '900');
    await page.click('#plan-save');
    const err = await until('the field error', 10000, async () => {
      const t = await text(page, `#rule-${j}-value-error`);
      return t ? t : null;
    });
    if (!/^value 900 is outside what a spo2 reading can be/.test(err)) throw new Error(`the field says ${err}`);
    // Above the button the rule is counted as the form counts it (from 1).
    const said = await text(page, '#plan-form > .msg');
    if (!said.startsWith(`The care plan was not saved: rule ${j + 1}: value 900`)) throw new Error(`the form says ${said}`);
    if ((await page.getAttribute(`#rule-${j}-value`, 'aria-invalid')) !== 'true') throw new Error('the field is not marked invalid');
    const focused = await page.evaluate(() => document.activeElement?.id);
    if (focused !== `rule-${j}-value`) throw new Error(`focus is on ${focused}`);
    const described = await page.getAttribute(`#rule-${j}-value`, 'aria-describedby');
    if (!described.includes(`rule-${j}-value-error`)) throw new Error(`the error is not tied to the field: ${described}`);
    await checkAxe(page, 'care-plan form with a field error');
    if (Object.keys(axeFound).length) throw new Error(`axe violations: ${JSON.stringify(axeFound)}`);
    return { saved, rule, lowShown, stored, glucoseErr, err };
  });

  await scenario('out_of_range_values_are_marked_in_words_in_the_clinics_units', async () => {
    // Thea's 45 mg/dL is below her plan's 70 (the default plan's glucose-low); Tom's last
    // reading, 118, is inside it. The clinic reads glucose in mmol/L.
    await page.goto(`${BASE}/#/panel`);
    const row = (id) => `.tile[data-patient-id="${id}"] .vital[data-metric="glucose"]`;
    await page.waitForSelector(row('p-three'), { timeout: 10000 });
    const thea = await text(page, `${row('p-three')} dd`);
    if (!/^2\.5 mmol\/L ▼ Low, below 3\.9 mmol\/L/.test(thea)) throw new Error(`Thea's tile says ${thea}`);
    const tom = await text(page, `${row('p-two')} dd`);
    if (!/^6\.5 mmol\/L/.test(tom) || /Low|High/.test(tom)) throw new Error(`Tom's tile says ${tom}`);
    if (!(await page.$eval(`${row('p-two')} .oor`, (e) => e.hidden))) throw new Error('an in-range value is marked');
    await checkAxe(page, 'panel with a value out of range');
    await page.goto(`${BASE}/#/patients/p-three`);
    const said = await until('the chart names the low point', 10000, async () => {
      const t = await page.$eval('.chart[data-metric="glucose"] .chart-outside', (e) => (e.hidden ? '' : e.textContent)).catch(() => '');
      return t || null;
    });
    if (!/^Outside the range: ▼ 1 of 1 point below the care plan’s 3\.9 mmol\/L \(lowest 2\.5 mmol\/L\)\.$/.test(said)) throw new Error(`the chart says ${said}`);
    const caption = await text(page, '.chart[data-metric="glucose"] figcaption');
    if (caption !== 'Glucose (mmol/L)') throw new Error(`the chart is captioned ${caption}`);
    // Her glucose profile in the clinic's unit, with the consensus ranges as written in mmol/L.
    await page.goto(`${BASE}/#/patients/p-three/agp`);
    await page.waitForSelector('#agp-tir', { timeout: 10000 });
    const ranges = await page.$$eval('#agp-tir li', (lis) => lis.map((li) => li.querySelector('span:nth-child(2)').textContent.trim()));
    const want = ['Very high (above 13.9 mmol/L):', 'High (10.1–13.9 mmol/L):', 'In range (3.9–10.0 mmol/L):', 'Low (3.0–3.8 mmol/L):', 'Very low (below 3.0 mmol/L):'];
    if (JSON.stringify(ranges) !== JSON.stringify(want)) throw new Error(`the ranges read ${JSON.stringify(ranges)}`);
    const mean = await page.$$eval('#agp-mean dd', (dds) => dds.map((d) => d.textContent));
    if (JSON.stringify(mean) !== '["2.5 mmol/L","45 mg/dL"]') throw new Error(`the mean reads ${mean}`);
    const median = await page.$eval('#agp-hours tbody tr td:nth-child(4)', (td) => td.textContent);
    if (median !== '2.5') throw new Error(`the hour's median reads ${median}`);
    await checkAxe(page, 'AGP in mmol/L');
    if (Object.keys(axeFound).length) throw new Error(`axe violations: ${JSON.stringify(axeFound)}`);
    return { thea, tom, said, ranges, mean };
  });

  await scenario('inbox_on_a_phone', async () => {
    const { context, page: phone } = await newPage(browser, problems, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    try {
      await signIn(phone, BASE, NURSE, need('CLIN_PASS'));
      await phone.goto(`${BASE}/#/inbox`);
      await phone.waitForSelector(item(ESCALATED), { timeout: 10000 });
      await phone.click(`${item(ESCALATED)} details.alert-more summary`);
      const wide = await phone.evaluate(() => document.documentElement.scrollWidth);
      if (wide > 390) throw new Error(`the inbox is ${wide} px wide on a 390 px phone`);
      const target = await phone.$eval(`${item(ESCALATED)} button.claim`, (b) => b.getBoundingClientRect().height);
      if (target < 44) throw new Error(`the take button is ${target} px tall`);
      await checkAxe(phone, 'inbox on a phone');
      if (Object.keys(axeFound).length) throw new Error(`axe violations: ${JSON.stringify(axeFound)}`);
      return { width: wide, target };
    } finally {
      await context.close();
    }
  });
} finally {
  await browser.close();
}

const failed = results.filter((r) => !r.ok).map((r) => r.scenario);
console.log(JSON.stringify({ summary: { passed: results.length - failed.length, failed }, problems }));
process.exit(failed.length ? 1 : 0);
