//! `vigil-sim run`: the fleet. One MQTT connection per device; each device measures on its
//! schedule in simulated time, which runs `speed` times as fast as real time (see
//! [`Plan::window`]): at speed 1 it is real time, from the moment the run starts; faster, it
//! replays the past and catches up with the clock as the run ends. Either way no reading's time
//! is in the future, as Vigil requires.
//!
//! Streams are sent in batches when time runs fast (a SenML pack of every sample due since the
//! last publish, at most one publish per device per real second), as watches upload in bursts;
//! spot checks are one publish each. Devices report their battery on connecting and every
//! simulated hour.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::device::{self, Kind, Schedule};
use crate::payload::{self, Malformed, Reading};
use crate::physio::Physiology;
use crate::provision::{Credentials, SimDevice};
use crate::rng::{Rng, hash};
use crate::scenario::{Expectation, Scenario};

const HOUR: i64 = 3_600_000;
/// Most samples in one streamed payload.
const MAX_PACK: usize = 300;

/// Where and how the fleet connects.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Server CA for `mqtts://` (None: plain MQTT).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    /// Parses `mqtt://host:port` or `mqtts://host:port` (with the CA file for TLS).
    pub fn parse(url: &str, ca: Option<&std::path::Path>) -> anyhow::Result<Target> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            anyhow::bail!("--mqtt {url:?} must start with mqtt:// or mqtts://");
        };
        let (host, port) = rest
            .trim_end_matches('/')
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.parse::<u16>()))
            .unwrap_or((rest.to_owned(), Ok(if tls { 8883 } else { 1883 })));
        let port = port.with_context(|| format!("--mqtt {url:?}: bad port"))?;
        let tls = if tls {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let mut roots = rustls::RootCertStore::empty();
            let ca = ca.context("mqtts:// needs --ca FILE (the server's CA certificate, PEM)")?;
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.context("bad certificate in --ca")?)?;
            }
            Some(Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ))
        } else {
            None
        };
        Ok(Target { host, port, tls })
    }
}

/// How the run goes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Simulated time at the start and the end (Unix ms).
    pub sim_start: i64,
    pub sim_end: i64,
    pub speed: f64,
    pub seed: u64,
    /// The story for every patient, or one per patient in turn (`None`).
    pub scenario: Option<Scenario>,
}

impl Plan {
    /// The simulated span `(sim_start, sim_end)` of a run that starts at the real instant
    /// `now_ms` and lasts `real` at `speed` simulated seconds per real second.
    ///
    /// - Speed 1 is real time: simulated time starts now and runs forward with the clock, so
    ///   each reading is stamped when it is sent, and a second run adds new readings rather than
    ///   repeating the first's.
    /// - Faster, the run covers `real × speed` ending when the run ends: it starts in the past
    ///   and catches up with the clock at the end, so no reading is ahead of the clock.
    /// - Slower, it starts now and falls behind the clock, ending `real × speed` later.
    pub fn window(now_ms: i64, real: Duration, speed: f64) -> (i64, i64) {
        let real_ms = real.as_secs_f64() * 1000.0;
        let end = now_ms + (real_ms * speed.min(1.0)) as i64;
        (end - (real_ms * speed) as i64, end)
    }

    /// The story patient `i` lives.
    pub fn scenario_of(&self, i: usize) -> Scenario {
        self.scenario
            .unwrap_or(Scenario::ALL[i % Scenario::ALL.len()])
    }

    /// When patient `i`'s story starts: late enough that the run has shown the patient well
    /// first, early enough that it plays out before the end.
    pub fn onset_of(&self, i: usize) -> i64 {
        let s = self.scenario_of(i);
        let window = self.sim_end - self.sim_start;
        let latest = self.sim_end - s.span_ms() - 5 * 60_000;
        let earliest = self.sim_start + window / 10;
        latest.max(earliest).min(self.sim_end)
    }
}

/// Counters shared by the devices, for the progress line and the summary.
#[derive(Debug, Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub readings: AtomicU64,
    pub malformed: AtomicU64,
    pub connected: AtomicU64,
    pub connect_errors: AtomicU64,
    pub skewed: AtomicU64,
}

