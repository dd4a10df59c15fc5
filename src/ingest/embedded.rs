//! Vigil's own MQTT 3.1.1/5 endpoint for devices: not a general broker, just what devices need.
//!
//! One task per connection decodes packets, hands publishes to [`Ingest`], and sends the
//! acknowledgements **in arrival order, each only after its publish's durable commit**. At
//! most `max_inflight` acknowledgements are owed at a time; beyond that the socket is not read,
//! so a device that outruns the store is slowed down instead of buffered without bound. An
//! idle connection holds no buffers, only its task's small state (a test keeps it small).
//!
//! Every socket holds one of the endpoint's slots (`crate::slots`, `mqtt.max_connections`) from
//! its accept: until its CONNECT it may be evicted for a newer connection at the cap, so silent
//! sockets can neither keep devices out nor take the descriptors the HTTP side needs.
//!
//! Access rules: a device authenticates with its id and secret; it may publish only under
//! `vigil/v1/devices/{its id}/…` (readings, gatt, status) and subscribe only to its own
//! `errors` topic; its Last Will must be its own status topic. Anything else is refused and
//! counted. Retained messages are not offered (MQTT 5 CONNACK says so): a retained PUBLISH
//! closes the connection (MQTT 5: DISCONNECT 0x9A) and a Will with Will Retain is refused at
//! CONNECT. Nothing a device sends can make this module panic or allocate beyond the packet
//! size limit.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::{
    self, CodecError, ConnectCode, DisconnectReason, Inbound, PubOutcome, ServerLimits, Version,
};
use super::topic::{Topic, TopicKind};
use super::{Ingest, pipeline};
use crate::domain::{DeviceId, format_rfc3339, now_ms};
use crate::registry::DeviceAuth;
use crate::slots::{Slot, Slots};
use crate::store::{Committed, StoreError};
use crate::throttle::{Backoff, FailureThrottle, RateLimiter};

/// Limits of the embedded endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub max_packet: usize,
    pub connect_timeout: Duration,
    pub max_inflight: u16,
    pub max_connections: usize,
    pub device_connects_per_minute: u32,
    pub device_connect_burst: u32,
    pub auth_failures_free: u32,
}

/// The lock on an address after too many failed authentications: from 1 s, doubling, to 5 min.
const AUTH_FIRST_LOCK: Duration = Duration::from_secs(1);
const AUTH_MAX_LOCK: Duration = Duration::from_secs(300);
/// Addresses and devices the connect limits remember at most.
const LIMIT_KEYS: usize = 100_000;

/// The embedded MQTT endpoint.
pub struct Endpoint {
    ingest: Ingest,
    cfg: EndpointConfig,
    /// Live connections by (device, client id): a newer one with the same pair takes over.
    sessions: Mutex<BTreeMap<(DeviceId, String), (u64, CancellationToken)>>,
    next_conn: AtomicU64,
    /// Sockets held, devices and connections before their CONNECT alike (`crate::slots`).
    slots: Slots,
    /// Failed authentications per (remote address, user name): a device with a wrong secret
    /// waits, without locking out the other devices behind the same address (carrier NAT).
    /// Keyed `<address> <user name>`.
    auth_failures: Arc<FailureThrottle<String>>,
    /// Failed authentications per remote address, whatever the user name, with ten times the
    /// allowance: one address trying many ids waits too.
    address_failures: Arc<FailureThrottle<String>>,
    /// Connects per device (a device in a reconnect loop cannot churn sessions and the store).
    device_connects: RateLimiter<DeviceId>,
}

/// Something owed to the device, in order.
enum Out {
    Packet(Bytes),
    /// Wait for the commit, then send `ack` and `then`. If the commit fails, send nothing and
    /// end the connection: the device keeps the unacknowledged publish and sends it again.
    Commit(Box<CommitOut>),
}

struct CommitOut {
    commit: Option<oneshot::Receiver<Result<Committed, StoreError>>>,
    outcome: PubOutcome,
    ack: Option<Bytes>,
    then: Option<Bytes>,
}

