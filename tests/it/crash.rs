//! Nothing accepted is lost: 10,000 QoS 1 readings published by Paho while Vigil is killed with
//! SIGKILL (twice) and restarted; afterwards exactly 10,000 distinct readings are stored.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::spawn_vigil;
use crate::support::{Api, clients_dir};

const COUNT: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_qos1_readings_survive_sigkill_and_restart_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut vigil = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let mqtt_port = vigil.mqtt.port();
    let api = Api::new(vigil.http);
    api.patient("p-crash").await;
    let secret = api.device("hr-crash", "p-crash", "smartwatch").await;
    // A rule the readings meet every 40 s (99 /min): one persisting condition, one alert.
    crate::faults::tachycardia_plan(&api, "p-crash", 99).await;
    let alerts_before = crate::faults::alert_count(&api, "p-crash").await;

    // Readings one second apart, starting two days ago (all in the past, all distinct).
    let start = (vigil::domain::now_ms() / 1000 - 2 * 86_400).to_string();
    let script = clients_dir().join("crash_publisher.py");
    let port = mqtt_port.to_string();
    let count = COUNT.to_string();
    // `--secret=…`: a secret may begin with characters an option parser would misread.
    let secret_arg = format!("--secret={secret}");
    let mut publisher = tokio::process::Command::new("python3")
        .args([
            script.to_str().unwrap(),
            "--port",
            &port,
            "--device",
            "hr-crash",
            &secret_arg,
            "--count",
            &count,
            "--start",
            &start,
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(publisher.stdout.take().unwrap()).lines();

    // Kill Vigil when the publisher has seen 2,500 and then 6,000 acknowledgements.
    let mut kills = vec![6_000usize, 2_500];
    let mut acked = 0usize;
    let result = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(n) = line.strip_prefix("acked ") {
                acked = n.parse().unwrap();
            }
            if line.starts_with("done") {
                return true;
            }
            if line.starts_with("timeout") {
                return false;
            }
            if kills.last().is_some_and(|k| acked >= *k) {
                kills.pop();
                vigil.child.start_kill().unwrap(); // SIGKILL
                vigil.child.wait().await.unwrap();
                vigil = spawn_vigil(dir.path(), &format!("127.0.0.1:{mqtt_port}")).await;
            }
        }
        false
    })
    .await
    .expect("publisher finishes within 300 s");
    assert!(
        result,
        "publisher did not get every acknowledgement (last: {acked})"
    );
    assert!(
        kills.is_empty(),
        "Vigil was not killed twice (publisher too fast?)"
    );
    assert!(publisher.wait().await.unwrap().success());

    let api = Api::new(vigil.http);
    let obs = api.observations("p-crash", "limit=100000").await;
    let times: HashSet<&str> = obs.iter().map(|o| o["time"].as_str().unwrap()).collect();
    assert_eq!(obs.len(), COUNT, "stored readings");
    assert_eq!(times.len(), COUNT, "distinct readings");
    let alerts_after = crate::faults::alert_count(&api, "p-crash").await;
    assert_eq!(
        (alerts_before, alerts_after),
        (0, 1),
        "one alert, not one per restart"
    );
    crate::faults::report(
        "SIGKILL of Vigil under load (twice)",
        &[
            ("readings_before", 0),
            ("sent", COUNT),
            ("readings_after", obs.len()),
            ("distinct_after", times.len()),
            ("alerts_before", alerts_before),
            ("alerts_after", alerts_after),
        ],
    );
}
