//! Where a new device connects, as `POST /devices` and `POST /devices/{id}/rotate` answer it
//! beside the credentials: the endpoint's real listener (a free port here, never an assumed
//! 1883), MQTTS when it listens, and the host it is bound to.

use reqwest::StatusCode;
use serde_json::{Value, json};
use vigil::config::MqttTlsConfig;

use crate::support::{Gateway, issue_cert};

/// The `mqtt` object of a new device's answer and of its rotation's.
async fn answers(g: &Gateway, device: &str) -> [Value; 2] {
    g.client.patient(&format!("p-{device}")).await;
    let (s, created) = g
        .client
        .post(
            "/api/v1/devices",
            json!({"id": device, "patient_id": format!("p-{device}"), "profile": "thermometer"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let (s, rotated) = g
        .client
        .post(&format!("/api/v1/devices/{device}/rotate"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    [created["mqtt"].clone(), rotated["mqtt"].clone()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_is_told_the_endpoints_real_port_host_and_tls() {
    let g = Gateway::start().await;
    for m in answers(&g, "th-plain").await {
        assert_ne!(g.mqtt.port(), 1883);
        assert_eq!(
            (&m["host"], &m["port"], &m["tls"], &m["username"]),
            (
                &json!("127.0.0.1"),
                &json!(g.mqtt.port()),
                &json!(false),
                &json!("th-plain")
            ),
            "{m}"
        );
        assert!(m["password"].as_str().unwrap().starts_with("vgd_"), "{m}");
    }
    g.stop().await;

    // With MQTTS, devices are sent there (listening on every interface: no host named).
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    issue_cert(dir, "ca", "server", "localhost", Some("IP:127.0.0.1")).await;
    let g = Gateway::start_with(|cfg| {
        cfg.mqtt.tls = Some(MqttTlsConfig {
            listen: "0.0.0.0:0".into(),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            client_ca: None,
            only: true,
        });
    })
    .await;
    let tls_port = g.mqtts.unwrap().port();
    for m in answers(&g, "th-tls").await {
        assert_eq!(
            (&m["host"], &m["port"], &m["tls"]),
            (&Value::Null, &json!(tls_port), &json!(true)),
            "{m}"
        );
    }
    g.stop().await;
}
