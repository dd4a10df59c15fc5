// A video visit in two real browsers (headless Chromium with a fake camera and microphone),
// against a running Vigil that tests/it/visit_browser.rs set up: the clinician starts the visit
// from the patient view, the patient opens the link on a phone-sized page, waits, is admitted,
// and both see the other's video play; mute, leave, rejoin, end; a reading published during the
// call appears beside the video. Prints one JSON line per scenario, then a summary line with the
// join → first remote frame times; exits 1 if any scenario failed.
//
// Environment: BASE_URL, CLIN_USER, CLIN_PASS, PATIENT (on the clinician's care team), MQTT_PORT,
// DEVICE, DEVICE_SECRET (a device of that patient that measures heart_rate), SCREENSHOT_DIR
// (optional: visit-clinician.png, visit-patient.png).

import path from 'node:path';
import { FAKE_MEDIA_ARGS, launch, need, newPage, pageFetch, publisher, signIn, until } from './lib.mjs';

const BASE = need('BASE_URL').replace(/\/$/, '');
const PATIENT = need('PATIENT');
const SHOTS = process.env.SCREENSHOT_DIR;
const results = [];
const problems = [];
const timings = {};

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

async function shot(page, name) {
  if (!SHOTS) return;
  await page.evaluate(() => document.activeElement?.blur());
  await page.screenshot({ path: path.join(SHOTS, name) });
}

/** The remote <video>s of a page: size, decoded frames, whether it plays. */
function remoteVideos(page) {
  return page.evaluate(() => [...document.querySelectorAll('video.remote')].map((v) => ({
    participant: v.dataset.participant,
    width: v.videoWidth,
    height: v.videoHeight,
    frames: v.getVideoPlaybackQuality().totalVideoFrames,
    paused: v.paused,
  })));
}

/** Waits until `page` shows exactly one remote video that has a size and whose frames keep coming. */
async function videoPlays(page, who, deadlineMs = 20000) {
  const first = await until(`${who}: a remote video with a size and decoded frames`, deadlineMs, async () => {
    const vs = await remoteVideos(page);
    return vs.length === 1 && vs[0].width > 0 && vs[0].frames > 0 && !vs[0].paused ? vs[0] : null;
  }, 50);
  const later = await until(`${who}: more frames decoded (from ${first.frames})`, 10000, async () => {
    const vs = await remoteVideos(page);
    return vs.length === 1 && vs[0].frames >= first.frames + 15 ? vs[0] : null;
  }, 100);
  return { participant: first.participant, size: `${first.width}x${first.height}`, frames: [first.frames, later.frames] };
}

/** `(sel, text)`: the element's text contains `text`. */
async function textOf(page, sel) {
  return page.$eval(sel, (e) => e.textContent.trim()).catch(() => null);
}

