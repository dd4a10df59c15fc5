//! Wiring: builds each subsystem from the configuration, binds the listeners, and runs them
//! until asked to stop. Shutdown is two-phase: the first signal stops accepting, lets every
//! connection finish its pending commits and acknowledgements, and flushes the store; a second
//! signal, or the drain deadline, abandons what is left (nothing acknowledged is lost either way,
//! since only committed readings are ever acknowledged).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::engine::Settings;
use crate::cluster::HeldLease;
use crate::config::{Config, MqttMode, RetryConfig};
use crate::crm::Command;
use crate::crm::Crm;
use crate::crm::fhir_refs::Matching;
use crate::crm::fhir_sink::{FhirAuth, FhirSink};
use crate::crm::outbox::Connector;
use crate::crm::readings::ReadingsLane;
use crate::crm::smart::SmartClient;
use crate::crm::webhook::WebhookSink;
use crate::data_dir::{self, DataDirLock};
use crate::domain::now_ms;
use crate::ingest::Ingest;
use crate::ingest::access::DeviceAccess;
use crate::ingest::embedded::{Endpoint, EndpointConfig};
use crate::ingest::external::{self, BrokerAddress, ExternalError};
use crate::ingest::tls::{self, TlsError};
use crate::registry::{ProfileError, Profiles, Registry, RegistryError};
use crate::slots::Slots;
use crate::store::{Store, StoreError, StoreOptions};
use crate::telemetry::Metrics;
use crate::web::{self, AppState, BootstrapToken};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key}: cannot listen on {addr}: {reason}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        reason: String,
    },
    #[error("data_dir: cannot create {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error(transparent)]
    DataDirUse(#[from] crate::data_dir::DataDirError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    External(#[from] ExternalError),
    #[error(transparent)]
    Budget(#[from] crate::fd_budget::BudgetError),
    #[error("{0}")]
    Connector(String),
    #[error(transparent)]
    Bootstrap(#[from] web::BootstrapError),
}

/// A built gateway, bound and ready to run.
pub struct App {
    cfg: Config,
    /// Held until the gateway has stopped: one gateway per data directory.
    lock: DataDirLock,
    http: TcpListener,
    /// With `[http.tls]`: the HTTP listener serves TLS only.
    https: Option<tokio_rustls::TlsAcceptor>,
    /// Certificates to keep current (MQTTS, HTTPS).
    certs: Vec<Arc<crate::tls_reload::ReloadingCert>>,
    link: DeviceLink,
    state: AppState,
    ingest: Ingest,
    commands: tokio::sync::mpsc::Receiver<Command>,
    connectors: Vec<(Connector, RetryConfig)>,
    /// Email and SMS as configured (`[smtp]`, `[sms]`), for the notification outbox.
    channels: Arc<crate::notify::Channels>,
}

/// How devices' readings reach Vigil.
enum DeviceLink {
    /// Vigil's own endpoint: plain MQTT, MQTTS, or both (`mqtt.tls.only = false`).
    Embedded {
        plain: Option<TcpListener>,
        tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    },
    /// A client of an external broker.
    External(Box<rumqttc::v5::MqttOptions>),
}

/// How devices reach Vigil: the embedded endpoint's bound listeners, or the external broker.
fn device_access(cfg: &Config, link: &DeviceLink) -> Result<DeviceAccess, StartError> {
    let bound = |key: &'static str, l: &TcpListener| {
        l.local_addr().map_err(|e| StartError::Bind {
            key,
            addr: cfg.mqtt_addr(),
            reason: e.to_string(),
        })
    };
    Ok(match link {
        DeviceLink::Embedded { plain, tls } => DeviceAccess::embedded(
            plain
                .as_ref()
                .map(|l| bound("mqtt.listen", l))
                .transpose()?,
            tls.as_ref()
                .map(|(l, _)| bound("mqtt.tls.listen", l))
                .transpose()?,
        )
        .ok_or_else(|| StartError::Connector("mqtt: no listener for devices".into()))?,
        DeviceLink::External(_) => DeviceAccess::external(&BrokerAddress::parse(&cfg.mqtt.url)?),
    })
}

/// How long a graceful shutdown may take before what is left is abandoned.
const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| StartError::Bind {
        key,
        addr,
        reason: e.to_string(),
    })
}

