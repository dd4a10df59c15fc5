//! `vigil-sim backfill`: a month (or `--days`) of history for the fleet of a credentials file,
//! so that the worklist, billing and population pages have something real-looking to show. The
//! shell around [`crate::history`], which plans each patient's past; this module only sends it,
//! through Vigil's public contract:
//!
//! - the API: the patient's time zone (`PATCH /patients/{id}`, when `--timezone` is given),
//!   the enrollment from the window's first day (`PUT /patients/{id}/enrollment`), a device
//!   set-up per device on that day (`POST /patients/{id}/setups`), and the care team's time
//!   (`POST /patients/{id}/time`);
//! - MQTT: each device, with its own credentials, publishes its past readings as vigil-json with
//!   their own times, a day per publish, QoS 1, and waits for every acknowledgement (Vigil
//!   acknowledges a reading once it is stored).
//!
//! Video visits cannot be backdated (a visit's time is logged when a real call ends), so a past
//! visit is a `video` time entry marked interactive ([`crate::history::VIDEO_NOTE`]); no call is
//! faked.
//!
//! An enrollment already there is never changed: an open episode of the same programme that
//! began on or before the window's first day is kept (and said so when it began earlier), any
//! other overlapping episode stops the backfill with the reason. So re-running with the same
//! seed on the same day adds nothing — set-ups and time entries already there are not logged
//! twice, and Vigil does not store a reading it already has — and a run stopped half-way (a
//! broker down) is completed by running it again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use reqwest::{Method, StatusCode};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::fleet::Target;
use crate::history::{self, Entry, History, Window};
use crate::payload::{self, Encoding};
use crate::provision::{Api, Credentials, SimDevice, SimPatient};
use crate::rng::{Rng, hash};

/// Devices publishing at once.
const PARALLEL_DEVICES: usize = 8;
/// The set-up's note.
const SETUP_NOTE: &str = "set up and taught at enrollment (vigil-sim backfill)";

/// What to backfill.
#[derive(Debug, Clone)]
pub struct Options {
    /// Days before today; the window is those days and today.
    pub days: u32,
    pub seed: u64,
    /// The programme to enroll the patients in (`GET /api/v1/programs`).
    pub program: String,
    /// The patients' IANA time zone, set on their records; without it, each patient's current
    /// zone (their record's, else the clinic's).
    pub timezone: Option<String>,
    pub practitioner: String,
}

/// What was done.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub patients: usize,
    /// The window: its first day (the enrollment's start) and today, UTC dates.
    pub start: String,
    pub today: String,
    pub seed: u64,
    pub program: String,
    pub personas: BTreeMap<&'static str, usize>,
    pub care: BTreeMap<&'static str, usize>,
    pub readings: u64,
    pub publishes: u64,
    pub devices: usize,
    pub setups: usize,
    pub time_entries: usize,
    /// Minutes of the time entries logged.
    pub minutes: u32,
    /// Set-ups and time entries found already logged (a re-run), not logged again.
    pub already_logged: usize,
    /// Patients whose open episode of the programme, begun earlier, was kept.
    pub enrollments_kept: usize,
    pub by_patient: Vec<PatientSummary>,
}

#[derive(Debug, Serialize)]
pub struct PatientSummary {
    pub id: String,
    pub persona: &'static str,
    pub care: &'static str,
    pub timezone: String,
    pub enrolled_from: String,
    pub days_measured: usize,
    pub readings: usize,
    pub time_entries: usize,
    pub minutes: u32,
}

/// The ICD-10 code a simulated patient of a built-in programme is enrolled with.
fn diagnosis(program: &str) -> Option<&'static str> {
    Some(match program {
        "hypertension" => "I10",
        "heart-failure" => "I50.9",
        "diabetes" => "E11.9",
        "copd" => "J44.9",
        _ => return None,
    })
}

