// The panel under load: how long 500 (or however many) tiles take to appear, what the page costs
// while a simulated fleet publishes, and publish-to-tile latency meanwhile. A measurement, not
// part of the acceptance run (it needs a big fleet; see docs/dashboard.md, "Measured").
//
// Environment: BASE_URL, ADMIN_USER, ADMIN_PASS, MQTT_PORT, LAT_PATIENT, LAT_DEVICE, LAT_SECRET,
// optional SIM_BIN + SIM_CREDENTIALS (vigil-sim run at --speed SIM_SPEED for SIM_DURATION
// alongside), LAT_READINGS (default 100).

import { spawn } from 'node:child_process';
import { launch, need, newPage, percentile, publisher, until } from './lib.mjs';

const BASE = need('BASE_URL').replace(/\/$/, '');
const problems = [];
const browser = await launch();
const out = {};
let sim = null;
try {
  const { page } = await newPage(browser, problems);
  await page.goto(`${BASE}/`);
  await page.waitForSelector('#signin-form');
  await page.fill('#signin-user', need('ADMIN_USER'));
  await page.fill('#signin-pass', need('ADMIN_PASS'));
  const t0 = Date.now();
  await page.click('#signin-submit');
  await page.waitForFunction(() => window.vigil?.store?.loaded && document.querySelectorAll('.tile').length === window.vigil.store.patients.size, null, { timeout: 60000 });
  out.tiles = await page.$$eval('.tile', (e) => e.length);
  out.sign_in_to_tiles_ms = Date.now() - t0;

  if (process.env.SIM_BIN) {
    sim = spawn(process.env.SIM_BIN, ['run', '--credentials', need('SIM_CREDENTIALS'), '--mqtt', `mqtt://127.0.0.1:${need('MQTT_PORT')}`,
      '--duration', process.env.SIM_DURATION || '60s', '--speed', process.env.SIM_SPEED || '1', '--scenario', process.env.SIM_SCENARIO || 'mix'],
    { stdio: ['ignore', 'ignore', 'inherit'] });
    await page.waitForTimeout(5000); // let the fleet connect
  }
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  const metrics = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const m0 = await metrics();
  const w0 = Date.now();
  await page.evaluate(() => {
    window.__msgs = 0;
    window.vigil.store.subscribe((c) => { window.__msgs += (c.events || []).length; });
  });

  await page.evaluate((sel) => {
    window.__seen = {};
    new MutationObserver(() => {
      const el = document.querySelector(sel);
      if (el && !(el.textContent in window.__seen)) window.__seen[el.textContent] = Date.now();
    }).observe(document.getElementById('tiles'), { subtree: true, childList: true, characterData: true });
  }, `[data-patient-id="${need('LAT_PATIENT')}"] [data-metric="heart_rate"] .v`);
  const pub = publisher({ port: need('MQTT_PORT'), device: need('LAT_DEVICE'), secret: need('LAT_SECRET') });
  const samples = [];
  pub.publish({ metric: 'heart_rate', value: 59, time: new Date().toISOString() });
  await until('the warm-up reading', 20000, () => page.evaluate(() => window.__seen['59']), 5);
  const n = Number(process.env.LAT_READINGS || 100);
  for (let i = 0; i < n; i += 1) {
    const value = 60 + (i % 50);
    await page.evaluate((v) => { delete window.__seen[String(v)]; }, value);
    const sent = pub.publish({ metric: 'heart_rate', value, time: new Date().toISOString() });
    samples.push((await until(`heart rate ${value}`, 20000, () => page.evaluate((v) => window.__seen[String(v)], value), 5)) - sent);
    await page.waitForTimeout(100);
  }
  await pub.close();
  const m1 = await metrics();
  const secs = (Date.now() - w0) / 1000;
  const sorted = samples.sort((a, b) => a - b);
  out.latency = { readings: n, p50_ms: percentile(sorted, 50), p90_ms: percentile(sorted, 90), p99_ms: percentile(sorted, 99), max_ms: sorted[sorted.length - 1] };
  out.window_s = Math.round(secs);
  out.live_messages_per_s = Math.round((await page.evaluate(() => window.__msgs)) / secs);
  out.page_cpu_percent = {
    script: +(100 * (m1.ScriptDuration - m0.ScriptDuration) / secs).toFixed(1),
    layout_and_style: +(100 * (m1.LayoutDuration - m0.LayoutDuration + m1.RecalcStyleDuration - m0.RecalcStyleDuration) / secs).toFixed(1),
    all_tasks: +(100 * (m1.TaskDuration - m0.TaskDuration) / secs).toFixed(1),
  };
  out.js_heap_mb = +(m1.JSHeapUsedSize / 1e6).toFixed(1);
  out.dom_nodes = m1.Nodes;
} finally {
  if (sim) sim.kill();
  await browser.close();
}
out.problems = problems;
console.log(JSON.stringify(out));
