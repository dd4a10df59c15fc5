// A video visit in two real browsers (headless Chromium with a fake camera and microphone),
// against a running Vigil that tests/it/visit_browser.rs set up: the clinician starts the visit
// from the patient view, the patient opens the link on a phone-sized page, waits, is admitted,
// and both see the other's video play; mute, leave, rejoin, end; a reading published during the
// call appears beside the video; a guest (a third browser) joins with a guest link, is admitted,
// and all three see the two others' videos until the guest leaves; after the clinician's tab
// forgets the patient link and reloads, the view signs a new one for the patient. Prints one
// JSON line per scenario, then a summary line with the join → first remote frame times; exits 1
// if any scenario failed.
//
// Environment: BASE_URL, CLIN_USER, CLIN_PASS, PATIENT (on the clinician's care team), MQTT_PORT,
// DEVICE, DEVICE_SECRET (a device of that patient that measures heart_rate), SCREENSHOT_DIR
// (optional: visit-clinician.png, visit-patient.png).

import path from 'node:path';
import { FAKE_MEDIA_ARGS, launch, need, newPage, pageFetch, publisher, scenarios, signIn, until } from './lib.mjs';

const BASE = need('BASE_URL').replace(/\/$/, '');
const PATIENT = need('PATIENT');
const SHOTS = process.env.SCREENSHOT_DIR;
const { results, scenario } = scenarios();
const problems = [];
const timings = {};

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

/**
 * Waits until `page` shows exactly `n` remote videos, every one with a size and decoded frames,
 * and then until every one of them has decoded 15 more frames (each keeps playing).
 */
async function videosPlay(page, who, n, deadlineMs = 20000) {
  const first = await until(`${who}: ${n} remote video(s) with a size and decoded frames`, deadlineMs, async () => {
    const vs = await remoteVideos(page);
    return vs.length === n && vs.every((v) => v.width > 0 && v.frames > 0 && !v.paused) ? vs : null;
  }, 50);
  const later = await until(`${who}: more frames decoded in each of the ${n} remote video(s) (from ${first.map((v) => v.frames).join(', ')})`, 10000, async () => {
    const vs = await remoteVideos(page);
    if (vs.length !== n) return null;
    const start = new Map(first.map((v) => [v.participant, v.frames]));
    return vs.every((v) => start.has(v.participant) && v.frames >= start.get(v.participant) + 15) ? vs : null;
  }, 100);
  return first.map((v) => ({
    participant: v.participant,
    size: `${v.width}x${v.height}`,
    frames: [v.frames, later.find((l) => l.participant === v.participant).frames],
  }));
}