/// Backfills every patient of `creds` over the `o.days` before `now_ms` and today.
pub async fn run(
    creds: &Credentials,
    api: &Api,
    target: &Target,
    o: &Options,
    now_ms: i64,
) -> anyhow::Result<Summary> {
    let personas = history::personas(o.seed, creds.patients.len());
    let mut summary = Summary {
        patients: creds.patients.len(),
        start: String::new(),
        today: String::new(),
        seed: o.seed,
        program: o.program.clone(),
        personas: BTreeMap::new(),
        care: BTreeMap::new(),
        readings: 0,
        publishes: 0,
        devices: 0,
        setups: 0,
        time_entries: 0,
        minutes: 0,
        already_logged: 0,
        enrollments_kept: 0,
        by_patient: Vec::new(),
    };
    for (patient, persona) in creds.patients.iter().zip(personas) {
        let zone = match &o.timezone {
            Some(z) => z.clone(),
            None => zone_of(api, &patient.id, now_ms).await?,
        };
        let tz = TimeZone::get(&zone).with_context(|| {
            format!(
                "patient {}'s time zone {zone:?} is not in this machine's zone database",
                patient.id
            )
        })?;
        let w = Window::ending_now(now_ms, o.days, tz)?;
        summary.start = w.start.to_string();
        summary.today = w.date(w.days).to_string();
        let h = history::plan(o.seed, patient, persona, &w);
        let enrolled_from = enroll(api, patient, &w, o).await?;
        if let Some(z) = &o.timezone {
            api.call(
                Method::PATCH,
                &format!("/patients/{}", patient.id),
                Some(json!({ "timezone": z })),
            )
            .await?;
        }
        if enrolled_from != w.start.to_string() {
            summary.enrollments_kept += 1;
            eprintln!(
                "vigil-sim: patient {} is already enrolled in {} from {enrolled_from}: kept",
                patient.id, o.program
            );
        }
        let (new_setups, had) = set_up(api, patient, &w, &enrolled_from).await?;
        summary.setups += new_setups;
        summary.already_logged += had;
        let (new_entries, minutes, had) = log_time(api, patient, &w, &h.entries).await?;
        summary.time_entries += new_entries;
        summary.minutes += minutes;
        summary.already_logged += had;
        *summary.personas.entry(persona.name()).or_default() += 1;
        *summary.care.entry(h.care.name()).or_default() += 1;
        summary.by_patient.push(PatientSummary {
            id: patient.id.clone(),
            persona: persona.name(),
            care: h.care.name(),
            timezone: zone,
            enrolled_from,
            days_measured: h.active_days.len(),
            readings: h.readings(),
            time_entries: h.entries.len(),
            minutes: h.minutes(),
        });
        // A patient at a time: a broker that refuses stops the backfill at the first patient.
        let sends = payloads(o.seed, patient, &h)?;
        summary.devices += sends.len();
        summary.publishes += sends.iter().map(|x| x.payloads.len() as u64).sum::<u64>();
        summary.readings += sends.iter().map(|x| x.readings as u64).sum::<u64>();
        publish_all(target, sends).await.with_context(|| {
            format!(
                "patient {}'s readings (running the same command again completes the backfill: \
                 nothing is logged twice)",
                patient.id
            )
        })?;
    }
    Ok(summary)
}

/// The zone Vigil counts `patient`'s days in (their record's, else the clinic's): the one their
/// billing statement names.
async fn zone_of(api: &Api, patient: &str, now_ms: i64) -> anyhow::Result<String> {
    let month = Timestamp::from_millisecond(now_ms)?
        .to_zoned(TimeZone::UTC)
        .strftime("%Y-%m")
        .to_string();
    let v = api
        .call(
            Method::GET,
            &format!("/patients/{patient}/billing?month={month}"),
            None,
        )
        .await?;
    v["timezone"].as_str().map(str::to_owned).with_context(|| {
        format!("Vigil's billing statement of patient {patient} names no timezone")
    })
}

