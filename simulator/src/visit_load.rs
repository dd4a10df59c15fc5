//! `vigil-sim visits`: video visits as load. It provisions a patient, then runs N concurrent
//! 1:1 visits — a clinician peer and a patient peer per visit ([`crate::visit::Peer`]), each
//! sending VP8 at `--kbps` and Opus-sized audio through Vigil's relay — and reports, per step,
//! the packets sent and received, the loss, the time from the patient's join to the first
//! complete remote frame, and CPU.
//!
//! Loss is counted by RTP sequence number at the receivers (expected − received per SSRC over
//! the measurement window), never inferred from send counters. A visit that does not get a
//! verified frame across both ways within 20 s counts as failed.
//!
//! With `--step`, N grows (1, 2, 4, 8, 12, 16, 24, 32, …) until the loss exceeds
//! `--max-loss` (1 %) or a visit fails, and the largest N that stayed within it is printed.
//!
//! The peers run in this process and, when Vigil runs on the same machine, share its cores
//! with Vigil: every relayed packet costs CPU twice here (send and receive, with SRTP) and
//! once in Vigil. The limit found is that of the pair on this machine, a lower bound for Vigil
//! alone; `--vigil-pid` adds Vigil's own CPU to the table.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;

use crate::peers::proc_stats;
use crate::provision::Api;
use crate::visit::{self, Peer, PeerOptions, PeerSnapshot, Phase};

/// A step whose peers sent less than this share of their target (percent) does not count:
/// the load asked for was not offered.
pub const MIN_SENT_PCT: f64 = 90.0;

/// How long a visit may take to get media flowing both ways.
const ESTABLISH_WITHIN: Duration = Duration::from_secs(20);

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Vigil's HTTP base URL.
    pub url: String,
    /// An admin (or clinician) bearer token.
    pub token: String,
    /// Concurrent visits (without `step`).
    pub visits: usize,
    /// Grow the number of visits until the loss exceeds `max_loss_pct`.
    pub step: bool,
    /// The largest step.
    pub max_visits: usize,
    /// The measurement window of each step.
    pub seconds: f64,
    /// Video bitrate per peer, kbit/s.
    pub kbps: u32,
    /// Video frames per second.
    pub fps: u32,
    /// The loss (percent) a step may have to count as sustained.
    pub max_loss_pct: f64,
    /// Vigil's process id, for its CPU (same machine only).
    pub vigil_pid: Option<u32>,
}

/// One step's figures.
#[derive(Debug, Clone, Default)]
pub struct StepResult {
    /// Concurrent visits asked for.
    pub visits: usize,
    /// Visits with verified frames both ways.
    pub established: usize,
    /// RTP packets sent in the window (all peers, audio and video).
    pub sent: u64,
    /// What the established peers should have sent in the window at the asked rates.
    pub target: f64,
    /// RTP packets received in the window.
    pub received: u64,
    /// RTP packets lost in the window (by sequence number).
    pub lost: u64,
    /// Frames that failed verification (whole run of the step).
    pub bad_frames: u64,
    /// Patient's join → first complete remote frame at each peer, ms (sorted).
    pub first_frame_ms: Vec<f64>,
    /// This process's CPU over the window, percent of one core.
    pub sim_cpu_pct: Option<f64>,
    /// Vigil's CPU over the window, percent of one core.
    pub vigil_cpu_pct: Option<f64>,
    /// Errors (first few).
    pub errors: Vec<String>,
}

impl StepResult {
    /// Lost / expected, in percent.
    pub fn loss_pct(&self) -> f64 {
        let expected = self.received + self.lost;
        if expected == 0 {
            100.0
        } else {
            self.lost as f64 * 100.0 / expected as f64
        }
    }

    /// Packets sent, in percent of the target: below 100 when the peers could not keep their
    /// pace (this machine is saturated).
    pub fn sent_pct(&self) -> f64 {
        if self.target > 0.0 {
            self.sent as f64 * 100.0 / self.target
        } else {
            0.0
        }
    }

    /// Whether every visit was established, the peers sent at least [`MIN_SENT_PCT`] of
    /// their target and the loss stayed within `max_loss_pct`.
    pub fn sustained(&self, max_loss_pct: f64) -> bool {
        self.established == self.visits
            && self.sent_pct() >= MIN_SENT_PCT
            && self.loss_pct() <= max_loss_pct
    }

    fn percentile(&self, p: f64) -> Option<f64> {
        let v = &self.first_frame_ms;
        if v.is_empty() {
            return None;
        }
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v.get(i).copied()
    }
}

/// A 1:1 visit in progress.
struct LiveVisit {
    clinician: Peer,
    patient: Peer,
    cid: String,
    pid: String,
}

impl LiveVisit {
    fn snapshots(&self) -> [PeerSnapshot; 2] {
        [self.clinician.snapshot(), self.patient.snapshot()]
    }