/// A device that does not read what it is sent is dropped after this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes and empties `bytes` (releasing a large buffer after a burst).
async fn write_out<S: AsyncWrite + Unpin>(sock: &mut S, bytes: &mut Vec<u8>) -> Result<(), ()> {
    let r = tokio::time::timeout(WRITE_TIMEOUT, async {
        sock.write_all(bytes).await?;
        sock.flush().await
    })
    .await;
    bytes.clear();
    if bytes.capacity() > 4096 {
        *bytes = Vec::new();
    }
    match r {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// How a connection ends when a commit it waits on failed: the publish is not acknowledged, so
/// the device keeps it and sends it again after reconnecting.
fn store_failed(e: &StoreError) -> End {
    match e {
        // The store logs and counts a full disk once; each connection need not.
        StoreError::Full => End::Server(DisconnectReason::DiskFull),
        e => {
            tracing::error!(error = %e, "commit failed; publish not acknowledged");
            End::Server(DisconnectReason::StoreFailed)
        }
    }
}

/// Resolves when the acknowledgement at the head of `owed` has its commit's answer; pends
/// for ever while there is none to wait for.
async fn head_commit(owed: &mut VecDeque<Out>) -> Result<Result<Committed, StoreError>, ()> {
    match owed.front_mut() {
        Some(Out::Commit(c)) if c.commit.is_some() => match c.commit.as_mut() {
            Some(rx) => rx.await.map_err(|_| ()),
            None => std::future::pending().await,
        },
        _ => std::future::pending().await,
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// DISCONNECT from the client.
    Clean {
        with_will: bool,
    },
    /// Socket closed or broken without DISCONNECT.
    Lost,
    Server(DisconnectReason),
}

impl End {
    fn publishes_will(self) -> bool {
        match self {
            End::Clean { with_will } => with_will,
            End::Lost => true,
            End::Server(DisconnectReason::TakenOver | DisconnectReason::Shutdown) => false,
            End::Server(_) => true,
        }
    }

    fn label(self) -> &'static str {
        match self {
            End::Clean { .. } => "disconnect",
            End::Lost => "connection lost",
            End::Server(r) => match r {
                DisconnectReason::Shutdown => "server shutting down",
                DisconnectReason::KeepAlive => "keep-alive timeout",
                DisconnectReason::TooLarge => "packet too large",
                DisconnectReason::Malformed => "malformed packet",
                DisconnectReason::Protocol => "protocol error",
                DisconnectReason::NotAuthorized => "topic not authorized",
                DisconnectReason::TakenOver => "taken over by a newer connection",
                DisconnectReason::StoreFailed => "store failure",
                DisconnectReason::DiskFull => "disk full",
                DisconnectReason::TopicAlias => "topic alias not allowed",
                DisconnectReason::Retain => "retain not supported",
            },
        }
    }
}

/// A connection's state after CONNECT.
struct Session {
    device_id: DeviceId,
    auth: DeviceAuth,
    version: Version,
    errors_topic: String,
    subscribed_errors: bool,
    client_max_packet: usize,
    /// QoS 2 packet ids acknowledged with PUBREC and awaiting PUBREL.
    awaiting_rel: HashSet<u16>,
}

impl Endpoint {
    pub fn new(ingest: Ingest, cfg: EndpointConfig) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            slots: Slots::new("mqtt", cfg.max_connections, ingest.metrics.mqtt_slots()),
            auth_failures: Arc::new(FailureThrottle::new(Backoff {
                free: cfg.auth_failures_free,
                first: AUTH_FIRST_LOCK,
                max: AUTH_MAX_LOCK,
                forget_after: Duration::from_secs(3600),
                max_keys: LIMIT_KEYS,
            })),
            address_failures: Arc::new(FailureThrottle::new(Backoff {
                free: cfg.auth_failures_free.saturating_mul(10),
                first: AUTH_FIRST_LOCK,
                max: AUTH_MAX_LOCK,
                forget_after: Duration::from_secs(3600),
                max_keys: LIMIT_KEYS,
            })),
            device_connects: RateLimiter::new(
                cfg.device_connects_per_minute,
                cfg.device_connect_burst,
                LIMIT_KEYS,
            ),
            ingest,
            cfg,
            sessions: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(1),
        })
    }

    /// The failed-authentication throttles, by the scope they are shared under with the other
    /// instances (`crate::cluster::throttles`): per address and device id, and per address.
    pub fn failure_throttles(&self) -> [(&'static str, Arc<FailureThrottle<String>>); 2] {
        [
            ("mqtt-device", self.auth_failures.clone()),
            ("mqtt-address", self.address_failures.clone()),
        ]
    }

    /// Ends the connections of devices whose credentials are revoked or replaced, as the
    /// registry announces them, until `stop`.
    pub async fn end_revoked(self: Arc<Self>, stop: CancellationToken) {
        let mut changes = self.ingest.registry.subscribe_credential_changes();
        loop {
            let id = tokio::select! {
                r = changes.recv() => match r {
                    Ok(id) => id,
                    // Missed some: end every connection whose credentials no longer hold.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        self.end_where(|d| self.ingest.registry.device_auth(d).is_none());
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                () = stop.cancelled() => return,
            };
            let n = self.end_where(|d| *d == id);
            tracing::info!(device_id = %id, connections = n, "device credentials changed: its connections are ended");
        }
    }

    /// Ends the connections of the devices `which` picks; how many.
    fn end_where(&self, which: impl Fn(&DeviceId) -> bool) -> usize {
        let Ok(s) = self.sessions.lock() else {
            return 0;
        };
        let mut n = 0;
        for ((d, _), (_, token)) in s.iter() {
            if which(d) {
                token.cancel();
                n += 1;
            }
        }
        n
    }

    /// Accepts devices until `stop` is cancelled; with `tls`, each connection first completes
    /// a TLS handshake (MQTTS). Connections run on `tracker`; on `stop` each stops reading,
    /// waits for its pending commits, sends their acknowledgements and closes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        stop: CancellationToken,
        tracker: TaskTracker,
    ) {
        let what = if tls.is_some() { "mqtts" } else { "mqtt" };
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((sock, peer)) => {
                        // No slot: the socket is closed here (counted and logged by `slots`).
                        // The slot's token, a child of `stop`, is the connection's `stop`: it
                        // is also cancelled if the connection is evicted before its CONNECT.
                        let now = std::time::Instant::now();
                        let Some(slot) = self.slots.admit(now, stop.child_token()) else {
                            continue;
                        };
                        let _ = sock.set_nodelay(true);
                        let (ep, stop) = (self.clone(), slot.token());
                        // Two spawns, not one future with two branches: a task is as big as
                        // its largest branch, and the TLS one holds a whole rustls session
                        // (a plain connection was 5.4 KiB instead of 1.5).
                        match tls.clone() {
                            None => tracker.spawn(ep.handle(sock, peer, stop, None, slot)),
                            Some(acceptor) => {
                                tracker.spawn(ep.handle_tls(acceptor, sock, peer, stop, slot))
                            }
                        };
                    }
                    Err(e) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, what, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        tracing::info!(what, "endpoint stopped accepting");
    }

    /// The TLS handshake, then the connection; a verified client certificate identifies the
    /// device. The handshake counts against the connect timeout, which runs from the accept.
    async fn handle_tls(
        self: Arc<Self>,
        acceptor: TlsAcceptor,
        sock: tokio::net::TcpStream,
        peer: SocketAddr,
        stop: CancellationToken,
        slot: Slot,
    ) {
        let handshake = tokio::time::timeout_at(self.connect_by(&slot), acceptor.accept(sock));
        let handshake = tokio::select! {
            r = handshake => r,
            // Stopping, or evicted for a newer connection.
            () = stop.cancelled() => return,
        };
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "mqtts handshake failed");
                self.ingest.metrics.refused("tls_handshake");
                return;
            }
            Err(_) => {
                self.ingest.metrics.refused("tls_handshake_timeout");
                return;
            }
        };
        let cn = super::tls::peer_common_name(tls.get_ref().1);
        self.handle(tls, peer, stop, cn, slot).await;
    }

    /// When a connection that has not sent CONNECT is closed: the connect timeout after its
    /// accept, whatever its TLS handshake took.
    fn connect_by(&self, slot: &Slot) -> Instant {
        Instant::from_std(slot.admitted()) + self.cfg.connect_timeout
    }

    fn limits(&self) -> ServerLimits {
        ServerLimits {
            receive_max: self.cfg.max_inflight,
            max_packet: u32::try_from(self.cfg.max_packet).unwrap_or(u32::MAX),
        }
    }

    /// Runs one connection. `cert_cn` is the common name of a verified TLS client
    /// certificate, which identifies the device without a password. `stop` is also cancelled
    /// if the connection is evicted from its `slot` before its CONNECT.
    async fn handle<S>(
        self: Arc<Self>,
        mut sock: S,
        peer: SocketAddr,
        stop: CancellationToken,
        cert_cn: Option<String>,
        slot: Slot,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut buf = BytesMut::with_capacity(1024);
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout_at(self.connect_by(&slot), read_connect(&mut sock, &mut buf, self.cfg.max_packet)) => r,
        };
        let connect = match first {
            Ok(Ok(c)) => c,
            Ok(Err(ConnectError::Codec(CodecError::Version(v)))) => {
                tracing::debug!(%peer, version = v, "mqtt connect with unsupported version");
                self.ingest.metrics.refused("protocol_version");
                // Answer in 3.1.1 form, which every client version can read.
                let _ = sock
                    .write_all(&codec::connack(
                        Version::V311,
                        ConnectCode::UnsupportedVersion,
                        self.limits(),
                    ))
                    .await;
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "mqtt connection closed before CONNECT");
                self.ingest.metrics.refused("malformed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "mqtt connection sent no CONNECT in time");
                self.ingest.metrics.refused("connect_timeout");
                return;
            }
        };
        let version = connect.version;
        let refuse = |code: ConnectCode, reason: &'static str| {
            self.ingest.metrics.refused(reason);
            codec::connack(version, code, self.limits())
        };
        // A CONNECT: the slot is no longer evictable (false: it was evicted just now).
        if !slot.working() {
            return;
        }
        // A device id that keeps failing to authenticate from an address, or an address that
        // keeps failing for many ids, waits before it is heard again.
        let address_key = peer.ip().to_string();
        let user_key = format!(
            "{address_key} {}",
            connect.username.as_deref().unwrap_or_default()
        );
        let now = std::time::Instant::now();
        if self
            .auth_failures
            .wait(std::slice::from_ref(&user_key), now)
            .is_some()
            || self
                .address_failures
                .wait(std::slice::from_ref(&address_key), now)
                .is_some()
        {
            let _ = sock
                .write_all(&refuse(ConnectCode::RateExceeded, "auth_failures"))
                .await;
            return;
        }
        let identified = match (&cert_cn, &connect.username, &connect.password) {
            // A client certificate names the device; a user name, if also given, must agree.
            (Some(cn), user, _) => {
                if user.as_ref().is_some_and(|u| u != cn) {
                    tracing::warn!(%peer, cn = %cn, "mqtt connect refused: user name differs from the certificate");
                    let _ = sock
                        .write_all(&refuse(ConnectCode::BadCredentials, "certificate_mismatch"))
                        .await;
                    return;
                }
                self.ingest.registry.authenticate_certificate(cn)
            }
            (None, Some(username), Some(password)) => {
                self.ingest.registry.authenticate(username, password)
            }
            (None, _, _) => {
                let _ = sock
                    .write_all(&refuse(ConnectCode::BadCredentials, "no_credentials"))
                    .await;
                return;
            }
        };
        let Some((device_id, auth)) = identified else {
            tracing::warn!(
                %peer,
                username = connect.username.as_deref().unwrap_or(""),
                certificate = cert_cn.as_deref().unwrap_or(""),
                "mqtt connect refused: unknown device or wrong secret"
            );
            let now = std::time::Instant::now();
            self.auth_failures.failed(&[user_key], now);
            self.address_failures.failed(&[address_key], now);
            let _ = sock
                .write_all(&refuse(ConnectCode::BadCredentials, "bad_credentials"))
                .await;
            return;
        };
        if let Err(wait) = self
            .device_connects
            .take(&device_id, std::time::Instant::now())
        {
            tracing::warn!(%peer, device_id = %device_id, retry_in_ms = wait.as_millis() as u64, "mqtt connect refused: the device reconnects too often");
            let _ = sock
                .write_all(&refuse(ConnectCode::RateExceeded, "device_connect_rate"))
                .await;
            return;
        }
        if connect.client_id.is_empty() && !connect.clean {
            let _ = sock
                .write_all(&refuse(ConnectCode::BadClientId, "bad_client_id"))
                .await;
            return;
        }
        if connect.will.as_ref().is_some_and(|w| w.retain) {
            // Retained messages are not offered: MQTT 5 wants a Will Retain refused at
            // CONNECT (0x9A); 3.1.1 has no such code and gets "not authorised".
            tracing::warn!(%peer, device_id = %device_id, "mqtt connect refused: will retain is not supported");
            let _ = sock
                .write_all(&refuse(ConnectCode::RetainNotSupported, "will_retain"))
                .await;
            return;
        }
        if let Some(will) = &connect.will {
            let own_status = Topic::parse(&will.topic)
                .is_ok_and(|t| t.device_id == device_id && t.kind == TopicKind::Status);
            if !own_status {
                tracing::warn!(%peer, device_id = %device_id, "mqtt connect refused: will topic is not the device's status topic");
                let _ = sock
                    .write_all(&refuse(ConnectCode::NotAuthorized, "will_topic"))
                    .await;
                return;
            }
        }

        // A newer connection with the same client id takes over (MQTT's rule); an empty client
        // id never takes over anything.
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let conn_token = stop.child_token();
        let taken_over = Arc::new(AtomicBool::new(false));
        let session_key = (
            device_id.clone(),
            if connect.client_id.is_empty() {
                format!("\u{0}{conn_id}")
            } else {
                connect.client_id.clone()
            },
        );
        if let Ok(mut s) = self.sessions.lock()
            && let Some((_, old)) = s.insert(session_key.clone(), (conn_id, conn_token.clone()))
        {
            old.cancel();
        }
        if sock
            .write_all(&codec::connack(
                version,
                ConnectCode::Accepted,
                self.limits(),
            ))
            .await
            .is_err()
        {
            self.forget(&session_key, conn_id);
            // It may have taken over a connection, which then reported no end of its own.
            let _ = self
                .ingest
                .registry
                .set_device_status(
                    device_id.clone(),
                    Some(false),
                    None,
                    now_ms(),
                    Some(conn_id),
                )
                .await;
            return;
        }
        self.ingest.metrics.mqtt_connected_devices.inc();
        tracing::info!(%peer, device_id = %device_id, ?version, keep_alive_s = connect.keep_alive_s, "device connected");
        let _ = self
            .ingest
            .registry
            .set_device_status(device_id.clone(), Some(true), None, now_ms(), Some(conn_id))
            .await;

        let mut session = Session {
            errors_topic: Topic::errors_of(&device_id),
            device_id: device_id.clone(),
            auth,
            version,
            subscribed_errors: false,
            client_max_packet: connect.client_max_packet.map_or(usize::MAX, |m| m as usize),
            awaiting_rel: HashSet::new(),
        };
        let keep_alive = (connect.keep_alive_s > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive_s) * 1500));
        let far = Duration::from_secs(86_400 * 365);
        let mut deadline = Instant::now() + keep_alive.unwrap_or(far);
        let max_inflight = usize::from(self.cfg.max_inflight).max(1);
        // What is owed to the device, in order: packets, and acknowledgements waiting for
        // their commit. One task reads, waits for commits and writes, so an idle connection
        // is one small task and no buffers.
        let mut owed: VecDeque<Out> = VecDeque::new();
        let mut bytes: Vec<u8> = Vec::new();

        let end = 'conn: loop {
            // Handle every packet already read, while fewer than max_inflight are owed.
            while owed.len() < max_inflight {
                match codec::read(version, &mut buf, self.cfg.max_packet) {
                    Ok(Some(packet)) => {
                        deadline = Instant::now() + keep_alive.unwrap_or(far);
                        // Boxed: its state lives on the heap only while a packet is being
                        // handled, not in every idle connection's task.
                        let handled = Box::pin(self.on_packet(&mut session, packet, &mut owed));
                        if let Some(end) = handled.await {
                            break 'conn end;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(device_id = %device_id, error = %e, "mqtt packet refused; closing");
                        break 'conn End::Server(match e {
                            CodecError::TooLarge { .. } => DisconnectReason::TooLarge,
                            _ => DisconnectReason::Malformed,
                        });
                    }
                }
            }
            // Send what is ready: everything up to the first acknowledgement still waiting
            // for its commit.
            if let Err(end) = self.take_ready(&mut owed, &mut bytes) {
                break end;
            }
            if !bytes.is_empty() && Box::pin(write_out(&mut sock, &mut bytes)).await.is_err() {
                break End::Lost;
            }
            if buf.is_empty() {
                // Idle between packets: hold no read buffer (the next read goes through a
                // small one on the task), so ten thousand quiet devices cost little memory.
                if buf.capacity() > 0 {
                    buf = BytesMut::new();
                }
            } else if buf.capacity() - buf.len() < 1024 {
                buf.reserve(8192);
            }
            let reading = owed.len() < max_inflight;
            tokio::select! {
                biased;
                _ = conn_token.cancelled() => {
                    break if stop.is_cancelled() {
                        End::Server(DisconnectReason::Shutdown)
                    } else if self.holds(&session_key, conn_id) {
                        // Still this client's connection: its credentials were revoked or
                        // replaced (`end_revoked`).
                        End::Server(DisconnectReason::NotAuthorized)
                    } else {
                        taken_over.store(true, Ordering::Relaxed);
                        End::Server(DisconnectReason::TakenOver)
                    };
                }
                r = head_commit(&mut owed) => {
                    if let Err(end) = self.committed(&mut owed, r) {
                        break end;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break End::Server(DisconnectReason::KeepAlive),
                r = read_some(&mut sock, &mut buf), if reading => match r {
                    Ok(0) | Err(_) => break End::Lost,
                    Ok(_) => {}
                },
            }
        };

        // Send every acknowledgement still owed (after its commit), then close.
        // After a failed commit nothing behind it is acknowledged (the device sends it again),
        // but what was already acknowledged and the DISCONNECT still go out.
        let commit_failed = matches!(
            end,
            End::Server(DisconnectReason::StoreFailed | DisconnectReason::DiskFull)
        );
        if end != End::Lost {
            if !commit_failed {
                loop {
                    if self.take_ready(&mut owed, &mut bytes).is_err() || owed.is_empty() {
                        break;
                    }
                    let r = head_commit(&mut owed).await;
                    if self.committed(&mut owed, r).is_err() {
                        break;
                    }
                }
            }
            if let End::Server(reason) = end
                && let Some(last) = codec::disconnect(version, reason)
            {
                bytes.extend_from_slice(&last);
            }
            if !bytes.is_empty() {
                let _ = write_out(&mut sock, &mut bytes).await;
            }
        }
        let _ = tokio::time::timeout(WRITE_TIMEOUT, sock.shutdown()).await;
        let last_connection = self.forget(&session_key, conn_id);
        self.ingest.metrics.mqtt_connected_devices.dec();
        tracing::info!(device_id = %device_id, reason = end.label(), "device disconnected");

        // Every connection reports its end; the registry marks the device offline once none
        // of its connections is live (a reconnect can overtake this close). The will is
        // published only when this was the device's last connection and was not taken over.
        let will = connect
            .will
            .filter(|_| last_connection && !taken_over.load(Ordering::Relaxed))
            .filter(|_| end.publishes_will());
        let battery = will
            .as_ref()
            .and_then(|w| pipeline::parse_status(&w.payload).ok())
            .and_then(|s| s.battery);
        let online = if taken_over.load(Ordering::Relaxed) {
            None
        } else {
            Some(false)
        };
        let _ = self
            .ingest
            .registry
            .set_device_status(device_id.clone(), online, battery, now_ms(), Some(conn_id))
            .await;
        if will.is_some() {
            tracing::info!(device_id = %device_id, "last will: device offline");
        }
    }

    /// Moves what is ready at the front of `owed` into `bytes`: packets, and acknowledgements
    /// whose commit has answered (or that need none).
    fn take_ready(&self, owed: &mut VecDeque<Out>, bytes: &mut Vec<u8>) -> Result<(), End> {
        while let Some(front) = owed.front_mut() {
            match front {
                Out::Packet(b) => bytes.extend_from_slice(b),
                Out::Commit(c) => {
                    if let Some(rx) = c.commit.as_mut() {
                        match rx.try_recv() {
                            Err(oneshot::error::TryRecvError::Empty) => break,
                            Ok(Ok(done)) => self.ingest.count(c.outcome, &done),
                            Ok(Err(e)) => return Err(store_failed(&e)),
                            Err(_) => return Err(End::Server(DisconnectReason::StoreFailed)),
                        }
                        c.commit = None;
                    }
                    for b in [c.ack.take(), c.then.take()].into_iter().flatten() {
                        bytes.extend_from_slice(&b);
                    }
                }
            }
            owed.pop_front();
        }
        if owed.is_empty() && owed.capacity() > 64 {
            *owed = VecDeque::new();
        }
        Ok(())
    }

    /// The head acknowledgement's commit answered: count it, or end the connection if it failed.
    fn committed(
        &self,
        owed: &mut VecDeque<Out>,
        r: Result<Result<Committed, StoreError>, ()>,
    ) -> Result<(), End> {
        match r {
            Ok(Ok(done)) => {
                if let Some(Out::Commit(c)) = owed.front_mut() {
                    self.ingest.count(c.outcome, &done);
                    c.commit = None;
                }
                Ok(())
            }
            Ok(Err(e)) => Err(store_failed(&e)),
            Err(()) => Err(End::Server(DisconnectReason::StoreFailed)),
        }
    }

    /// Whether `conn_id` is still the connection of its (device, client id).
    fn holds(&self, key: &(DeviceId, String), conn_id: u64) -> bool {
        self.sessions
            .lock()
            .is_ok_and(|s| s.get(key).is_some_and(|(id, _)| *id == conn_id))
    }

    /// Removes a finished connection; `true` when the device has no other connection left.
    fn forget(&self, key: &(DeviceId, String), conn_id: u64) -> bool {
        let Ok(mut s) = self.sessions.lock() else {
            return true;
        };
        if s.get(key).is_some_and(|(id, _)| *id == conn_id) {
            s.remove(key);
        }
        // Keyed (device, client id) in order: the device's first remaining session, if any,
        // is the first key at or after (device, "").
        s.range((key.0.clone(), String::new())..)
            .next()
            .is_none_or(|((d, _), _)| *d != key.0)
    }

    /// Handles one packet; `Some(end)` ends the connection.
    async fn on_packet(
        &self,
        s: &mut Session,
        packet: Inbound,
        out: &mut VecDeque<Out>,
    ) -> Option<End> {
        let mut send = |o: Out| {
            out.push_back(o);
            std::future::ready(true)
        };
        match packet {
            Inbound::Publish {
                topic,
                pkid,
                qos,
                retain,
                payload,
                content_type,
                uses_topic_alias,
            } => {
                if uses_topic_alias {
                    return Some(End::Server(DisconnectReason::TopicAlias));
                }
                if retain {
                    // CONNACK said "retain available: 0" (MQTT 5), so this is a protocol error
                    // (0x9A); 3.1.1 cannot refuse one message, and accepting it would promise
                    // a retained copy that is never kept: closed, not acknowledged, not stored.
                    tracing::warn!(device_id = %s.device_id, "retained publish refused: retain is not supported; closing");
                    return Some(End::Server(DisconnectReason::Retain));
                }
                let kind = match Topic::parse(&topic) {
                    Ok(t) if t.device_id == s.device_id && t.kind != TopicKind::Errors => t.kind,
                    _ => {
                        self.ingest.metrics.mqtt_publishes_denied.inc();
                        tracing::warn!(device_id = %s.device_id, topic = %topic, "publish refused: not the device's own topic");
                        // MQTT 5 can say no in the acknowledgement; 3.1.1 can only disconnect.
                        if s.version == Version::V5 && qos > 0 {
                            let ack = codec::publish_ack(s.version, qos, pkid, PubOutcome::Denied);
                            return (!send(Out::Commit(Box::new(CommitOut {
                                commit: None,
                                outcome: PubOutcome::Denied,
                                ack,
                                then: None,
                            })))
                            .await)
                                .then_some(End::Lost);
                        }
                        return Some(End::Server(DisconnectReason::NotAuthorized));
                    }
                };
                if qos == 2 && s.awaiting_rel.contains(&pkid) {
                    // A resent QoS 2 publish we already took: acknowledge again, store nothing.
                    let ack = codec::publish_ack(s.version, qos, pkid, PubOutcome::Stored);
                    return (!send(Out::Commit(Box::new(CommitOut {
                        commit: None,
                        outcome: PubOutcome::Stored,
                        ack,
                        then: None,
                    })))
                    .await)
                        .then_some(End::Lost);
                }
                let submitted = match self
                    .ingest
                    .submit(
                        &s.device_id,
                        &s.auth,
                        kind,
                        &topic,
                        payload,
                        content_type.as_deref(),
                    )
                    .await
                {
                    Ok(sub) => sub,
                    Err(_) => return Some(End::Server(DisconnectReason::Shutdown)),
                };
                if qos == 2 {
                    s.awaiting_rel.insert(pkid);
                }
                let then = match (&submitted.rejection, s.subscribed_errors) {
                    (Some(r), true) => {
                        let body = serde_json::json!({
                            "time": format_rfc3339(now_ms()),
                            "topic": topic,
                            "reason": r.reason,
                        })
                        .to_string();
                        let p = codec::publish(s.version, &s.errors_topic, Bytes::from(body));
                        (p.len() <= s.client_max_packet).then_some(p)
                    }
                    _ => None,
                };
                let ack = codec::publish_ack(s.version, qos, pkid, submitted.outcome);
                let ok = send(Out::Commit(Box::new(CommitOut {
                    commit: submitted.commit,
                    outcome: submitted.outcome,
                    ack,
                    then,
                })))
                .await;
                (!ok).then_some(End::Lost)
            }
            Inbound::Subscribe { pkid, filters } => {
                let granted: Vec<bool> = filters.iter().map(|f| *f == s.errors_topic).collect();
                if granted.iter().any(|g| *g) {
                    s.subscribed_errors = true;
                }
                if granted.iter().any(|g| !*g) {
                    tracing::warn!(device_id = %s.device_id, ?filters, "subscription refused: only the device's errors topic is allowed");
                }
                (!send(Out::Packet(codec::suback(s.version, pkid, &granted))).await)
                    .then_some(End::Lost)
            }
            Inbound::Unsubscribe { pkid, count } => {
                s.subscribed_errors = false;
                (!send(Out::Packet(codec::unsuback(s.version, pkid, count))).await)
                    .then_some(End::Lost)
            }
            Inbound::PubRel { pkid } => {
                s.awaiting_rel.remove(&pkid);
                (!send(Out::Packet(codec::pubcomp(s.version, pkid))).await).then_some(End::Lost)
            }
            Inbound::PingReq => {
                (!send(Out::Packet(codec::pingresp(s.version))).await).then_some(End::Lost)
            }
            Inbound::Disconnect { with_will } => Some(End::Clean { with_will }),
            Inbound::Ignored => None,
            Inbound::Violation(what) => {
                tracing::warn!(device_id = %s.device_id, what, "mqtt protocol violation; closing");
                Some(End::Server(DisconnectReason::Protocol))
            }
        }
    }
}

