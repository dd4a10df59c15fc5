//! External-broker mode: Vigil as an MQTT 5 client of Mosquitto, EMQX or HiveMQ.
//!
//! Vigil subscribes to the device topics (with `mqtt.share_group` set, through a shared
//! subscription `$share/{group}/vigil/v1/devices/+/…`, so several Vigil instances split the
//! load) with a persistent session (clean start off, a session expiry), so that what devices
//! publish while Vigil is down waits in the broker. Acknowledgements are manual: each QoS 1 publish is
//! acknowledged, in arrival order, only after its durable commit — the same promise as the
//! embedded endpoint. Redeliveries are normal; the store is idempotent.
//!
//! Three tasks (rumqtt #1025: an event loop that waits on its own full channel freezes):
//! the **event loop** only polls and forwards publishes; the **processor** decodes, validates
//! and queues them for the store; the **acker** waits for each commit in order and acknowledges
//! with `try_ack`. Every queue between them holds at least the broker's receive maximum, the
//! most unacknowledged publishes the broker will send, so none can fill while another waits.
//!
//! Device identity comes from the topic, so the broker must enforce topic ACLs: see
//! `vigil broker mosquitto-config`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Ingest;
use super::codec::PubOutcome;
use super::pipeline::Rejection;
use super::topic::{Topic, TopicKind};
use crate::config::MqttConfig;
use crate::domain::{format_rfc3339, now_ms};
use crate::store::{Committed, DeadLetter, StoreError};

/// Why the broker link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("mqtt.url: {0}")]
    Url(String),
    #[error("mqtt.ca_file: {0}")]
    Ca(String),
}

/// The topic filters Vigil subscribes to (without the `$share/{group}/` prefix).
pub const FILTERS: [&str; 3] = [
    "vigil/v1/devices/+/readings",
    "vigil/v1/devices/+/gatt/+",
    "vigil/v1/devices/+/status",
];

/// A publish handed to the store, waiting for its commit before its acknowledgement.
struct Pending {
    publish: Publish,
    /// The broker connection it arrived on (counted from 1 at each CONNACK).
    connection: u64,
    commit: Option<oneshot::Receiver<Result<Committed, StoreError>>>,
    outcome: PubOutcome,
    rejection: Option<(String, Rejection)>,
}

/// Builds the client options from the `[mqtt]` settings.
pub fn options(cfg: &MqttConfig) -> Result<MqttOptions, ExternalError> {
    let broker = BrokerAddress::parse(&cfg.url)?;
    let tls = broker.tls;
    let mut o = MqttOptions::new(cfg.client_id.clone(), broker.host, broker.port);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(cfg.session_expiry_s));
    o.set_manual_acks(true);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_receive_maximum(Some(cfg.max_inflight));
    o.set_max_packet_size(Some(
        u32::try_from(cfg.max_packet_bytes).unwrap_or(u32::MAX),
    ));
    o.set_request_channel_capacity(usize::from(cfg.max_inflight) * 2 + 16);
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        o.set_credentials(u.clone(), p.clone());
    }
    if tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            client_tls(cfg)?,
        )));
    }
    Ok(o)
}

/// The broker's URL (`mqtt://host[:port]` or `mqtts://host[:port]`) taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub tls: bool,
    /// Without the brackets of an IPv6 address.
    pub host: String,
    /// 1883, or 8883 for `mqtts://`, when the URL names none.
    pub port: u16,
}

