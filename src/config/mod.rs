//! Typed, layered, validated settings: built-in defaults, then the TOML file (`--config`), then
//! `VIGIL_<SECTION>__<KEY>` environment variables, then command-line flags.
//!
//! Every key has its default in this module and nowhere else, and every key is listed in
//! README.md's configuration reference (a unit test checks that). A bad value fails start-up with
//! one line naming the key.
//!
//! This file owns the whole: [`Config`], loading it (file, environment, flags), the checks that
//! span its sections ([`Config::validate`]) and [`ConfigError`]. Each section's struct, with its
//! defaults and the pure checks of its values' form, lives in a file of its own:
//!
//! - `network.rs`: `[http]` and `[mqtt]` (each with its `tls`);
//! - `storage.rs`: `[store]` and `[database]`;
//! - `logging.rs`: `[log]`;
//! - `alerts.rs`: `[alerts]`;
//! - `clinic.rs`: `[clinic]`;
//! - `outward.rs`: `[influxdb]`, `[fhir]` and `[webhook]`, the systems Vigil writes to;
//! - `notify.rs`: `[smtp]`, `[sms]` and `[notify]`;
//! - `video.rs`: `[video]`.
//!
//! The section files never use this one (their checks return a reason; this file names the key),
//! so the module graph stays a tree. They are private, and everything public is re-exported here:
//! `crate::config::X` is the one path to a setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod alerts;
mod clinic;
mod logging;
mod network;
mod notify;
mod outward;
mod storage;
mod video;

pub use alerts::AlertsConfig;
pub use clinic::ClinicConfig;
pub use logging::{LogConfig, LogFormat};
pub use network::{HttpConfig, HttpTlsConfig, MqttConfig, MqttMode, MqttTlsConfig};
pub use notify::{
    NotifyConfig, PatientLabel, SmsConfig, SmtpConfig, SmtpEndpoint, SmtpSecurity,
    is_loopback_host, parse_smtp_url,
};
pub use outward::{
    FhirConfig, InfluxConfig, RetryConfig, SmartConfig, WebhookConfig, webhook_signing_key,
};
pub use storage::{DatabaseConfig, StoreConfig};
pub use video::VideoConfig;

use logging::check_log_filter;
use network::check_public_url;
use notify::{host_and_port, is_host_name};
use outward::check_identifier_system;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config: {key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// All of Vigil's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded stores live.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub mqtt: MqttConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub influxdb: Option<InfluxConfig>,
    pub alerts: AlertsConfig,
    pub fhir: Option<FhirConfig>,
    pub webhook: Option<WebhookConfig>,
    pub video: VideoConfig,
    /// The registry's database; absent: SQLite files in `data_dir` (one instance).
    pub database: Option<DatabaseConfig>,
    pub clinic: ClinicConfig,
    /// Email notifications; absent: no email (docs/notifications.md).
    pub smtp: Option<SmtpConfig>,
    /// SMS notifications; absent: no SMS (docs/notifications.md).
    pub sms: Option<SmsConfig>,
    /// What a notification may say about the patient (docs/notifications.md).
    pub notify: NotifyConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./vigil-data"),
            http: HttpConfig::default(),
            mqtt: MqttConfig::default(),
            store: StoreConfig::default(),
            log: LogConfig::default(),
            influxdb: None,
            alerts: AlertsConfig::default(),
            video: VideoConfig::default(),
            fhir: None,
            webhook: None,
            database: None,
            clinic: ClinicConfig::default(),
            smtp: None,
            sms: None,
            notify: NotifyConfig::default(),
        }
    }
}

/// Values given on the command line; they override everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub http_listen: Option<String>,
    pub mqtt_listen: Option<String>,
}