/** Waits until `page` shows exactly one remote video that has a size and whose frames keep coming. */
async function videoPlays(page, who, deadlineMs = 20000) {
  return (await videosPlay(page, who, 1, deadlineMs))[0];
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
  // A phone. Measured here: a freshly launched Chromium's first video sender encodes nothing
  // for ~2.5 s after its connection is up (framesEncoded stays 0; the relay sees the track then),
  // with or without renegotiation by the relay and with or without mobile emulation, while a
  // second call from the same page starts in ~0.3 s. So the other side's first frame of a
  // first-time joiner takes ~3 s here; the joiner's own first frame of the others, 0.3-0.8 s.
  patient = await newPage(patientBrowser, problems, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
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

  // A third participant: an interpreter with a guest link, on a laptop of their own (a third
  // browser: its own fake camera). Everyone sees the two others; when the guest leaves, the
  // patient and the clinician are back to one video each.
  await scenario('guest_joins_a_three_way_call', async () => {
    await cp.click('#guest-link-btn');
    const link = await cp.waitForSelector('#visit-guest-link', { timeout: 10000 }).then((e) => e.inputValue());
    if (!link.includes(`/visit/${visit.id}#`)) throw new Error(`the guest link ${link} is not for visit ${visit.id}`);
    const guestBrowser = await launch({ args: FAKE_MEDIA_ARGS });
    try {
      const guest = await newPage(guestBrowser, problems);
      await guest.context.grantPermissions(['camera', 'microphone'], { origin: BASE });
      const gp = guest.page;
      gp.setDefaultTimeout(15000);
      await gp.goto(link);
      await gp.waitForSelector('#screen-prejoin', { timeout: 10000 });
      if (new URL(gp.url()).hash) throw new Error('the token stayed in the address bar');
      const title = await textOf(gp, '#prejoin-title');
      await gp.waitForSelector('#join:not([disabled])', { timeout: 15000 });
      await gp.fill('#your-name', 'Interpreter');
      await gp.click('#join');
      await gp.waitForSelector('#screen-waiting', { timeout: 10000 });
      const guestId = await admitPatient('Interpreter');
      const t0 = Date.now();
      await gp.waitForSelector('#screen-call', { timeout: 10000 });
      await cp.waitForSelector(`#roster [data-participant="${guestId}"][data-role="guest"]`, { timeout: 10000 });
      const rosterText = await textOf(cp, `#roster [data-participant="${guestId}"]`);
      if (!/Interpreter \(Guest\)/.test(rosterText)) throw new Error(`the clinician's roster shows the guest as “${rosterText}”`);
      // All three pages play both others' videos.
      const [onGuest, onClinician, onPatient] = await Promise.all([
        videosPlay(gp, 'guest sees the clinician and the patient', 2),
        videosPlay(cp, 'clinician sees the patient and the guest', 2),
        videosPlay(pp, 'patient sees the clinician and the guest', 2),
      ]);
      const allPlaying = Date.now() - t0;
      const ids = (vs) => vs.map((v) => v.participant).sort().join(',');
      const want = (...xs) => xs.sort().join(',');
      if (ids(onGuest) !== want(clinicianId, patientId)) throw new Error(`the guest's remote videos are ${ids(onGuest)}, not ${want(clinicianId, patientId)}`);
      if (ids(onClinician) !== want(patientId, guestId)) throw new Error(`the clinician's remote videos are ${ids(onClinician)}, not ${want(patientId, guestId)}`);
      if (ids(onPatient) !== want(clinicianId, guestId)) throw new Error(`the patient's remote videos are ${ids(onPatient)}, not ${want(clinicianId, guestId)}`);
      const gm = await gp.evaluate(() => window.vigilVisit.marks);
      const cm = await cp.evaluate(() => window.vigil.visit.marks);
      const pm = await pp.evaluate(() => window.vigilVisit.marks);
      // The marks are wall-clock times on one machine, so pages can be compared.
      timings.guest = {
        guest_admitted_to_first_frame_ms: {
          clinician: gm[`first_frame_${clinicianId}`] - gm.admitted,
          patient: gm[`first_frame_${patientId}`] - gm.admitted,
        },
        clinician_admit_to_guest_first_frame_ms: {
          on_clinician: cm[`first_frame_${guestId}`] - cm[`admit_${guestId}`],
          on_patient: pm[`first_frame_${guestId}`] - cm[`admit_${guestId}`],
        },
        admit_to_all_playing_ms: allPlaying,
      };
      // The guest leaves: the two others are back to one video each, still playing.
      await gp.click('#leave');
      await gp.waitForSelector('#screen-left', { timeout: 10000 });
      await cp.waitForSelector(`#roster [data-participant="${guestId}"]`, { state: 'detached', timeout: 10000 });
      const [afterC, afterP] = await Promise.all([
        videoPlays(cp, 'clinician still sees the patient after the guest left'),
        videoPlays(pp, 'patient still sees the clinician after the guest left'),
      ]);
      if (afterC.participant !== patientId) throw new Error(`after the guest left the clinician sees ${afterC.participant}, not the patient ${patientId}`);
      if (afterP.participant !== clinicianId) throw new Error(`after the guest left the patient sees ${afterP.participant}, not the clinician ${clinicianId}`);
      await guest.context.close();
      return { guest: guestId, prejoin_title: title, clinician_roster: rosterText, on_guest: onGuest, on_clinician: onClinician, on_patient: onPatient,
        after_leave: { on_clinician: afterC, on_patient: afterP }, ...timings.guest };
    } finally {
      await guestBrowser.close();
    }
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

  // The patient's link is given once, when the visit is created; the view keeps it in this tab's
  // sessionStorage, which a reload keeps. Another tab (or a browser restart) has no remembered
  // link: the view then signs a new one on request. Emulated here by forgetting the stored link
  // and reloading, which leaves the call; the reloaded view joins it again at once.
  await scenario('patient_link_after_reload', async () => {
    const key = `vigil-visit-links:${visit.id}`;
    const remembered = await cp.evaluate((k) => sessionStorage.getItem(k), key);
    if (!remembered?.includes(visit.patientUrl)) throw new Error(`the tab does not remember the patient link: ${remembered}`);
    await cp.evaluate((k) => sessionStorage.removeItem(k), key);
    await cp.reload();
    await cp.waitForFunction(() => window.vigil?.store?.loaded === true, null, { timeout: 10000 });
    await cp.waitForSelector('#patient-link-btn', { timeout: 10000 });
    if (await cp.$('#visit-patient-link')) throw new Error('a patient link is shown before it was asked for');
    await cp.click('#patient-link-btn');
    const link = await cp.waitForSelector('#visit-patient-link', { timeout: 10000 }).then((e) => e.inputValue());
    const u = new URL(link);
    if (u.origin !== BASE || u.pathname !== `/visit/${visit.id}` || u.hash.length < 2) throw new Error(`the new patient link ${link} is not /visit/${visit.id}#<token> on ${BASE}`);
    const token = u.hash.slice(1);
    const r = await fetch(`${BASE}/api/v1/visits/${visit.id}/join`, { headers: { Authorization: `Visit ${token}` } });
    const body = await r.json();
    if (r.status !== 200 || body.role !== 'patient' || body.visit_id !== visit.id) throw new Error(`the new link's token: ${r.status} ${JSON.stringify(body)}`);
    if (!(await cp.isHidden('#patient-link-btn'))) throw new Error('the button stayed after the link was shown');
    // The reloaded view is back in the call with the patient (who stayed): both videos play.
    await until('the clinician back in the call', 15000, () => cp.evaluate(() => window.vigil.visit?.call?.state === 'in_call'));
    const onClinician = await videoPlays(cp, 'clinician sees the patient after the reload');
    const onPatient = await videoPlays(pp, 'patient sees the clinician after the reload');
    if (onClinician.participant !== patientId) throw new Error(`after the reload the clinician sees ${onClinician.participant}, not the patient ${patientId}`);
    clinicianId = onPatient.participant;
    return { link_path: u.pathname, join: body, same_token_as_before: link === visit.patientUrl, on_clinician: onClinician, on_patient: onPatient };
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