/// Reads what the socket has: into `buf` when a packet is partly there, else through a
/// small buffer on the stack, so an idle connection's `buf` can stay unallocated.
async fn read_some<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    if !buf.is_empty() {
        return rd.read_buf(buf).await;
    }
    let mut small = [0u8; 128];
    let n = rd.read(&mut small).await?;
    buf.extend_from_slice(&small[..n]);
    Ok(n)
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("connection closed")]
    Closed,
}

async fn read_connect<S: AsyncRead + Unpin>(
    sock: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<codec::Connect, ConnectError> {
    loop {
        if let Some(c) = codec::read_connect(buf, max)? {
            return Ok(c);
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(2048);
        }
        match sock.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(ConnectError::Closed),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod memory {
    use super::*;

    /// What an idle connection holds besides its socket: one task's state (it reads, waits
    /// for commits and writes) and nothing else until a packet arrives. `vigil-sim bench`
    /// measures the whole per-device figure; this keeps the task from growing unnoticed.
    #[tokio::test]
    async fn an_idle_connection_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = crate::telemetry::Metrics::new();
        let ingest = Ingest {
            registry: crate::registry::Registry::open(
                dir.path(),
                crate::registry::Profiles::built_in().unwrap(),
            )
            .await
            .unwrap(),
            store: crate::store::Store::open(dir.path(), 10, 10, metrics.clone()).unwrap(),
            metrics,
        };
        let ep = Endpoint::new(
            ingest,
            EndpointConfig {
                max_packet: 1024,
                connect_timeout: Duration::from_secs(1),
                max_inflight: 10,
                max_connections: 10,
                device_connects_per_minute: 30,
                device_connect_burst: 20,
                auth_failures_free: 10,
            },
        );
        // Exactly what `serve` spawns for a plain TCP connection.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (sock, peer) = listener.accept().await.unwrap();
        let slot = ep
            .slots
            .admit(std::time::Instant::now(), CancellationToken::new())
            .unwrap();
        let task = ep.handle(sock, peer, CancellationToken::new(), None, slot);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1600, "connection task state {size} bytes");
        assert!(std::mem::size_of::<Out>() <= 40);
    }
}