impl Config {
    /// Loads defaults ← file ← environment (`VIGIL_<SECTION>__<KEY>`) ← flags, then validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                text.parse::<toml::Table>().map_err(|e| ConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.message().to_owned(),
                })?
            }
            None => toml::Table::new(),
        };
        let mut rust_log = None;
        for (name, value) in env {
            if name == "RUST_LOG" {
                rust_log = Some(value);
                continue;
            }
            apply_env(&mut table, &name, &value)?;
        }
        let set = |t: &mut toml::Table, section: Option<&str>, key: &str, v: String| {
            let target = match section {
                Some(s) => t
                    .entry(s)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new())),
                None => {
                    t.insert(key.to_owned(), toml::Value::String(v));
                    return;
                }
            };
            if let toml::Value::Table(inner) = target {
                inner.insert(key.to_owned(), toml::Value::String(v));
            }
        };
        if let Some(d) = &flags.data_dir {
            set(&mut table, None, "data_dir", d.display().to_string());
        }
        if let Some(a) = &flags.http_listen {
            set(&mut table, Some("http"), "listen", a.clone());
        }
        if let Some(a) = &flags.mqtt_listen {
            set(&mut table, Some("mqtt"), "listen", a.clone());
        }
        let cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                ConfigError::Invalid {
                    key: e.path().to_string(),
                    reason: e.inner().message().to_owned(),
                }
            })?;
        let mut cfg = cfg;
        // `RUST_LOG`, the filter's customary variable, wins over `log.level`, and is held to the
        // same rule.
        if let Some(filter) = rust_log {
            check_log_filter(&filter).map_err(|reason| invalid("RUST_LOG", reason))?;
            cfg.log.level = filter;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot: addresses, ranges, combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_addr("http.listen", &self.http.listen)?;
        parse_addr("mqtt.listen", &self.mqtt.listen)?;
        if let Some(tls) = &self.mqtt.tls {
            parse_addr("mqtt.tls.listen", &tls.listen)?;
        }
        if self.mqtt.mode == MqttMode::External {
            if !(self.mqtt.url.starts_with("mqtt://") || self.mqtt.url.starts_with("mqtts://")) {
                return Err(invalid("mqtt.url", "must start with mqtt:// or mqtts://"));
            }
            if self.mqtt.client_id.is_empty() || self.mqtt.client_id.len() > 64 {
                return Err(invalid("mqtt.client_id", "must be 1 to 64 characters"));
            }
            if self.mqtt.share_group.contains(['/', '+', '#', '$']) {
                return Err(invalid("mqtt.share_group", "must not contain / + # $"));
            }
        }
        if !(128..=256 * 1024 * 1024).contains(&self.mqtt.max_packet_bytes) {
            return Err(invalid(
                "mqtt.max_packet_bytes",
                "must be between 128 and 268435456",
            ));
        }
        if self.mqtt.max_inflight == 0 {
            return Err(invalid("mqtt.max_inflight", "must be at least 1"));
        }
        if self.mqtt.device_connect_burst == 0 {
            return Err(invalid("mqtt.device_connect_burst", "must be at least 1"));
        }
        if self.mqtt.connect_timeout_s == 0 {
            return Err(invalid("mqtt.connect_timeout_s", "must be at least 1"));
        }
        if let Some(i) = &self.influxdb {
            if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
                return Err(invalid(
                    "influxdb.url",
                    "must start with http:// or https://",
                ));
            }
            if i.measurement.is_empty() {
                return Err(invalid("influxdb.measurement", "must not be empty"));
            }
        }
        crate::domain::zone::Zone::parse(&self.clinic.timezone)
            .map_err(|e| invalid("clinic.timezone", e.to_string()))?;
        if self.alerts.tick_ms == 0 || self.alerts.tick_ms > 60_000 {
            return Err(invalid("alerts.tick_ms", "must be 1 to 60000"));
        }
        if let Some(f) = &self.fhir {
            if !(f.base_url.starts_with("http://") || f.base_url.starts_with("https://")) {
                return Err(invalid(
                    "fhir.base_url",
                    "must start with http:// or https://",
                ));
            }
            validate_retry("fhir", &f.retry)?;
            if !f.patient_identifier_system.is_empty() {
                check_identifier_system(&f.patient_identifier_system)
                    .map_err(|r| invalid("fhir.patient_identifier_system", r))?;
            }
            if !(1..=1000).contains(&f.readings_batch_max) {
                return Err(invalid("fhir.readings_batch_max", "must be 1 to 1000"));
            }
            if !(1..=10_000).contains(&f.readings_per_s) {
                return Err(invalid("fhir.readings_per_s", "must be 1 to 10000"));
            }
            if let Some(smart) = &f.smart
                && !(smart.token_url.starts_with("http://")
                    || smart.token_url.starts_with("https://"))
            {
                return Err(invalid(
                    "fhir.smart.token_url",
                    "must start with http:// or https://",
                ));
            }
        }
        if let Some(w) = &self.webhook {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(invalid(
                    "webhook.url",
                    "must start with http:// or https://",
                ));
            }
            if webhook_signing_key(&w.secret).is_none() {
                return Err(invalid(
                    "webhook.secret",
                    "must be whsec_ followed by the base64 of a key of 24 to 64 bytes",
                ));
            }
            validate_retry("webhook", &w.retry)?;
        }
        if self.http.request_timeout_s == 0 {
            return Err(invalid("http.request_timeout_s", "must be at least 1"));
        }
        if !(1..=168).contains(&self.http.session_hours) {
            return Err(invalid("http.session_hours", "must be 1 to 168"));
        }
        if !self.http.public_url.is_empty() {
            check_public_url(&self.http.public_url).map_err(|r| invalid("http.public_url", r))?;
        }
        if !self.http.internal_url.is_empty() {
            check_public_url(&self.http.internal_url)
                .map_err(|r| invalid("http.internal_url", r))?;
        }
        for (key, v) in [
            ("http.header_timeout_s", self.http.header_timeout_s),
            ("http.idle_timeout_s", self.http.idle_timeout_s),
            (
                "http.tls_handshake_timeout_s",
                self.http.tls_handshake_timeout_s,
            ),
        ] {
            if !(1..=3600).contains(&v) {
                return Err(invalid(key, "must be 1 to 3600"));
            }
        }
        if !(1..=10_080).contains(&self.video.link_minutes) {
            return Err(invalid("video.link_minutes", "must be 1 to 10080 (a week)"));
        }
        if let Err(e) = self.video.port_range() {
            return Err(invalid("video.udp_ports", e));
        }
        if !(1..=10_080).contains(&self.video.turn_ttl_minutes) {
            return Err(invalid(
                "video.turn_ttl_minutes",
                "must be 1 to 10080 (a week)",
            ));
        }
        for u in &self.video.stun_urls {
            if !u.starts_with("stun:") && !u.starts_with("stuns:") {
                return Err(invalid(
                    "video.stun_urls",
                    format!("{u:?} is not a stun: or stuns: URL"),
                ));
            }
        }
        for u in &self.video.turn_urls {
            if !u.starts_with("turn:") && !u.starts_with("turns:") {
                return Err(invalid(
                    "video.turn_urls",
                    format!("{u:?} is not a turn: or turns: URL"),
                ));
            }
        }
        if !self.video.turn_urls.is_empty() && self.video.turn_secret.is_empty() {
            return Err(invalid(
                "video.turn_secret",
                "is needed with video.turn_urls (coturn's static-auth-secret)",
            ));
        }
        check_log_filter(&self.log.level).map_err(|reason| invalid("log.level", reason))?;
        self.validate_notify()?;
        self.validate_presence_and_counts()
    }

    /// `[smtp]` and `[sms]`: where they point, who mail comes from, and that no password or
    /// token would cross the network in the clear.
    fn validate_notify(&self) -> Result<(), ConfigError> {
        if !(1..=168).contains(&self.notify.ack_link_hours) {
            return Err(invalid(
                "notify.ack_link_hours",
                "must be 1 to 168 (a week): how long an acknowledgement link works",
            ));
        }
        if let Some(m) = &self.smtp {
            let endpoint = parse_smtp_url(&m.url).map_err(|r| invalid("smtp.url", r))?;
            if m.from.trim().is_empty() {
                return Err(invalid(
                    "smtp.from",
                    "must be given: the sender, such as \"Vigil <vigil@clinic.example>\"",
                ));
            }
            m.from.parse::<lettre::message::Mailbox>().map_err(|e| {
                invalid(
                    "smtp.from",
                    format!(
                        "{:?} is not an address such as \"Vigil <vigil@clinic.example>\": {e}",
                        m.from
                    ),
                )
            })?;
            match (&m.username, &m.password) {
                (Some(u), Some(p)) => {
                    not_empty(&[("smtp.username", u), ("smtp.password", p)])?;
                }
                (Some(_), None) => {
                    return Err(invalid("smtp.password", "is needed with smtp.username"));
                }
                (None, Some(_)) => {
                    return Err(invalid("smtp.username", "is needed with smtp.password"));
                }
                (None, None) => {}
            }
            if m.password.is_some()
                && endpoint.security != SmtpSecurity::StartTlsRequired
                && endpoint.security != SmtpSecurity::Implicit
                && !is_loopback_host(&endpoint.host)
            {
                return Err(invalid(
                    "smtp.url",
                    "with smtp.password, use smtps:// or ?starttls=required: the password \
                     would otherwise cross the network in the clear",
                ));
            }
            if !m.hello_name.is_empty() && !is_host_name(&m.hello_name) {
                return Err(invalid(
                    "smtp.hello_name",
                    format!("{:?} is not a host name", m.hello_name),
                ));
            }
            if !(1..=300).contains(&m.timeout_s) {
                return Err(invalid("smtp.timeout_s", "must be 1 to 300"));
            }
        }
        if let Some(s) = &self.sms {
            let rest = s
                .url
                .strip_prefix("https://")
                .or_else(|| s.url.strip_prefix("http://"))
                .ok_or_else(|| invalid("sms.url", "must start with https://"))?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            if authority.contains('@') {
                return Err(invalid("sms.url", "must not hold a user name"));
            }
            let (host, _) = host_and_port(authority)
                .map_err(|r| invalid("sms.url", format!("{:?}: {r}", s.url)))?;
            if s.url.starts_with("http://") && !is_loopback_host(&host) {
                return Err(invalid(
                    "sms.url",
                    "must start with https:// (http:// only to this host): the token would \
                     otherwise cross the network in the clear",
                ));
            }
            not_empty(&[("sms.token", &s.token)])?;
            if !(1..=300).contains(&s.timeout_s) {
                return Err(invalid("sms.timeout_s", "must be 1 to 300"));
            }
        }
        Ok(())
    }

    /// What serde takes as any string or number but only works when given: counts and sizes
    /// from 1 up (a zero would refuse every request or device, or give up at once), names and
    /// credentials that must not be empty, one FHIR credential rather than two.
    fn validate_presence_and_counts(&self) -> Result<(), ConfigError> {
        at_least_one(&[
            ("http.max_body_bytes", self.http.max_body_bytes as u64),
            ("http.max_connections", self.http.max_connections as u64),
            ("mqtt.max_connections", self.mqtt.max_connections as u64),
            (
                "mqtt.device_connects_per_minute",
                u64::from(self.mqtt.device_connects_per_minute),
            ),
            ("store.batch_max", self.store.batch_max as u64),
            ("store.queue_capacity", self.store.queue_capacity as u64),
        ])?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if let Some(i) = &self.influxdb {
            not_empty(&[
                ("influxdb.org", &i.org),
                ("influxdb.bucket", &i.bucket),
                ("influxdb.token", &i.token),
            ])?;
            at_least_one(&[
                ("influxdb.batch_max", i.batch_max as u64),
                ("influxdb.timeout_s", i.timeout_s),
                ("influxdb.flush_interval_ms", i.flush_interval_ms),
            ])?;
        }
        if let Some(d) = &self.database {
            // The whole URL is read (and refused with its reason) when the registry opens it.
            if !(d.url.starts_with("postgres://") || d.url.starts_with("postgresql://")) {
                return Err(invalid(
                    "database.url",
                    "must start with postgres:// (e.g. postgres://vigil:secret@db.clinic.example:5432/vigil)",
                ));
            }
        }
        if let Some(f) = &self.fhir {
            if f.smart.is_some() && f.token.is_some() {
                return Err(invalid(
                    "fhir.token",
                    "give either fhir.token or [fhir.smart], not both",
                ));
            }
            if let Some(token) = &f.token {
                not_empty(&[("fhir.token", token)])?;
            }
            if let Some(smart) = &f.smart {
                not_empty(&[
                    ("fhir.smart.client_id", &smart.client_id),
                    ("fhir.smart.kid", &smart.kid),
                    ("fhir.smart.scope", &smart.scope),
                ])?;
            }
        }
        Ok(())
    }

    pub fn http_addr(&self) -> SocketAddr {
        parse_addr("http.listen", &self.http.listen).expect("validated at load")
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        parse_addr("mqtt.listen", &self.mqtt.listen).expect("validated at load")
    }
}

