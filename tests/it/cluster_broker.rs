//! Two `vigil serve` processes on one PostgreSQL sharing a real Mosquitto's device traffic
//! through an MQTT 5 shared subscription (`mqtt.share_group`), one killed mid-stream.

use std::time::Duration;

use crate::cli::{Child, spawn_serve};
use crate::faults::{Publisher, alert_count, stored, tachycardia_plan};
use crate::postgres::Postgres;
use crate::support::{Api, Mosquitto, eventually, free_port, run};

const SERVICE_USER: &str = "vigil-gateway";
const SERVICE_PASSWORD: &str = "gateway-password-for-tests";

/// A device streams 5,000 readings through Mosquitto to two instances sharing the
/// subscription; one is killed (SIGKILL) in the middle and started again (its MQTT session,
/// with what the broker held for it, is its client id's). Every reading the broker acknowledged
/// is stored exactly once, and the one persisting condition is one alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_member_killed_under_load_loses_nothing() {
    const COUNT: usize = 5_000;
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let port = free_port();
    let broker_url = format!("mqtt://127.0.0.1:{port}");
    let env = |client_id: &'static str| {
        vec![
            ("VIGIL_DATABASE__URL", url.clone()),
            ("VIGIL_MQTT__MODE", "external".to_owned()),
            ("VIGIL_MQTT__URL", broker_url.clone()),
            ("VIGIL_MQTT__USERNAME", SERVICE_USER.to_owned()),
            ("VIGIL_MQTT__PASSWORD", SERVICE_PASSWORD.to_owned()),
            ("VIGIL_MQTT__CLIENT_ID", client_id.to_owned()),
            ("VIGIL_MQTT__SHARE_GROUP", "vigil".to_owned()),
        ]
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(dir_a.path(), &env("vigil-a")).await;
    let mut b = start(dir_b.path(), &env("vigil-b")).await;
    let api = Api::new(a.http);
    api.patient("p-share").await;
    let secret = api.device("hr-share", "p-share", "smartwatch").await;
    tachycardia_plan(&api, "p-share", 95).await;

    // The broker, configured from the shared registry (`vigil broker mosquitto-config`).
    let out = tempfile::tempdir().unwrap();
    let cfg = out.path().join("vigil.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\nusername = \"{SERVICE_USER}\"\npassword = \"{SERVICE_PASSWORD}\"\n\
             [database]\nurl = \"{url}\"\n"
        ),
    )
    .unwrap();
    let conf_d = out.path().join("conf.d");
    let r = run(
        env!("CARGO_BIN_EXE_vigil"),
        &[
            "broker",
            "mosquitto-config",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            dir_a.path().to_str().unwrap(),
            "--out",
            conf_d.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(r.ok, "{}", r.stderr);
    let broker = Mosquitto::start(&conf_d, port).await;
    subscribed(&a).await;
    subscribed(&b).await;

    let start_s = vigil::domain::now_ms() / 1000 - 86_400;
    // Paced (12.5 s of stream) so the kill below lands while readings still flow whatever the
    // machine's load: at full speed the broker can acknowledge all 5,000 before both members have
    // been seen storing.
    let publisher = Publisher::paced(port, "hr-share", &secret, COUNT, start_s, (60, 40), 400);
    eventually(Duration::from_secs(60), "500 acknowledged", || async {
        (publisher.acked() >= 500).then_some(())
    })
    .await;
    // The broker shares the stream between the two.
    eventually(Duration::from_secs(30), "both members storing", || async {
        let accepted = |http| async move {
            crate::support::metric(http, "vigil_readings_accepted_total")
                .await
                .unwrap_or(0.0)
        };
        (accepted(a.http).await > 0.0 && accepted(b.http).await > 0.0).then_some(())
    })
    .await;
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    let at_kill = publisher.acked();
    assert!(
        at_kill < COUNT,
        "the device finished before the kill ({at_kill} acknowledged)"
    );
    let b = start(dir_b.path(), &env("vigil-b")).await;
    subscribed(&b).await;
    publisher.finish(Duration::from_secs(180)).await;

    // The broker acknowledged every reading; the members may still be working through what it
    // queued for them (slowly on a loaded machine). Waiting lasts while the count grows: it
    // fails when nothing more is stored for a minute, or after four minutes in all.
    let start = tokio::time::Instant::now();
    let (mut last, mut grew) = (0, start);
    loop {
        let n = stored(&api, "p-share").await;
        if n >= COUNT {
            break;
        }
        let now = tokio::time::Instant::now();
        if n > last {
            (last, grew) = (n, now);
        }
        if now - grew >= Duration::from_secs(60) || now - start >= Duration::from_secs(240) {
            let logs = |c: &Child| c.log.lock().unwrap().join("\n");
            panic!(
                "{n} of {COUNT} acknowledged readings stored after {:?} ({at_kill} acknowledged \
                 at the kill)\n--- a ---\n{}\n--- b (restarted) ---\n{}",
                now - start,
                logs(&a),
                logs(&b)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(stored(&api, "p-share").await, COUNT, "each reading once");
    assert_eq!(alert_count(&api, "p-share").await, 1);
    eprintln!(
        "cluster-report shared subscription: {COUNT} readings through Mosquitto to two members, one killed after {at_kill} acknowledged and started again: {COUNT} stored once, 1 alert"
    );
    broker.stop().await;
}

/// `vigil serve` on `dir` with `env`.
async fn start(dir: &std::path::Path, env: &[(&'static str, String)]) -> Child {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_serve(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil")),
        dir,
        "127.0.0.1:0",
        &env,
    )
    .await
}

/// Waits until the instance is connected to the broker and subscribed.
async fn subscribed(vigil: &Child) {
    let http = vigil.http;
    eventually(
        Duration::from_secs(20),
        "vigil subscribed at the broker",
        || async move {
            let n = crate::support::metric(http, "vigil_mqtt_broker_subscribed").await?;
            (n == 1.0).then_some(())
        },
    )
    .await;
}