/// What the run did, and what Vigil should have made of it.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub patients: usize,
    pub devices: usize,
    pub sim_start: String,
    pub sim_end: String,
    pub speed: f64,
    pub seed: u64,
    pub published: u64,
    pub acknowledged: u64,
    pub readings: u64,
    pub malformed: u64,
    pub skewed: u64,
    pub connect_errors: u64,
    pub real_seconds: f64,
    pub expectations: Vec<PatientTruth>,
}

#[derive(Debug, Serialize)]
pub struct PatientTruth {
    pub patient_id: String,
    pub scenario: Scenario,
    pub onset: String,
    pub expect: Vec<Expectation>,
}

/// The real clock, Unix ms.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Runs the fleet to the end of the plan, counting what it does in `counters`.
pub async fn run(
    creds: &Credentials,
    target: &Target,
    plan: &Plan,
    counters: Arc<Counters>,
) -> anyhow::Result<Summary> {
    let real_start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut truth = Vec::new();
    for (i, patient) in creds.patients.iter().enumerate() {
        let scenario = plan.scenario_of(i);
        let onset = plan.onset_of(i);
        truth.push(PatientTruth {
            patient_id: patient.id.clone(),
            scenario,
            onset: rfc3339(onset),
            expect: scenario.expectations(onset),
        });
        let physio = Arc::new(Physiology::new(patient.seed, scenario, onset));
        for (d, dev) in patient.devices.iter().enumerate() {
            let Some(kind) = device::kind(&dev.profile) else {
                continue;
            };
            let ctx = DeviceRun {
                dev: dev.clone(),
                kind,
                seed: Rng::derive(patient.seed, hash(&dev.id)).next_u64(),
                physio: physio.clone(),
                scenario,
                onset,
                // The story's device effects touch the patient's first device (the watch).
                story_device: d == 0,
            };
            let (target, plan, counters) = (target.clone(), plan.clone(), counters.clone());
            tasks.spawn(async move { ctx.run(target, plan, real_start, counters).await });
            // Connect gradually: a thousand devices at once is a storm, not a fleet.
            if tasks.len() % 200 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            eprintln!("vigil-sim: device task failed: {e:#}");
        }
    }
    let c = &counters;
    Ok(Summary {
        patients: creds.patients.len(),
        devices: creds.device_count(),
        sim_start: rfc3339(plan.sim_start),
        sim_end: rfc3339(plan.sim_end),
        speed: plan.speed,
        seed: plan.seed,
        published: c.published.load(Ordering::Relaxed),
        acknowledged: c.acked.load(Ordering::Relaxed),
        readings: c.readings.load(Ordering::Relaxed),
        malformed: c.malformed.load(Ordering::Relaxed),
        skewed: c.skewed.load(Ordering::Relaxed),
        connect_errors: c.connect_errors.load(Ordering::Relaxed),
        real_seconds: real_start.elapsed().as_secs_f64(),
        expectations: truth,
    })
}

struct DeviceRun {
    dev: SimDevice,
    kind: &'static Kind,
    seed: u64,
    physio: Arc<Physiology>,
    scenario: Scenario,
    onset: i64,
    story_device: bool,
}

impl DeviceRun {
    /// Simulated time at a real instant.
    fn sim_at(plan: &Plan, real_start: Instant, at: Instant) -> i64 {
        plan.sim_start + (at.duration_since(real_start).as_secs_f64() * plan.speed * 1000.0) as i64
    }

    fn real_at(plan: &Plan, real_start: Instant, sim: i64) -> Instant {
        let secs = (sim - plan.sim_start).max(0) as f64 / 1000.0 / plan.speed;
        real_start + Duration::from_secs_f64(secs)
    }