impl App {
    /// Opens the stores and binds the listeners (port 0 picks a free port).
    pub async fn build(mut cfg: Config, bootstrap: Option<String>) -> Result<App, StartError> {
        // Checked first: a refused token stops start-up before anything is opened or bound.
        let bootstrap = bootstrap
            .as_deref()
            .map(BootstrapToken::new)
            .transpose()?
            .flatten()
            .map(Arc::new);
        // Locked before anything binds or opens: a second gateway on this directory is refused
        // by name, not by a port in use or a busy database.
        data_dir::prepare(&cfg.data_dir)?;
        let mut lock = DataDirLock::acquire(&cfg.data_dir)?;
        let http = bind("http.listen", cfg.http_addr()).await?;
        let bound = http.local_addr().map_err(|e| StartError::Bind {
            key: "http.listen",
            addr: cfg.http_addr(),
            reason: e.to_string(),
        })?;
        lock.announce(bound);
        let public_url = cfg.http.public_origin(bound);
        if cfg.http.public_url.is_empty() && bound.ip().is_unspecified() {
            tracing::warn!(
                http = %bound,
                links = %public_url,
                "http.public_url is not set and http.listen is every interface: video visit links point at this machine only; set http.public_url to the address browsers reach"
            );
        }
        let mut certs = Vec::new();
        let https = match &cfg.http.tls {
            Some(t) => {
                let (acceptor, c) = tls::https_acceptor(&t.cert, &t.key)?;
                certs.push(c);
                Some(acceptor)
            }
            None => None,
        };
        let link = match cfg.mqtt.mode {
            MqttMode::External => DeviceLink::External(Box::new(external::options(&cfg.mqtt)?)),
            MqttMode::Embedded => {
                // With MQTTS, plain MQTT is off unless asked for: nothing listens on
                // `mqtt.listen`, so a device cannot send its secret in the clear by mistake.
                let plain = match &cfg.mqtt.tls {
                    Some(t) if t.only => None,
                    _ => Some(bind("mqtt.listen", cfg.mqtt_addr()).await?),
                };
                let tls = match &cfg.mqtt.tls {
                    Some(t) => {
                        let (acceptor, c) = tls::acceptor(&t.cert, &t.key, t.client_ca.as_deref())?;
                        certs.push(c);
                        let addr = t.listen.parse().map_err(|_| TlsError::Invalid {
                            key: "mqtt.tls.listen",
                            reason: format!("{:?} is not an address", t.listen),
                        })?;
                        Some((bind("mqtt.tls.listen", addr).await?, acceptor))
                    }
                    None => None,
                };
                DeviceLink::Embedded { plain, tls }
            }
        };
        fit_connection_caps(&mut cfg)?;
        let device_access = Arc::new(device_access(&cfg, &link)?);
        let metrics = Metrics::new();
        let profiles = Profiles::built_in()?;
        let (registry, pool) = open_databases(&cfg, profiles).await?;
        let store = open_store(&cfg, pool, &metrics).await?;
        if bootstrap.is_some() {
            tracing::warn!("VIGIL_BOOTSTRAP_TOKEN is set: it is accepted as an admin token");
        }
        let connectors = connectors(&cfg, &registry)?;
        let channels = Arc::new(
            crate::notify::Channels::from_config(&cfg)
                .map_err(|e| StartError::Connector(e.to_string()))?,
        );
        let sinks = connectors.iter().map(|(c, _)| c.sink()).collect();
        let (crm, commands) = Crm::new(registry.clone(), metrics.clone(), sinks);
        let state = AppState {
            registry: registry.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            bootstrap,
            crm,
            panel: web::PanelCache::default(),
            live: web::LiveHub::new(CancellationToken::new()),
            throttle: Arc::new(web::LoginThrottle::default()),
            session_lifetime: Duration::from_secs(cfg.http.session_hours * 3600),
            // Secure cookies and HSTS when Vigil serves HTTPS itself. Behind a TLS-terminating
            // proxy, the proxy adds HSTS (docs/deploy.md).
            secure_cookies: https.is_some(),
            visit_key: Arc::new(
                crate::video::token::TokenKey::load_or_create(
                    &cfg.data_dir.join("visit-signing.key"),
                )
                .map_err(|e| StartError::DataDir {
                    path: cfg.data_dir.join("visit-signing.key").display().to_string(),
                    reason: e.to_string(),
                })?
                .shared(&registry)
                .await?,
            ),
            visit_link_ttl: Duration::from_secs(cfg.video.link_minutes * 60),
            ack_key: Arc::new(crate::notify::ack::AckKey::shared(&registry).await?),
            public_url: public_url.into(),
            internal_url: cfg.http.internal_origin(bound).map(Into::into),
            relay_tls: match &cfg.http.tls {
                Some(t) => {
                    let origin = match cfg.http.public_url.is_empty() {
                        false => cfg.http.public_url.clone(),
                        true => cfg.http.internal_origin(bound).unwrap_or_default(),
                    };
                    let name = host_of(&origin);
                    Some(web::relay_tls(&t.cert, name).map_err(StartError::Connector)?)
                }
                None => None,
            },
            rooms: Arc::new(crate::video::relay::Rooms::new(
                crate::video::rtc_setup::RtcSetup::new(
                    cfg.video.bind_ip,
                    cfg.video
                        .port_range()
                        .map_err(|r| StartError::Connector(format!("video.udp_ports: {r}")))?,
                    cfg.video.public_ips.clone(),
                ),
                metrics.clone(),
            )),
            video: Arc::new(cfg.video.clone()),
            device_access,
            // Checked when the settings were loaded.
            clinic_zone: Arc::new(
                crate::domain::zone::Zone::parse(&cfg.clinic.timezone)
                    .unwrap_or_else(|_| crate::domain::zone::Zone::utc()),
            ),
            units: cfg.clinic.units(),
            seen: Arc::new(crate::web::SeenLedger::new()),
        };
        let ingest = Ingest {
            registry,
            store,
            metrics,
        };
        Ok(App {
            cfg,
            lock,
            http,
            https,
            certs,
            link,
            state,
            ingest,
            commands,
            connectors,
            channels,
        })
    }