    /// The clinician ends the visit; both peers close.
    async fn end(self) -> [PeerSnapshot; 2] {
        let c = self.clinician.end().await;
        let p = tokio::time::timeout(Duration::from_secs(10), self.patient.finished())
            .await
            .unwrap_or_default();
        [c, p]
    }
}

fn peer_options(o: &LoadOptions, name: &str, auto_admit: bool) -> PeerOptions {
    PeerOptions {
        name: Some(name.into()),
        // Loopback candidates only matter when Vigil's relay is on this host's loopback;
        // the relay's own addresses come in its answer either way.
        udp_addr: "0.0.0.0:0".into(),
        kbps: o.kbps,
        fps: o.fps,
        auto_admit,
        ..PeerOptions::default()
    }
}

/// Opens one visit: the clinician joins (and admits whoever waits), then the patient; returns
/// once each has a verified frame from the other.
async fn open_visit(
    o: LoadOptions,
    api: Api,
    patient: String,
    n: usize,
) -> anyhow::Result<LiveVisit> {
    let v = visit::create_visit(&api, &patient).await?;
    let signal = visit::signal_url(&o.url, &v.id)?;
    let token = |url: &str| {
        visit::link_token(url)
            .map(str::to_owned)
            .context("a join link without a token")
    };
    let clinician = Peer::join(
        &signal,
        Some(&token(&v.clinician_join_url)?),
        peer_options(&o, &format!("clinician {n}"), true),
    )
    .await?;
    let c = clinician
        .wait_for("clinician in the call", ESTABLISH_WITHIN, |s| {
            s.phase == Phase::InCall
        })
        .await;
    let c = match c {
        Ok(c) => c,
        Err(e) => {
            clinician.close().await;
            return Err(e);
        }
    };
    let patient = Peer::join(
        &signal,
        Some(&token(&v.patient_join_url)?),
        peer_options(&o, &format!("patient {n}"), false),
    )
    .await;
    let patient = match patient {
        Ok(p) => p,
        Err(e) => {
            clinician.end().await;
            return Err(e);
        }
    };
    let cid = c.participant.unwrap_or_default();
    let live = |s: &PeerSnapshot, from: &str| s.first_frame_from(from).is_some();
    let p = patient
        .wait_for("patient receiving", ESTABLISH_WITHIN, |s| live(s, &cid))
        .await;
    let pid = patient.participant().unwrap_or_default();
    let c = match p {
        Ok(_) => {
            clinician
                .wait_for("clinician receiving", ESTABLISH_WITHIN, |s| live(s, &pid))
                .await
        }
        Err(e) => Err(e),
    };
    let visit = LiveVisit {
        clinician,
        patient,
        cid,
        pid,
    };
    if let Err(e) = c {
        visit.end().await;
        return Err(e);
    }
    Ok(visit)
}

/// Sent, received and lost packets over a set of snapshots.
fn totals(snaps: &[PeerSnapshot]) -> (u64, u64, u64) {
    snaps.iter().fold((0, 0, 0), |(s, r, l), x| {
        (
            s + x.sent.video_packets + x.sent.audio_packets,
            r + x.packets_received(),
            l + x.packets_lost(),
        )
    })
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    proc_stats(pid).map(|p| p.cpu_seconds)
}

/// One step: `n` concurrent visits, measured over `o.seconds` once all are open.
pub async fn run_step(o: &LoadOptions, api: &Api, patient: &str, n: usize) -> StepResult {
    let mut opening = JoinSet::new();
    for i in 0..n {
        opening.spawn(open_visit(o.clone(), api.clone(), patient.to_owned(), i));
    }
    let mut visits = Vec::new();
    let mut result = StepResult {
        visits: n,
        ..StepResult::default()
    };
    while let Some(r) = opening.join_next().await {
        match r {
            Ok(Ok(v)) => visits.push(v),
            Ok(Err(e)) => result.errors.push(format!("{e:#}")),
            Err(e) => result.errors.push(format!("visit task: {e}")),
        }
    }
    result.established = visits.len();

    let me = std::process::id();
    let cpu0 = (cpu_seconds(me), o.vigil_pid.and_then(cpu_seconds));
    let start: Vec<PeerSnapshot> = visits.iter().flat_map(LiveVisit::snapshots).collect();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(o.seconds)).await;
    let end: Vec<PeerSnapshot> = visits.iter().flat_map(LiveVisit::snapshots).collect();
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = (cpu_seconds(me), o.vigil_pid.and_then(cpu_seconds));
    let pct = |a: Option<f64>, b: Option<f64>| Some((b? - a?) * 100.0 / wall);
    result.sim_cpu_pct = pct(cpu0.0, cpu1.0);
    result.vigil_cpu_pct = pct(cpu0.1, cpu1.1);
    let (s0, r0, l0) = totals(&start);
    let (s1, r1, l1) = totals(&end);
    result.sent = s1.saturating_sub(s0);
    result.target =
        visit::packets_per_second(&peer_options(o, "", false)) * (2 * visits.len()) as f64 * wall;
    result.received = r1.saturating_sub(r0);
    result.lost = l1.saturating_sub(l0);

    for v in &visits {
        let [c, p] = v.snapshots();
        result.bad_frames += c.bad() + p.bad();
        let t0 = p.joined_at;
        let ms = |t: Option<std::time::Instant>| {
            Some(t?.saturating_duration_since(t0?).as_secs_f64() * 1000.0)
        };
        result.first_frame_ms.extend(ms(p.first_frame_from(&v.cid)));
        result.first_frame_ms.extend(ms(c.first_frame_from(&v.pid)));
    }
    result.first_frame_ms.sort_by(f64::total_cmp);

    let mut closing = JoinSet::new();
    for v in visits {
        closing.spawn(v.end());
    }
    while let Some(r) = closing.join_next().await {
        if let Ok(snaps) = r {
            for s in snaps {
                result
                    .errors
                    .extend(s.errors.into_iter().filter(|e| e.starts_with("local:")));
            }
        }
    }
    result
}

