//! Every payload format and GATT characteristic, through real clients, into the store and back
//! out of the API in canonical units; bad payloads into dead letters with a reason.

use serde_json::{Value, json};

use crate::support::{Gateway, V, mosquitto_pub, paho_device};

/// 2026-11-25T13:00:00Z, and the BLE DateTime bytes for times on that day.
const DAY_13H_MS: i64 = 1_795_611_600_000;

fn ble_time(h: u8, m: u8, s: u8) -> [u8; 7] {
    // DateTime (gatt.md "General rules"): year u16 LE, month, day, hours, minutes, seconds.
    let y = 2026u16.to_le_bytes();
    [y[0], y[1], 11, 25, h, m, s]
}

fn ms_at(h: i64, m: i64, s: i64) -> i64 {
    DAY_13H_MS + ((h - 13) * 3600 + m * 60 + s) * 1000
}

fn find<'a>(obs: &'a [Value], device: &str, metric: &str) -> Vec<&'a Value> {
    obs.iter()
        .filter(|o| o["device_id"] == device && o["metric"] == metric)
        .collect()
}

fn assert_one(
    obs: &[Value],
    device: &str,
    metric: &str,
    value: f64,
    unit: &str,
    time_ms: Option<i64>,
) {
    let found = find(obs, device, metric);
    assert_eq!(found.len(), 1, "{device} {metric}: {found:?}");
    let o = found[0];
    let got = o["value"].as_f64().unwrap();
    assert!(
        (got - value).abs() < 1e-6,
        "{device} {metric}: {got} != {value}"
    );
    assert_eq!(o["unit"], unit, "{device} {metric}");
    if let Some(t) = time_ms {
        let stored = vigil::domain::parse_rfc3339(o["time"].as_str().unwrap()).unwrap();
        assert_eq!(stored, t, "{device} {metric} time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gatt_characteristic_arrives_in_canonical_units_via_mosquitto_pub() {
    let gw = Gateway::start().await;
    let api = &gw.client;
    api.patient("p-gatt").await;
    let mut secrets = std::collections::HashMap::new();
    for (dev, profile) in [
        ("watch-1", "smartwatch"),
        ("cuff-1", "bp-cuff"),
        ("cuff-2", "bp-cuff"),
        ("gluco-1", "glucose-meter"),
        ("scale-1", "scale"),
        ("scale-2", "scale"),
        ("ox-1", "pulse-oximeter"),
        ("therm-1", "thermometer"),
        ("therm-2", "thermometer"),
    ] {
        secrets.insert(dev, api.device(dev, "p-gatt", profile).await);
    }

    // Each vector is built field by field from the Bluetooth SIG layouts (docs/decoders.md).
    let mut bp = vec![0x1e]; // flags: mmHg, time stamp, pulse, user id, status
    bp.extend([0x78, 0x00, 0x50, 0x00, 0x5d, 0x00]); // SFLOAT 120, 80, 93 (exponent 0)
    bp.extend(ble_time(12, 58, 0));
    bp.extend([0x48, 0x00, 0x01, 0x00, 0x00]); // pulse 72, user 1, status 0
    let bp_kpa = vec![0x01, 0xa0, 0xf0, 0x6b, 0xf0, 0x7c, 0xf0]; // kPa: 160e-1, 107e-1, 124e-1
    let mut glucose = vec![0x03, 0x01, 0x00]; // flags: time offset, concentration (kg/L); seq 1
    glucose.extend(ble_time(12, 0, 0));
    glucose.extend([0x1e, 0x00, 0x5f, 0xb0, 0x11]); // +30 min; SFLOAT 95e-5 kg/L; capillary, finger
    let mut weight = vec![0x02, 0xe4, 0x3e]; // SI, time stamp; 16100 × 0.005 kg = 80.5 kg
    weight.extend(ble_time(7, 0, 0));
    let weight_lb = vec![0x01, 0x98, 0x3a]; // imperial; 15000 × 0.01 lb = 150 lb
    let mut temp = vec![0x06, 0x70, 0x01, 0x00, 0xff]; // °C, time, type; FLOAT 368e-1
    temp.extend(ble_time(8, 0, 0));
    temp.push(6); // mouth
    let temp_f = vec![0x01, 0xda, 0x03, 0x00, 0xff]; // °F; FLOAT 986e-1

    let sends: Vec<(&str, &str, Vec<u8>)> = vec![
        ("watch-1", "2a37", vec![0x01, 0x48, 0x00]), // u16 heart rate 72
        ("cuff-1", "2a35", bp),
        ("cuff-2", "2a35", bp_kpa),
        ("gluco-1", "2a18", glucose),
        ("scale-1", "2a9d", weight),
        ("scale-2", "2a9d", weight_lb),
        ("ox-1", "2a5e", vec![0x00, 0x61, 0x00, 0x44, 0x00]), // SpO2 97, PR 68
        ("ox-1", "2a5f", vec![0x00, 0x5f, 0x00, 0x46, 0x00]), // SpO2 95, PR 70
        ("therm-1", "2a1c", temp),
        ("therm-2", "2a1c", temp_f),
    ];
    for (dev, uuid, bytes) in &sends {
        let topic = format!("vigil/v1/devices/{dev}/gatt/{uuid}");
        let out = mosquitto_pub(gw.mqtt, V::V311, dev, &secrets[dev], &topic, bytes, &[]).await;
        assert!(out.ok, "{dev} {uuid}: {}", out.stderr);
    }

    // mosquitto_pub exits after the PUBACK, which Vigil sends only after the commit: no waiting.
    let obs = api.observations("p-gatt", "limit=1000").await;
    assert_one(&obs, "watch-1", "heart_rate", 72.0, "/min", None);
    assert_one(
        &obs,
        "cuff-1",
        "bp_systolic",
        120.0,
        "mm[Hg]",
        Some(ms_at(12, 58, 0)),
    );
    assert_one(
        &obs,
        "cuff-1",
        "bp_diastolic",
        80.0,
        "mm[Hg]",
        Some(ms_at(12, 58, 0)),
    );
    assert_one(
        &obs,
        "cuff-1",
        "bp_mean",
        93.0,
        "mm[Hg]",
        Some(ms_at(12, 58, 0)),
    );
    assert_one(
        &obs,
        "cuff-1",
        "heart_rate",
        72.0,
        "/min",
        Some(ms_at(12, 58, 0)),
    );
    assert_one(
        &obs,
        "cuff-2",
        "bp_systolic",
        16.0 * 7.500_62,
        "mm[Hg]",
        None,
    );
    assert_one(
        &obs,
        "cuff-2",
        "bp_diastolic",
        10.7 * 7.500_62,
        "mm[Hg]",
        None,
    );
    assert_one(
        &obs,
        "gluco-1",
        "glucose",
        95.0,
        "mg/dL",
        Some(ms_at(12, 30, 0)),
    );
    assert_one(
        &obs,
        "scale-1",
        "body_weight",
        80.5,
        "kg",
        Some(ms_at(7, 0, 0)),
    );
    assert_one(
        &obs,
        "scale-2",
        "body_weight",
        150.0 * 0.453_592_37,
        "kg",
        None,
    );
    assert_eq!(find(&obs, "ox-1", "spo2").len(), 2);
    assert_eq!(find(&obs, "ox-1", "heart_rate").len(), 2);
    let spo2: Vec<f64> = find(&obs, "ox-1", "spo2")
        .iter()
        .map(|o| o["value"].as_f64().unwrap())
        .collect();
    assert!(spo2.contains(&97.0) && spo2.contains(&95.0), "{spo2:?}");
    assert_one(
        &obs,
        "therm-1",
        "body_temperature",
        36.8,
        "Cel",
        Some(ms_at(8, 0, 0)),
    );
    assert_one(&obs, "therm-2", "body_temperature", 37.0, "Cel", None);
    assert!(api.dead_letters("ox-1").await.is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_senml_arrive_from_mosquitto_pub_and_paho_both_versions() {
    let gw = Gateway::start().await;
    let api = &gw.client;
    api.patient("p-json").await;
    let thermo = api.device("therm-j", "p-json", "thermometer").await;
    let watch = api.device("watch-j", "p-json", "smartwatch").await;
    let cuff = api.device("cuff-j", "p-json", "bp-cuff").await;
    let ox = api.device("ox-j", "p-json", "pulse-oximeter").await;
    let cgm = api.device("cgm-j", "p-json", "cgm").await;

    // mosquitto_pub, MQTT 3.1.1: vigil-json object with a non-canonical unit and RFC 3339 time.
    let out = mosquitto_pub(
        gw.mqtt,
        V::V311,
        "therm-j",
        &thermo,
        "vigil/v1/devices/therm-j/readings",
        br#"{"metric":"body_temperature","value":100.4,"unit":"[degF]","time":"2026-11-25T12:00:00Z"}"#,
        &[],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);

    // mosquitto_pub, MQTT 5: SenML selected by content type on a vigil-json profile.
    let senml = json!([
        {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1_795_608_000, "n": "spo2", "u": "%", "v": 94},
        {"n": "heart_rate", "u": "beat/min", "v": 88, "t": 1}
    ]);
    let out = mosquitto_pub(
        gw.mqtt,
        V::V5,
        "ox-j",
        &ox,
        "vigil/v1/devices/ox-j/readings",
        senml.to_string().as_bytes(),
        &["-D", "publish", "content-type", "application/senml+json"],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);

    // Paho, MQTT 5: SenML by profile (smartwatch), with a relative time, and vigil-json on a
    // SenML profile.
    let report = paho_device(
        gw.mqtt,
        V::V5,
        "watch-j",
        &watch,
        json!([
            {"topic": "vigil/v1/devices/watch-j/readings",
             "payload": json!([{"bn": "watch-j/", "bt": 1_795_608_100, "n": "heart_rate", "u": "beat/min", "v": 61},
                               {"n": "steps", "u": "count", "v": 4200}]).to_string()},
            {"topic": "vigil/v1/devices/watch-j/readings",
             "payload": json!({"metric": "respiratory_rate", "value": 16, "time": 1_795_608_200}).to_string()}
        ]),
        &[],
    )
    .await;
    assert_eq!(report["reason_codes"], json!([0, 0]), "{report}");

    // Paho, MQTT 3.1.1: a vigil-json array with kPa, aliases and Unix-seconds times.
    let report = paho_device(
        gw.mqtt,
        V::V311,
        "cuff-j",
        &cuff,
        json!([{"topic": "vigil/v1/devices/cuff-j/readings", "payload": json!([
            {"metric": "systolic", "value": 18.0, "unit": "kPa", "time": 1_795_608_300},
            {"metric": "bp_diastolic", "value": 85, "time": 1_795_608_300},
            {"metric": "pulse", "value": 77, "unit": "bpm", "time": 1_795_608_300}
        ]).to_string()}]),
        &[],
    )
    .await;
    assert_eq!(report["acked"], 1, "{report}");

    // Paho, MQTT 5: CGM SenML in mmol/L.
    let report = paho_device(
        gw.mqtt,
        V::V5,
        "cgm-j",
        &cgm,
        json!([{"topic": "vigil/v1/devices/cgm-j/readings",
                "payload": json!([{"bn": "cgm-j/", "n": "glucose", "u": "mmol/L", "v": 5.5, "t": 1_795_608_400}]).to_string()}]),
        &[],
    )
    .await;
    assert_eq!(report["reason_codes"], json!([0]), "{report}");

    let obs = gw.client.observations("p-json", "").await;
    let t = |s: i64| Some(s * 1000);
    assert_one(
        &obs,
        "therm-j",
        "body_temperature",
        38.0,
        "Cel",
        Some(ms_at(12, 0, 0)),
    );
    assert_one(&obs, "ox-j", "spo2", 94.0, "%", t(1_795_608_000));
    assert_one(&obs, "ox-j", "heart_rate", 88.0, "/min", t(1_795_608_001));
    assert_one(
        &obs,
        "watch-j",
        "heart_rate",
        61.0,
        "/min",
        t(1_795_608_100),
    );
    assert_one(
        &obs,
        "watch-j",
        "steps",
        4200.0,
        "{steps}",
        t(1_795_608_100),
    );
    assert_one(
        &obs,
        "watch-j",
        "respiratory_rate",
        16.0,
        "/min",
        t(1_795_608_200),
    );
    assert_one(
        &obs,
        "cuff-j",
        "bp_systolic",
        18.0 * 7.500_62,
        "mm[Hg]",
        t(1_795_608_300),
    );
    assert_one(
        &obs,
        "cuff-j",
        "bp_diastolic",
        85.0,
        "mm[Hg]",
        t(1_795_608_300),
    );
    assert_one(&obs, "cuff-j", "heart_rate", 77.0, "/min", t(1_795_608_300));
    assert_one(
        &obs,
        "cgm-j",
        "glucose",
        5.5 * 18.0156,
        "mg/dL",
        t(1_795_608_400),
    );

    // The metric filter and the time range work, oldest first.
    let hr = gw
        .client
        .observations(
            "p-json",
            "metric=heart_rate&from=2026-11-25T12:00:00Z&to=2026-11-25T12:05:00Z",
        )
        .await;
    let devices: Vec<&str> = hr
        .iter()
        .map(|o| o["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(devices, vec!["ox-j", "watch-j", "cuff-j"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_become_dead_letters_with_a_reason_and_reach_the_errors_topic() {
    let gw = Gateway::start().await;
    let api = &gw.client;
    api.patient("p-bad").await;
    let ox = api.device("ox-bad", "p-bad", "pulse-oximeter").await;
    let topic = "vigil/v1/devices/ox-bad/readings";
    let bad: Vec<(Value, &str)> = vec![
        (json!("{not json"), "invalid JSON"),
        (
            json!(r#"{"metric":"glucose","value":100}"#),
            "unknown metric",
        ),
        (
            json!(r#"{"metric":"spo2","value":97,"unit":"mm[Hg]"}"#),
            "not accepted",
        ),
        (json!(r#"{"metric":"spo2","value":140}"#), "plausible range"),
        (
            json!(r#"{"metric":"spo2","value":97,"time":"2099-01-01T00:00:00Z"}"#),
            "ahead",
        ),
        (json!({"hex": "00ff07"}), "2a5e"), // spot-check cut short
        (json!({"hex": "00ff07ff07"}), "NaN"), // SFLOAT 0x07FF = NaN
    ];
    let messages: Vec<Value> = bad
        .iter()
        .enumerate()
        .map(|(i, (payload, _))| {
            let t = if i >= 5 {
                "vigil/v1/devices/ox-bad/gatt/2a5e"
            } else {
                topic
            };
            json!({"topic": t, "payload": payload})
        })
        .collect();
    let report = paho_device(
        gw.mqtt,
        V::V5,
        "ox-bad",
        &ox,
        Value::Array(messages),
        &[
            "--subscribe-errors",
            "--wait-errors",
            &bad.len().to_string(),
        ],
    )
    .await;
    // MQTT 5: each refused publish is acknowledged with reason 0x99 (payload format invalid).
    assert_eq!(
        report["reason_codes"],
        json!(vec![0x99; bad.len()]),
        "{report}"
    );
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), bad.len(), "{report}");

    let letters = api.dead_letters("ox-bad").await;
    assert_eq!(letters.len(), bad.len());
    for (_, needle) in &bad {
        assert!(
            letters
                .iter()
                .any(|l| l["reason"].as_str().unwrap().contains(needle)),
            "no dead letter says {needle:?}: {letters:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e["reason"].as_str().unwrap().contains(needle)),
            "errors topic did not say {needle:?}: {errors:?}"
        );
    }
    // Binary payloads are returned in base64.
    assert!(
        letters
            .iter()
            .any(|l| l["payload_encoding"] == "base64" && l["payload"] == "AP8H")
    );
    assert!(
        api.observations("p-bad", "").await.is_empty(),
        "nothing refused is stored"
    );

    // MQTT 3.1.1 has no negative PUBACK: the publish is acknowledged once its dead letter is
    // stored, and the dead letter is there.
    let out = mosquitto_pub(gw.mqtt, V::V311, "ox-bad", &ox, topic, b"[]", &[]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(api.dead_letters("ox-bad").await.len(), bad.len() + 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heart_rate_that_promises_rr_intervals_and_has_none_is_a_dead_letter() {
    let gw = Gateway::start().await;
    let api = &gw.client;
    api.patient("p-rr").await;
    let watch = api.device("watch-rr", "p-rr", "smartwatch").await;
    // Flags 0x17: heart rate as u16 (b0), sensor contact (b1-2 = 3), RR intervals present (b4);
    // heart rate 0x0101 = 257 /min, and then not one RR interval.
    let out = mosquitto_pub(
        gw.mqtt,
        V::V311,
        "watch-rr",
        &watch,
        "vigil/v1/devices/watch-rr/gatt/2a37",
        &[0x17, 0x01, 0x01],
        &[],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    // mosquitto_pub exits after the PUBACK, which comes after the dead letter's commit.
    let letters = api.dead_letters("watch-rr").await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0]["reason"], "2a37: payload is 3 bytes, flags 0x17 need at least 5",
        "{letters:?}"
    );
    assert!(
        api.observations("p-rr", "").await.is_empty(),
        "no heart rate stored"
    );
    gw.stop().await;
}
