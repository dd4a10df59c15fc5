//! Video visits end to end: `vigil_sim::visit` peers (webrtc-crate participants sending
//! synthetic VP8 and Opus) against a real Vigil's signalling socket and relay.
//!
//! The first tests start Vigil in-process on free ports, its relay bound to 127.0.0.1. The leak
//! test runs Vigil as a separate process (the `vigil` binary beside the test executable: build
//! it first with `cargo build -p vigil`) and reads its `/metrics` before and after many visits.
//!
//! Figures (packets, frames, join → first frame) are printed; `--nocapture` shows them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_util::sync::CancellationToken;
use vigil::app::App;
use vigil::config::{Config, Overrides};
use vigil_sim::provision::Api;
use vigil_sim::visit::{
    self, MediaKind, NewVisit, Peer, PeerOptions, PeerSnapshot, Phase, link_token, signal_url,
};

const TOKEN: &str = "sim-visits-bootstrap-token";
/// Generous: debug builds on a busy 2-core machine.
const WAIT: Duration = Duration::from_secs(20);

/// The media tests share this process's cores (two per test binary run): the leak test runs
/// alone (write), the others side by side (read), so that its timings and its separate
/// Vigil are not starved by four other calls' peers.
static MEDIA: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
const PATIENT: &str = "visit-patient";