const browser = await launch({ args: FAKE_MEDIA_ARGS });
// The patient is on another device: a browser of their own, with its own fake camera. (Two
// pages of one browser share one fake capture device, which restarts for the second page and
// stalls both pages' video for seconds: a test artefact, not the relay.)
const patientBrowser = await launch({ args: FAKE_MEDIA_ARGS });
let visit = null; // {id, patientUrl}
let clinician = null;
let patient = null;
let pub = null;
try {
  clinician = await newPage(browser, problems);
  await clinician.context.grantPermissions(['camera', 'microphone'], { origin: BASE });
  const cp = clinician.page;
  cp.setDefaultTimeout(15000);

  await scenario('start_visit_from_patient_view', async () => {
    await signIn(cp, BASE, need('CLIN_USER'), need('CLIN_PASS'));
    await cp.evaluate((p) => { location.hash = `#/patients/${p}`; }, PATIENT);
    await cp.waitForSelector('#start-visit', { timeout: 10000 });
    await cp.click('#start-visit');
    await cp.waitForURL(/#\/visits\/vis_[0-9a-f]{32}$/, { timeout: 10000 });
    const link = await cp.waitForSelector('#visit-patient-link', { timeout: 10000 }).then((e) => e.inputValue());
    const id = new URL(cp.url()).hash.split('/')[2];
    if (!link.includes(`/visit/${id}#`)) throw new Error(`the patient link ${link} is not for visit ${id}`);
    visit = { id, patientUrl: link };
    // The clinician is in the call at once (camera on), waiting for the patient.
    await until('the clinician in the call', 15000, () => cp.evaluate(() => window.vigil.visit?.call?.state === 'in_call'));
    await cp.waitForSelector('#self-view', { timeout: 10000 });
    const tabs = cp.context().pages().length;
    if (tabs !== 1) throw new Error(`"Start video visit" opened ${tabs - 1} more tab(s)`);
    return { visit: id, link_shown: true };
  });
  if (!visit) throw new Error('no visit: the other scenarios cannot run');

  await scenario('tampered_link_refused', async () => {
    const { context, page } = await newPage(browser, problems);
    try {
      const [base, token] = visit.patientUrl.split('#');
      const i = Math.floor(token.length / 2);
      const tampered = token.slice(0, i) + (token[i] === 'x' ? 'y' : 'x') + token.slice(i + 1);
      const api = await fetch(`${BASE}/api/v1/visits/${visit.id}/join`, { headers: { Authorization: `Visit ${tampered}` } });
      const apiBody = await api.json();
      if (api.status !== 401) throw new Error(`the API answered ${api.status} for a tampered token`);
      await page.goto(`${base}#${tampered}`);
      const shown = await page.waitForSelector('#visit-error', { timeout: 10000 }).then((e) => e.textContent());
      const want = apiBody.error.toLowerCase().replace(/\.$/, '');
      if (!shown.toLowerCase().includes(want)) throw new Error(`the page says “${shown}”, the API “${apiBody.error}”`);
      if (new URL(page.url()).hash) throw new Error('the token stayed in the address bar');
      return { shown };
    } finally {
      await context.close();
    }
  });

  // The patient on a phone-sized page.
  // Phone-sized and touch, but not Playwright's `isMobile` emulation: with it, Chromium's first
  // video sender of the page encodes nothing for ~2.5 s (measured: framesEncoded stays 0 and the
  // relay sees the patient's video track 2.5 s after the connection is up), which real phones do
  // not do.
  patient = await newPage(patientBrowser, problems, { viewport: { width: 390, height: 844 }, hasTouch: true });
  await patient.context.grantPermissions(['camera', 'microphone'], { origin: BASE });
  const pp = patient.page;
  pp.setDefaultTimeout(15000);
  let patientId = null;
  let clinicianId = null;

  const admitPatient = async (name) => {
    const btn = await cp.waitForSelector(`#waiting-room .admit:not([disabled])`, { timeout: 15000 });
    const who = await cp.$eval('#waiting-room .person', (e) => e.textContent);
    if (name && !who.includes(name)) throw new Error(`the waiting room shows “${who}”, not ${name}`);
    const pid = await btn.getAttribute('data-participant');
    await btn.click();
    return pid;
  };

  await scenario('patient_waits_and_is_admitted', async () => {
    await pp.goto(visit.patientUrl);
    await pp.waitForSelector('#screen-prejoin', { timeout: 10000 });
    if (new URL(pp.url()).hash) throw new Error('the token stayed in the address bar');
    await pp.waitForSelector('#join:not([disabled])', { timeout: 15000 });
    await until('the self view playing', 10000, () => pp.evaluate(() => document.getElementById('preview').videoWidth > 0));
    await pp.fill('#your-name', 'Ada');
    await pp.tap('#join');
    await pp.waitForSelector('#screen-waiting', { timeout: 10000 });
    const waitingText = await textOf(pp, '#waiting-title');
    if (waitingText !== 'Waiting for your clinician to let you in') throw new Error(`the waiting screen says “${waitingText}”`);
    patientId = await admitPatient('Ada');
    await pp.waitForSelector('#screen-call', { timeout: 10000 });
    const onClinician = await videoPlays(cp, 'clinician sees the patient');
    const onPatient = await videoPlays(pp, 'patient sees the clinician');
    if (onClinician.participant !== patientId) throw new Error(`the clinician's remote video is ${onClinician.participant}, not the patient ${patientId}`);
    clinicianId = onPatient.participant;
    // Join → first remote frame, from each page's own clock (the marks call.js keeps).
    const pm = await pp.evaluate(() => window.vigilVisit.marks);
    const cm = await cp.evaluate(() => window.vigil.visit.marks);
    timings.first = {
      patient_admitted_to_first_frame_ms: pm[`first_frame_${clinicianId}`] - pm.admitted,
      patient_offer_to_first_frame_ms: pm[`first_frame_${clinicianId}`] - pm.offer_sent,
      clinician_admit_to_first_frame_ms: cm[`first_frame_${patientId}`] - cm[`admit_${patientId}`],
    };
    const names = await textOf(pp, '#call-status');
    if (!/Clinician/.test(names)) throw new Error(`the patient's status line says “${names}”`);
    return { patient: patientId, clinician: clinicianId, on_clinician: onClinician, on_patient: onPatient, ...timings.first };
  });

  await scenario('quality_indicator', async () => {
    // Sampled every 2 s from getStats(): a level, and the numbers in the tooltip.
    const q = await until('a connection quality level on both pages', 10000, async () => {
      const read = (page) => page.$eval('#quality', (e) => ({ level: e.dataset.level, title: e.title, text: e.textContent }));
      const [c, p] = [await read(cp), await read(pp)];
      return c.level !== 'unknown' && p.level !== 'unknown' && /round trip/.test(c.title) && /receiving/.test(p.title) ? { clinician: c, patient: p } : null;
    }, 200);
    return q;
  });

  await scenario('vitals_beside_the_video', async () => {
    pub = publisher({ port: need('MQTT_PORT'), device: need('DEVICE'), secret: need('DEVICE_SECRET') });
    await cp.waitForSelector(`#visit-vitals [data-patient-id="${PATIENT}"]`, { state: 'attached', timeout: 10000 });
    const sent = pub.publish({ metric: 'heart_rate', value: 77, time: new Date().toISOString() });
    const seen = await until('heart rate 77 in the vitals beside the video', 10000,
      () => cp.evaluate((p) => document.querySelector(`#visit-vitals [data-patient-id="${p}"] [data-metric="heart_rate"] .v`)?.textContent === '77' && Date.now(), PATIENT), 10);
    const still = await remoteVideos(cp);
    if (still.length !== 1) throw new Error('the video went away while the vitals updated');
    await shot(cp, 'visit-clinician.png');
    await shot(pp, 'visit-patient.png');
    return { publish_to_tile_ms: seen - sent };
  });

  await scenario('mute_shows_on_the_other_side', async () => {
    await pp.tap('#mic-toggle');
    await cp.waitForSelector(`#roster [data-participant="${patientId}"][data-audio="off"]`, { timeout: 10000 });
    await cp.waitForSelector(`.vt[data-participant="${patientId}"][data-audio="off"]`, { timeout: 10000 });
    const rosterText = await textOf(cp, `#roster [data-participant="${patientId}"]`);
    await pp.tap('#cam-toggle');
    await cp.waitForSelector(`.vt[data-participant="${patientId}"][data-video="off"] .vt-off:not([hidden])`, { timeout: 10000 });
    await pp.tap('#mic-toggle');
    await pp.tap('#cam-toggle');
    await cp.waitForSelector(`#roster [data-participant="${patientId}"][data-audio="on"][data-video="on"]`, { timeout: 10000 });
    // And the other way: the clinician's microphone off shows on the patient's page.
    await cp.click('#mic-toggle');
    await pp.waitForSelector(`.vt[data-participant="${clinicianId}"][data-audio="off"]`, { timeout: 10000 });
    const patientSees = await textOf(pp, `.vt[data-participant="${clinicianId}"] figcaption`);
    await cp.click('#mic-toggle');
    await pp.waitForSelector(`.vt[data-participant="${clinicianId}"][data-audio="on"]`, { timeout: 10000 });
    return { clinician_roster: rosterText, patient_sees: patientSees };
  });

  await scenario('leave_removes_the_video', async () => {
    await pp.tap('#leave');
    await pp.waitForSelector('#screen-left', { timeout: 10000 });
    const said = await textOf(pp, '#left-title');
    if (said !== 'You have left the visit') throw new Error(`the patient's page says “${said}”`);
    await until('the patient\'s video gone from the clinician\'s page', 10000, async () => (await remoteVideos(cp)).length === 0);
    await cp.waitForSelector(`#roster [data-participant="${patientId}"]`, { state: 'detached', timeout: 10000 });
    const camerasOff = await pp.evaluate(() => document.querySelectorAll('video').length === 0);
    return { left_screen: said, patient_page_has_no_video: camerasOff };
  });

  await scenario('rejoin_after_leaving', async () => {
    await pp.tap('#rejoin');
    await pp.waitForSelector('#screen-waiting', { timeout: 10000 });
    const t0 = Date.now();
    patientId = await admitPatient('Ada');
    const onClinician = await videoPlays(cp, 'clinician sees the patient again');
    const onPatient = await videoPlays(pp, 'patient sees the clinician again');
    const pm = await pp.evaluate(() => window.vigilVisit.marks);
    const cm = await cp.evaluate(() => window.vigil.visit.marks);
    timings.rejoin = {
      patient_admitted_to_first_frame_ms: pm[`first_frame_${onPatient.participant}`] - pm.admitted,
      clinician_admit_to_first_frame_ms: cm[`first_frame_${patientId}`] - cm[`admit_${patientId}`],
      admit_to_both_playing_ms: Date.now() - t0,
    };
    return { on_clinician: onClinician, on_patient: onPatient, ...timings.rejoin };
  });

  await scenario('clinician_ends_the_visit', async () => {
    await cp.click('#end-visit');
    await cp.click('#end-confirm-yes');
    await pp.waitForSelector('#screen-ended', { timeout: 10000 });
    const said = await textOf(pp, '#ended-title');
    await cp.waitForSelector('#call-ended', { timeout: 10000 });
    const v = await pageFetch(cp, 'GET', `/api/v1/visits/${visit.id}`);
    if (v.body?.status !== 'ended') throw new Error(`the visit is ${v.body?.status} after the end`);
    // The patient's link no longer opens it.
    await pp.goto(visit.patientUrl);
    await pp.waitForSelector('#screen-ended', { timeout: 10000 });
    return { patient_sees: said, status: v.body.status, duration_s: v.body.duration_s ?? null };
  });
} catch (e) {
  results.push({ scenario: 'setup', ok: false, error: String(e?.stack || e) });
  console.log(JSON.stringify(results[results.length - 1]));
} finally {
  if (pub) {
    const r = await pub.close();
    if (r.code !== 0 && r.code !== null) problems.push(`mosquitto_pub exited ${r.code}: ${r.stderr}`);
  }
  await browser.close();
  await patientBrowser.close();
}

console.log(JSON.stringify({ summary: true, ok: results.every((r) => r.ok) && problems.length === 0, join_to_first_frame: timings, problems }));
process.exit(results.every((r) => r.ok) && problems.length === 0 ? 0 : 1);