    /// The notification channels the configuration turns on (none when neither `[smtp]` nor
    /// `[sms]` is present).
    pub fn channels(&self) -> Arc<crate::notify::Channels> {
        self.channels.clone()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The embedded endpoint's plain MQTT address (`None` in external-broker mode, and with
    /// MQTTS only).
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        match &self.link {
            DeviceLink::Embedded { plain, .. } => plain.as_ref().and_then(|l| l.local_addr().ok()),
            DeviceLink::External(_) => None,
        }
    }

    /// The MQTTS listener's address, when TLS is configured.
    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        match &self.link {
            DeviceLink::Embedded { tls, .. } => tls.as_ref().and_then(|(l, _)| l.local_addr().ok()),
            DeviceLink::External(_) => None,
        }
    }

    /// The store, for tests and benchmarks that count what was committed.
    pub fn store(&self) -> Store {
        self.state.store.clone()
    }

    /// Runs until `stop` is cancelled, then drains. `abort` cancelled (a second signal) cuts the
    /// drain short.
    pub async fn run(self, stop: CancellationToken, abort: CancellationToken) {
        let App {
            cfg,
            lock,
            http,
            https,
            certs,
            link,
            state,
            ingest,
            commands,
            connectors,
            channels: _,
        } = self;
        let store = state.store.clone();
        let tracker = TaskTracker::new();
        let addr = |l: &TcpListener| {
            l.local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        };
        let (mqtt, mqtts) = match &link {
            DeviceLink::Embedded { plain, tls } => (
                plain
                    .as_ref()
                    .map_or_else(|| "off (mqtt.tls.only)".to_owned(), addr),
                tls.as_ref()
                    .map_or_else(|| "off".to_owned(), |(l, _)| addr(l)),
            ),
            DeviceLink::External(_) => (format!("external {}", cfg.mqtt.url), "off".to_owned()),
        };
        for c in certs {
            tokio::spawn(c.watch(stop.clone()));
        }
        tracing::info!(
            http = %addr(&http),
            https = https.is_some(),
            mqtt = %mqtt,
            mqtts = %mqtts,
            data_dir = %cfg.data_dir.display(),
            registry = if cfg.database.is_some() { "postgresql" } else { "sqlite" },
            readings = store.backend(),
            "vigil listening"
        );

        if let Some(influx) = cfg.influxdb.clone() {
            // Not on `tracker`: it stops with `stop`; what it has not sent stays in the spool.
            tokio::spawn(crate::store::influx::run(
                store.clone(),
                state.registry.clone(),
                influx,
                state.metrics.clone(),
                stop.clone(),
            ));
        }
        // With PostgreSQL, this instance hears the others' changes as they commit (`pg::listen`):
        // the alert engine and the displays read what committed as soon as told.
        let listener = cfg.database.as_ref().map(|d| {
            crate::pg::listen::Listener::start(d.url.clone(), d.ca_file.clone(), stop.clone())
        });
        // The alert engine and the outbox workers stop with `stop`: what they have not done is
        // in the stores and is picked up at the next start.
        // With PostgreSQL, several instances may share the database: each evaluates the alert
        // partitions it holds (see `crm::partitioned`). With SQLite, this one evaluates all.
        let settings = Settings {
            auto_resolve_s: cfg.alerts.auto_resolve_s,
            // With email or SMS configured, an alert's escalations are the later steps of its
            // team's escalation policy, taken by the notification worker (docs/oncall.md), and
            // the engine's own timer is off. Without, nobody can be notified, and the engine
            // escalates every `alerts.escalate_after_s` on the dashboard and outward, as before.
            escalate_after_s: if self.channels.configured().is_empty() {
                cfg.alerts.escalate_after_s
            } else {
                u32::MAX
            },
            max_escalations: cfg.alerts.max_escalations,
            units: cfg.clinic.units(),
        };
        let tick = Duration::from_millis(cfg.alerts.tick_ms);
        let alerts = if store.backend() == "postgresql" {
            tokio::spawn(crate::crm::partitioned::run(
                state.crm.clone(),
                store.clone(),
                commands,
                listener
                    .as_ref()
                    .map(crate::pg::listen::Listener::subscribe),
                settings,
                tick,
                stop.clone(),
            ))
        } else {
            tokio::spawn(crate::crm::task::run(
                state.crm.clone(),
                store.clone(),
                commands,
                settings,
                tick,
                stop.clone(),
            ))
        };
        for (connector, retry) in connectors {
            let ready = state.crm.ready(connector.sink());
            let readings = match (&connector, &cfg.fhir) {
                (Connector::Fhir(_), Some(f)) if f.all_readings => Some(ReadingsLane::new(
                    store.clone(),
                    f.readings_batch_max,
                    f.readings_per_s,
                )),
                _ => None,
            };
            if readings.is_some() {
                // New readings wake the worker as new alert events do.
                tokio::spawn(wake_on_commits(store.clone(), ready.clone(), stop.clone()));
            }
            tokio::spawn(crate::crm::outbox::run(
                state.registry.clone(),
                connector,
                retry,
                ready,
                state.metrics.clone(),
                stop.clone(),
                readings,
            ));
        }
        // Notifications of people (docs/oncall.md): every instance schedules and sends; the
        // registry sees that each step and each notification is taken by one of them.
        tokio::spawn(
            crate::notify::worker::Worker {
                registry: state.registry.clone(),
                crm: state.crm.clone(),
                channels: self.channels.clone(),
                clinic_zone: state.clinic_zone.clone(),
                public_url: state.public_url.clone(),
                ack_key: state.ack_key.clone(),
                ack_link_s: i64::try_from(cfg.notify.ack_link_hours * 3600).unwrap_or(i64::MAX),
                retry: crate::config::RetryConfig::default(),
            }
            .run(stop.clone()),
        );
        // The panel's cache and the live feed are display-only; they stop with `stop`.
        tokio::spawn(
            state
                .panel
                .clone()
                .run(store.clone(), state.registry.clone(), stop.clone()),
        );
        // With PostgreSQL, they show every instance's readings, alerts and device changes:
        // heard from the database (`pg::listen`), the readings read in commit order.
        let heard = listener.as_ref().map(|listener| {
            tokio::spawn(
                store
                    .clone()
                    .feed_everyone(listener.subscribe(), stop.clone()),
            );
            listener.subscribe()
        });
        tokio::spawn(state.live.clone().run(
            store.clone(),
            state.crm.clone(),
            state.registry.clone(),
            heard,
        ));
        tokio::spawn(web::end_emptied_visits(state.clone(), stop.clone()));
        let live = state.live.clone();
        let rooms = state.rooms.clone();
        let live_stop = stop.clone();
        tokio::spawn(async move {
            live_stop.cancelled().await;
            live.stop();
            rooms.close_all().await;
        });
        let mut shared_throttles = crate::cluster::throttles::SharedThrottles::default();
        shared_throttles.add("sign-in", state.throttle.failures());
        // Every task that takes readings runs on `tracker`, so the drain can wait for all.
        match link {
            DeviceLink::Embedded { plain, tls } => {
                let endpoint = Endpoint::new(
                    ingest,
                    EndpointConfig {
                        max_packet: cfg.mqtt.max_packet_bytes,
                        connect_timeout: Duration::from_secs(cfg.mqtt.connect_timeout_s),
                        max_inflight: cfg.mqtt.max_inflight,
                        max_connections: cfg.mqtt.max_connections,
                        device_connects_per_minute: cfg.mqtt.device_connects_per_minute,
                        device_connect_burst: cfg.mqtt.device_connect_burst,
                        auth_failures_free: cfg.mqtt.auth_failures_free,
                    },
                );
                for (scope, throttle) in endpoint.failure_throttles() {
                    shared_throttles.add(scope, throttle);
                }
                tokio::spawn(endpoint.clone().end_revoked(stop.clone()));
                if let Some((listener, acceptor)) = tls {
                    tracker.spawn(endpoint.clone().serve(
                        listener,
                        Some(acceptor),
                        stop.clone(),
                        tracker.clone(),
                    ));
                }
                if let Some(listener) = plain {
                    tracker.spawn(endpoint.serve(listener, None, stop.clone(), tracker.clone()));
                }
            }
            DeviceLink::External(opts) => {
                tracker.spawn(external::run(ingest, cfg.mqtt.clone(), *opts, stop.clone()));
            }
        }
        let metrics = state.metrics.clone();
        let registry = state.registry.clone();
        let app = web::router(
            state,
            cfg.http.max_body_bytes,
            Duration::from_secs(cfg.http.request_timeout_s),
        );
        let http_task = tokio::spawn(web::serve(
            http,
            https,
            app,
            Slots::new("http", cfg.http.max_connections, metrics.http_slots()),
            web::Deadlines {
                header: Duration::from_secs(cfg.http.header_timeout_s),
                idle: Duration::from_secs(cfg.http.idle_timeout_s),
                tls_handshake: Duration::from_secs(cfg.http.tls_handshake_timeout_s),
            },
            metrics.clone(),
            stop.clone(),
        ));
        tokio::spawn(crate::cluster::credentials::run(
            registry.clone(),
            stop.clone(),
        ));
        let throttles =
            tokio::spawn(shared_throttles.run(registry.clone(), metrics.clone(), stop.clone()));
        let membership = tokio::spawn(crate::cluster::membership::run(
            registry.clone(),
            metrics.clone(),
            stop.clone(),
        ));
        let retention = tokio::spawn(retention_loop(
            store.clone(),
            registry,
            metrics.clone(),
            cfg.store.retention_days,
            stop.clone(),
        ));

        stop.cancelled().await;
        tracing::info!("shutting down: no new connections; finishing pending commits");
        let drain = async {
            tracker.close();
            tracker.wait().await;
            let _ = http_task.await;
            let _ = retention.await;
            let _ = membership.await;
            let _ = throttles.await;
            let _ = alerts.await;
        };
        tokio::select! {
            _ = drain => {}
            _ = abort.cancelled() => tracing::warn!("second signal: abandoning the drain"),
            _ = tokio::time::sleep(DRAIN_DEADLINE) => tracing::warn!("drain deadline passed; abandoning what is left"),
        }
        store.close().await;
        drop(lock);
        tracing::info!("store flushed; goodbye");
    }
}