struct Gateway {
    http: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Gateway {
    async fn start() -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let flags = Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            http_listen: Some("127.0.0.1:0".into()),
            mqtt_listen: Some("127.0.0.1:0".into()),
        };
        let mut cfg = Config::load(None, Vec::new(), &flags).unwrap();
        cfg.video.bind_ip = "127.0.0.1".parse().unwrap();
        let app = App::build(cfg, Some(TOKEN.into())).await.unwrap();
        let http = format!("http://{}", app.http_addr());
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run(stop.clone(), CancellationToken::new()));
        let gw = Gateway {
            http,
            stop,
            task,
            dir,
        };
        visit::create_patient(&gw.api(), PATIENT, "Video patient")
            .await
            .unwrap();
        gw
    }

    fn api(&self) -> Api {
        Api::new(&self.http, TOKEN)
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

fn opts(name: &str) -> PeerOptions {
    PeerOptions {
        name: Some(name.into()),
        ..PeerOptions::default()
    }
}

async fn join(http: &str, visit_id: &str, url: &str, name: &str) -> Peer {
    let token = link_token(url).expect("a join link with a token");
    Peer::join(
        &signal_url(http, visit_id).unwrap(),
        Some(token),
        opts(name),
    )
    .await
    .unwrap()
}

async fn metric(http: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `f` until it returns `Some`, at most `limit`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The clinician joins and is admitted at once; the patient waits until the clinician admits
/// them. Returns the two peers and the patient's participant id.
async fn clinician_admits_patient(http: &str, v: &NewVisit) -> (Peer, Peer, String) {
    let clinician = join(http, &v.id, &v.clinician_join_url, "Dr Sim").await;
    let c = clinician
        .wait_for("clinician admitted", WAIT, |s| s.phase == Phase::InCall)
        .await
        .unwrap();
    assert_eq!(c.role.as_deref(), Some("clinician"));
    let patient = join(http, &v.id, &v.patient_join_url, "Pat Sim").await;
    let p = patient
        .wait_for("patient in the waiting room", WAIT, |s| {
            s.phase == Phase::Waiting
        })
        .await
        .unwrap();
    assert_eq!(p.role.as_deref(), Some("patient"));
    let pid = p.participant.clone().unwrap();
    clinician
        .wait_for("the clinician sees the patient waiting", WAIT, |s| {
            s.roster_entry(&pid).is_some_and(|e| e.state == "waiting")
        })
        .await
        .unwrap();
    // Still waiting: nothing is relayed to a participant nobody admitted.
    assert_eq!(patient.snapshot().phase, Phase::Waiting);
    clinician.admit(&pid);
    patient
        .wait_for("patient admitted", WAIT, |s| s.phase == Phase::InCall)
        .await
        .unwrap();
    (clinician, patient, pid)
}

/// Waits until `peer` has `frames` verified video frames and `audio` audio packets from `from`.
async fn receives(peer: &Peer, from: &str, frames: u64, audio: u64) -> PeerSnapshot {
    peer.wait_for(
        &format!("{frames} frames and {audio} audio packets from {from}"),
        WAIT,
        |s| {
            s.received(from, MediaKind::Video).1 >= frames
                && s.received(from, MediaKind::Audio).0 >= audio
        },
    )
    .await
    .unwrap()
}

fn ms(a: Option<Instant>, since: Option<Instant>) -> f64 {
    match (a, since) {
        (Some(a), Some(b)) => a.saturating_duration_since(b).as_secs_f64() * 1000.0,
        _ => f64::NAN,
    }
}

fn report(label: &str, s: &PeerSnapshot) {
    println!(
        "{label}: sent {} video ({} frames, {} key, {} keyframe requests) + {} audio packets; \
         received {} packets, lost {}, bad {}, renegotiations {}; per track: {}",
        s.sent.video_packets,
        s.sent.frames,
        s.sent.keyframes,
        s.sent.keyframe_requests,
        s.sent.audio_packets,
        s.packets_received(),
        s.packets_lost(),
        s.bad(),
        s.renegotiations,
        s.remote
            .iter()
            .map(|t| format!(
                "{}/{:?} {} pkts {} frames{}",
                t.participant,
                t.kind,
                t.packets,
                t.frames,
                if t.ended { " (ended)" } else { "" }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn no_local_errors(s: &PeerSnapshot) {
    let local: Vec<_> = s
        .errors
        .iter()
        .filter(|e| e.starts_with("local:"))
        .collect();
    assert!(local.is_empty(), "peer errors: {local:?}");
}

/// Clinician and patient: the patient waits, the clinician admits; each then receives the
/// other's video (frames reassembled and verified) and audio, and the visit is in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_receive_each_others_media() {
    let _media = MEDIA.read().await;
    let gw = Gateway::start().await;
    let v = visit::create_visit(&gw.api(), PATIENT).await.unwrap();
    let (clinician, patient, pid) = clinician_admits_patient(&gw.http, &v).await;
    let cid = clinician.participant().unwrap();

    let p = receives(&patient, &cid, 30, 25).await;
    let c = receives(&clinician, &pid, 30, 25).await;
    for (s, from) in [(&p, &cid), (&c, &pid)] {
        assert_eq!(s.bad(), 0, "damaged frames");
        assert_eq!(s.packets_lost(), 0, "loss on loopback");
        assert!(s.sent.keyframes >= 1);
        // One video and one audio track from the other participant, with its stream id.
        assert_eq!(s.tracks_from(from).count(), 2, "{:?}", s.remote);
        assert!(
            s.remote
                .iter()
                .all(|t| t.stream_id == format!("participant-{from}"))
        );
    }
    // The roster: both in the call.
    let roster = clinician
        .wait_for("both in_call in the roster", WAIT, |s| {
            s.roster.len() == 2 && s.roster.iter().all(|e| e.state == "in_call")
        })
        .await
        .unwrap()
        .roster;
    assert!(roster.iter().any(|e| e.id == pid && e.role == "patient"));

    let visit = gw
        .api()
        .call(reqwest::Method::GET, &format!("/visits/{}", v.id), None)
        .await
        .unwrap();
    assert_eq!(visit["status"], "in_progress", "{visit}");

    // Join → first remote frame: the patient from its join; the clinician from the moment it
    // admitted the patient.
    println!(
        "join → first frame: patient {:.0} ms (of which admitted after {:.0} ms), clinician \
         (from the patient's admission) {:.0} ms",
        ms(p.first_frame_from(&cid), p.joined_at),
        ms(p.admitted_at, p.joined_at),
        ms(c.first_frame_from(&pid), p.admitted_at),
    );
    report("patient", &p);
    report("clinician", &c);

    // The patient mutes its microphone: the roster says so (`audio: true` = muted) and its
    // audio stops while its video goes on.
    patient.mute(true, false);
    clinician
        .wait_for("the patient muted in the roster", WAIT, |s| {
            s.roster_entry(&pid).is_some_and(|e| e.audio && !e.video)
        })
        .await
        .unwrap();
    let (audio_before, _) = clinician.snapshot().received(&pid, MediaKind::Audio);
    let (_, frames_before) = clinician.snapshot().received(&pid, MediaKind::Video);
    let after = receives(&clinician, &pid, frames_before + 10, 0).await;
    let (audio_after, _) = after.received(&pid, MediaKind::Audio);
    // At most what was in flight when the roster changed.
    assert!(
        audio_after <= audio_before + 2,
        "audio went on while muted: {audio_before} → {audio_after}"
    );

    // The patient leaves; the clinician sees it go (roster, tracks removed), then leaves too.
    // (Both leaving at once works as well, but the relay then holds the second one's closed
    // connection until its pending renegotiation times out, 10 s: see the leak test.)
    let p = patient.leave().await;
    clinician
        .wait_for("the patient gone, its tracks removed", WAIT, |s| {
            s.roster_entry(&pid).is_none() && s.tracks_from(&pid).count() == 0
        })
        .await
        .unwrap();
    let c = clinician.leave().await;
    no_local_errors(&p);
    no_local_errors(&c);
    assert_eq!(p.phase, Phase::Finished);
    eventually(WAIT, "the relay's peer connections freed", || async {
        (metric(&gw.http, "vigil_video_peer_connections").await? == 0.0).then_some(())
    })
    .await;
    gw.stop().await;
}

/// Clinician, patient and a guest: each receives both others' media. Then the guest leaves:
/// the roster drops it, its tracks are removed from the other two (renegotiation), and those
/// two keep receiving each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_then_one_leaves() {
    let _media = MEDIA.read().await;
    let gw = Gateway::start().await;
    let v = visit::create_visit(&gw.api(), PATIENT).await.unwrap();
    let guest_url = visit::guest_link(&gw.api(), &v.id).await.unwrap();
    let (clinician, patient, pid) = clinician_admits_patient(&gw.http, &v).await;
    let cid = clinician.participant().unwrap();

    let guest = join(&gw.http, &v.id, &guest_url, "Interpreter").await;
    let g = guest
        .wait_for("guest waiting", WAIT, |s| s.phase == Phase::Waiting)
        .await
        .unwrap();
    assert_eq!(g.role.as_deref(), Some("guest"));
    let gid = g.participant.unwrap();
    clinician
        .wait_for("the guest in the roster", WAIT, |s| {
            s.roster_entry(&gid).is_some()
        })
        .await
        .unwrap();
    clinician.admit(&gid);

    let peers = [(&clinician, &cid), (&patient, &pid), (&guest, &gid)];
    for (peer, me) in peers {
        for (_, other) in peers.iter().filter(|(_, o)| *o != me) {
            receives(peer, other, 20, 20).await;
        }
    }
    for (peer, me) in peers {
        let s = peer.snapshot();
        report(me, &s);
        assert_eq!(s.bad(), 0);
        assert_eq!(s.roster.len(), 3, "{:?}", s.roster);
    }

    // The guest leaves.
    let g = guest.leave().await;
    no_local_errors(&g);
    for (peer, me) in [(&clinician, &cid), (&patient, &pid)] {
        peer.wait_for(
            &format!("{me}: the guest gone from the roster"),
            WAIT,
            |s| s.roster_entry(&gid).is_none(),
        )
        .await
        .unwrap();
        let s = peer
            .wait_for(&format!("{me}: the guest's tracks removed"), WAIT, |s| {
                s.tracks_from(&gid).count() == 0
            })
            .await
            .unwrap_or_else(|e| {
                report(me, &peer.snapshot());
                panic!("{e:#}")
            });
        assert_eq!(s.roster.len(), 2);
        assert!(s.renegotiations >= 1);
    }
    // The other two keep receiving each other.
    let before_c = clinician.snapshot().received(&pid, MediaKind::Video).1;
    let before_p = patient.snapshot().received(&cid, MediaKind::Video).1;
    receives(&clinician, &pid, before_c + 15, 0).await;
    receives(&patient, &cid, before_p + 15, 0).await;
    // …from the same tracks as before (nothing of theirs was renegotiated away).
    assert_eq!(clinician.snapshot().tracks_from(&pid).count(), 2);
    assert_eq!(patient.snapshot().tracks_from(&cid).count(), 2);

    let p = patient.leave().await;
    let c = clinician.end().await;
    no_local_errors(&p);
    no_local_errors(&c);
    report("patient at the end", &p);
    eventually(WAIT, "the relay's peer connections freed", || async {
        (metric(&gw.http, "vigil_video_peer_connections").await? == 0.0).then_some(())
    })
    .await;
    gw.stop().await;
}

/// A socket whose `join` carries an expired, altered or other visit's token gets an `error`
/// and is closed with code 4001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_an_error_and_close_4001() {
    let _media = MEDIA.read().await;
    let gw = Gateway::start().await;
    let a = visit::create_visit(&gw.api(), PATIENT).await.unwrap();
    let b = visit::create_visit(&gw.api(), PATIENT).await.unwrap();
    let good = link_token(&a.patient_join_url).unwrap().to_owned();

    // Altered: one character of the signed body changed.
    let mut tampered: Vec<char> = good.chars().collect();
    let i = good.find('.').unwrap() + 5;
    tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    // Expired: genuinely signed with this Vigil's key, an hour ago.
    let key =
        vigil::video::token::TokenKey::load_or_create(&gw.dir.path().join("visit-signing.key"))
            .unwrap();
    let expired = key.sign(&vigil::video::token::Claims {
        v: a.id.clone(),
        r: vigil::video::token::JoinRole::Patient,
        exp: time_now_s() - 3600,
    });

    let cases = [
        ("altered", a.id.as_str(), Some(tampered.as_str())),
        ("expired", a.id.as_str(), Some(expired.as_str())),
        ("other visit's", b.id.as_str(), Some(good.as_str())),
        ("missing", a.id.as_str(), None),
    ];
    for (what, visit_id, token) in cases {
        let peer = Peer::join(&signal_url(&gw.http, visit_id).unwrap(), token, opts("x"))
            .await
            .unwrap();
        let s = tokio::time::timeout(WAIT, peer.finished())
            .await
            .unwrap_or_else(|_| panic!("{what} token: the socket stayed open"));
        assert_eq!(
            s.close.as_ref().map(|c| c.0),
            Some(4001),
            "{what} token: {s:?}"
        );
        assert!(
            s.errors.iter().any(|e| !e.starts_with("local:")),
            "{what} token: no error message: {:?}",
            s.errors
        );
        assert!(s.participant.is_none(), "{what} token was admitted");
        println!("{what} token: {:?}, close {:?}", s.errors, s.close);
    }
    // The genuine token still works.
    let peer = Peer::join(
        &signal_url(&gw.http, &a.id).unwrap(),
        Some(&good),
        opts("ok"),
    )
    .await
    .unwrap();
    peer.wait_for("hello", WAIT, |s| s.participant.is_some())
        .await
        .unwrap();
    peer.leave().await;
    gw.stop().await;
}

fn time_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------------------
// Leaks: Vigil as its own process
// ---------------------------------------------------------------------------------------------

/// `vigil serve` as a child process, its HTTP address read from its JSON log.
struct VigilProcess {
    child: tokio::process::Child,
    http: String,
    _dir: tempfile::TempDir,
}

fn vigil_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VIGIL_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/visits-… → target/debug/vigil
    let me = std::env::current_exe().unwrap();
    let bin = me.parent().unwrap().parent().unwrap().join("vigil");
    assert!(
        bin.exists(),
        "no {} (build it first: cargo build -p vigil), or set VIGIL_BIN",
        bin.display()
    );
    bin
}

impl VigilProcess {
    async fn start() -> VigilProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(vigil_bin())
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--mqtt-listen",
                "127.0.0.1:0",
            ])
            .env("VIGIL_BOOTSTRAP_TOKEN", TOKEN)
            .env("VIGIL_LOG__FORMAT", "json")
            .env("VIGIL_VIDEO__BIND_IP", "127.0.0.1")
            .env("RUST_LOG", "warn,vigil::app=info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let http = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["message"] == "vigil listening" {
                    return format!("http://{}", v["http"].as_str().unwrap());
                }
            }
            panic!("vigil exited before listening")
        })
        .await
        .expect("vigil listening within 30 s");
        // Keep draining its log (warnings are printed, so a leak test failure comes with them).
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("vigil: {line}");
            }
        });
        VigilProcess {
            child,
            http,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

#[derive(Debug, Clone, Copy)]
struct Resources {
    pcs: f64,
    tasks: f64,
    fds: f64,
    rss: f64,
}

async fn resources(http: &str) -> Option<Resources> {
    // A fresh client each time: no pooled connection (a server task) outlives the scrape.
    Some(Resources {
        pcs: metric(http, "vigil_video_peer_connections").await?,
        tasks: metric(http, "vigil_runtime_alive_tasks").await?,
        fds: metric(http, "process_open_fds").await?,
        rss: metric(http, "process_resident_memory_bytes").await?,
    })
}

/// How a short visit ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Both leave at the same moment. The room empties; Vigil ends the visit 300 s later unless
    /// someone rejoins (`EMPTY_END_AFTER`, one sweeper task for all visits).
    BothLeave,
    /// The patient leaves; the clinician sees its tracks go, then ends the visit.
    PatientLeavesClinicianEnds,
    /// The clinician ends the visit with both in the call.
    ClinicianEnds,
}