    async fn run(
        self,
        target: Target,
        plan: Plan,
        real_start: Instant,
        counters: Arc<Counters>,
    ) -> anyhow::Result<()> {
        let mut opts = MqttOptions::new(
            format!("{}-sim", self.dev.id),
            target.host.clone(),
            target.port,
        );
        opts.set_credentials(self.dev.id.clone(), self.dev.password.clone());
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_inflight(50);
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        if let Some(tls) = &target.tls {
            opts.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        let (client, mut events) = AsyncClient::new(opts, 64);
        let acks = counters.clone();
        let poller = tokio::spawn(async move {
            let mut was_connected = false;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acks.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if !was_connected {
                            acks.connected.fetch_add(1, Ordering::Relaxed);
                            was_connected = true;
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) => {
                        acks.connect_errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let status_topic = format!("vigil/v1/devices/{}/status", self.dev.id);
        let battery = |t: i64| {
            if self.story_device && self.scenario == Scenario::LowBattery && t >= self.onset - HOUR
            {
                // Runs down to 8 % by the onset.
                let left = (self.onset - t).max(0) as f64 / HOUR as f64;
                (8.0 + 12.0 * left).round() as u8
            } else {
                self.kind.battery(self.seed, plan.sim_start, t)
            }
        };
        client
            .publish(
                &status_topic,
                QoS::AtLeastOnce,
                false,
                payload::status(battery(plan.sim_start)),
            )
            .await?;
        counters.published.fetch_add(1, Ordering::Relaxed);

        let mut rng = Rng::derive(self.seed, hash("run"));
        let mut cursor = plan.sim_start;
        let mut next_status = plan.sim_start + HOUR;
        let extra: Vec<i64> = self
            .scenario
            .extra_checks(self.onset)
            .into_iter()
            .filter(|(p, _)| *p == self.kind.profile)
            .map(|(_, t)| t)
            .collect();
        let silent_from =
            (self.story_device && self.scenario == Scenario::DeviceSilent).then_some(self.onset);
        while cursor < plan.sim_end {
            // Wake at the next measurement (at most once a real second for streams).
            let mut due = self
                .kind
                .due(self.seed, cursor, (cursor + HOUR).min(plan.sim_end));
            due.extend(
                extra
                    .iter()
                    .filter(|t| (cursor..(cursor + HOUR).min(plan.sim_end)).contains(*t))
                    .map(|t| device::Due {
                        time_ms: *t,
                        group: 0,
                    }),
            );
            due.sort();
            let Some(first) = due.first().copied() else {
                cursor = (cursor + HOUR).min(plan.sim_end);
                continue;
            };
            let wake = Self::real_at(&plan, real_start, first.time_ms);
            let streaming = matches!(
                self.kind.groups[first.group].schedule,
                Schedule::Every(p) if (p as f64 / plan.speed) < 1000.0
            );
            let wake = if streaming {
                wake.max(Instant::now() + Duration::from_secs(1))
                    .min(Self::real_at(&plan, real_start, plan.sim_end))
            } else {
                wake
            };
            tokio::time::sleep_until(wake.into()).await;
            let now_sim = Self::sim_at(&plan, real_start, Instant::now()).min(plan.sim_end);
            let upto = now_sim.max(first.time_ms + 1);
            // Everything due since the last wake (time may have run far past the first).
            let mut ready = self.kind.due(self.seed, cursor, upto);
            ready.extend(
                extra
                    .iter()
                    .filter(|t| (cursor..upto).contains(*t))
                    .map(|t| device::Due {
                        time_ms: *t,
                        group: 0,
                    }),
            );
            ready.sort();
            cursor = upto;
            if silent_from.is_some_and(|s| upto >= s) {
                // The device has gone quiet; it stays connected but says nothing.
                continue;
            }
            for (g, group) in self.kind.groups.iter().enumerate() {
                let times: Vec<i64> = ready
                    .iter()
                    .filter(|d| d.group == g)
                    .map(|d| d.time_ms)
                    .collect();
                if times.is_empty() {
                    continue;
                }
                let encoding = self.kind.encoding(self.seed, g);
                let batches: Vec<Vec<i64>> = if matches!(group.schedule, Schedule::Every(_)) {
                    times.chunks(MAX_PACK).map(<[i64]>::to_vec).collect()
                } else {
                    times.into_iter().map(|t| vec![t]).collect()
                };
                for batch in batches {
                    // A fast clock: 15 minutes ahead of the receiver's (real) clock, however
                    // far simulated time lags behind it.
                    let skew = if self.scenario == Scenario::ClockSkew && batch[0] >= self.onset {
                        counters.skewed.fetch_add(1, Ordering::Relaxed);
                        (crate::fleet::wall_ms() - batch[0]).max(0) + 15 * 60_000
                    } else {
                        0
                    };
                    let readings: Vec<Reading> = batch
                        .iter()
                        .flat_map(|t| group.metrics.iter().map(move |m| (m, *t)))
                        .filter_map(|(m, t)| {
                            Some(Reading {
                                metric: m,
                                value: self.physio.measure(m, t)?,
                                time_ms: t + skew,
                            })
                        })
                        .collect();
                    // A variant without the reading's own time (Vigil then stamps its receipt)
                    // is realistic only when simulated time is real time.
                    let real_time = (plan.speed - 1.0).abs() < f64::EPSILON;
                    let mut variant = rng.next_u64();
                    for _ in 0..32 {
                        if real_time || payload::keeps_time(encoding, variant) {
                            break;
                        }
                        variant = rng.next_u64();
                    }
                    let bad = self.scenario == Scenario::Malformed
                        && batch[0] >= self.onset
                        && rng.chance(0.3);
                    let p = if bad {
                        counters.malformed.fetch_add(1, Ordering::Relaxed);
                        let kind = Malformed::ALL[(variant % Malformed::ALL.len() as u64) as usize];
                        Some(payload::malformed_for(
                            kind,
                            encoding,
                            group.metrics[0],
                            upto,
                            variant,
                        ))
                    } else {
                        payload::encode(&self.dev.id, encoding, &readings, variant)
                    };
                    let Some(p) = p else { continue };
                    let topic = format!("vigil/v1/devices/{}/{}", self.dev.id, p.suffix);
                    client
                        .publish(topic, QoS::AtLeastOnce, false, p.bytes)
                        .await?;
                    counters.published.fetch_add(1, Ordering::Relaxed);
                    if !bad {
                        counters
                            .readings
                            .fetch_add(readings.len() as u64, Ordering::Relaxed);
                    }
                }
            }
            while next_status <= upto {
                client
                    .publish(
                        &status_topic,
                        QoS::AtLeastOnce,
                        false,
                        payload::status(battery(next_status)),
                    )
                    .await?;
                counters.published.fetch_add(1, Ordering::Relaxed);
                next_status += HOUR;
            }
        }
        // Wait (a while) for the last acknowledgements, then leave cleanly.
        let deadline = Instant::now() + Duration::from_secs(30);
        while counters.acked.load(Ordering::Relaxed) < counters.published.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), poller).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_time_starts_now_and_fast_time_catches_up_with_the_clock() {
        let now = 1_800_000_000_000;
        let d = Duration::from_secs(30);
        // Real time: forward from now, never the span before.
        assert_eq!(Plan::window(now, d, 1.0), (now, now + 30_000));
        // Faster: 30 s × 600 = 5 h, ending when the run ends.
        assert_eq!(
            Plan::window(now, d, 600.0),
            (now + 30_000 - 18_000_000, now + 30_000)
        );
        // Slower: from now, 15 s of simulated time over the 30 s run.
        assert_eq!(Plan::window(now, d, 0.5), (now, now + 15_000));
        // At every speed, simulated time never runs ahead of the real clock during the run.
        for speed in [0.25, 1.0, 7.0, 24_000.0] {
            let (start, end) = Plan::window(now, d, speed);
            for elapsed in [0, 1, 10_000, 29_999, 30_000] {
                let sim = start + (elapsed as f64 * speed) as i64;
                assert!(sim <= now + elapsed, "speed {speed}, {elapsed} ms in");
                assert!(sim <= end);
            }
        }
    }
}