/// Enrolls `patient` from the window's start, unless an open episode of the programme already
/// covers it; answers the start of the episode they are in.
async fn enroll(
    api: &Api,
    patient: &SimPatient,
    w: &Window,
    o: &Options,
) -> anyhow::Result<String> {
    let start = w.start.to_string();
    let mut rng = Rng::derive(o.seed, hash(&patient.id) ^ hash("consent"));
    let method = ["verbal", "written", "electronic"][rng.between(0, 2) as usize];
    // Consent taken at 09:00 at home on the first day (never later than now).
    let at =
        w.tz.to_timestamp(w.start.at(9, 0, 0, 0))
            .map_or(w.now_ms, Timestamp::as_millisecond)
            .min(w.now_ms);
    let body = json!({
        "program": o.program,
        "start": start,
        "practitioner": o.practitioner,
        "diagnoses": diagnosis(&o.program).into_iter().collect::<Vec<_>>(),
        "consent": {"method": method, "by": "vigil-sim", "at": Timestamp::from_millisecond(at)?.to_string()},
    });
    let path = format!("/patients/{}/enrollment", patient.id);
    // An episode there is never changed (a PUT with its start would): an open one of the same
    // programme that covers the start is this backfill's (a re-run) or serves it.
    let (status, current) = api.request(Method::GET, &path, None).await?;
    let episodes = match status {
        StatusCode::NOT_FOUND => Vec::new(),
        s if s.is_success() => current["episodes"].as_array().cloned().unwrap_or_default(),
        s => bail!(
            "GET {path}: {s}: {}",
            current["error"].as_str().unwrap_or("no reason given")
        ),
    };
    // The new episode is open, so any episode not ended before its start overlaps it.
    let overlapping = episodes
        .iter()
        .find(|e| e["end"].as_str().is_none_or(|end| end >= start.as_str()));
    let refuse = |why: String| {
        anyhow!(
            "patient {}: {why}; the backfill enrolls in {} from {start}: end that episode (PUT \
             {path} with an end) or backfill patients without one",
            patient.id,
            o.program
        )
    };
    if let Some(e) = overlapping {
        let (program, from) = (
            e["program"].as_str().unwrap_or("?"),
            e["start"].as_str().unwrap_or("?"),
        );
        if program == o.program && e["end"].is_null() && from <= start.as_str() {
            return Ok(from.to_owned());
        }
        return Err(refuse(format!(
            "an enrollment episode in {program} from {from}{} overlaps the window",
            e["end"]
                .as_str()
                .map_or_else(|| ", not ended,".to_owned(), |end| format!(" to {end}"))
        )));
    }
    let (status, v) = api.request(Method::PUT, &path, Some(body)).await?;
    let reason = v["error"].as_str().unwrap_or("no reason given");
    match status {
        s if s.is_success() => Ok(start),
        StatusCode::CONFLICT => Err(refuse(reason.to_owned())),
        s => bail!("PUT {path}: {s}: {reason}"),
    }
}

/// Records a set-up of each of the patient's devices on the window's first day, unless the
/// device was set up in the episode (begun `episode_start`) already; answers (recorded, found).
async fn set_up(
    api: &Api,
    patient: &SimPatient,
    w: &Window,
    episode_start: &str,
) -> anyhow::Result<(usize, usize)> {
    let path = format!("/patients/{}/setups", patient.id);
    let start = w.start.to_string();
    let existing = api.call(Method::GET, &path, None).await?;
    let existing = existing["setups"].as_array().cloned().unwrap_or_default();
    let (mut added, mut found) = (0, 0);
    for dev in &patient.devices {
        if existing.iter().any(|s| {
            s["device_id"] == dev.id.as_str()
                && s["date"].as_str().is_some_and(|d| d >= episode_start)
        }) {
            found += 1;
            continue;
        }
        api.call(
            Method::POST,
            &path,
            Some(json!({"device_id": dev.id, "date": start, "note": SETUP_NOTE})),
        )
        .await?;
        added += 1;
    }
    Ok((added, found))
}

/// Logs the planned time entries not already logged (the same date, minutes, activity,
/// interactivity and note, each existing entry matching once); answers (logged, their
/// minutes, found).
async fn log_time(
    api: &Api,
    patient: &SimPatient,
    w: &Window,
    entries: &[Entry],
) -> anyhow::Result<(usize, u32, usize)> {
    let path = format!("/patients/{}/time", patient.id);
    let today = w.date(w.days);
    let listed = api
        .call(
            Method::GET,
            &format!("{path}?from={}&to={today}", w.start),
            None,
        )
        .await?;
    let mut existing = listed["entries"].as_array().cloned().unwrap_or_default();
    let (mut added, mut minutes, mut found) = (0, 0, 0);
    for e in entries {
        let date = w.date(e.day).to_string();
        let same = |x: &Value| {
            x["date"] == date.as_str()
                && x["minutes"] == e.minutes
                && x["activity"] == e.activity
                && x["interactive"] == e.interactive
                && x["note"] == e.note
        };
        if let Some(i) = existing.iter().position(same) {
            existing.swap_remove(i);
            found += 1;
            continue;
        }
        api.call(
            Method::POST,
            &path,
            Some(
                json!({"date": date, "minutes": e.minutes, "activity": e.activity,
                "interactive": e.interactive, "note": e.note}),
            ),
        )
        .await?;
        added += 1;
        minutes += e.minutes;
    }
    Ok((added, minutes, found))
}

