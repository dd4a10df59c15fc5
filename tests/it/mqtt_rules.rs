//! The endpoint's access rules and protocol limits, through real clients and raw sockets.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Gateway, V, eventually, mosquitto_pub, paho_device, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_or_unknown_device_cannot_connect() {
    let gw = Gateway::start().await;
    gw.client.patient("p1").await;
    let secret = gw.client.device("ox-1", "p1", "pulse-oximeter").await;
    let topic = "vigil/v1/devices/ox-1/readings";
    let body = br#"{"metric":"spo2","value":97}"#;
    for v in [V::V311, V::V5] {
        let wrong = format!("{secret}x");
        let out = mosquitto_pub(gw.mqtt, v, "ox-1", &wrong, topic, body, &[]).await;
        assert!(!out.ok, "{v:?}: a wrong secret connected");
        assert!(
            out.stderr.to_lowercase().contains("user name or password"),
            "{v:?}: {}",
            out.stderr
        );
        let out = mosquitto_pub(
            gw.mqtt,
            v,
            "nobody",
            &secret,
            "vigil/v1/devices/nobody/readings",
            body,
            &[],
        )
        .await;
        assert!(!out.ok, "{v:?}: an unknown device connected");
    }
    let report = paho_device(gw.mqtt, V::V5, "ox-1", "not-the-secret", json!([]), &[]).await;
    assert_eq!(report["connected"], false, "{report}");
    assert!(gw.client.observations("p1", "").await.is_empty());
    let metrics = reqwest::get(format!("http://{}/metrics", gw.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("vigil_mqtt_connections_refused_total{reason=\"bad_credentials\"} 5"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_publishing_under_another_device_s_id_is_refused_and_nothing_is_stored() {
    let gw = Gateway::start().await;
    let api = &gw.client;
    api.patient("victim").await;
    api.patient("attacker").await;
    api.device("ox-victim", "victim", "pulse-oximeter").await;
    let mallory = api.device("ox-mallory", "attacker", "pulse-oximeter").await;
    let body = br#"{"metric":"spo2","value":70}"#;

    // MQTT 3.1.1 has no negative PUBACK: the endpoint disconnects, so no PUBACK ever comes.
    let out = mosquitto_pub(
        gw.mqtt,
        V::V311,
        "ox-mallory",
        &mallory,
        "vigil/v1/devices/ox-victim/readings",
        body,
        &[],
    )
    .await;
    assert!(
        !out.ok,
        "3.1.1 publish to another device's topic was acknowledged"
    );
    // MQTT 5: PUBACK with reason 0x87 (not authorized), from Paho.
    let report = paho_device(
        gw.mqtt,
        V::V5,
        "ox-mallory",
        &mallory,
        json!([
            {"topic": "vigil/v1/devices/ox-victim/readings", "payload": "{\"metric\":\"spo2\",\"value\":70}"},
            {"topic": "vigil/v1/devices/ox-mallory/errors", "payload": "x"}
        ]),
        &[],
    )
    .await;
    assert_eq!(report["reason_codes"], json!([0x87, 0x87]), "{report}");

    assert!(
        api.observations("victim", "").await.is_empty(),
        "nothing stored for the victim"
    );
    assert!(api.observations("attacker", "").await.is_empty());
    let metrics = reqwest::get(format!("http://{}/metrics", gw.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("vigil_mqtt_publishes_denied_total 3"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_may_subscribe_only_to_its_own_errors_topic() {
    let gw = Gateway::start().await;
    gw.client.patient("p1").await;
    let secret = gw.client.device("ox-1", "p1", "pulse-oximeter").await;
    gw.client.device("ox-2", "p1", "pulse-oximeter").await;
    let others = [
        "#",
        "vigil/v1/devices/+/readings",
        "vigil/v1/devices/ox-2/errors",
        "vigil/v1/devices/ox-1/readings",
    ];
    let mut args = Vec::new();
    for f in others {
        args.extend(["--subscribe", f]);
    }
    args.push("--subscribe-errors");
    // Granted QoS 0 for its own errors topic only: 0x87 "not authorized" (MQTT 5) or 0x80
    // "failure" (3.1.1) for every other filter.
    for (v, no) in [(V::V5, 0x87), (V::V311, 0x80)] {
        let report = paho_device(gw.mqtt, v, "ox-1", &secret, json!([]), &args).await;
        assert_eq!(
            report["granted"],
            json!([no, no, no, no, 0]),
            "{v:?}: {report}"
        );
    }
    gw.stop().await;
}

/// A minimal MQTT 3.1.1 CONNECT, hand-encoded so the test controls every byte.
pub(crate) fn connect_packet(device: &str, secret: &str, keep_alive: u16) -> Vec<u8> {
    connect_packet_of(4, device, secret, keep_alive)
}

/// A minimal CONNECT of protocol level `level` (4: MQTT 3.1.1; 5: MQTT 5, without properties)
/// with clean start, user name and password: client id and user name `device`.
fn connect_packet_of(level: u8, device: &str, secret: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0xc2];
    body.extend(keep_alive.to_be_bytes());
    if level == 5 {
        // The property length.
        body.push(0);
    }
    for field in [device, device, secret] {
        body.extend(mqtt_string(field));
    }
    packet(0x10, &body)
}

async fn connected(gw: &Gateway, device: &str, secret: &str, keep_alive: u16) -> TcpStream {
    let mut s = TcpStream::connect(gw.mqtt).await.unwrap();
    s.write_all(&connect_packet(device, secret, keep_alive))
        .await
        .unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    s
}

async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_packet_is_refused_from_its_header() {
    let gw = Gateway::start().await;
    gw.client.patient("p1").await;
    let secret = gw.client.device("ox-1", "p1", "pulse-oximeter").await;
    let mut s = connected(&gw, "ox-1", &secret, 60).await;
    // PUBLISH QoS 1 declaring 200 MB; only the fixed header is sent.
    s.write_all(&[0x32, 0x80, 0x80, 0x80, 0x60]).await.unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "connection not closed"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_is_enforced_and_the_last_will_sets_the_device_offline() {
    let gw = Gateway::start().await;
    gw.client.patient("p1").await;
    let secret = gw.client.device("scale-1", "p1", "scale").await;

    // A silent client with keep-alive 1 s is closed after 1.5 s.
    let mut s = connected(&gw, "scale-1", &secret, 1).await;
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "idle connection not closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "closed too early: {:?}",
        started.elapsed()
    );

    // That connection's end is written to the registry after its socket closes: wait for it,
    // or "online" below could still be that connection's and the kill come before the next
    // client has connected (seen under CI load).
    let api = gw.client.clone();
    eventually(
        Duration::from_secs(10),
        "the idle connection's end recorded",
        || {
            let api = api.clone();
            async move {
                let (_, d) = api.get("/api/v1/devices/scale-1").await;
                (d["online"] == false).then_some(())
            }
        },
    )
    .await;

    // mosquitto_sub with a Last Will on its status topic, killed: the will marks it offline.
    let port = gw.mqtt.port().to_string();
    let mut sub = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv311",
            "-i",
            "scale-1-will",
            "-u",
            "scale-1",
            "-P",
            &secret,
            "-t",
            "vigil/v1/devices/scale-1/errors",
            "--will-topic",
            "vigil/v1/devices/scale-1/status",
            "--will-payload",
            "{\"online\":false,\"battery\":12}",
            "-k",
            "5",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), "device online", || {
        let api = api.clone();
        async move {
            let (_, d) = api.get("/api/v1/devices/scale-1").await;
            (d["online"] == true).then_some(())
        }
    })
    .await;
    sub.start_kill().unwrap();
    let d = eventually(Duration::from_secs(10), "device offline", || {
        let api = api.clone();
        async move {
            let (_, d) = api.get("/api/v1/devices/scale-1").await;
            (d["online"] == false).then_some(d)
        }
    })
    .await;
    assert_eq!(d["battery"], 12, "battery from the will payload: {d}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_on_another_topic_is_refused_at_connect() {
    let gw = Gateway::start().await;
    gw.client.patient("p1").await;
    let secret = gw.client.device("scale-1", "p1", "scale").await;
    let port = gw.mqtt.port().to_string();
    let out = run(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv311",
            "-i",
            "w",
            "-u",
            "scale-1",
            "-P",
            &secret,
            "-t",
            "vigil/v1/devices/scale-1/errors",
            "--will-topic",
            "vigil/v1/devices/other/status",
            "--will-payload",
            "x",
            "-C",
            "1",
            "-W",
            "3",
        ],
        None,
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr.to_lowercase().contains("not authori"),
        "{}",
        out.stderr
    );
    gw.stop().await;
}

/// A device held connected by `mosquitto_sub` (on its own errors topic, which it may read).
fn subscriber(gw: &Gateway, id: &str, secret: &str) -> tokio::process::Child {
    tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &gw.mqtt.port().to_string(),
            "-V",
            "mqttv5",
            "-i",
            &format!("{id}-held"),
            "-u",
            id,
            "-P",
            secret,
            "-t",
            &format!("vigil/v1/devices/{id}/errors"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub starts")
}

async fn online(gw: &Gateway, id: &str) -> bool {
    gw.client.get(&format!("/api/v1/devices/{id}")).await.1["online"] == json!(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_or_revoking_a_device_ends_its_connections_at_once() {
    let gw = Gateway::start().await;
    gw.client.patient("p-rev").await;
    let old = gw.client.device("th-rev", "p-rev", "thermometer").await;
    let topic = "vigil/v1/devices/th-rev/readings";
    let body = br#"{"metric":"body_temperature","value":37.1}"#;

    // Rotation: the connected device is dropped, its old secret no longer works, the new does.
    let mut held = subscriber(&gw, "th-rev", &old);
    eventually(Duration::from_secs(10), "the device online", || async {
        online(&gw, "th-rev").await.then_some(())
    })
    .await;
    let (s, v) = gw
        .client
        .post("/api/v1/devices/th-rev/rotate", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let new = v["mqtt"]["password"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    tokio::time::timeout(Duration::from_secs(10), held.wait())
        .await
        .expect("the connection made with the old secret ends at once")
        .unwrap();
    eventually(Duration::from_secs(10), "the device offline", || async {
        (!online(&gw, "th-rev").await).then_some(())
    })
    .await;
    let out = mosquitto_pub(gw.mqtt, V::V5, "th-rev", &old, topic, body, &[]).await;
    assert!(!out.ok, "the old secret still connects");
    let out = mosquitto_pub(gw.mqtt, V::V5, "th-rev", &new, topic, body, &[]).await;
    assert!(out.ok, "the new secret: {}", out.stderr);

    // Revocation: dropped at once, refused after, on the record and in the audit trail.
    let mut held = subscriber(&gw, "th-rev", &new);
    eventually(
        Duration::from_secs(10),
        "the device online again",
        || async { online(&gw, "th-rev").await.then_some(()) },
    )
    .await;
    let (s, v) = gw
        .client
        .post("/api/v1/devices/th-rev/revoke", json!({}))
        .await;
    assert_eq!(
        (s.as_u16(), v["revoked"].clone()),
        (200, json!(true)),
        "{v}"
    );
    tokio::time::timeout(Duration::from_secs(10), held.wait())
        .await
        .expect("a revoked device's connection ends at once")
        .unwrap();
    let out = mosquitto_pub(gw.mqtt, V::V5, "th-rev", &new, topic, body, &[]).await;
    assert!(!out.ok, "a revoked device connects");
    let (s, _) = gw
        .client
        .post("/api/v1/devices/th-rev/rotate", json!({}))
        .await;
    assert_eq!(s, 400, "a revoked device gets no new secret");
    let (_, rec) = gw.client.get("/api/v1/patients/p-rev/record").await;
    assert!(
        rec["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "device.revoked"),
        "{rec}"
    );
    let (_, a) = gw.client.get("/api/v1/audit?patient_id=p-rev").await;
    for action in ["device.rotate", "device.revoke"] {
        assert!(
            a["audit"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["action"] == action),
            "{action} not audited: {a}"
        );
    }
    // The readings it sent before stay.
    assert_eq!(gw.client.observations("p-rev", "").await.len(), 1);
    // Unknown device: 404.
    let (s, _) = gw
        .client
        .post("/api/v1/devices/nope/revoke", json!({}))
        .await;
    assert_eq!(s, 404);
    gw.stop().await;
}

/// The CONNACK return code a raw MQTT 3.1.1 CONNECT gets.
async fn connack_code(gw: &Gateway, device: &str, secret: &str) -> u8 {
    let mut s = TcpStream::connect(gw.mqtt).await.unwrap();
    s.write_all(&connect_packet(device, secret, 30))
        .await
        .unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack[..2], [0x20, 0x02], "a CONNACK");
    ack[3]
}

/// The reason code of the CONNACK an MQTT 5 CONNECT as `device` gets.
async fn connack_v5_reason(gw: &Gateway, device: &str, secret: &str) -> u8 {
    let mut s = TcpStream::connect(gw.mqtt).await.unwrap();
    s.write_all(&connect_packet_of(5, device, secret, 30))
        .await
        .unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x20, "a CONNACK");
    head[3]
}

/// A device's new secret is answered only once the secret's hash and its audit line are
/// committed together: with the audit trail refusing lines (as a full disk would), rotating,
/// revoking and provisioning each answer an error, the old secret still connects and the device
/// is neither revoked nor created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_secret_is_not_changed_unaudited() {
    let gw = Gateway::start().await;
    gw.client.patient("p-aud").await;
    let old = gw.client.device("th-aud", "p-aud", "thermometer").await;
    let db = gw.registry_db();
    db.refuse_inserts("audit").await;
    let (s, v) = gw
        .client
        .post("/api/v1/devices/th-aud/rotate", json!({}))
        .await;
    assert!(s.is_server_error(), "{s} {v}");
    assert!(v.get("mqtt").is_none(), "no secret answered: {v}");
    let (s, v) = gw
        .client
        .post("/api/v1/devices/th-aud/revoke", json!({}))
        .await;
    assert!(s.is_server_error(), "{s} {v}");
    let new = json!({"id": "th-new", "patient_id": "p-aud", "profile": "thermometer"});
    let (s, v) = gw.client.post("/api/v1/devices", new).await;
    assert!(s.is_server_error(), "{s} {v}");
    assert!(v.get("mqtt").is_none(), "no secret answered: {v}");
    assert_eq!(
        connack_code(&gw, "th-aud", &old).await,
        0,
        "the old secret still connects"
    );

    db.accept_inserts("audit").await;
    let (_, d) = gw.client.get("/api/v1/devices/th-aud").await;
    assert_eq!(d["revoked"], json!(false), "{d}");
    let (s, _) = gw.client.get("/api/v1/devices/th-new").await;
    assert_eq!(s, 404, "no device created unaudited");
    assert_eq!(
        connack_code(&gw, "th-aud", &old).await,
        0,
        "the old secret still connects"
    );
    gw.stop().await;
}

async fn refused_for(gw: &Gateway, reason: &str) -> u64 {
    let name = format!("vigil_mqtt_connections_refused_total{{reason=\"{reason}\"}}");
    crate::support::metric(gw.http, &name).await.unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_and_reconnect_storms_are_rate_limited() {
    const ACCEPTED: u8 = 0;
    const UNAVAILABLE: u8 = 3;
    const BAD_CREDENTIALS: u8 = 4;
    let gw = Gateway::start_with(|c| {
        c.mqtt.auth_failures_free = 3;
        c.mqtt.device_connect_burst = 5;
        c.mqtt.device_connects_per_minute = 60;
    })
    .await;
    gw.client.patient("p1").await;
    let d1 = gw.client.device("d1", "p1", "scale").await;
    let d2 = gw.client.device("d2", "p1", "scale").await;
    let d3 = gw.client.device("d3", "p1", "scale").await;

    // Three free failures, a fourth that locks the address, then even the right secret waits.
    for _ in 0..4 {
        assert_eq!(connack_code(&gw, "d1", "wrong").await, BAD_CREDENTIALS);
    }
    // MQTT 5 says why (0x9F, "Connection rate exceeded"); asked first, within the lock's
    // second (a client that takes long to start, such as Paho in Python, may come after it).
    assert_eq!(connack_v5_reason(&gw, "d1", &d1).await, 0x9F);
    assert_eq!(connack_code(&gw, "d1", &d1).await, UNAVAILABLE);
    assert!(refused_for(&gw, "auth_failures").await >= 2);
    // Other devices behind the same address (a carrier's NAT) are not locked out by it.
    assert_eq!(connack_code(&gw, "d3", &d3).await, ACCEPTED);
    // The lock is a second (the first one); waiting does not extend it.
    let locked_at = std::time::Instant::now();
    eventually(Duration::from_secs(10), "the lock to pass", || async {
        (connack_code(&gw, "d1", &d1).await == ACCEPTED).then_some(())
    })
    .await;
    let waited = locked_at.elapsed();
    assert!(waited < Duration::from_secs(5), "locked for {waited:?}");

    // A device reconnecting in a loop gets its burst of five, then waits for its bucket; other
    // devices are not affected.
    for i in 0..5 {
        assert_eq!(connack_code(&gw, "d2", &d2).await, ACCEPTED, "connect {i}");
    }
    assert_eq!(connack_code(&gw, "d2", &d2).await, UNAVAILABLE);
    assert_eq!(connack_code(&gw, "d3", &d3).await, ACCEPTED);
    assert!(refused_for(&gw, "device_connect_rate").await >= 1);
    // Sixty a minute: one more within about a second.
    eventually(Duration::from_secs(5), "a refilled token", || async {
        (connack_code(&gw, "d2", &d2).await == ACCEPTED).then_some(())
    })
    .await;

    // An address that fails for many ids (past ten times the allowance, 30 here) is locked
    // whole: d1's four failures count, and 27 more make 31.
    for i in 0..27 {
        assert_eq!(
            connack_code(&gw, &format!("x{i}"), "wrong").await,
            BAD_CREDENTIALS
        );
    }
    assert_eq!(connack_code(&gw, "d3", &d3).await, UNAVAILABLE);
    gw.stop().await;
}

/// A raw MQTT 5 connection past its CONNACK (accepted).
async fn connected_v5(gw: &Gateway, device: &str, secret: &str) -> TcpStream {
    let mut s = TcpStream::connect(gw.mqtt).await.unwrap();
    s.write_all(&connect_packet_of(5, device, secret, 60))
        .await
        .unwrap();
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x20, "a CONNACK");
    assert!(head[1] < 0x80, "a short CONNACK");
    let mut rest = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest[1], 0x00, "CONNACK accepted: {rest:02x?}");
    s
}

/// Everything the server sends until it closes the connection, or `None` if it is still open
/// after `limit`.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    tokio::time::timeout(limit, async {
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(got)
}

/// One MQTT packet: `first` (type and flags), the remaining length, `body`.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128, "a one-byte remaining length");
    let mut p = vec![first, body.len() as u8];
    p.extend_from_slice(body);
    p
}

/// An MQTT string: its length in two bytes, then its bytes.
fn mqtt_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// Packets that are well formed but for the low four bits of their first byte, which MQTT
/// fixes per packet type (SUBSCRIBE, UNSUBSCRIBE and PUBREL 0010, the others here 0000; a
/// QoS 0 PUBLISH must not have DUP), for `device` in protocol version 3.1.1 or 5.
fn wrong_flags(device: &str, v5: bool) -> Vec<(&'static str, Vec<u8>)> {
    // MQTT 5 puts a property length (here 0) after the packet id or the topic.
    let props: &[u8] = if v5 { &[0] } else { &[] };
    let errors = mqtt_string(&format!("vigil/v1/devices/{device}/errors"));
    let subscribe = [&[0, 1][..], props, &errors, &[0]].concat();
    let unsubscribe = [&[0, 2][..], props, &errors].concat();
    let readings = mqtt_string(&format!("vigil/v1/devices/{device}/readings"));
    let publish = [
        &readings[..],
        props,
        br#"{"metric":"body_weight","value":70}"#,
    ]
    .concat();
    vec![
        ("SUBSCRIBE with flags 0000", packet(0x80, &subscribe)),
        ("SUBSCRIBE with flags 0011", packet(0x83, &subscribe)),
        ("UNSUBSCRIBE with flags 0000", packet(0xa0, &unsubscribe)),
        ("PUBREL with flags 0000", packet(0x60, &[0, 3])),
        ("PUBACK with flags 0010", packet(0x42, &[0, 4])),
        ("PINGREQ with flags 0001", packet(0xc1, &[])),
        ("DISCONNECT with flags 0100", packet(0xe4, &[])),
        ("PUBLISH at QoS 0 with DUP", packet(0x38, &publish)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_with_wrong_fixed_header_flags_are_malformed_and_close_the_connection() {
    let gw = Gateway::start().await;
    gw.client.patient("p1").await;
    let v311 = gw.client.device("flags-4", "p1", "scale").await;
    let v5 = gw.client.device("flags-5", "p1", "scale").await;
    for (what, packet) in wrong_flags("flags-4", false) {
        // MQTT 3.1.1: the server closes the connection (it has no DISCONNECT to send).
        let mut s = connected(&gw, "flags-4", &v311, 60).await;
        s.write_all(&packet).await.unwrap();
        let got = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert_eq!(got, Some(Vec::new()), "3.1.1 {what}: answered or left open");
    }
    for (what, packet) in wrong_flags("flags-5", true) {
        // MQTT 5: DISCONNECT with reason 0x81 (malformed packet), then the close.
        let mut s = connected_v5(&gw, "flags-5", &v5).await;
        s.write_all(&packet).await.unwrap();
        let got = read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("5 {what}: left open"));
        assert!(
            got.len() >= 3 && got[0] == 0xe0 && got[2] == 0x81,
            "5 {what}: {got:02x?}"
        );
    }
    // A well-formed MQTT 5 DISCONNECT without a reason code (0x00, normal) is a clean end:
    // nothing comes back before the close.
    let mut s = connected_v5(&gw, "flags-5", &v5).await;
    s.write_all(&[0xe0, 0x00]).await.unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert_eq!(got, Some(Vec::new()), "a plain DISCONNECT was answered");
    // Nothing the malformed PUBLISH carried was stored.
    assert!(gw.client.observations("p1", "").await.is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_publish_is_refused_since_retain_is_not_available() {
    let gw = Gateway::start().await;
    gw.client.patient("p1").await;
    let secret = gw.client.device("th-ret", "p1", "thermometer").await;
    let topic = "vigil/v1/devices/th-ret/readings";
    let body = r#"{"metric":"body_temperature","value":37.1}"#;

    // MQTT 5 (Paho): CONNACK said "retain available: 0", so DISCONNECT 0x9A (retain not
    // supported), and no acknowledgement.
    let report = paho_device(
        gw.mqtt,
        V::V5,
        "th-ret",
        &secret,
        json!([{"topic": topic, "payload": body, "retain": true}]),
        &["--timeout", "5"],
    )
    .await;
    assert_eq!(report["connected"], true, "{report}");
    assert_eq!(report["disconnect"]["reason_code"], 0x9a, "{report}");
    assert_eq!(report["acked"], 0, "{report}");
    // MQTT 3.1.1 has no reason codes: the connection is closed without a PUBACK.
    let out = mosquitto_pub(
        gw.mqtt,
        V::V311,
        "th-ret",
        &secret,
        topic,
        body.as_bytes(),
        &["-r"],
    )
    .await;
    assert!(!out.ok, "3.1.1 retained publish acknowledged");
    assert!(
        gw.client.observations("p1", "").await.is_empty(),
        "a retained publish was stored"
    );
    // A Will with Will Retain is refused at CONNECT: MQTT 5 0x9A, 3.1.1 "not authorised".
    let will = [
        "--will-topic",
        "vigil/v1/devices/th-ret/status",
        "--will-payload",
        r#"{"online":false}"#,
        "--will-retain",
    ];
    for (v, says) in [(V::V5, "retain not supported"), (V::V311, "not authori")] {
        let out = mosquitto_pub(gw.mqtt, v, "th-ret", &secret, topic, body.as_bytes(), &will).await;
        assert!(!out.ok, "{v:?}: a will retain connected");
        assert!(
            out.stderr.to_lowercase().contains(says),
            "{v:?}: {}",
            out.stderr
        );
    }
    // The same reading without the retain flag is stored.
    let out = mosquitto_pub(
        gw.mqtt,
        V::V311,
        "th-ret",
        &secret,
        topic,
        body.as_bytes(),
        &[],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(gw.client.observations("p1", "").await.len(), 1);
    gw.stop().await;
}