/// The steps of `--step`: 1, 2, 4, 8, 12, 16, 24, 32, 48, 64, … up to `max`.
pub fn steps(max: usize) -> Vec<usize> {
    let mut out = vec![1, 2, 4, 8, 12, 16];
    let mut n = 16;
    while n < max {
        n += n / 2;
        out.push(n);
    }
    out.retain(|&s| s <= max.max(1));
    out
}

/// Runs the load: one step, or steps until the loss exceeds the limit. Prints progress on
/// standard error; returns the steps' results.
pub async fn run(o: &LoadOptions) -> anyhow::Result<Vec<StepResult>> {
    let api = Api::new(&o.url, &o.token);
    let patient = format!(
        "visit-load-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    visit::create_patient(&api, &patient, "Video load patient").await?;
    let plan = if o.step {
        steps(o.max_visits)
    } else {
        vec![o.visits]
    };
    let mut results = Vec::new();
    for n in plan {
        eprintln!("vigil-sim: {n} concurrent visits for {} s…", o.seconds);
        let r = run_step(o, &api, &patient, n).await;
        for e in r.errors.iter().take(3) {
            eprintln!("vigil-sim:   {e}");
        }
        let ok = r.sustained(o.max_loss_pct);
        results.push(r);
        if o.step && !ok {
            break;
        }
    }
    Ok(results)
}

/// The results as a markdown table, and with `--step` the verdict.
pub fn markdown(o: &LoadOptions, results: &[StepResult]) -> String {
    let f = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0}"));
    let mut out = format!(
        "Video visits through Vigil at {}: 1:1, VP8 {} kbit/s at {} fps + Opus 20 ms per \
         peer, {} s per step.\n\n",
        o.url, o.kbps, o.fps, o.seconds
    );
    out.push_str(
        "| visits | established | packets sent (% of target) | packets received | lost | loss % \
         | bad frames | join → first frame p50 / p99 / max (ms) | vigil-sim CPU % | Vigil CPU % |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n");
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {} ({:.0} %) | {} | {} | {:.2} | {} | {} / {} / {} | {} | {} |\n",
            r.visits,
            r.established,
            r.sent,
            r.sent_pct(),
            r.received,
            r.lost,
            r.loss_pct(),
            r.bad_frames,
            f(r.percentile(0.5)),
            f(r.percentile(0.99)),
            f(r.first_frame_ms.last().copied()),
            f(r.sim_cpu_pct),
            f(r.vigil_cpu_pct),
        ));
    }
    if o.step {
        let best = results
            .iter()
            .filter(|r| r.sustained(o.max_loss_pct))
            .map(|r| r.visits)
            .max();
        out.push_str(&match best {
            Some(n) => format!(
                "\nLargest number of concurrent visits with loss ≤ {} % (every visit \
                 established, ≥ {MIN_SENT_PCT} % of the packets sent): **{n}** ({} peers).\n",
                o.max_loss_pct,
                2 * n
            ),
            None => format!(
                "\nNo step stayed within {} % loss with every visit established and ≥ \
                 {MIN_SENT_PCT} % of the packets sent.\n",
                o.max_loss_pct
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_grow_to_the_limit() {
        assert_eq!(steps(16), vec![1, 2, 4, 8, 12, 16]);
        assert_eq!(steps(60), vec![1, 2, 4, 8, 12, 16, 24, 36, 54]);
        assert_eq!(steps(1), vec![1]);
    }

    #[test]
    fn loss_is_lost_over_expected() {
        let mut r = StepResult {
            visits: 2,
            established: 2,
            sent: 1000,
            target: 1000.0,
            received: 990,
            lost: 10,
            ..StepResult::default()
        };
        assert!((r.loss_pct() - 1.0).abs() < 1e-9);
        assert!(r.sustained(1.0));
        assert!(!r.sustained(0.5));
        r.sent = 800; // the peers fell behind: the load was not offered
        assert!(!r.sustained(1.0));
    }
}
