//! The InfluxDB writer against a real VictoriaMetrics (InfluxDB line protocol on
//! `/api/v2/write`): readings arrive with the documented schema, and while the database is
//! down they wait in the durable spool, then arrive exactly once.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Gateway, V, Victoria, eventually, paho_device};

fn readings(device: &str, from: i64, n: i64) -> Value {
    // Times two hours back, a second apart: all distinct, all in the past.
    let base = vigil::domain::now_ms() / 1000 - 7200;
    Value::Array(
        (from..from + n)
            .map(|i| {
                json!({"topic": format!("vigil/v1/devices/{device}/readings"),
                       "payload": json!([{"metric": "heart_rate", "value": 60 + i % 40, "time": base + i},
                                         {"metric": "steps", "value": i, "time": base + i}]).to_string()})
            })
            .collect(),
    )
}

async fn spool_depth(gw: &Gateway) -> i64 {
    crate::support::metric(gw.http, "vigil_spool_depth")
        .await
        .map_or(-1, |v| v as i64)
}

async fn samples(vm: &Victoria, n: usize) -> Vec<(Value, f64, i64)> {
    eventually(
        Duration::from_secs(30),
        &format!("{n} samples in VictoriaMetrics"),
        || async move {
            let s = vm.export("vitals_.*").await;
            (s.len() >= n).then_some(s)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_victoriametrics_and_survive_its_outage_exactly_once() {
    let mut vm = Victoria::start().await;
    let url = vm.url();
    let gw = Gateway::start_with(|cfg| {
        cfg.influxdb = Some(vigil::config::InfluxConfig {
            url,
            org: "clinic".into(),
            bucket: "vitals".into(),
            token: "test-token".into(),
            measurement: "vitals".into(),
            batch_max: 500,
            flush_interval_ms: 100,
            timeout_s: 5,
        });
    })
    .await;
    gw.client.patient("p-vm").await;
    let secret = gw.client.device("watch-vm", "p-vm", "smartwatch").await;

    // 50 publishes × 2 readings, with VictoriaMetrics up.
    let r = paho_device(
        gw.mqtt,
        V::V311,
        "watch-vm",
        &secret,
        readings("watch-vm", 0, 50),
        &[],
    )
    .await;
    assert_eq!(r["acked"], 50, "{r}");
    let s = samples(&vm, 100).await;
    // The documented schema: measurement_field names, patient and device tags, ms timestamps.
    let (labels, _, _) = &s[0];
    assert_eq!(labels["patient"], "p-vm");
    assert_eq!(labels["device"], "watch-vm");
    let names: HashSet<&str> = s
        .iter()
        .map(|(l, _, _)| l["__name__"].as_str().unwrap())
        .collect();
    assert_eq!(names, HashSet::from(["vitals_heart_rate", "vitals_steps"]));
    let stored = gw
        .client
        .observations("p-vm", "metric=heart_rate&limit=10")
        .await;
    let t0 = vigil::domain::parse_rfc3339(stored[0]["time"].as_str().unwrap()).unwrap();
    assert!(
        s.iter()
            .any(|(l, v, t)| l["__name__"] == "vitals_heart_rate"
                && *t == t0
                && *v == stored[0]["value"].as_f64().unwrap())
    );

    // VictoriaMetrics down: 150 more publishes are acknowledged (stored) and wait in the spool.
    vm.stop().await;
    let r = paho_device(
        gw.mqtt,
        V::V311,
        "watch-vm",
        &secret,
        readings("watch-vm", 50, 150),
        &[],
    )
    .await;
    assert_eq!(r["acked"], 150, "{r}");
    eventually(
        Duration::from_secs(20),
        "spool holding the 300 readings",
        || async { (spool_depth(&gw).await == 300).then_some(()) },
    )
    .await;

    // Back: the spool drains in order, and every reading is there exactly once.
    vm.restart().await;
    eventually(Duration::from_secs(30), "spool drained", || async {
        (spool_depth(&gw).await == 0).then_some(())
    })
    .await;
    let s = samples(&vm, 400).await;
    assert_eq!(s.len(), 400, "every reading once, none twice");
    let keys: HashSet<(String, i64)> = s
        .iter()
        .map(|(l, _, t)| (l["__name__"].as_str().unwrap().to_owned(), *t))
        .collect();
    assert_eq!(keys.len(), 400, "no duplicate samples");
    crate::faults::report(
        "VictoriaMetrics (InfluxDB writer) down and back",
        &[
            ("samples_before", 100),
            ("readings_sent_while_down", 300),
            ("spooled_while_down", 300),
            ("samples_after", s.len()),
            ("distinct_samples_after", keys.len()),
        ],
    );
    gw.stop().await;
    vm.stop().await;
}
