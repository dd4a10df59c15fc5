//! MQTTS: devices authenticate with a client certificate (CN = device id) or with their secret
//! over TLS; certificates from another CA, or naming an unknown device, are refused.

use std::path::{Path, PathBuf};

use vigil::config::MqttTlsConfig;

use crate::support::{Gateway, V, eventually, free_port, issue_cert, mosquitto_pub, run};

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

/// A CA (`ca.crt`) and a server certificate for localhost signed by it (`server.crt`), in `dir`.
async fn server_cert(dir: &Path) {
    issue_cert(
        dir,
        "ca",
        "server",
        "localhost",
        Some("IP:127.0.0.1,DNS:localhost"),
    )
    .await;
}

/// MQTTS on a free port with [`server_cert`]'s certificate.
fn mqtts(dir: &Path, client_ca: Option<PathBuf>, only: bool) -> MqttTlsConfig {
    MqttTlsConfig {
        listen: "127.0.0.1:0".into(),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        client_ca,
        only,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_authenticate_by_certificate_or_secret_over_tls() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    server_cert(dir).await;
    issue_cert(dir, "ca", "dev", "therm-tls", None).await;
    issue_cert(dir, "ca", "ghost", "no-such-device", None).await;
    issue_cert(dir, "rogue-ca", "rogue", "therm-tls", None).await;

    let gw = Gateway::start_with(|cfg| {
        cfg.mqtt.tls = Some(mqtts(dir, Some(dir.join("ca.crt")), true));
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

    // MQTTS speaks TLS 1.2 and 1.3 only, and takes a renewed certificate without a restart.
    let port = gw.mqtts.unwrap().port();
    assert!(handshake_with(port, "-tls1_2").await, "TLS 1.2 is accepted");
    assert!(handshake_with(port, "-tls1_3").await, "TLS 1.3 is accepted");
    assert!(!handshake_with(port, "-tls1_1").await, "TLS 1.1 is refused");
    assert!(presented_subject(port).await.contains("localhost"));
    renew_and_await(dir, port).await;
    // Devices still connect, now against the renewed certificate.
    let out = pub_tls(
        &gw,
        dir,
        "mqttv5",
        "therm-tls",
        &["--cert", &dev_crt, "--key", &dev_key],
    )
    .await;
    assert!(out.ok, "after the renewal: {}", out.stderr);
    gw.stop().await;
}

/// The subject of the certificate a fresh TLS connection to `port` is shown.
async fn presented_subject(port: u16) -> String {
    let connect = format!("127.0.0.1:{port}");
    let out = run(
        "openssl",
        &["s_client", "-connect", &connect, "-servername", "localhost"],
        Some(b""),
    )
    .await;
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .unwrap_or_default()
        .to_owned()
}

/// Writes a renewed certificate (CN renewed.localhost) over `server.key` and `server.crt`, each
/// replaced at once (rename), key first: a half-renewed pair is refused and the old certificate
/// stays until both are there. Then waits until `port` presents it, within three reload checks.
async fn renew_and_await(dir: &Path, port: u16) {
    issue_cert(
        dir,
        "ca",
        "renewed",
        "renewed.localhost",
        Some("IP:127.0.0.1,DNS:localhost"),
    )
    .await;
    std::fs::rename(dir.join("renewed.key"), dir.join("server.key")).unwrap();
    std::fs::rename(dir.join("renewed.crt"), dir.join("server.crt")).unwrap();
    eventually(
        vigil::tls_reload::CHECK_EVERY * 3,
        &format!("port {port} to present the renewed certificate"),
        || async {
            presented_subject(port)
                .await
                .contains("renewed.localhost")
                .then_some(())
        },
    )
    .await;
}

/// Whether a handshake with only `version` (e.g. `-tls1_1`) succeeds.
async fn handshake_with(port: u16, version: &str) -> bool {
    let connect = format!("127.0.0.1:{port}");
    let out = run(
        "openssl",
        &["s_client", "-connect", &connect, version],
        Some(b""),
    )
    .await;
    out.ok && out.stdout.contains("Cipher is") && !out.stdout.contains("Cipher is (NONE)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_with_hsts_and_secure_cookies_and_reloads_its_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    issue_cert(
        dir,
        "ca",
        "server",
        "first.localhost",
        Some("IP:127.0.0.1,DNS:localhost"),
    )
    .await;
    let gw = Gateway::start_with(|cfg| {
        cfg.http.tls = Some(vigil::config::HttpTlsConfig {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        });
    })
    .await;
    let port = gw.http.port();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.crt")).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();

    // HTTPS with HSTS and the other security headers; plain HTTP on that port gets nothing.
    let r = https
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert!(r.headers().contains_key("content-security-policy"));
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err(),
        "plain HTTP must not be answered on the HTTPS port"
    );
    // A client that does not trust the clinic's CA is refused by its own check.
    assert!(
        reqwest::Client::new()
            .get(format!("https://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_err()
    );
    // TLS 1.2 and 1.3 only.
    assert!(handshake_with(port, "-tls1_2").await, "TLS 1.2 is accepted");
    assert!(handshake_with(port, "-tls1_3").await, "TLS 1.3 is accepted");
    assert!(!handshake_with(port, "-tls1_1").await, "TLS 1.1 is refused");

    // The session cookie is Secure under HTTPS; join links are https.
    let r = https
        .post(format!("https://127.0.0.1:{port}/api/v1/users"))
        .bearer_auth(crate::support::TOKEN)
        .json(&serde_json::json!({"name": "tls-admin", "password": "a long enough password", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = https
        .post(format!("https://127.0.0.1:{port}/api/v1/session"))
        .json(&serde_json::json!({"username": "tls-admin", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");

    // A renewed certificate written over the files is used without a restart.
    assert!(presented_subject(port).await.contains("first.localhost"));
    renew_and_await(dir, port).await;
    let r = https
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the renewed certificate is trusted and serves"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mqtts_configured_plain_mqtt_is_not_served() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    server_cert(dir).await;
    // The plain listener is given a real port, so that it would be reachable if it were bound.
    let plain = free_port();
    let gw = Gateway::start_with(|cfg| {
        cfg.mqtt.listen = format!("127.0.0.1:{plain}");
        cfg.mqtt.tls = Some(mqtts(dir, None, true));
    })
    .await;
    gw.client.patient("p-only").await;
    let secret = gw
        .client
        .device("therm-only", "p-only", "thermometer")
        .await;
    let password = ["-u", "therm-only", "-P", &secret];
    let out = pub_tls(&gw, dir, "mqttv5", "therm-only", &password).await;
    assert!(out.ok, "over MQTTS: {}", out.stderr);
    // Plain MQTT: nothing listens, so the secret never crosses the network in the clear.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", plain))
            .await
            .is_err(),
        "the plain MQTT port accepts connections"
    );
    assert_eq!(gw.client.observations("p-only", "").await.len(), 1);
    gw.stop().await;

    // `only = false`: both listeners, for a fleet moving over to MQTTS.
    let gw = Gateway::start_with(|cfg| {
        cfg.mqtt.listen = format!("127.0.0.1:{plain}");
        cfg.mqtt.tls = Some(mqtts(dir, None, false));
    })
    .await;
    assert_eq!(gw.mqtt.port(), plain);
    gw.client.patient("p-both").await;
    let secret = gw
        .client
        .device("therm-both", "p-both", "thermometer")
        .await;
    let password = ["-u", "therm-both", "-P", &secret];
    let out = pub_tls(&gw, dir, "mqttv311", "therm-both", &password).await;
    assert!(out.ok, "over MQTTS: {}", out.stderr);
    let body = br#"{"metric":"body_temperature","value":37.0}"#;
    let topic = "vigil/v1/devices/therm-both/readings";
    let out = mosquitto_pub(gw.mqtt, V::V311, "therm-both", &secret, topic, body, &[]).await;
    assert!(out.ok, "over plain MQTT: {}", out.stderr);
    assert_eq!(gw.client.observations("p-both", "").await.len(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtts_connection_without_connect_is_closed_within_the_connect_timeout_handshake_included()
 {
    use tokio::io::AsyncReadExt as _;
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    server_cert(dir).await;
    let gw = Gateway::start_with(|cfg| {
        cfg.mqtt.tls = Some(mqtts(dir, None, true));
        cfg.mqtt.connect_timeout_s = 2;
    })
    .await;
    let tls = crate::conns::tls_connector(&dir.join("ca.crt"));
    let connected = std::time::Instant::now();
    let tcp = tokio::net::TcpStream::connect(gw.mqtts.unwrap())
        .await
        .unwrap();
    // A slow client: its handshake 1.5 s after connecting, then no CONNECT.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tls
        .connect(name, tcp)
        .await
        .expect("a handshake within the connect timeout completes");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "closed without an answer: {read:?}"
    );
    let took = connected.elapsed();
    assert!(
        took < std::time::Duration::from_millis(2_800),
        "closed {took:?} after connecting, with mqtt.connect_timeout_s = 2"
    );
    gw.stop().await;
}
