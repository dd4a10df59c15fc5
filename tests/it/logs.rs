//! The log cannot be forged: untrusted text a device sends (here its topic) is written with its
//! control characters escaped, so it can neither start a line of its own nor put binary or
//! terminal escapes into the log.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use crate::mqtt_rules::connect_packet;
use crate::support::{Api, TOKEN, eventually, free_port};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// A fake line as an attacker would like to see it in the log, after a newline.
const FORGED: &str =
    "2026-01-01T00:00:00.000000Z ERROR vigil::store: store corrupted, call 555-0100";

/// A PUBLISH at QoS 0 (MQTT 3.1.1) to `topic`, hand-encoded so that any byte can be in it.
fn publish_packet(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend(topic);
    body.extend(payload);
    let mut p = vec![0x30, body.len() as u8];
    p.extend(body);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_forge_log_lines_or_write_control_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("vigil.log");
    let (http, mqtt) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(VIGIL)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt}")])
        .env("VIGIL_BOOTSTRAP_TOKEN", TOKEN)
        .env("VIGIL_LOG__FORMAT", "text")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let api = Api::new(([127, 0, 0, 1], http).into());
    eventually(Duration::from_secs(30), "vigil answering", || async {
        let health = reqwest::get(format!("http://127.0.0.1:{http}/healthz")).await;
        health.is_ok().then_some(())
    })
    .await;
    api.patient("p1").await;
    let secret = api.device("ox-1", "p1", "pulse-oximeter").await;

    // Not the device's own topic: refused, and the topic is logged.
    let topic = format!("vigil/v1/devices/ox-1/readings\n{FORGED}\u{0}\u{1b}[2J\r\n");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", mqtt))
        .await
        .unwrap();
    s.write_all(&connect_packet("ox-1", &secret, 30))
        .await
        .unwrap();
    s.write_all(&publish_packet(topic.as_bytes(), b"{}"))
        .await
        .unwrap();

    let log = eventually(Duration::from_secs(20), "the refusal logged", || async {
        let log = std::fs::read(&log_path).unwrap();
        String::from_utf8_lossy(&log)
            .contains("publish refused")
            .then_some(log)
    })
    .await;
    child.kill().await.unwrap();

    let text = String::from_utf8(log.clone()).expect("the log is UTF-8");
    let refusal = text
        .lines()
        .find(|l| l.contains("publish refused"))
        .unwrap();
    assert!(
        refusal.contains("store corrupted")
            && refusal.contains("\\n")
            && refusal.contains("\\u{0}"),
        "the topic is in the refusal's line, escaped: {refusal:?}"
    );
    let forged: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("store corrupted") && !l.contains("publish refused"))
        .collect();
    assert!(forged.is_empty(), "forged lines: {forged:?}");
    let control: Vec<u8> = log
        .iter()
        .copied()
        .filter(|b| (*b < 0x20 && *b != b'\n') || *b == 0x7f)
        .collect();
    assert!(
        control.is_empty(),
        "raw control bytes in the log: {control:?}"
    );
}