/// Raises the descriptor limit and lowers `http.max_connections` and `mqtt.max_connections` in
/// `cfg` to what it can hold (`crate::fd_budget`), with one warning naming the keys.
fn fit_connection_caps(cfg: &mut Config) -> Result<(), StartError> {
    use crate::fd_budget::{self, Caps};
    let wanted = Caps {
        http: cfg.http.max_connections,
        mqtt: match cfg.mqtt.mode {
            MqttMode::Embedded => cfg.mqtt.max_connections,
            MqttMode::External => 0,
        },
    };
    let Some(limit) = fd_budget::raise_soft_limit() else {
        return Ok(());
    };
    let caps = fd_budget::fit(limit, wanted)?;
    if caps != wanted {
        tracing::warn!(
            limit,
            reserve = fd_budget::RESERVE,
            http.max_connections = caps.http,
            mqtt.max_connections = caps.mqtt,
            configured_http = wanted.http,
            configured_mqtt = wanted.mqtt,
            "the file-descriptor limit cannot hold http.max_connections + mqtt.max_connections: \
             both lowered; raise the limit (ulimit -n, LimitNOFILE=) or lower the keys"
        );
        cfg.http.max_connections = caps.http;
        if cfg.mqtt.mode == MqttMode::Embedded {
            cfg.mqtt.max_connections = caps.mqtt;
        }
    }
    Ok(())
}