/// Refuses the first `(key, value)` that is 0.
fn at_least_one(values: &[(&str, u64)]) -> Result<(), ConfigError> {
    match values.iter().find(|(_, v)| *v == 0) {
        Some((key, _)) => Err(invalid(key, "must be at least 1")),
        None => Ok(()),
    }
}

/// Refuses the first `(key, value)` that is empty or blank.
fn not_empty(values: &[(&str, &str)]) -> Result<(), ConfigError> {
    match values.iter().find(|(_, v)| v.trim().is_empty()) {
        Some((key, _)) => Err(invalid(key, "must not be empty")),
        None => Ok(()),
    }
}

fn validate_retry(section: &str, r: &RetryConfig) -> Result<(), ConfigError> {
    if r.timeout_s == 0 {
        return Err(invalid(
            &format!("{section}.timeout_s"),
            "must be at least 1",
        ));
    }
    if r.retry_initial_ms == 0 {
        return Err(invalid(
            &format!("{section}.retry_initial_ms"),
            "must be at least 1",
        ));
    }
    if r.retry_max_s == 0 {
        return Err(invalid(
            &format!("{section}.retry_max_s"),
            "must be at least 1",
        ));
    }
    if r.give_up_after_s == 0 {
        return Err(invalid(
            &format!("{section}.give_up_after_s"),
            "must be at least 1",
        ));
    }
    Ok(())
}