/// What one device publishes.
struct DeviceSend {
    dev: SimDevice,
    /// vigil-json, a day each.
    payloads: Vec<Vec<u8>>,
    readings: usize,
}

/// Each device's publishes (vigil-json, a day each, in the device's spelling of the day).
fn payloads(seed: u64, patient: &SimPatient, h: &History) -> anyhow::Result<Vec<DeviceSend>> {
    let mut out = Vec::new();
    for (d, dev) in patient.devices.iter().enumerate() {
        let mut bytes = Vec::new();
        let mut readings = 0;
        for b in h.batches.iter().filter(|b| b.device == d) {
            let variant = Rng::derive(seed ^ hash(&dev.id), u64::from(b.day)).next_u64();
            let p = payload::encode(&dev.id, Encoding::VigilJson, &b.readings, variant)
                .ok_or_else(|| anyhow!("cannot encode device {}'s readings", dev.id))?;
            bytes.push(p.bytes);
            readings += b.readings.len();
        }
        if !bytes.is_empty() {
            out.push(DeviceSend {
                dev: dev.clone(),
                payloads: bytes,
                readings,
            });
        }
    }
    Ok(out)
}

/// Publishes every device's payloads, a few devices at a time; every device's error is
/// reported, the first in full.
async fn publish_all(target: &Target, sends: Vec<DeviceSend>) -> anyhow::Result<()> {
    let total = sends.len();
    let gate = Arc::new(tokio::sync::Semaphore::new(PARALLEL_DEVICES));
    let mut tasks = JoinSet::new();
    for send in sends {
        let (gate, target) = (gate.clone(), target.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            publish(&target, &send.dev, send.payloads).await
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(anyhow!("a publishing task failed: {e}")),
        }
    }
    match errors.into_iter().next() {
        None => Ok(()),
        Some(first) if total == 1 => Err(first),
        Some(first) => Err(first.context(format!(
            "publishing over MQTT to {}:{} failed for some of {total} devices",
            target.host, target.port
        ))),
    }
}

/// One device: connects with its own credentials, publishes `payloads` at QoS 1 and waits
/// until Vigil has acknowledged every one (stored it), then disconnects.
async fn publish(target: &Target, dev: &SimDevice, payloads: Vec<Vec<u8>>) -> anyhow::Result<()> {
    let n = payloads.len();
    let mut opts = MqttOptions::new(
        format!("{}-backfill", dev.id),
        target.host.clone(),
        target.port,
    );
    opts.set_credentials(dev.id.clone(), dev.password.clone());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(20);
    opts.set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some(tls) = &target.tls {
        opts.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    let (client, mut events) = AsyncClient::new(opts, 32);
    let topic = format!("vigil/v1/devices/{}/readings", dev.id);
    let feeder = client.clone();
    let feed = tokio::spawn(async move {
        for p in payloads {
            feeder
                .publish(topic.clone(), QoS::AtLeastOnce, false, p)
                .await?;
        }
        Ok::<(), rumqttc::ClientError>(())
    });
    // Generous: a day's publish is acknowledged in milliseconds by a healthy gateway.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30 + n as u64);
    let mut acked = 0;
    let outcome = loop {
        if acked == n {
            break Ok(());
        }
        match tokio::time::timeout_at(deadline, events.poll()).await {
            Err(_) => break Err(anyhow!("{acked} of {n} publishes acknowledged in time")),
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Incoming(Packet::Disconnect))) => {
                break Err(anyhow!("Vigil closed the connection"));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break Err(anyhow!("{e}")),
        }
    };
    feed.abort();
    if outcome.is_ok() {
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(ev) = events.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    outcome.map_err(|e| {
        e.context(format!(
            "device {} (after {acked} of {n} publishes acknowledged)",
            dev.id
        ))
    })
}
