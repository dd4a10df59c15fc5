//! MQTTS: devices authenticate with a client certificate (CN = device id) or with their secret
//! over TLS; certificates from another CA, or naming an unknown device, are refused.

use std::path::Path;

use vigil::config::MqttTlsConfig;

use crate::support::{Gateway, issue_cert, run};

async fn pub_tls(
    gw: &Gateway,
    dir: &Path,
    version: &str,
    id: &str,
    auth: &[&str],
) -> crate::support::Run {
    let port = gw.mqtts.unwrap().port().to_string();
    let ca = dir.join("ca.crt");
    let topic = format!("vigil/v1/devices/{id}/readings");
    let mut args = vec![
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        version,
        "-q",
        "1",
        "-i",
        "tls-client",
        "--cafile",
        ca.to_str().unwrap(),
        "-t",
        &topic,
        "-m",
        r#"{"metric":"body_temperature","value":37.2}"#,
    ];
    args.extend_from_slice(auth);
    run("mosquitto_pub", &args, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_authenticate_by_certificate_or_secret_over_tls() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    issue_cert(
        dir,
        "ca",
        "server",
        "localhost",
        Some("IP:127.0.0.1,DNS:localhost"),
    )
    .await;
    issue_cert(dir, "ca", "dev", "therm-tls", None).await;
    issue_cert(dir, "ca", "ghost", "no-such-device", None).await;
    issue_cert(dir, "rogue-ca", "rogue", "therm-tls", None).await;

    let gw = Gateway::start_with(|cfg| {
        cfg.mqtt.tls = Some(MqttTlsConfig {
            listen: "127.0.0.1:0".into(),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            client_ca: Some(dir.join("ca.crt")),
        });
    })
    .await;
    gw.client.patient("p-tls").await;
    gw.client.device("therm-tls", "p-tls", "thermometer").await;
    let secret = gw.client.device("therm-pw", "p-tls", "thermometer").await;
    let file = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let (dev_crt, dev_key) = (file("dev.crt"), file("dev.key"));

    // A client certificate alone identifies the device (3.1.1 and 5).
    for v in ["mqttv311", "mqttv5"] {
        let out = pub_tls(
            &gw,
            dir,
            v,
            "therm-tls",
            &["--cert", &dev_crt, "--key", &dev_key],
        )
        .await;
        assert!(out.ok, "{v}: {}", out.stderr);
    }
    // A secret over TLS, without a certificate.
    let out = pub_tls(
        &gw,
        dir,
        "mqttv311",
        "therm-pw",
        &["-u", "therm-pw", "-P", &secret],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);

    let obs = gw.client.observations("p-tls", "").await;
    let by = |d: &str| obs.iter().filter(|o| o["device_id"] == d).count();
    assert_eq!((by("therm-tls"), by("therm-pw")), (2, 1), "{obs:?}");

    // Refused: a certificate naming no device, one from another CA, and a user name that
    // contradicts the certificate.
    let (ghost_crt, ghost_key) = (file("ghost.crt"), file("ghost.key"));
    let out = pub_tls(
        &gw,
        dir,
        "mqttv311",
        "no-such-device",
        &["--cert", &ghost_crt, "--key", &ghost_key],
    )
    .await;
    assert!(!out.ok, "unknown device connected");
    let (rogue_crt, rogue_key) = (file("rogue.crt"), file("rogue.key"));
    let out = pub_tls(
        &gw,
        dir,
        "mqttv311",
        "therm-tls",
        &["--cert", &rogue_crt, "--key", &rogue_key],
    )
    .await;
    assert!(!out.ok, "a certificate from another CA was accepted");
    let out = pub_tls(
        &gw,
        dir,
        "mqttv311",
        "therm-tls",
        &["--cert", &dev_crt, "--key", &dev_key, "-u", "therm-pw"],
    )
    .await;
    assert!(
        !out.ok,
        "user name contradicting the certificate was accepted"
    );

    assert_eq!(
        gw.client.observations("p-tls", "").await.len(),
        3,
        "nothing more stored"
    );
    gw.stop().await;
}