/// One short visit: both join, the patient is admitted, each receives a few frames of the
/// other, and it ends as `ending` says. A fresh API client, dropped at the end (its pooled
/// connections with it). Returns join → first frame of both, in ms.
async fn short_visit(http: &str, ending: Ending) -> [f64; 2] {
    let api = Api::new(http, TOKEN);
    let v = visit::create_visit(&api, PATIENT).await.unwrap();
    let (clinician, patient, pid) = clinician_admits_patient(http, &v).await;
    let cid = clinician.participant().unwrap();
    let p = receives(&patient, &cid, 3, 3).await;
    let c = receives(&clinician, &pid, 3, 3).await;
    let firsts = [
        ms(p.first_frame_from(&cid), p.joined_at),
        ms(c.first_frame_from(&pid), p.admitted_at),
    ];
    let (p, c) = match ending {
        Ending::BothLeave => tokio::join!(patient.leave(), clinician.leave()),
        Ending::PatientLeavesClinicianEnds => {
            let p = patient.leave().await;
            clinician
                .wait_for("the patient's tracks removed", WAIT, |s| {
                    s.tracks_from(&pid).count() == 0
                })
                .await
                .unwrap();
            (p, clinician.end().await)
        }
        Ending::ClinicianEnds => {
            let c = clinician.end().await;
            let p = tokio::time::timeout(WAIT, patient.finished())
                .await
                .expect("the patient's socket closed after the visit ended");
            assert!(p.ended.is_some(), "the patient was not told: {p:?}");
            (p, c)
        }
    };
    no_local_errors(&p);
    no_local_errors(&c);
    assert_eq!(p.bad() + c.bad(), 0);
    firsts
}

