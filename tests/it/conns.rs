//! Idle and slow HTTP clients. Every connection holds a file descriptor: clients that connect and
//! send nothing, or send a request head a byte at a time, once held every descriptor Vigil had,
//! and then neither `/healthz` nor a device's MQTT CONNECT got through. These tests check the
//! deadlines and the connection cap.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Api, Gateway, TOKEN, eventually, issue_cert, metric};

/// Returns when the server closes `s` (end of stream or an error).
async fn closed<S: AsyncRead + Unpin>(s: &mut S) {
    let mut buf = [0u8; 512];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// Sends a request head one byte every `every`, never finishing it, until the server closes.
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, every: Duration) {
    let head = b"GET /healthz HTTP/1.1\r\nHost: vigil\r\nX-Slow: ";
    let mut bytes = head.iter().copied().chain(std::iter::repeat(b'a'));
    let mut buf = [0u8; 512];
    loop {
        let byte = bytes.next().unwrap_or(b'a');
        if s.write_all(&[byte]).await.is_err() {
            return;
        }
        tokio::select! {
            r = s.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// A TLS client trusting the CA in the PEM file `ca`.
fn tls_connector(ca: &Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// One sample of `/metrics` by its full name, through `api` (HTTP or HTTPS).
async fn sample(api: &Api, name: &str) -> Option<f64> {
    let (_, text) = api.call("GET", "/metrics", None, None).await;
    text.as_str()?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// How long the server takes to close `s`; panics after `within`.
async fn closes<S: AsyncRead + Unpin>(s: &mut S, within: Duration) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(within, closed(s))
        .await
        .expect("the server closes the connection");
    start.elapsed()
}

/// Sends `GET path` on `s` and reads the whole response.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: vigil\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the response");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end].lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if got.len() >= end + 4 + length.expect("a content-length") {
                return text;
            }
        }
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_trickling_and_kept_alive_connections_are_closed_at_their_deadlines() {
    let gw = Gateway::start_with(|c| {
        c.http.header_timeout_s = 1;
        c.http.idle_timeout_s = 2;
    })
    .await;
    // Nothing sent: closed at the head deadline.
    let mut silent = TcpStream::connect(gw.http).await.unwrap();
    let took = closes(&mut silent, 5 * SECOND).await;
    assert!(
        took >= SECOND * 8 / 10,
        "silent connection closed after {took:?}"
    );
    // A byte every 300 ms: still closed at the head deadline, a total one.
    let mut slow = TcpStream::connect(gw.http).await.unwrap();
    let start = Instant::now();
    tokio::time::timeout(5 * SECOND, trickle(&mut slow, SECOND * 3 / 10))
        .await
        .expect("the trickling connection is closed");
    let took = start.elapsed();
    assert!(
        took >= SECOND * 8 / 10,
        "trickling connection closed after {took:?}"
    );
    // Kept alive after a response: the idle deadline (2 s), not the head deadline (1 s).
    let mut kept = TcpStream::connect(gw.http).await.unwrap();
    let answer = get(&mut kept, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let took = closes(&mut kept, 6 * SECOND).await;
    assert!(
        took >= SECOND * 15 / 10,
        "kept-alive connection closed after {took:?}"
    );
    // A WebSocket is not an idle connection: it outlives both deadlines.
    let url = format!("ws://{}/api/v1/live?token={TOKEN}", gw.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    tokio::time::sleep(3 * SECOND).await;
    pong(&mut ws).await;
    let header = metric(gw.http, "vigil_http_timeouts_total{kind=\"header\"}").await;
    let idle = metric(gw.http, "vigil_http_timeouts_total{kind=\"idle\"}").await;
    assert!(header >= Some(2.0), "{header:?}");
    assert!(idle >= Some(1.0), "{idle:?}");
    gw.stop().await;
}

/// Pings a WebSocket and waits for its pong.
async fn pong<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Ping(Default::default())).await.unwrap();
    tokio::time::timeout(5 * SECOND, async {
        while let Some(m) = ws.next().await {
            if matches!(m.expect("the WebSocket is open"), Message::Pong(_)) {
                return;
            }
        }
        panic!("the WebSocket closed");
    })
    .await
    .expect("a pong within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_closes_silent_handshakes_and_silent_or_trickling_tls_connections() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path().to_owned();
    issue_cert(
        &dir,
        "ca",
        "server",
        "localhost",
        Some("IP:127.0.0.1,DNS:localhost"),
    )
    .await;
    let gw = Gateway::start_with(|c| {
        c.http.tls = Some(vigil::config::HttpTlsConfig {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        });
        c.http.header_timeout_s = 1;
        c.http.tls_handshake_timeout_s = 1;
    })
    .await;
    let tls = tls_connector(&dir.join("ca.crt"));
    let name = || rustls_pki_types::ServerName::try_from("localhost").unwrap();
    // No ClientHello: closed at the handshake deadline.
    let mut silent = TcpStream::connect(gw.http).await.unwrap();
    let took = closes(&mut silent, 5 * SECOND).await;
    assert!(
        took >= SECOND * 8 / 10,
        "silent handshake closed after {took:?}"
    );
    // A handshake, then nothing: closed at the head deadline.
    let tcp = TcpStream::connect(gw.http).await.unwrap();
    let mut idle = tls.connect(name(), tcp).await.unwrap();
    let took = closes(&mut idle, 5 * SECOND).await;
    assert!(
        took >= SECOND * 8 / 10,
        "idle TLS connection closed after {took:?}"
    );
    // A handshake, then a byte every 300 ms: closed at the head deadline too.
    let tcp = TcpStream::connect(gw.http).await.unwrap();
    let mut slow = tls.connect(name(), tcp).await.unwrap();
    tokio::time::timeout(5 * SECOND, trickle(&mut slow, SECOND * 3 / 10))
        .await
        .expect("the trickling TLS connection is closed");
    // A real client is served.
    let api = Api::https(gw.http, &dir.join("ca.crt"));
    let (s, v) = api.call("GET", "/healthz", None, None).await;
    assert_eq!(s, 200, "{v}");
    let handshake = sample(&api, "vigil_http_timeouts_total{kind=\"tls_handshake\"}").await;
    let header = sample(&api, "vigil_http_timeouts_total{kind=\"header\"}").await;
    assert!(handshake >= Some(1.0), "{handshake:?}");
    assert!(header >= Some(2.0), "{header:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_longest_waiting_connection_gives_way_and_websockets_do_not() {
    const CAP: usize = 6;
    let gw = Gateway::start_with(|c| {
        c.http.max_connections = CAP;
        // Long deadlines: only the cap closes connections here.
        c.http.header_timeout_s = 120;
        c.http.idle_timeout_s = 120;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..CAP {
        silent.push(TcpStream::connect(gw.http).await.unwrap());
    }
    // The cap is full of silent clients; a real one is still answered, and the silent client
    // that waited longest gives way.
    let (s, v) = gw.client.call("GET", "/healthz", None, None).await;
    assert_eq!(s, 200, "{v}");
    closes(&mut silent[0], 5 * SECOND).await;
    // WebSockets take every slot; the other silent clients (and the kept-alive one) give way.
    let url = format!("ws://{}/api/v1/live?token={TOKEN}", gw.http);
    let mut sockets = Vec::new();
    for _ in 0..CAP {
        sockets.push(
            tokio_tungstenite::connect_async(url.as_str())
                .await
                .unwrap()
                .0,
        );
    }
    for s in &mut silent[1..] {
        closes(s, 5 * SECOND).await;
    }
    // Every slot is working: a new connection is closed unanswered.
    let mut refused = TcpStream::connect(gw.http).await.unwrap();
    let _ = refused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: vigil\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(5 * SECOND, refused.read_to_end(&mut answer))
        .await
        .expect("the refused connection is closed");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // The WebSockets were never evicted.
    for ws in &mut sockets {
        pong(ws).await;
    }
    // One closes; its slot serves /metrics again.
    sockets.pop().unwrap().close(None).await.unwrap();
    let refused = eventually(5 * SECOND, "a free slot for /metrics", || {
        metric(gw.http, "vigil_http_connections_refused_total")
    })
    .await;
    let evicted = metric(gw.http, "vigil_http_connections_evicted_total").await;
    assert!(refused >= 1.0, "{refused}");
    assert!(evicted >= Some((CAP + 1) as f64), "{evicted:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_sockets_without_a_connect_give_way_to_a_device_at_the_cap() {
    const CAP: usize = 4;
    let gw = Gateway::start_with(|c| {
        c.mqtt.max_connections = CAP;
        // Long: only the cap closes the silent sockets here.
        c.mqtt.connect_timeout_s = 120;
    })
    .await;
    gw.client.patient("p-cap").await;
    let secret = gw.client.device("hr-cap", "p-cap", "smartwatch").await;
    let mut silent = Vec::new();
    for _ in 0..CAP {
        silent.push(TcpStream::connect(gw.mqtt).await.unwrap());
    }
    // The device gets in; the socket that waited longest for its CONNECT gives way.
    crate::support::publish_readings(
        gw.mqtt,
        "hr-cap",
        &secret,
        &serde_json::json!({"metric": "heart_rate", "value": 70}),
    )
    .await;
    closes(&mut silent[0], 5 * SECOND).await;
    let evicted = metric(
        gw.http,
        "vigil_mqtt_connections_refused_total{reason=\"evicted\"}",
    )
    .await;
    assert!(evicted >= Some(1.0), "{evicted:?}");
    gw.stop().await;
}