/// The registry where the configuration puts it: the PostgreSQL database of `[database] url`,
/// or `registry.db` in the data directory.
pub async fn open_registry(
    cfg: &Config,
    profiles: Profiles,
) -> Result<Registry, crate::registry::RegistryError> {
    Ok(open_databases(cfg, profiles).await?.0)
}

/// The registry as [`open_registry`] opens it, and the pool of connections to PostgreSQL
/// when the configuration names one (shared with the readings' store).
async fn open_databases(
    cfg: &Config,
    profiles: Profiles,
) -> Result<(Registry, Option<deadpool_postgres::Pool>), crate::registry::RegistryError> {
    match &cfg.database {
        Some(d) => {
            let pool = crate::pg::connect(&d.url, d.ca_file.as_deref()).await?;
            Ok((
                Registry::on_postgres(pool.clone(), profiles).await?,
                Some(pool),
            ))
        }
        None => Ok((Registry::open(&cfg.data_dir, profiles).await?, None)),
    }
}

/// The readings' store: in the PostgreSQL database when there is one (`pool`), else
/// `store.db` in the data directory.
async fn open_store(
    cfg: &Config,
    pool: Option<deadpool_postgres::Pool>,
    metrics: &Metrics,
) -> Result<Store, StoreError> {
    let options = StoreOptions {
        batch_max: cfg.store.batch_max,
        queue_capacity: cfg.store.queue_capacity,
        influx_measurement: cfg.influxdb.as_ref().map(|i| i.measurement.clone()),
        fhir_readings: cfg.fhir.as_ref().is_some_and(|f| f.all_readings),
    };
    match pool {
        Some(pool) => Store::open_postgres(pool, options, metrics.clone()).await,
        None => Store::open_sqlite(&cfg.data_dir, options, metrics.clone()),
    }
}

