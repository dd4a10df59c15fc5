// The clinician's day in headless Chromium, against a running Vigil that
// tests/it/reports_browser.rs set up: patient PATIENT has a CGM day on DAY (the series
// tests/it/reports.rs works out by hand: in range 62.5 %, GMI 6.7 %) and a note written today.
// The clinician opens the AGP from the patient page, picks the day and reads the figures; does
// the same on a 390×844 phone with no sideways scrolling; opens the printable summary, whose
// print stylesheet hides the navigation and buttons, and whose Print button prints; the
// patient page's CSV link follows the chosen period; the admin's access report names the
// clinician's views; the patient page's NEWS2 card shows the score of the readings
// reports_browser.rs published, its table and its chart's text alternative, on a desktop and a
// phone; axe-core (WCAG 2.1 A/AA) finds nothing on these views.
//
// Environment: BASE_URL, ADMIN_USER/PASS, CLIN_USER/PASS, PATIENT, DAY (YYYY-MM-DD, UTC).

import { axe, launch, need, newPage, scenarios, signIn, until } from './lib.mjs';

const BASE = need('BASE_URL').replace(/\/$/, '');
const PATIENT = need('PATIENT');
const DAY = need('DAY');
const CLIN = need('CLIN_USER');
const TODAY = new Date().toISOString().slice(0, 10);
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
const noSidewaysScroll = (page) => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
// Days are the browser's: the test's are UTC.
const UTC = { timezoneId: 'UTC' };

async function readAgp(page) {
  const inRange = await until('the time in range', 15000, async () => {
    const el = await page.$('#agp-tir li[data-range="in_range"] .tir-pct');
    return el ? (await el.textContent()).trim() : null;
  });
  return {
    inRange,
    veryLow: await text(page, '#agp-tir li[data-range="very_low"] .tir-pct'),
    high: await text(page, '#agp-tir li[data-range="high"] .tir-pct'),
    gmi: await text(page, '#agp-gmi dd'),
    mean: await text(page, '#agp-mean dd'),
    active: await text(page, '#agp-active dd'),
    zone: await text(page, '#agp-zone'),
    hours: await page.$$eval('#agp-hours tbody tr', (rows) => rows.length),
    chartLabel: await page.$eval('#agp-chart', (svg) => `${svg.getAttribute('role')}: ${svg.querySelector('title').textContent}; ${svg.querySelector('desc').textContent}`),
  };
}

function checkFigures(f) {
  if (f.inRange !== '62.5 %') throw new Error(`in range: ${f.inRange}`);
  if (f.veryLow !== '4.2 %') throw new Error(`very low: ${f.veryLow}`);
  if (f.high !== '16.7 %') throw new Error(`high: ${f.high}`);
  if (f.gmi !== '6.7 %') throw new Error(`GMI: ${f.gmi}`);
  if (!f.mean.startsWith('141 mg/dL')) throw new Error(`mean: ${f.mean}`);
  if (!f.active.startsWith('100.0 %')) throw new Error(`CGM active: ${f.active}`);
  if (!/UTC/.test(f.zone)) throw new Error(`zone: ${f.zone}`);
  if (f.hours !== 24) throw new Error(`${f.hours} hourly rows`);
  if (!f.chartLabel.startsWith('img: Glucose percentiles by hour of day; Median glucose by hour ranges from 50 to 300')) throw new Error(`chart: ${f.chartLabel}`);
}

