//! A sign-in flood against the `vigil` binary, a process of its own so that its memory can be read
//! from `/proc`: failed sign-ins from many addresses, before and after a burst of reads has grown
//! the runtime's blocking pool, leave memory bounded and given back, and a real user still signs
//! in promptly while they run. Prints one `fault-report:` line with the figures
//! (`cargo test --test it sign_in_flood -- --nocapture | grep fault-report`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::cli::spawn_vigil;
use crate::faults::report;
use crate::support::{Api, eventually};

const PASSWORD: &str = "amber kettle orbit meadow";
/// Failed sign-ins in each wave, all at once.
const FLOOD: usize = 300;
/// Addresses each wave comes from (127.0.<wave>.2 …), each sending its share of the attempts:
/// Linux loopback answers for all of 127.0.0.0/8, so these model distinct clients.
const FLOOD_ADDRESSES: usize = 20;
/// Concurrent reads between the waves (each runs on the runtime's blocking pool).
const READS: usize = 300;

/// VmRSS, VmHWM (the peak) and threads of a process: (MB, MB, count).
fn memory(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
    };
    // /proc says kB and means KiB.
    let mb = |kib: u64| kib * 1024 / 1_000_000;
    (mb(field("VmRSS:")), mb(field("VmHWM:")), field("Threads:"))
}

/// A client whose connections come from `ip`.
fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

async fn sign_in(client: &reqwest::Client, http: SocketAddr, user: &str, password: &str) -> u16 {
    client
        .post(format!("http://{http}/api/v1/session"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Starts one wave of failed sign-ins: half for a real user other than the one timed (wrong
/// password), half for unknown users (the equal-work path). Returns the tasks (each yields its
/// status) and a count of those answered so far.
fn flood(http: SocketAddr, wave: u8) -> (tokio::task::JoinSet<u16>, Arc<AtomicUsize>) {
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for a in 0..FLOOD_ADDRESSES {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, wave, 2 + a as u8));
        let client = client_from(ip);
        for i in 0..FLOOD / FLOOD_ADDRESSES {
            let (client, answered) = (client.clone(), answered.clone());
            let user = if i % 2 == 0 {
                "ada".to_owned()
            } else {
                format!("ghost-{wave}-{a}-{i}")
            };
            tasks.spawn(async move {
                let status = sign_in(&client, http, &user, "not the password at all").await;
                answered.fetch_add(1, Ordering::SeqCst);
                status
            });
        }
    }
    (tasks, answered)
}

/// Waits for a wave's answers: each is 401 (checked and wrong), 429 (throttled) or 503 (too
/// busy, try again); returns how many of each.
async fn answers(mut tasks: tokio::task::JoinSet<u16>) -> (usize, usize, usize) {
    let (mut refused, mut throttled, mut busy) = (0, 0, 0);
    while let Some(status) = tasks.join_next().await {
        match status.unwrap() {
            401 => refused += 1,
            429 => throttled += 1,
            503 => busy += 1,
            other => panic!("a failed sign-in answered {other}"),
        }
    }
    (refused, throttled, busy)
}

/// The real user signs in from 127.0.0.1 once the wave is under way: the time it took.
async fn real_sign_in(http: SocketAddr, answered: &AtomicUsize) -> Duration {
    eventually(Duration::from_secs(120), "the flood under way", || async {
        (answered.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let client = client_from(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let started = Instant::now();
    let status = sign_in(&client, http, "nina", PASSWORD).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "the real user signs in during the flood");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_flood_keeps_memory_bounded_and_lets_a_real_user_in() {
    let dir = tempfile::tempdir().unwrap();
    let v = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let pid = v.child.id().unwrap();
    let (cold, _, _) = memory(pid);
    let api = Api::new(v.http);
    for (name, role) in [("nina", "clinician"), ("ada", "admin")] {
        let (s, body) = api
            .post(
                "/api/v1/users",
                json!({"name": name, "password": PASSWORD, "role": role}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    api.patient("p1").await;
    // The start: the gateway as a flood would find it, set up and signed into once (which
    // allocates the hashing memory, a fixed 2 × 19 MiB that is counted from here on).
    let client = client_from(IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(sign_in(&client, v.http, "nina", PASSWORD).await, 200);
    let (start, _, threads_start) = memory(pid);

    // Wave 1, with the real user signing in while it runs.
    let (tasks, answered) = flood(v.http, 1);
    let first_sign_in = real_sign_in(v.http, &answered).await;
    let (r1, t1, b1) = answers(tasks).await;
    let (after_first, _, _) = memory(pid);

    // A burst of reads grows the blocking pool, then wave 2 from other addresses.
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..READS {
        let api = api.clone();
        reads.spawn(async move { api.get("/api/v1/patients/p1/observations").await.0 });
    }
    while let Some(s) = reads.join_next().await {
        assert_eq!(s.unwrap(), StatusCode::OK);
    }
    let (_, _, threads_after_reads) = memory(pid);
    let (tasks, answered) = flood(v.http, 2);
    let second_sign_in = real_sign_in(v.http, &answered).await;
    let (r2, t2, b2) = answers(tasks).await;

    // Settled: what is left once the flood has been answered (freed memory may take a moment
    // to be handed back).
    let deadline = Instant::now() + Duration::from_secs(10);
    let settled = loop {
        let (rss, _, _) = memory(pid);
        if rss <= start + 50 || Instant::now() > deadline {
            break rss;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, peak, threads_end) = memory(pid);
    let ms = |d: Duration| d.as_millis() as usize;
    report(
        "sign-in flood",
        &[
            ("rss_cold_mb", cold as usize),
            ("rss_start_mb", start as usize),
            ("rss_after_wave1_mb", after_first as usize),
            ("rss_peak_mb", peak as usize),
            ("rss_settled_mb", settled as usize),
            ("threads_start", threads_start as usize),
            ("threads_after_reads", threads_after_reads as usize),
            ("threads_end", threads_end as usize),
            ("real_sign_in_wave1_ms", ms(first_sign_in)),
            ("real_sign_in_wave2_ms", ms(second_sign_in)),
            ("wave1_401", r1),
            ("wave1_429", t1),
            ("wave1_503", b1),
            ("wave2_401", r2),
            ("wave2_429", t2),
            ("wave2_503", b2),
        ],
    );
    assert!(peak < 300, "peak RSS {peak} MB (from {start} MB)");
    assert!(
        settled <= start + 50,
        "settled RSS {settled} MB, more than 50 MB above the {start} MB at the start"
    );
    for took in [first_sign_in, second_sign_in] {
        assert!(
            took < Duration::from_secs(2),
            "the real user's sign-in took {took:?} during the flood"
        );
    }
}
