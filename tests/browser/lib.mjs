// Shared helpers for the dashboard's browser tests: Debian's Chromium driven by playwright-core
// (never a downloaded browser), sign-in, polling with deadlines, a line-per-message MQTT
// publisher (mosquitto_pub -l), percentiles.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is not set`);
  return v;
}

/**
 * Chromium flags for video calls: a fake camera (a test pattern) and microphone (a beep),
 * permission prompts answered "allow", real host candidates instead of mDNS names, and ICE
 * over the loopback interface (the test's relay binds 127.0.0.1).
 */
export const FAKE_MEDIA_ARGS = ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection'];

/** `opts.args`: more Chromium flags (FAKE_MEDIA_ARGS for the video visit test). */
export async function launch(opts = {}) {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium (./scripts/test does)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--autoplay-policy=no-user-gesture-required', ...(opts.args || [])],
  });
}

/**
 * A new page (in a context of its own) that records console errors, page errors and CSP
 * violations. 1280x800 unless `contextOpts` says otherwise (a phone: viewport, isMobile, hasTouch).
 */
export async function newPage(browser, problems, contextOpts = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...contextOpts });
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const text = m.text();
    // Chromium logs every 4xx answer; the scenarios cause some on purpose (the session probe
    // before sign-in, refusals the page shows). A 5xx, a script error or a CSP violation counts.
    if (m.type() === 'error' && !/the server responded with a status of 4\d\d/.test(text)) problems.push(`console: ${text}`);
  });
  return { context, page };
}

export async function signIn(page, base, user, pass) {
  await page.goto(`${base}/`);
  await page.waitForSelector('#signin-form');
  await page.fill('#signin-user', user);
  await page.fill('#signin-pass', pass);
  await page.click('#signin-submit');
  await page.waitForSelector('#topbar:not([hidden])', { timeout: 10000 });
  await page.waitForFunction(() => window.vigil?.store?.loaded === true, null, { timeout: 10000 });
}

/** Calls the API from inside the page (the session cookie; the CSRF token when asked). */
export async function pageFetch(page, method, path, body = undefined, csrf = true) {
  return page.evaluate(async ({ method, path, body, csrf }) => {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (csrf && method !== 'GET') {
      const s = await fetch('/api/v1/session').then((r) => r.json());
      headers['X-CSRF-Token'] = s.csrf_token;
    }
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await r.json(); } catch { /* empty */ }
    return { status: r.status, body: data };
  }, { method, path, body, csrf });
}

export async function until(what, deadlineMs, fn, everyMs = 50) {
  const end = Date.now() + deadlineMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * One MQTT connection (mosquitto_pub -l: each stdin line is one QoS 1 publish) for a device.
 * publish(payload) returns the wall-clock time the line was handed over.
 */
export function publisher({ host = '127.0.0.1', port, device, secret, topic }) {
  const child = spawn('mosquitto_pub', ['-h', host, '-p', String(port), '-V', 'mqttv311', '-q', '1',
    '-i', `${device}-browser-test`, '-u', device, '-P', secret, '-t', topic || `vigil/v1/devices/${device}/readings`, '-l'],
  { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((r) => child.on('exit', (code) => r(code)));
  child.on('error', (e) => { stderr += `cannot run mosquitto_pub: ${e.message}`; });
  return {
    publish(payload) {
      if (child.exitCode !== null) throw new Error(`mosquitto_pub exited: ${stderr}`);
      const t = Date.now();
      child.stdin.write(`${typeof payload === 'string' ? payload : JSON.stringify(payload)}\n`);
      return t;
    },
    async close() {
      child.stdin.end();
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 5000))]);
      if (code === 'timeout') child.kill();
      return { code, stderr };
    },
    get stderr() { return stderr; },
  };
}

export function percentile(sorted, p) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export function runProcess(cmd, args, opts = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let out = '', err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('error', (e) => resolve({ code: -1, out, err: `${err}${e.message}` }));
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

/**
 * A scenario runner: `scenario(name, fn)` runs `fn`, records {scenario, ok, ms, detail|error}
 * in `results`, prints it as one JSON line, and resolves to whether it passed.
 */
export function scenarios() {
  const results = [];
  async function scenario(name, fn) {
    const t0 = Date.now();
    try {
      const detail = await fn();
      results.push({ scenario: name, ok: true, ms: Date.now() - t0, detail: detail ?? null });
    } catch (e) {
      results.push({ scenario: name, ok: false, ms: Date.now() - t0, error: String(e?.stack || e) });
    }
    console.log(JSON.stringify(results[results.length - 1]));
    return results[results.length - 1].ok;
  }
  return { results, scenario };
}


const AXE = new URL('./node_modules/axe-core/axe.min.js', import.meta.url);

/**
 * Runs axe-core (WCAG 2.1 A and AA rules) on what `page` shows, or on `selector` within it;
 * resolves to {violations: [{id, impact, help, nodes: [target…]}], passes: rules that passed}. axe is evaluated in the page
 * by the driver, so the page's CSP (no inline scripts) is not loosened for it.
 */
export async function axe(page, selector = null) {
  const source = fs.readFileSync(AXE, 'utf8');
  await page.evaluate(source);
  return page.evaluate(async (sel) => {
    const r = await window.axe.run(sel || document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
    return {
      violations: r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) })),
      passes: r.passes.length,
    };
  }, selector);
}