impl BrokerAddress {
    pub fn parse(url: &str) -> Result<BrokerAddress, ExternalError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(ExternalError::Url(format!(
                "{url:?} must start with mqtt:// or mqtts://"
            )));
        };
        let hostport = rest.trim_end_matches('/');
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>()
                    .map_err(|_| ExternalError::Url(format!("bad port in {url:?}")))?,
            ),
            None => (hostport, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(ExternalError::Url(format!("no host in {url:?}")));
        }
        Ok(BrokerAddress {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

fn client_tls(cfg: &MqttConfig) -> Result<Arc<rustls::ClientConfig>, ExternalError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            for c in
                CertificateDer::pem_file_iter(path).map_err(|e| ExternalError::Ca(e.to_string()))?
            {
                let c = c.map_err(|e| ExternalError::Ca(e.to_string()))?;
                roots.add(c).map_err(|e| ExternalError::Ca(e.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(ExternalError::Ca(
                    "no system CA certificates found; set mqtt.ca_file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ExternalError::Ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Runs the broker link until `stop`; then acknowledges what was committed and disconnects.
pub async fn run(ingest: Ingest, cfg: MqttConfig, opts: MqttOptions, stop: CancellationToken) {
    let cap = usize::from(cfg.max_inflight) + 16;
    let (client, mut eventloop) = AsyncClient::new(opts, cap * 2);
    let (inbound_tx, inbound_rx) = mpsc::channel::<(u64, Publish)>(cap);
    let connection = Arc::new(AtomicU64::new(0));
    let (pending_tx, pending_rx) = mpsc::channel::<Pending>(cap);
    let acker_done = CancellationToken::new();

    let processor = tokio::spawn(process(ingest.clone(), inbound_rx, pending_tx));
    // Commits failed in a row (a full disk, say): each reconnect then waits longer, so the
    // broker is not asked to redeliver ten times a second for as long as the store is down.
    let store_failing = Arc::new(AtomicBool::new(false));
    let mut store_streak = 0u32;
    let acker = tokio::spawn(ack_in_order(
        ingest.clone(),
        client.clone(),
        pending_rx,
        acker_done.clone(),
        store_failing.clone(),
        connection.clone(),
    ));

    let filters: Vec<Filter> = FILTERS
        .iter()
        .map(|f| {
            let filter = if cfg.share_group.is_empty() {
                (*f).to_owned()
            } else {
                format!("$share/{}/{f}", cfg.share_group)
            };
            Filter::new(filter, QoS::AtLeastOnce)
        })
        .collect();
    let mut backoff = Duration::from_millis(100);
    let mut inbound = Some(inbound_tx);
    // A subscription still to be handed to the client (its request queue can be full of
    // acknowledgements right after a reconnect): retried until it is taken.
    let mut to_subscribe = false;
    loop {
        if to_subscribe && client.try_subscribe_many(filters.clone()).is_ok() {
            to_subscribe = false;
        }
        tokio::select! {
            biased;
            // Every acknowledgement owed has been handed to the event loop: leave.
            _ = acker_done.cancelled() => break,
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(100);
                    ingest.metrics.broker_connects.inc();
                    connection.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(session_present = ack.session_present, "connected to the external broker");
                    // Subscribe on every connect, even when the broker says it kept the
                    // session: Mosquitto 2.0.11 restores a persisted session after its own
                    // restart without routing new publishes to its shared subscription, so
                    // trusting `session_present` lost every reading from then on. Subscribing
                    // again to the same filter is idempotent.
                    ingest.metrics.broker_subscribed.set(0);
                    to_subscribe = true;
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack.return_codes.iter().filter(|c| !matches!(c, rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_))).count();
                    if refused > 0 {
                        tracing::error!(?ack.return_codes, "the broker refused some subscriptions: check Vigil's ACL");
                    } else {
                        ingest.metrics.broker_subscribed.set(1);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // After `stop`, new publishes are left unacknowledged: the broker keeps them
                    // in the session for the next start.
                    if let Some(tx) = &inbound
                        && !stop.is_cancelled()
                        && tx.send((connection.load(Ordering::Relaxed), p)).await.is_err()
                    {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    ingest.metrics.broker_subscribed.set(0);
                    store_streak = if store_failing.load(Ordering::Relaxed) {
                        store_streak + 1
                    } else {
                        0
                    };
                    let wait = backoff.max(store_pause(store_streak));
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "external broker connection failed");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = acker_done.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            },
            () = tokio::time::sleep(Duration::from_millis(20)), if to_subscribe => {}
            _ = stop.cancelled(), if inbound.is_some() => {
                // Stop taking publishes; the processor and acker drain what they have.
                inbound = None;
            }
        }
    }
    let _ = processor.await;
    let _ = acker.await;
    let _ = client.try_disconnect();
    // Give the disconnect a moment to leave.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    tracing::info!("external broker link stopped");
}

/// Decodes, validates and queues each publish; passes it on to the acker with its commit.
async fn process(
    ingest: Ingest,
    mut rx: mpsc::Receiver<(u64, Publish)>,
    tx: mpsc::Sender<Pending>,
) {
    while let Some((connection, p)) = rx.recv().await {
        let pending = match submit(&ingest, &p).await {
            Ok(pending) => Pending {
                connection,
                ..pending
            },
            Err(e) => {
                tracing::error!(error = %e, "store unavailable; publish left unacknowledged");
                return;
            }
        };
        if tx.send(pending).await.is_err() {
            return;
        }
    }
}

async fn submit(ingest: &Ingest, p: &Publish) -> Result<Pending, StoreError> {
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    let content_type = p.properties.as_ref().and_then(|pr| pr.content_type.clone());
    let mut pending = Pending {
        publish: p.clone(),
        connection: 0,
        commit: None,
        outcome: PubOutcome::Stored,
        rejection: None,
    };
    let parsed = Topic::parse(&topic);
    let device = parsed
        .as_ref()
        .ok()
        .filter(|t| t.kind != TopicKind::Errors)
        .and_then(|t| Some((t.clone(), ingest.registry.device_auth(&t.device_id)?)));
    let Some((t, auth)) = device else {
        // Not a device we know, or not a device topic: keep it as a dead letter where we can
        // name a device, count it, and acknowledge it so it is not redelivered for ever.
        ingest.metrics.mqtt_publishes_denied.inc();
        tracing::warn!(topic = %topic, "publish from an unknown or revoked device (check the broker's ACL)");
        if let Ok(t) = &parsed {
            let rx = ingest
                .store
                .submit_dead_letter(DeadLetter {
                    time_ms: now_ms(),
                    device_id: t.device_id.clone(),
                    patient_id: None,
                    topic: topic.clone(),
                    reason: "unknown or revoked device".into(),
                    payload: p.payload.to_vec(),
                })
                .await?;
            pending.commit = Some(rx);
            pending.outcome = PubOutcome::Denied;
        }
        return Ok(pending);
    };
    let sub = ingest
        .submit(
            &t.device_id,
            &auth,
            t.kind,
            &topic,
            p.payload.clone(),
            content_type.as_deref(),
        )
        .await?;
    pending.commit = sub.commit;
    pending.outcome = sub.outcome;
    pending.rejection = sub.rejection.map(|r| (Topic::errors_of(&t.device_id), r));
    Ok(pending)
}

/// How long a reconnect waits after `streak` connections in a row ended because a commit
/// failed: none for none, then 1 s doubling to 10 s (so readings flow again within 10 s of the
/// store recovering).
fn store_pause(streak: u32) -> Duration {
    match streak {
        0 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 1).min(4)).min(Duration::from_secs(10)),
    }
}

/// Acknowledges each publish after its commit, in arrival order.
///
/// This task never waits on the event loop: an acknowledgement the client's request channel
/// cannot take yet waits here, in order, while the task goes on receiving. (Waiting would
/// close the cycle event loop → processor → acker → event loop, which deadlocks whenever the
/// broker sends more unacknowledged publishes than the queues hold.)
async fn ack_in_order(
    ingest: Ingest,
    client: AsyncClient,
    mut rx: mpsc::Receiver<Pending>,
    done: CancellationToken,
    store_failing: Arc<AtomicBool>,
    connection: Arc<AtomicU64>,
) {
    // The connection last ended for a failed commit: one DISCONNECT per connection, and none
    // for a publish of a connection already gone (a queued DISCONNECT would end the next one).
    let mut ended = 0u64;
    let mut unsent: std::collections::VecDeque<Publish> = std::collections::VecDeque::new();
    let mut open = true;
    let mut drain_deadline = None;
    loop {
        while let Some(p) = unsent.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            unsent.pop_front();
        }
        if !open {
            // Shutting down: hand over what is left, for a while; the broker redelivers the rest.
            let deadline = *drain_deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(10));
            if unsent.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        tokio::select! {
            msg = rx.recv() => match msg {
                None => open = false,
                Some(p) => {
                    if let Some(commit) = p.commit {
                        match commit.await {
                            Ok(Ok(c)) => {
                                store_failing.store(false, Ordering::Relaxed);
                                ingest.count(p.outcome, &c);
                            }
                            _ => {
                                // Not stored: no acknowledgement. Reconnecting makes the broker
                                // send the session's unacknowledged publishes again; once per
                                // failed batch is enough.
                                if !store_failing.swap(true, Ordering::Relaxed) {
                                    tracing::error!("commit failed; reconnecting so the broker redelivers");
                                }
                                let now = connection.load(Ordering::Relaxed);
                                if p.connection == now && ended != now {
                                    ended = now;
                                    let _ = client.try_disconnect();
                                }
                                continue;
                            }
                        }
                    }
                    if let Some((topic, r)) = &p.rejection {
                        let body = serde_json::json!({
                            "time": format_rfc3339(now_ms()),
                            "topic": String::from_utf8_lossy(&p.publish.topic),
                            "reason": r.reason,
                        })
                        .to_string();
                        // QoS 0 information for the device; dropped if the client is saturated.
                        let _ = client.try_publish(topic.clone(), QoS::AtMostOnce, false, Bytes::from(body));
                    }
                    if p.publish.qos != QoS::AtMostOnce {
                        unsent.push_back(p.publish);
                    }
                }
            },
            _ = tokio::time::sleep(Duration::from_millis(2)), if !unsent.is_empty() => {}
        }
    }
    done.cancel();
}