/// The outward connectors the configuration asks for.
fn connectors(
    cfg: &Config,
    registry: &Registry,
) -> Result<Vec<(Connector, RetryConfig)>, StartError> {
    let client = |timeout_s: u64| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(timeout_s))
            .build()
            .map_err(|e| StartError::Connector(format!("HTTP client: {e}")))
    };
    let mut out = Vec::new();
    if let Some(w) = &cfg.webhook {
        let key = crate::crm::webhook::signing_key(&w.secret)
            .ok_or_else(|| StartError::Connector("webhook.secret: not a whsec_ secret".into()))?;
        out.push((
            Connector::Webhook(WebhookSink {
                http: client(w.retry.timeout_s)?,
                url: w.url.clone(),
                key,
            }),
            w.retry.clone(),
        ));
    }
    if let Some(f) = &cfg.fhir {
        let auth = match (&f.smart, &f.token) {
            (Some(s), _) => {
                let pem = std::fs::read(&s.key_file).map_err(|e| {
                    StartError::Connector(format!(
                        "fhir.smart.key_file: cannot read {}: {e}",
                        s.key_file.display()
                    ))
                })?;
                let client = SmartClient::from_pem(
                    s.token_url.clone(),
                    s.client_id.clone(),
                    s.scope.clone(),
                    s.kid.clone(),
                    &pem,
                )
                .map_err(|e| StartError::Connector(format!("fhir.smart.key_file: {e}")))?;
                FhirAuth::Smart(Box::new(client))
            }
            (None, Some(t)) => FhirAuth::Bearer(t.clone()),
            (None, None) => FhirAuth::None,
        };
        let matching = Matching {
            patient_system: (!f.patient_identifier_system.is_empty())
                .then(|| f.patient_identifier_system.clone()),
            create_patients: f.create_patients,
            create_devices: f.create_devices,
        };
        out.push((
            Connector::Fhir(Box::new(FhirSink::new(
                client(f.retry.timeout_s)?,
                f.base_url.clone(),
                auth,
                registry.clone(),
                matching,
            ))),
            f.retry.clone(),
        ));
    }
    Ok(out)
}