/// Many visits in a row against Vigil in its own process, ending in the three ways of
/// [`Ending`]: its peer connections return to 0, its file descriptors and tasks to where they
/// were after a first visit, and its memory grows by less than a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_visits_leave_nothing_behind() {
    let _alone = MEDIA.write().await;
    const VISITS: usize = 30;
    /// RSS may grow a little (allocator arenas, the registry's caches, the audit log's pages);
    /// a leaked peer connection costs megabytes (its buffers, interceptors, driver).
    const RSS_GROWTH_LIMIT: f64 = 16.0 * 1024.0 * 1024.0;

    let vigil = VigilProcess::start().await;
    let http = vigil.http.clone();
    visit::create_patient(&Api::new(&http, TOKEN), PATIENT, "Leak patient")
        .await
        .unwrap();
    // A first visit warms up what is created once (the relay, the allocator, lazy statics).
    short_visit(&http, Ending::ClinicianEnds).await;
    let base = eventually(WAIT, "no peer connection after the first visit", || async {
        resources(&http).await.filter(|r| r.pcs == 0.0)
    })
    .await;
    println!("baseline after one visit: {base:?}");

    let started = Instant::now();
    let mut firsts = Vec::new();
    for i in 0..VISITS {
        let ending = match i % 3 {
            0 => Ending::BothLeave,
            1 => Ending::PatientLeavesClinicianEnds,
            _ => Ending::ClinicianEnds,
        };
        firsts.extend(short_visit(&http, ending).await);
    }
    let elapsed = started.elapsed();
    // Polled until settled; the last reading is in the failure message.
    let deadline = Instant::now() + Duration::from_secs(20);
    let end = loop {
        let r = resources(&http).await.expect("vigil's metrics");
        if r.pcs == 0.0 && r.tasks <= base.tasks && r.fds <= base.fds {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "not back to the baseline 20 s after {VISITS} visits: {r:?}, baseline {base:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let settle = started.elapsed() - elapsed;
    let last = resources(&http).await.unwrap();
    firsts.sort_by(f64::total_cmp);
    println!(
        "{VISITS} visits in {:.1} s, settled {:.1} s later: {end:?}; RSS {:+.1} MiB; join → \
         first frame p50 {:.0} ms, max {:.0} ms",
        elapsed.as_secs_f64(),
        settle.as_secs_f64(),
        (last.rss - base.rss) / 1024.0 / 1024.0,
        firsts[firsts.len() / 2],
        firsts[firsts.len() - 1],
    );
    assert!(
        last.rss - base.rss < RSS_GROWTH_LIMIT,
        "RSS grew by {:.1} MiB over {VISITS} visits",
        (last.rss - base.rss) / 1024.0 / 1024.0
    );
    vigil.stop().await;
}

/// `vigil-sim visits` (the load mode, the binary) against Vigil: two concurrent 1:1 visits are
/// established, media flows both ways, and its table reports them with their loss and join →
/// first-frame times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_visits_load_mode_runs_visits_and_reports_them() {
    let _media = MEDIA.read().await;
    let gw = Gateway::start().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil-sim"))
        .args([
            "visits",
            "--url",
            &gw.http,
            "--visits",
            "2",
            "--seconds",
            "2",
            "--kbps",
            "300",
        ])
        .env("VIGIL_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vigil-sim visits failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| 2 |"))
        .unwrap_or_else(|| panic!("no row for 2 visits in:\n{stdout}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[2], "2", "both visits established: {row}");
    let received: u64 = cells[4].parse().unwrap();
    assert!(received > 100, "media flowed: {row}");
    assert_eq!(cells[7], "0", "no bad frames: {row}");
    gw.stop().await;
}
