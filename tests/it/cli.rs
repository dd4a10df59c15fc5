//! The `vigil` binary: start-up errors are one line with exit code 2; SIGTERM drains and exits 0.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{Api, TOKEN, run};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_or_a_bad_config_is_one_line_and_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();

    let check = |out: &std::process::Output, needle: &str| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    };
    let out = std::process::Command::new(VIGIL)
        .args([
            "serve",
            "--data-dir",
            data,
            "--http-listen",
            &addr,
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    check(&out, "http.listen");

    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, "[mqtt]\nmax_inflight = \"many\"\n").unwrap();
    let out = std::process::Command::new(VIGIL)
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data,
        ])
        .output()
        .unwrap();
    check(&out, "mqtt.max_inflight");

    let out = std::process::Command::new(VIGIL)
        .args(["serve", "--config", "/nonexistent/vigil.toml"])
        .output()
        .unwrap();
    check(&out, "/nonexistent/vigil.toml");

    let out = std::process::Command::new(VIGIL)
        .args(["serve", "--data-dir", data, "--mqtt-listen", "localhost"])
        .env("VIGIL_HTTP__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    check(&out, "mqtt.listen");

    // A guessable bootstrap token: too short, or still the deployment example's placeholder.
    // (Bounded: a gateway that accepted the token would serve on instead of exiting.)
    for token in ["change-me", "CHANGE-ME-bootstrap-token"] {
        let out = tokio::process::Command::new(VIGIL)
            .args(["serve", "--data-dir", data])
            .env("VIGIL_HTTP__LISTEN", "127.0.0.1:0")
            .env("VIGIL_MQTT__LISTEN", "127.0.0.1:0")
            .env("VIGIL_BOOTSTRAP_TOKEN", token)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .unwrap_or_else(|_| panic!("vigil kept running with the bootstrap token {token:?}"))
            .unwrap();
        check(&out, "VIGIL_BOOTSTRAP_TOKEN");
    }
}

/// A `vigil serve` child process; its listening addresses are read from its JSON log.
pub(crate) struct Child {
    pub(crate) child: tokio::process::Child,
    pub(crate) http: std::net::SocketAddr,
    pub(crate) mqtt: std::net::SocketAddr,
}

pub(crate) async fn spawn_vigil(data_dir: &std::path::Path, mqtt_listen: &str) -> Child {
    spawn_vigil_with(data_dir, mqtt_listen, &[]).await
}

/// Like [`spawn_vigil`], with extra environment (configuration by `VIGIL_<SECTION>__<KEY>`).
pub(crate) async fn spawn_vigil_with(
    data_dir: &std::path::Path,
    mqtt_listen: &str,
    env: &[(&str, &str)],
) -> Child {
    let mut child = tokio::process::Command::new(VIGIL)
        .args([
            "serve",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            mqtt_listen,
        ])
        .env("VIGIL_BOOTSTRAP_TOKEN", TOKEN)
        .env("VIGIL_LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (http, mqtt) = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "vigil listening" {
                return (
                    v["http"].as_str().unwrap().parse().unwrap(),
                    v["mqtt"].as_str().unwrap().parse().unwrap(),
                );
            }
        }
        panic!("vigil exited before listening");
    })
    .await
    .expect("vigil listens within 30 s");
    // Keep draining the log so the child never blocks on a full pipe; VIGIL_TEST_LOG shows it.
    let echo = std::env::var_os("VIGIL_TEST_LOG").is_some();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if echo {
                eprintln!("vigil: {line}");
            }
        }
    });
    Child { child, http, mqtt }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let api = Api::new(v.http);
    api.patient("p1").await;
    let pid = v.child.id().unwrap().to_string();
    assert!(run("kill", &["-TERM", &pid], None).await.ok);
    let status = tokio::time::timeout(Duration::from_secs(30), v.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let v = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let (s, p) = Api::new(v.http).get("/api/v1/patients/p1").await;
    assert_eq!(s, reqwest::StatusCode::OK, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_reads_the_password_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let add = |username: &'static str, role: &'static str, password: &'static [u8]| {
        let data = data.to_owned();
        async move {
            let args = [
                "user",
                "add",
                "--data-dir",
                &data,
                "--username",
                username,
                "--role",
                role,
            ];
            run(VIGIL, &args, Some(password)).await
        }
    };
    let out = add("nurse", "clinician", b"a long enough password\n").await;
    assert!(out.ok, "{}", out.stderr);
    let again = add("nurse", "clinician", b"a long enough password\n").await;
    assert!(
        !again.ok && again.stderr.contains("already exists"),
        "{}",
        again.stderr
    );
    let short = add("x", "admin", b"short\n").await;
    assert!(!short.ok && short.stderr.contains("12"), "{}", short.stderr);

    // With care teams (created when missing): the user signs in on them.
    let args = [
        "user",
        "add",
        "--data-dir",
        data,
        "--username",
        "nina",
        "--role",
        "clinician",
        "--team",
        "north",
        "--team",
        "south",
    ];
    let out = run(VIGIL, &args, Some(b"another long password\n")).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("north, south"), "{}", out.stdout);
    let v = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/session", v.http))
        .json(&serde_json::json!({"username": "nina", "password": "another long password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["user"]["teams"], serde_json::json!(["north", "south"]));
}