const browser = await launch();
try {
  const { page: clin } = await newPage(browser, problems, UTC);
  await signIn(clin, BASE, CLIN, need('CLIN_PASS'));

  await scenario('agp_from_the_patient_page', async () => {
    await clin.goto(`${BASE}/#/patients/${PATIENT}`);
    await clin.waitForSelector('#patient-agp:not([hidden])', { timeout: 10000 });
    await clin.click('#patient-agp');
    await clin.waitForSelector('#agp-period', { timeout: 10000 });
    await clin.fill('#agp-from', DAY);
    await clin.fill('#agp-to', DAY);
    await clin.click('#agp-period button[type="submit"]');
    await clin.waitForFunction((d) => location.hash.includes(`from=${d}&to=${d}`), DAY, { timeout: 5000 });
    await until('the chosen day', 15000, async () => ((await text(clin, '#agp-readings dd')) === '288' ? true : null));
    const f = await readAgp(clin);
    checkFigures(f);
    if (process.env.SHOTS) await clin.screenshot({ path: `${process.env.SHOTS}/agp.png`, fullPage: true });
    await checkAxe(clin, 'AGP (desktop)');
    return f;
  });

  await scenario('agp_on_a_phone', async () => {
    const { page: phone } = await newPage(browser, problems, { ...UTC, viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    await signIn(phone, BASE, CLIN, need('CLIN_PASS'));
    await phone.goto(`${BASE}/#/patients/${PATIENT}/agp?from=${DAY}&to=${DAY}`);
    const f = await readAgp(phone);
    checkFigures(f);
    if (!(await noSidewaysScroll(phone))) throw new Error('the AGP page scrolls sideways on a phone');
    if (process.env.SHOTS) await phone.screenshot({ path: `${process.env.SHOTS}/agp-phone.png`, fullPage: true });
    await checkAxe(phone, 'AGP (phone)');
    await phone.goto(`${BASE}/#/patients/${PATIENT}/summary?from=${DAY}&to=${TODAY}`);
    await phone.waitForSelector('#summary-vitals', { timeout: 10000 });
    if (!(await noSidewaysScroll(phone))) throw new Error('the summary scrolls sideways on a phone');
    await checkAxe(phone, 'summary (phone)');
    return { inRange: f.inRange };
  });

  // PATIENT's app sent the seven NEWS2 parameters a minute before the test (reports_browser.rs):
  // RR 25, SpO2 93 on air, systolic 120, pulse 95, alert, 38.5 °C = 7.
  const readNews2 = async (page) => {
    await page.goto(`${BASE}/#/patients/${PATIENT}`);
    await page.waitForSelector('#news2-card:not([hidden]) #news2-parts', { timeout: 15000 });
    return {
      score: await text(page, '#news2-score'),
      missing: await page.$('#news2-missing'),
      rows: await page.$$eval('#news2-parts tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent.trim()))),
      caption: await text(page, '#news2-parts caption'),
      chart: await page.$eval('#news2-chart', (svg) => `${svg.getAttribute('role')}: ${svg.querySelector('title').textContent}; ${svg.querySelector('desc').textContent}`),
      summary: await text(page, '#news2-summary'),
    };
  };
  const checkNews2 = (n) => {
    if (n.score !== 'NEWS2 7 — high risk') throw new Error(`score: ${n.score}`);
    if (n.missing) throw new Error('all seven are fresh, yet the card says some are missing');
    const points = n.rows.map((r) => `${r[0]} ${r[1]} ${r[3]}`);
    const want = ['Respiratory rate 25 /min 3', 'SpO2 93 % 2', 'Oxygen air 0', 'Systolic BP 120 mmHg 0',
      'Pulse 95 /min 1', 'Consciousness Alert 0', 'Temperature 38.5 °C 1'];
    if (points.join('|') !== want.join('|')) throw new Error(`rows: ${points.join('; ')}`);
    if (!n.caption.includes('latest reading and its points')) throw new Error(`caption: ${n.caption}`);
    if (!n.chart.startsWith('img: NEWS2 over the last 24 hours; Step chart')) throw new Error(`chart: ${n.chart}`);
    if (!/^Highest 7 at [^;]+; now 7\./.test(n.summary)) throw new Error(`summary: ${n.summary}`);
  };

  await scenario('news2_card', async () => {
    const n = await readNews2(clin);
    checkNews2(n);
    if (process.env.SHOTS) await (await clin.$('#news2-card')).screenshot({ path: `${process.env.SHOTS}/news2.png` });
    await checkAxe(clin, 'patient page with NEWS2 (desktop)');
    return { score: n.score, summary: n.summary };
  });

  await scenario('news2_card_on_a_phone', async () => {
    const { page: phone } = await newPage(browser, problems, { ...UTC, viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    await signIn(phone, BASE, CLIN, need('CLIN_PASS'));
    const n = await readNews2(phone);
    checkNews2(n);
    if (!(await noSidewaysScroll(phone))) throw new Error('the patient page with the NEWS2 card scrolls sideways on a phone');
    const box = await (await phone.$('#news2-chart')).boundingBox();
    if (!box || box.width > 390) throw new Error(`the chart is ${box?.width} px wide`);
    if (process.env.SHOTS) await phone.screenshot({ path: `${process.env.SHOTS}/news2-phone.png`, fullPage: true });
    await checkAxe(phone, 'patient page with NEWS2 (phone)');
    return { chartWidth: Math.round(box.width) };
  });

  await scenario('summary_prints_cleanly', async () => {
    await clin.goto(`${BASE}/#/patients/${PATIENT}`);
    await clin.waitForSelector('#patient-summary', { timeout: 10000 });
    await clin.click('#patient-summary');
    await clin.waitForSelector('#summary-period', { timeout: 10000 });
    await clin.fill('#summary-from', DAY);
    await clin.fill('#summary-to', TODAY);
    await clin.click('#summary-period button[type="submit"]');
    const row = await until('the glucose row', 15000, async () => {
      const el = await clin.$('#summary-vitals tr[data-metric="glucose"]');
      return el ? el.$$eval('th, td', (cells) => cells.map((c) => c.textContent.replace(/\s+/g, ' ').trim()).join(' | ')) : null;
    });
    if (!/^Glucose \| 288 \| 50 mg\/dL \| 120 mg\/dL \| 300 mg\/dL \| 300 mg\/dL, /.test(row)) throw new Error(`glucose row: ${row}`);
    if (process.env.SHOTS) {
      await clin.emulateMedia({ media: 'print' });
      await clin.screenshot({ path: `${process.env.SHOTS}/summary-print.png`, fullPage: true });
      await clin.emulateMedia({ media: 'screen' });
    }
    const note = await text(clin, '#summary-notes');
    if (!note.includes('Hypo at night: reviewed the basal dose.')) throw new Error(`notes: ${note}`);
    await checkAxe(clin, 'summary (desktop)');
    // Print: the browser's own, called by the button.
    await clin.evaluate(() => { window.__printed = 0; window.print = () => { window.__printed += 1; }; });
    await clin.click('#summary-print');
    if ((await clin.evaluate(() => window.__printed)) !== 1) throw new Error('Print did not print');
    await clin.emulateMedia({ media: 'print' });
    const hidden = {};
    for (const sel of ['#topbar', '#summary-print', '#summary-period', '.skip-link']) {
      const el = await clin.$(sel);
      hidden[sel] = el ? !(await el.isVisible()) : true;
    }
    const stillShown = await clin.isVisible('#summary-vitals');
    await clin.emulateMedia({ media: 'screen' });
    const shown = Object.entries(hidden).filter(([, h]) => !h).map(([s]) => s);
    if (shown.length) throw new Error(`printed: ${shown.join(', ')}`);
    if (!stillShown) throw new Error('the vitals are not printed');
    return { row, hidden };
  });

  await scenario('csv_link_follows_the_period', async () => {
    await clin.goto(`${BASE}/#/patients/${PATIENT}`);
    await clin.waitForSelector('#patient-csv', { timeout: 10000 });
    await clin.click('button[data-range="7d"]');
    const href = await until('the 7-day link', 5000, async () => {
      const v = await clin.getAttribute('#patient-csv', 'href');
      const q = new URLSearchParams(v.split('?')[1] || '');
      return q.get('from') && Date.parse(q.get('to')) - Date.parse(q.get('from')) > 6.9 * 86400e3 ? v : null;
    });
    const label = await clin.getAttribute('#patient-csv', 'aria-label');
    const csv = await clin.evaluate(async (u) => {
      const r = await fetch(u);
      return { status: r.status, type: r.headers.get('content-type'), disposition: r.headers.get('content-disposition'), body: await r.text() };
    }, href);
    const lines = csv.body.split('\r\n').filter(Boolean);
    if (csv.status !== 200 || csv.type !== 'text/csv; charset=utf-8') throw new Error(`${csv.status} ${csv.type}`);
    if (lines[0] !== 'time,metric,value,unit,device_id') throw new Error(`header: ${lines[0]}`);
    // The CGM day's 288 and the seven NEWS2 readings of a minute before the test.
    if (lines.length !== 1 + 288 + 7) throw new Error(`${lines.length - 1} rows`);
    if (!csv.disposition.includes(`vigil-${PATIENT}-`) || csv.disposition.includes('Gloria')) throw new Error(csv.disposition);
    return { href, label, disposition: csv.disposition, rows: lines.length - 1 };
  });

  await scenario('admin_access_report', async () => {
    const { page: admin } = await newPage(browser, problems, UTC);
    await signIn(admin, BASE, need('ADMIN_USER'), need('ADMIN_PASS'));
    await admin.goto(`${BASE}/#/patients/${PATIENT}`);
    await admin.waitForSelector('#access-report table', { timeout: 10000 });
    const actors = await admin.$$eval('#access-report tbody tr', (rows) => rows.map((r) => `${r.cells[1].textContent} ${r.cells[2].textContent}`));
    if (!actors.some((a) => a.startsWith(`${CLIN} `))) throw new Error(`the clinician is not in the access report: ${actors.join('; ')}`);
    await checkAxe(admin, 'patient page with access report (admin)');
    await admin.click('#access-report-all');
    await admin.waitForSelector('#audit-lines', { timeout: 10000 });
    if ((await admin.inputValue('#au-patient')) !== PATIENT) throw new Error('the audit view is not filtered by the patient');
    const panel = await admin.$$eval('#audit-lines tbody tr[data-action="panel.read"]', (rows) => rows.map((r) => r.cells[1].textContent));
    if (!panel.includes(CLIN)) throw new Error(`no panel view by the clinician: ${panel.join(', ')}`);
    const live = await admin.$$eval('#audit-lines tbody tr[data-action="live.open"]', (rows) => rows.map((r) => r.cells[1].textContent));
    if (!live.includes(CLIN)) throw new Error(`no live feed opened by the clinician: ${live.join(', ')}`);
    return { latest: actors.slice(0, 5), panel: panel.length, live: live.length };
  });

  await scenario('reports_pass_axe', async () => {
    if (Object.keys(axeFound).length) throw new Error(`axe violations: ${JSON.stringify(axeFound)}`);
    return { passes: axePasses };
  });
} finally {
  await browser.close();
}

const failed = results.filter((r) => !r.ok).map((r) => r.scenario);
console.log(JSON.stringify({ summary: { passed: results.length - failed.length, failed }, problems }));
process.exit(failed.length ? 1 : 0);