/// Wakes the FHIR worker after each commit that stored new readings (with
/// `fhir.all_readings`), so they go out without waiting for its timer.
async fn wake_on_commits(store: Store, ready: Arc<tokio::sync::Notify>, stop: CancellationToken) {
    let mut feed = store.subscribe();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            b = feed.recv() => match b {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => ready.notify_one(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// The host of an `http(s)://host[:port]` origin (checked at load), brackets off an IPv6 one.
fn host_of(origin: &str) -> &str {
    let authority = origin
        .split_once("://")
        .map_or(origin, |(_, a)| a)
        .trim_end_matches('/');
    match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
}

/// Deletes data older than the retention period, hourly. 0 days keeps everything. With
/// several instances on one database, the one holding the `retention` lease does it.
async fn retention_loop(
    store: Store,
    registry: Registry,
    metrics: Metrics,
    days: u32,
    stop: CancellationToken,
) {
    if days == 0 {
        return;
    }
    let keep_ms = i64::from(days) * 86_400_000;
    // Held for three passes, renewed every other: another instance takes over within three
    // hours of the holder's end (retention is not urgent).
    let mut lease = HeldLease::new("retention", "running retention", 3 * 3_600_000, &metrics);
    loop {
        if lease.ensure(&registry).await {
            match store.prune(now_ms() - keep_ms).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, days, "retention: old data deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention pass failed"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
    lease.release(&registry).await;
}
