//! Logs and metrics: the `tracing` subscriber set-up and the Prometheus metrics Vigil exports
//! on `/metrics`. Metric names carry their unit; no label ever holds patient data. Log lines
//! cannot be forged: the text format escapes control characters in every field and message
//! ([`log_fields`]), the JSON format escapes them by its nature.

mod log_fields;

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::{LogConfig, LogFormat};
use crate::slots::SlotMetrics;

/// Installs the global `tracing` subscriber (stderr) with the filter `cfg.level`, which the
/// configuration has checked (and taken from `RUST_LOG` when that is set). Colours only when
/// stderr is a terminal: a file or the journal gets plain text.
pub fn init_logging(cfg: &LogConfig) {
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cfg.level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.fmt_fields(log_fields::EscapedFields).try_init(),
    };
}

/// Why a reading was refused (a label, so a fixed small set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Which deadline closed an HTTP connection (a label, so a fixed small set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Vigil's Prometheus metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub readings_accepted: Counter,
    pub readings_duplicate: Counter,
    pub readings_rejected: Family<ReasonLabel, Counter>,
    pub store_commit_seconds: Histogram,
    pub store_commit_failures: Counter,
    pub store_disk_full: Gauge,
    pub spool_depth: Gauge,
    pub mqtt_connected_devices: Gauge,
    pub mqtt_connections_refused: Family<ReasonLabel, Counter>,
    pub mqtt_publishes_denied: Counter,
    /// The embedded endpoint's sockets: devices and connections that have not sent CONNECT yet.
    pub mqtt_connections: Gauge,
    pub http_connections: Gauge,
    pub http_connections_evicted: Counter,
    pub http_connections_refused: Counter,
    pub http_timeouts: Family<KindLabel, Counter>,
    pub broker_subscribed: Gauge,
    pub broker_connects: Counter,
    pub influx_lines_written: Counter,
    pub influx_lines_rejected: Counter,
    pub influx_write_failures: Counter,
    pub alerts_opened: Family<Vec<(&'static str, String)>, Counter>,
    pub alert_events: Family<Vec<(&'static str, String)>, Counter>,
    pub alert_eval_lag_seconds: Histogram,
    pub alert_effects_waiting: Gauge,
    pub alert_effect_write_failures: Counter,
    pub alert_writes_fenced: Counter,
    pub alert_partitions_held: Gauge,
    pub care_plan_read_failures: Counter,
    pub outbox_pending: Family<Vec<(&'static str, String)>, Gauge>,
    pub outbox_attempts: Family<Vec<(&'static str, String)>, Counter>,
    pub leases_held: Family<Vec<(&'static str, String)>, Gauge>,
    pub lease_changes: Family<Vec<(&'static str, String)>, Counter>,
    pub live_clients: Gauge,
    pub live_dropped: Counter,
    pub video_peer_connections: Gauge,
    pub video_rooms: Gauge,
    /// Visits' signalling sockets passed on to the instance hosting the call.
    pub visit_signalling_relayed: Counter,
    runtime_alive_tasks: Gauge,
    process_open_fds: Gauge,
    process_resident_memory_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let readings_accepted = Counter::default();
        r.register(
            "vigil_readings_accepted",
            "Readings durably stored",
            readings_accepted.clone(),
        );
        let readings_duplicate = Counter::default();
        r.register(
            "vigil_readings_duplicate",
            "Redelivered readings that were already stored",
            readings_duplicate.clone(),
        );
        let readings_rejected = Family::<ReasonLabel, Counter>::default();
        r.register(
            "vigil_readings_rejected",
            "Payloads refused and kept as dead letters, by reason",
            readings_rejected.clone(),
        );
        let store_commit_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        r.register(
            "vigil_store_commit_seconds",
            "Time to commit one batch to the embedded store, fsync included",
            store_commit_seconds.clone(),
        );
        let store_commit_failures = Counter::default();
        r.register(
            "vigil_store_commit_failures",
            "Store commits that failed (nothing in them was acknowledged)",
            store_commit_failures.clone(),
        );
        let store_disk_full = Gauge::default();
        r.register(
            "vigil_store_disk_full",
            "1 while the data directory's disk is full and readings are refused; 0 after a commit succeeds",
            store_disk_full.clone(),
        );
        let spool_depth = Gauge::default();
        r.register(
            "vigil_spool_depth",
            "Readings waiting in the on-disk spool for an external store (0 without one)",
            spool_depth.clone(),
        );
        let mqtt_connected_devices = Gauge::default();
        r.register(
            "vigil_mqtt_connected_devices",
            "Devices connected to the embedded MQTT endpoint",
            mqtt_connected_devices.clone(),
        );
        let mqtt_connections_refused = Family::<ReasonLabel, Counter>::default();
        r.register(
            "vigil_mqtt_connections_refused",
            "MQTT connections refused, by reason",
            mqtt_connections_refused.clone(),
        );
        let mqtt_publishes_denied = Counter::default();
        r.register(
            "vigil_mqtt_publishes_denied",
            "Publishes refused because the topic is not the device's own",
            mqtt_publishes_denied.clone(),
        );
        let mqtt_connections = Gauge::default();
        r.register(
            "vigil_mqtt_connections",
            "Sockets held by the embedded MQTT endpoint: connected devices and connections that have not sent CONNECT yet (at most mqtt.max_connections)",
            mqtt_connections.clone(),
        );
        let http_connections = Gauge::default();
        r.register(
            "vigil_http_connections",
            "HTTP connections held, TLS handshakes and WebSockets included (at most http.max_connections)",
            http_connections.clone(),
        );
        let http_connections_evicted = Counter::default();
        r.register(
            "vigil_http_connections_evicted",
            "HTTP connections closed at the cap to admit a new one: those waiting longest for a request",
            http_connections_evicted.clone(),
        );
        let http_connections_refused = Counter::default();
        r.register(
            "vigil_http_connections_refused",
            "New HTTP connections closed at the cap because every connection was answering a request or held a WebSocket",
            http_connections_refused.clone(),
        );
        let http_timeouts = Family::<KindLabel, Counter>::default();
        r.register(
            "vigil_http_timeouts",
            "HTTP connections closed at a deadline, by kind: tls_handshake, header (request head incomplete), idle (kept alive with no next request), send (response not read)",
            http_timeouts.clone(),
        );
        let broker_subscribed = Gauge::default();
        r.register(
            "vigil_mqtt_broker_subscribed",
            "External-broker mode: 1 while Vigil is connected to the broker and subscribed",
            broker_subscribed.clone(),
        );
        let broker_connects = Counter::default();
        r.register(
            "vigil_mqtt_broker_connects",
            "External-broker mode: connections to the broker accepted (CONNACK), first and every reconnect",
            broker_connects.clone(),
        );
        let influx_lines_written = Counter::default();
        r.register(
            "vigil_influx_lines_written",
            "Readings delivered to InfluxDB",
            influx_lines_written.clone(),
        );
        let influx_lines_rejected = Counter::default();
        r.register(
            "vigil_influx_lines_rejected",
            "Readings InfluxDB refused for good (kept in influx_rejected)",
            influx_lines_rejected.clone(),
        );
        let influx_write_failures = Counter::default();
        r.register(
            "vigil_influx_write_failures",
            "InfluxDB writes that failed and will be retried",
            influx_write_failures.clone(),
        );
        let alerts_opened = Family::<Vec<(&'static str, String)>, Counter>::default();
        r.register(
            "vigil_alerts_opened",
            "Alerts opened, by rule kind and severity",
            alerts_opened.clone(),
        );
        let alert_events = Family::<Vec<(&'static str, String)>, Counter>::default();
        r.register(
            "vigil_alert_events",
            "Alert events written to the record (opened, raised, escalated, acknowledged, resolved)",
            alert_events.clone(),
        );
        let alert_eval_lag_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        r.register(
            "vigil_alert_eval_lag_seconds",
            "From the store commit of readings that opened or changed alerts to those alerts committed in the record",
            alert_eval_lag_seconds.clone(),
        );
        let alert_effects_waiting = Gauge::default();
        r.register(
            "vigil_alert_effects_waiting",
            "Alert effects (opened, raised, escalated, acknowledged, resolved) decided by the engine but not yet written to the record because writing failed; retried until they land",
            alert_effects_waiting.clone(),
        );
        let alert_effect_write_failures = Counter::default();
        r.register(
            "vigil_alert_effect_write_failures",
            "Failed attempts to write alert effects to the record (each is retried)",
            alert_effect_write_failures.clone(),
        );
        let alert_writes_fenced = Counter::default();
        r.register(
            "vigil_alert_writes_fenced",
            "Writes of alert effects refused because this instance no longer held the patient's alert partition (another instance took it over; its effects are its own)",
            alert_writes_fenced.clone(),
        );
        let alert_partitions_held = Gauge::default();
        r.register(
            "vigil_alert_partitions_held",
            "Alert partitions whose patients this instance evaluates now (with PostgreSQL; all of them with SQLite)",
            alert_partitions_held.clone(),
        );
        let care_plan_read_failures = Counter::default();
        r.register(
            "vigil_care_plan_read_failures",
            "Failed reads of a patient's care plan by the alert engine (each is retried; the patient is never judged by the default plan meanwhile)",
            care_plan_read_failures.clone(),
        );
        let outbox_pending = Family::<Vec<(&'static str, String)>, Gauge>::default();
        r.register(
            "vigil_outbox_pending",
            "Events waiting for delivery, by sink (fhir, webhook)",
            outbox_pending.clone(),
        );
        let outbox_attempts = Family::<Vec<(&'static str, String)>, Counter>::default();
        r.register(
            "vigil_outbox_attempts",
            "Delivery attempts by sink and outcome (delivered, pending = will retry, failed = given up)",
            outbox_attempts.clone(),
        );
        let leases_held = Family::<Vec<(&'static str, String)>, Gauge>::default();
        r.register(
            "vigil_leases_held",
            "Leases this instance holds (1) or not (0), by lease: each sink's outbox, influx, retention, presence, instance (see docs/scaling.md)",
            leases_held.clone(),
        );
        let lease_changes = Family::<Vec<(&'static str, String)>, Counter>::default();
        r.register(
            "vigil_lease_changes",
            "Leases this instance took, lost to another or gave up, by lease and change (taken, lost, released)",
            lease_changes.clone(),
        );
        let live_clients = Gauge::default();
        r.register(
            "vigil_live_clients",
            "Dashboard connections to the live feed",
            live_clients.clone(),
        );
        let live_dropped = Counter::default();
        r.register(
            "vigil_live_dropped",
            "Live-feed connections closed for falling behind",
            live_dropped.clone(),
        );
        let video_peer_connections = Gauge::default();
        r.register(
            "vigil_video_peer_connections",
            "The video relay's peer connections alive (freed ones are not counted)",
            video_peer_connections.clone(),
        );
        let video_rooms = Gauge::default();
        r.register(
            "vigil_video_rooms",
            "Video visits with someone connected",
            video_rooms.clone(),
        );
        let visit_signalling_relayed = Counter::default();
        r.register(
            "vigil_visit_signalling_relayed",
            "Visits' signalling sockets passed on to the instance that holds the call",
            visit_signalling_relayed.clone(),
        );
        let runtime_alive_tasks = Gauge::default();
        r.register(
            "vigil_runtime_alive_tasks",
            "Tokio tasks alive (sampled at each scrape)",
            runtime_alive_tasks.clone(),
        );
        let process_open_fds = Gauge::default();
        r.register(
            "process_open_fds",
            "Open file descriptors (sampled at each scrape)",
            process_open_fds.clone(),
        );
        let process_resident_memory_bytes = Gauge::default();
        r.register(
            "process_resident_memory_bytes",
            "Resident memory (sampled at each scrape)",
            process_resident_memory_bytes.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            video_peer_connections,
            video_rooms,
            visit_signalling_relayed,
            runtime_alive_tasks,
            process_open_fds,
            process_resident_memory_bytes,
            live_clients,
            live_dropped,
            alerts_opened,
            alert_events,
            alert_eval_lag_seconds,
            alert_effects_waiting,
            alert_effect_write_failures,
            alert_writes_fenced,
            alert_partitions_held,
            care_plan_read_failures,
            outbox_pending,
            outbox_attempts,
            leases_held,
            lease_changes,
            readings_accepted,
            readings_duplicate,
            readings_rejected,
            store_commit_seconds,
            store_commit_failures,
            store_disk_full,
            spool_depth,
            mqtt_connected_devices,
            mqtt_connections_refused,
            mqtt_publishes_denied,
            mqtt_connections,
            http_connections,
            http_connections_evicted,
            http_connections_refused,
            http_timeouts,
            broker_subscribed,
            broker_connects,
            influx_lines_written,
            influx_lines_rejected,
            influx_write_failures,
        }
    }

    pub fn rejected(&self, reason: &'static str) {
        self.readings_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.mqtt_connections_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// An HTTP connection closed at the deadline `kind`.
    pub fn http_timeout(&self, kind: &'static str) {
        self.http_timeouts.get_or_create(&KindLabel { kind }).inc();
    }

    /// What the HTTP listener's connection slots count.
    pub fn http_slots(&self) -> SlotMetrics {
        SlotMetrics {
            open: self.http_connections.clone(),
            evicted: self.http_connections_evicted.clone(),
            refused: self.http_connections_refused.clone(),
        }
    }

    /// What the MQTT endpoint's connection slots count: refusals and evictions are refused
    /// connections (`too_many_connections`, `evicted`).
    pub fn mqtt_slots(&self) -> SlotMetrics {
        let refused = |reason| {
            self.mqtt_connections_refused
                .get_or_create(&ReasonLabel { reason })
                .clone()
        };
        SlotMetrics {
            open: self.mqtt_connections.clone(),
            evicted: refused("evicted"),
            refused: refused("too_many_connections"),
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        self.sample_process();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Samples the tasks, file descriptors and resident memory (Linux `/proc`; left as they are
    /// where it is missing).
    fn sample_process(&self) {
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            self.runtime_alive_tasks
                .set(i64::try_from(h.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // Minus the one read_dir itself holds open.
            self.process_open_fds
                .set(i64::try_from(dir.count()).unwrap_or(i64::MAX) - 1);
        }
        if let Some(kib) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            })
        {
            self.process_resident_memory_bytes.set(kib * 1024);
        }
    }
}