fn parse_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(key, format!("{s:?} is not an address like 127.0.0.1:8080")))
}

/// Applies one `VIGIL_<SECTION>__<KEY>` (or `VIGIL_<KEY>` for top-level keys) variable.
fn apply_env(table: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let Some(rest) = name.strip_prefix("VIGIL_") else {
        return Ok(());
    };
    // Not configuration keys: the bootstrap token, the dashboard's development switches
    // (`VIGIL_DASHBOARD_DIR` serves it from disk; `VIGIL_SKIP_NPM` is read by build.rs),
    // vigil-sim's own variables, and the test harness's switches.
    const NOT_CONFIG: [&str; 5] = [
        "BOOTSTRAP_TOKEN",
        "DASHBOARD_DIR",
        "SKIP_NPM",
        "BIN",
        "TOKEN",
    ];
    if NOT_CONFIG.contains(&rest) || rest.starts_with("TEST_") {
        return Ok(());
    }
    let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
    if path.iter().any(String::is_empty) {
        return Err(invalid(name, "expected VIGIL_<SECTION>__<KEY>"));
    }
    // Numbers, booleans and TOML arrays (`["a", "b"]`) keep their type; everything else is a
    // string.
    let parsed = match value.parse::<toml::Value>() {
        Ok(v @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_))) => v,
        _ => format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| {
                matches!(
                    v,
                    toml::Value::Integer(_)
                        | toml::Value::Boolean(_)
                        | toml::Value::Float(_)
                        | toml::Value::Array(_)
                )
            })
            .unwrap_or_else(|| toml::Value::String(value.to_owned())),
    };
    let mut target = table;
    for section in &path[..path.len() - 1] {
        let entry = target
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        target = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(invalid(name, format!("{section} is not a section"))),
        };
    }
    target.insert(path[path.len() - 1].clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests;
