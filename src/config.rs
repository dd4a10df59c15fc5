//! Typed, layered, validated settings: built-in defaults, then the TOML file (`--config`), then
//! `VIGIL_<SECTION>__<KEY>` environment variables, then command-line flags.
//!
//! Every key has its default here and nowhere else, and every key is listed in README.md's
//! configuration reference (a unit test checks that). A bad value fails start-up with one line
//! naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// The clinic (`[clinic]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClinicConfig {
    /// The IANA time zone the clinic's patients live in, unless a patient's record names their
    /// own: days of monitoring are counted in it (docs/billing.md).
    pub timezone: String,
}

impl Default for ClinicConfig {
    fn default() -> Self {
        ClinicConfig {
            timezone: "UTC".into(),
        }
    }
}

/// The registry on PostgreSQL (`[database]`); several Vigil instances given the same `url` share
/// one registry.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// A libpq-style URL, `postgres://user:password@host:port/database`, with `sslmode` as in
    /// libpq (see `docs/store.md` for what each mode does here).
    pub url: String,
    /// A PEM file of the CA that signed the database's certificate; absent: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for DatabaseConfig {
    // The URL holds the database's password: debug output names only where it points.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://…@{host}"),
                None => format!("{scheme}://{rest}"),
            },
            None => "(not a URL)".into(),
        };
        f.debug_struct("DatabaseConfig")
            .field("url", &shown)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Video visits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// How long a visit's join links work, in minutes.
    pub link_minutes: u64,
    /// The UDP ports the relay's peer connections bind, `"first-last"` inclusive (one port per
    /// connection).
    pub udp_ports: String,
    /// The address they bind (`0.0.0.0`: every interface).
    pub bind_ip: std::net::IpAddr,
    /// The addresses browsers reach this host at, when it sits behind 1:1 NAT.
    pub public_ips: Vec<std::net::IpAddr>,
    /// STUN servers handed to the browsers.
    pub stun_urls: Vec<String>,
    /// TURN servers handed to the browsers.
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret`: each participant gets time-limited TURN credentials
    /// (the TURN REST scheme).
    pub turn_secret: String,
    /// How long those credentials work, in minutes.
    pub turn_ttl_minutes: u64,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            link_minutes: 60,
            udp_ports: "40000-40999".into(),
            bind_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            public_ips: Vec::new(),
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: String::new(),
            turn_ttl_minutes: 60,
        }
    }
}

impl VideoConfig {
    /// The UDP port range, checked.
    pub fn port_range(&self) -> Result<std::ops::RangeInclusive<u16>, String> {
        let (a, b) = self
            .udp_ports
            .split_once('-')
            .ok_or_else(|| "must be \"first-last\", such as \"40000-40999\"".to_string())?;
        let a: u16 = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} is not a port"))?;
        let b: u16 = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} is not a port"))?;
        if a == 0 || b < a {
            return Err("must be a non-empty range of ports from 1 to 65535".into());
        }
        Ok(a..=b)
    }
}

/// The alert engine's timers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// An alert resolves by itself once its condition has been clear this long.
    pub auto_resolve_s: u32,
    /// An open alert nobody acknowledges escalates after this long (and again after as long).
    pub escalate_after_s: u32,
    /// How many times an unacknowledged alert escalates at most.
    pub max_escalations: u32,
    /// How often time-driven rules (missing readings, auto-resolve, escalation) are checked.
    pub tick_ms: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            auto_resolve_s: 900,
            escalate_after_s: 900,
            max_escalations: 3,
            tick_ms: 1000,
        }
    }
}

/// How an outbox connector retries (shared by `[fhir]` and `[webhook]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Timeout of one delivery request.
    pub timeout_s: u64,
    /// The first retry waits about this long; each next one twice as long (with jitter).
    pub retry_initial_ms: u64,
    /// The longest wait between two attempts.
    pub retry_max_s: u64,
    /// An event not delivered after this long is marked failed (visible in
    /// `GET /api/v1/deliveries?status=failed`) and no longer retried.
    pub give_up_after_s: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            timeout_s: 10,
            retry_initial_ms: 1000,
            retry_max_s: 300,
            give_up_after_s: 86_400,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the API and dashboard.
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// A request that takes longer than this is answered 408.
    pub request_timeout_s: u64,
    /// How long a dashboard sign-in lasts (a clinician's shift), in hours.
    pub session_hours: u64,
    /// Most connections held at once, TLS handshakes and WebSockets included. At the cap the
    /// connection that has waited longest for a request is closed for the new one; when none
    /// waits, the new one is closed. Lowered at start when the file-descriptor limit cannot hold
    /// it and `mqtt.max_connections`.
    pub max_connections: usize,
    /// A request head (request line and headers) must arrive whole within this many seconds of
    /// the connection's start, or of its first byte on a kept-alive connection, however slowly
    /// its bytes come.
    pub header_timeout_s: u64,
    /// A kept-alive connection is closed after this many seconds without a new request; a
    /// response the client does not read for this long is abandoned.
    pub idle_timeout_s: u64,
    /// With `tls`: a TLS handshake must complete within this many seconds.
    pub tls_handshake_timeout_s: u64,
    /// HTTPS: with it, `listen` serves TLS only, cookies are `Secure` and responses carry HSTS.
    pub tls: Option<HttpTlsConfig>,
    /// Where browsers reach Vigil (`https://vigil.clinic.example`): the origin of video visits'
    /// join links. Empty: derived from `listen` and `tls`. Never taken from a request.
    pub public_url: String,
    /// Where the other instances sharing the database reach this one (`http://10.0.0.5:8080`):
    /// a video visit's call lives on one instance, and the others pass their participants'
    /// signalling on to it there. Empty: `listen`'s address, or none when it is every interface
    /// (a call hosted here is then joined only through this instance).
    pub internal_url: String,
}

/// The HTTPS listener's certificate (reloaded when the files change).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// How devices reach Vigil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttMode {
    Embedded,
    External,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub mode: MqttMode,
    /// Embedded endpoint: address devices connect to.
    pub listen: String,
    /// External broker URL (`mqtt://` or `mqtts://`).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// External broker: Vigil's client id. Keep it stable: the broker keeps the session (and
    /// what devices publish while Vigil is down) under it. Give each instance its own.
    pub client_id: String,
    /// External broker: the shared-subscription group that instances split the load in; empty
    /// (the default): a plain subscription, for a single instance.
    pub share_group: String,
    /// External broker: how long the broker keeps Vigil's session while it is disconnected.
    pub session_expiry_s: u32,
    /// External broker over `mqtts://`: PEM CA that signed the broker's certificate
    /// (absent: the system's CAs).
    pub ca_file: Option<PathBuf>,
    /// Largest MQTT packet accepted, in bytes; larger ones are refused before they are read.
    pub max_packet_bytes: usize,
    /// A connection that has not sent CONNECT within this many seconds of its accept (over
    /// MQTTS, its TLS handshake included) is closed.
    pub connect_timeout_s: u64,
    /// QoS 1/2 publishes a device may have waiting for their durable commit.
    pub max_inflight: u16,
    /// Most sockets the embedded endpoint holds at once: connected devices and connections that
    /// have not sent CONNECT yet. At the cap the one that has waited longest for its CONNECT is
    /// closed for the new one; when every one is a device, the new one is closed. Lowered at
    /// start when the file-descriptor limit cannot hold it and `http.max_connections`.
    pub max_connections: usize,
    /// Connects one device may make per minute once its burst is spent; more are refused
    /// (MQTT 5: 0x9F connection rate exceeded) until its bucket refills.
    pub device_connects_per_minute: u32,
    /// Connects one device may make at once before the per-minute rate applies.
    pub device_connect_burst: u32,
    /// Failed authentications of one device id from one address before its connects must wait
    /// (1 s, doubling per further failure up to 5 minutes); ten times as many from one address
    /// for any ids lock the address.
    pub auth_failures_free: u32,
    /// MQTTS listener of the embedded endpoint; absent: plain MQTT only. Present: MQTTS only,
    /// unless `only = false` keeps the plain listener too.
    pub tls: Option<MqttTlsConfig>,
}

/// TLS for the embedded endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// Address of the MQTTS listener.
    #[serde(default = "default_mqtts_listen")]
    pub listen: String,
    /// PEM certificate chain of the endpoint.
    pub cert: PathBuf,
    /// PEM private key of the endpoint.
    pub key: PathBuf,
    /// PEM CA certificate(s) that issue device certificates; devices presenting one are
    /// identified by its common name (CN = device id) without a password.
    pub client_ca: Option<PathBuf>,
    /// MQTTS only (the default): the plain listener (`mqtt.listen`) is not opened at all, so
    /// no device secret or reading crosses the network in the clear. `false` serves plain MQTT
    /// beside MQTTS, e.g. while devices move over.
    #[serde(default = "default_tls_only")]
    pub only: bool,
}

fn default_mqtts_listen() -> String {
    "0.0.0.0:8883".into()
}

fn default_tls_only() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Observations and dead letters older than this are deleted; 0 keeps them for ever.
    pub retention_days: u32,
    /// Most readings committed in one transaction (group commit).
    pub batch_max: usize,
    /// Readings waiting for the writer; when full, devices see slower acknowledgements.
    pub queue_capacity: usize,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `vigil=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, e.g. `https://influx.example.org:8086` (the writer posts to `/api/v2/write`).
    pub url: String,
    pub org: String,
    pub bucket: String,
    pub token: String,
    /// Measurement the readings are written to.
    #[serde(default = "default_measurement")]
    pub measurement: String,
    /// Most lines in one write.
    #[serde(default = "default_influx_batch")]
    pub batch_max: usize,
    /// How long a partial batch may wait for more lines.
    #[serde(default = "default_flush_ms")]
    pub flush_interval_ms: u64,
    /// Timeout of one write request.
    #[serde(default = "default_influx_timeout")]
    pub timeout_s: u64,
}

fn default_measurement() -> String {
    "vitals".into()
}

fn default_influx_batch() -> usize {
    5000
}

fn default_flush_ms() -> u64 {
    1000
}

fn default_influx_timeout() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FhirConfig {
    /// The FHIR R4 server's base, e.g. `https://fhir.example.org/r4`.
    pub base_url: String,
    /// A static bearer token.
    pub token: Option<String>,
    /// SMART Backend Services (client-credentials JWT) instead of a static token.
    pub smart: Option<SmartConfig>,
    /// The identifier system of the patients' `mrn` on the clinic's FHIR server (e.g. the OID
    /// of the clinic's MRNs, `urn:oid:…`). Empty: MRNs are not used to find patients, only
    /// Vigil's own `urn:vigil:patient` identifier is.
    #[serde(default)]
    pub patient_identifier_system: String,
    /// `true`: when no Patient on the server has the patient's identifiers, Vigil creates one
    /// (name and birth date only). `false`: such a delivery fails, naming the identifier.
    #[serde(default)]
    pub create_patients: bool,
    /// `true`: a `Device` per device (conditional create on `urn:vigil:device`), referenced
    /// from each Observation. `false`: Observations carry no device reference (for servers
    /// that take no Device writes).
    #[serde(default = "yes")]
    pub create_devices: bool,
    /// `true`: every stored reading is written as an Observation, not only those that open
    /// alerts.
    #[serde(default)]
    pub all_readings: bool,
    /// Most readings in one `batch` Bundle (with `all_readings`, where the server supports
    /// batches).
    #[serde(default = "default_readings_batch_max")]
    pub readings_batch_max: usize,
    /// Most readings written per second (with `all_readings`): the bounded rate.
    #[serde(default = "default_readings_per_s")]
    pub readings_per_s: u32,
    #[serde(flatten)]
    pub retry: RetryConfig,
}

/// The defaults the file gets for keys it leaves out (and an empty `base_url`, which
/// validation refuses).
impl Default for FhirConfig {
    fn default() -> Self {
        FhirConfig {
            base_url: String::new(),
            token: None,
            smart: None,
            patient_identifier_system: String::new(),
            create_patients: false,
            create_devices: yes(),
            all_readings: false,
            readings_batch_max: default_readings_batch_max(),
            readings_per_s: default_readings_per_s(),
            retry: RetryConfig::default(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_readings_batch_max() -> usize {
    100
}

fn default_readings_per_s() -> u32 {
    50
}

/// SMART Backend Services: Vigil signs a client assertion with its ES384 key and trades it
/// for an access token at `token_url`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmartConfig {
    pub token_url: String,
    pub client_id: String,
    /// PEM file with the EC P-384 private key (PKCS#8) registered with the server.
    pub key_file: PathBuf,
    /// The key's id in the JWK set registered with the server.
    pub kid: String,
    #[serde(default = "default_smart_scope")]
    pub scope: String,
}

/// What the connector does: reads Patients (the identifier search) and may create them, creates
/// Devices, Observations and Communications, and creates and updates Flags.
fn default_smart_scope() -> String {
    "system/Patient.read system/Patient.write system/Device.write system/Observation.write \
     system/Flag.write system/Communication.write"
        .into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed.
    pub url: String,
    /// Signing secret in the Standard Webhooks format, `whsec_` + base64 of the key.
    pub secret: String,
    #[serde(flatten)]
    pub retry: RetryConfig,
}

/// The SMTP server alerts are emailed through (`[smtp]`).
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// `smtp://host[:port]` (no TLS: a relay on this host or a trusted network),
    /// `smtp://host[:port]?starttls=required` (STARTTLS or nothing),
    /// `smtp://host[:port]?starttls=opportunistic` (STARTTLS when offered) or
    /// `smtps://host[:port]` (TLS from the first byte); see [`parse_smtp_url`].
    pub url: String,
    /// The user name to authenticate as; absent: no authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Its password (never logged, never shown by `Debug`).
    #[serde(default)]
    pub password: Option<String>,
    /// The sender, `Vigil <vigil@clinic.example>` or `vigil@clinic.example`.
    #[serde(default)]
    pub from: String,
    /// A PEM file of the CA that signed the server's certificate; absent: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name Vigil gives in `EHLO`; empty: `localhost`. Some relays want this host's name.
    #[serde(default)]
    pub hello_name: String,
    /// Timeout of each step of one send (connect, each command), in seconds.
    #[serde(default = "default_notify_timeout")]
    pub timeout_s: u64,
}

impl std::fmt::Debug for SmtpConfig {
    // The password stays out of logs and debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("from", &self.from)
            .field("ca_file", &self.ca_file)
            .field("hello_name", &self.hello_name)
            .field("timeout_s", &self.timeout_s)
            .finish()
    }
}

/// The SMS provider's endpoint (`[sms]`): a form POST with fields `to` and `body` and a bearer
/// token (docs/notifications.md).
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// Where messages are POSTed, `https://…` (`http://` only to this host).
    pub url: String,
    /// The bearer token (never logged, never shown by `Debug`).
    pub token: String,
    /// Timeout of one request, in seconds.
    #[serde(default = "default_notify_timeout")]
    pub timeout_s: u64,
}

impl std::fmt::Debug for SmsConfig {
    // The token stays out of logs and debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig")
            .field("url", &self.url)
            .field("token", &"…")
            .field("timeout_s", &self.timeout_s)
            .finish()
    }
}

fn default_notify_timeout() -> u64 {
    10
}

/// How a notification names the patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PatientLabel {
    /// The initials of the patient's name (`M.T.`).
    Initials,
    /// The patient's id in Vigil, which the clinic chose: for clinics whose ids are codes,
    /// never names.
    Id,
    /// Nothing: the link alone leads to the patient.
    None,
}

/// What a notification may say (`[notify]`): the minimum necessary by default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// `true`: notifications also carry the patient's full name and the alert's message (which
    /// holds the reading that tipped it). `false`: severity, the rule, the patient's label and
    /// a link only.
    pub include_details: bool,
    /// How the patient is named: `initials`, `id` or `none`.
    pub patient_label: PatientLabel,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            include_details: false,
            patient_label: PatientLabel::Initials,
        }
    }
}

/// How the connection to the SMTP server is protected (`smtp.url`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: none.
    Plain,
    /// `?starttls=required`: STARTTLS, and no mail to a server that does not offer it.
    StartTlsRequired,
    /// `?starttls=opportunistic`: STARTTLS when the server offers it, else in the clear.
    StartTlsOpportunistic,
    /// `smtps://`: TLS from the first byte (RFC 8314 implicit TLS).
    Implicit,
}

/// Where `smtp.url` points, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpEndpoint {
    /// A name or an IP address (an IPv6 one without brackets).
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
}

/// Reads `smtp.url`. Default ports: 25 plain, 587 with STARTTLS, 465 for `smtps://`. The user
/// name and password are keys of their own, never in the URL (the URL is logged).
pub fn parse_smtp_url(url: &str) -> Result<SmtpEndpoint, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} must start with smtp:// or smtps://"))?;
    let implicit = match scheme {
        "smtp" => false,
        "smtps" => true,
        _ => return Err(format!("{url:?} must start with smtp:// or smtps://")),
    };
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains('@') {
        return Err(format!(
            "{url:?} must not hold a user name or password: give them as smtp.username and smtp.password"
        ));
    }
    if authority.contains(['/', '#']) {
        return Err(format!(
            "{url:?} must be only the scheme, host, port and ?starttls=…"
        ));
    }
    let (host, port) = host_and_port(authority).map_err(|r| format!("{url:?}: {r}"))?;
    let mut security = if implicit {
        SmtpSecurity::Implicit
    } else {
        SmtpSecurity::Plain
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let chosen = match pair {
            "starttls=required" => SmtpSecurity::StartTlsRequired,
            "starttls=opportunistic" => SmtpSecurity::StartTlsOpportunistic,
            _ => {
                return Err(format!(
                    "{url:?}: {pair:?} is not starttls=required or starttls=opportunistic"
                ));
            }
        };
        if implicit {
            return Err(format!(
                "{url:?}: smtps:// is TLS from the start; starttls does not apply"
            ));
        }
        security = chosen;
    }
    let default_port = match security {
        SmtpSecurity::Plain => 25,
        SmtpSecurity::StartTlsRequired | SmtpSecurity::StartTlsOpportunistic => 587,
        SmtpSecurity::Implicit => 465,
    };
    Ok(SmtpEndpoint {
        host,
        port: port.unwrap_or(default_port),
        security,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`: the host (brackets off) and the port if given.
fn host_and_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (ip, tail) = v6.split_once(']').ok_or("an unclosed [ in its host")?;
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{ip:?} is not an IPv6 address"));
            }
            let port = match tail {
                "" => None,
                t => Some(
                    t.strip_prefix(':')
                        .ok_or("expected :port after the IPv6 address")?,
                ),
            };
            (ip, port)
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if !authority.starts_with('[') && !is_host_name(host) {
        return Err(format!("{host:?} is not a host name or address"));
    }
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{p:?} is not a port"))?,
        ),
        None => None,
    };
    Ok((host.to_owned(), port))
}

/// A DNS name or an IPv4 address: dot-separated labels of letters, digits and inner hyphens.
fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `host` is this machine (`localhost`, 127.0.0.0/8, `::1`): the one place a secret may
/// travel without TLS.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The signing key a `whsec_<base64>` webhook secret encodes (24 to 64 bytes), if it is one.
pub fn webhook_signing_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let b64 = secret.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
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

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1 << 20,
            request_timeout_s: 30,
            session_hours: 12,
            max_connections: 1024,
            header_timeout_s: 10,
            idle_timeout_s: 30,
            tls_handshake_timeout_s: 10,
            tls: None,
            public_url: String::new(),
            internal_url: String::new(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            mode: MqttMode::Embedded,
            listen: "0.0.0.0:1883".into(),
            url: "mqtt://127.0.0.1:1883".into(),
            username: None,
            password: None,
            client_id: "vigil-1".into(),
            share_group: String::new(),
            session_expiry_s: 7 * 86_400,
            ca_file: None,
            max_packet_bytes: 256 * 1024,
            connect_timeout_s: 10,
            max_inflight: 256,
            max_connections: 20_000,
            device_connects_per_minute: 30,
            device_connect_burst: 20,
            auth_failures_free: 10,
            tls: None,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_days: 0,
            batch_max: 4096,
            queue_capacity: 16_384,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
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

impl HttpConfig {
    /// The origin join links point at: `public_url` without a trailing `/`, or else
    /// `http(s)://` and the address the listener is bound to (`bound`: port 0 resolved), with
    /// `localhost` for an unspecified address (0.0.0.0, ::), which no browser can be sent to.
    pub fn public_origin(&self, bound: SocketAddr) -> String {
        if !self.public_url.is_empty() {
            return self.public_url.trim_end_matches('/').to_owned();
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        if bound.ip().is_unspecified() {
            format!("{scheme}://localhost:{}", bound.port())
        } else {
            format!("{scheme}://{bound}")
        }
    }

    /// Where the other instances reach this one: `internal_url` without a trailing `/`, or else
    /// `http(s)://` and the bound address; `None` for an unspecified address (0.0.0.0, ::).
    pub fn internal_origin(&self, bound: SocketAddr) -> Option<String> {
        if !self.internal_url.is_empty() {
            return Some(self.internal_url.trim_end_matches('/').to_owned());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        (!bound.ip().is_unspecified()).then(|| format!("{scheme}://{bound}"))
    }
}

/// An identifier system as FHIR wants it: an absolute URI (`urn:oid:…`, `https://…`), and
/// nothing FHIR token search would read as a separator.
fn check_identifier_system(s: &str) -> Result<(), String> {
    let scheme = s.split_once(':').map(|(a, _)| a).unwrap_or("");
    let scheme_ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || s.len() == scheme.len() + 1 {
        return Err(format!(
            "{s:?} is not an absolute URI (e.g. urn:oid:2.16.840.1.113883.3.4242 or https://clinic.example/mrn)"
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '|' | ',' | '$' | '\\'))
    {
        return Err(format!("must not contain {c:?}"));
    }
    Ok(())
}

/// `http(s)://host[:port]`, with at most a trailing `/`: Vigil serves its pages at the root, and
/// a user name, query or fragment in a link is never meant.
fn check_public_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} must start with https:// or http://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(format!(
            "{url:?} must be only the scheme, host and port (no path, query or fragment): Vigil serves its pages at the root"
        ));
    }
    if authority.contains('@') {
        return Err(format!("{url:?} must not hold a user name"));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (ip, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?} has an unclosed [ in its host"))?;
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{url:?}: {ip:?} is not an IPv6 address"));
            }
            match tail {
                "" => (ip, None),
                t => (
                    ip,
                    Some(t.strip_prefix(':').ok_or_else(|| {
                        format!("{url:?}: expected :port after the IPv6 address")
                    })?),
                ),
            }
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let name_ok = |h: &str| {
        h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
    };
    if !authority.starts_with('[') && (host.is_empty() || !name_ok(host)) {
        return Err(format!("{url:?} does not name a host"));
    }
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(format!("{url:?}: {p:?} is not a port"));
    }
    Ok(())
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

/// The level names a log filter may use.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A log filter: a level, or comma-separated `target=level` directives with at most one bare
/// level for everything else (`vigil=debug,info`). `tracing` itself would take any other bare
/// word as the name of a target to log at every level (`verbose`: log nothing but that), so such
/// a word is refused here, naming the levels.
fn check_log_filter(filter: &str) -> Result<(), String> {
    let is_level = |l: &str| LOG_LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err("is empty; use a level such as info".into());
    }
    for d in &directives {
        let ok = match d.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(d),
        };
        if !ok {
            return Err(format!(
                "{d:?} is neither a level (off, error, warn, info, debug, trace) nor \
                 target=level (as in vigil=debug,info)"
            ));
        }
    }
    if directives.iter().filter(|d| !d.contains('=')).count() > 1 {
        return Err(
            "names more than one level for everything; give one, and target=level for \
                    the rest"
                .into(),
        );
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(|_| ())
        .map_err(|e| format!("{filter:?} is not a log filter: {e}"))
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
mod tests {
    use super::*;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.toml");
        std::fs::write(&path, file).unwrap();
        Config::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            &Overrides::default(),
        )
    }

    #[test]
    fn the_database_url_comes_from_the_environment_and_its_password_is_never_shown() {
        let c = load(
            "",
            &[(
                "VIGIL_DATABASE__URL",
                "postgres://vigil:s3cret@db.clinic.example:5432/vigil",
            )],
        )
        .unwrap();
        let d = c
            .database
            .as_ref()
            .expect("[database] from the environment");
        assert_eq!(
            d.url,
            "postgres://vigil:s3cret@db.clinic.example:5432/vigil"
        );
        let shown = format!("{c:?}");
        assert!(shown.contains("db.clinic.example:5432/vigil"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(load("", &[]).unwrap().database.is_none());
        let e = load("[database]\nurl = \"mysql://v:s@h/vigil\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("database.url") && e.contains("postgres://"),
            "{e}"
        );
    }

    #[test]
    fn lists_come_from_the_environment_as_toml_arrays() {
        let c = load(
            "",
            &[
                ("VIGIL_VIDEO__PUBLIC_IPS", r#"["203.0.113.5"]"#),
                ("VIGIL_VIDEO__UDP_PORTS", "41000-41099"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.video.public_ips,
            vec!["203.0.113.5".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(c.video.port_range().unwrap(), 41000..=41099);
        let e = load("", &[("VIGIL_VIDEO__UDP_PORTS", "41099-41000")]).unwrap_err();
        assert!(e.to_string().contains("video.udp_ports"), "{e}");
        let e = load("[video]\nturn_urls = [\"turn:t.example:3478\"]\n", &[]).unwrap_err();
        assert!(e.to_string().contains("video.turn_secret"), "{e}");
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, Vec::new(), &Overrides::default()).unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:8080");
        assert_eq!(c.mqtt.listen, "0.0.0.0:1883");
        assert_eq!(c.data_dir, PathBuf::from("./vigil-data"));
        assert_eq!(c.mqtt.mode, MqttMode::Embedded);
    }

    #[test]
    fn connection_limits_default_to_sane_values_and_are_checked() {
        let c = Config::load(None, Vec::new(), &Overrides::default()).unwrap();
        let h = &c.http;
        // Deadlines a real client never meets (a head arrives in one packet; a browser's idle
        // connection is simply opened again) and an attacker always does, within a minute.
        assert_eq!(
            (
                h.header_timeout_s,
                h.idle_timeout_s,
                h.tls_handshake_timeout_s
            ),
            (10, 30, 10)
        );
        assert!(h.header_timeout_s < h.request_timeout_s);
        assert_eq!((h.max_connections, c.mqtt.max_connections), (1024, 20_000));
        for (var, value, key) in [
            ("VIGIL_HTTP__MAX_CONNECTIONS", "0", "http.max_connections"),
            ("VIGIL_HTTP__HEADER_TIMEOUT_S", "0", "http.header_timeout_s"),
            ("VIGIL_HTTP__IDLE_TIMEOUT_S", "86400", "http.idle_timeout_s"),
            (
                "VIGIL_HTTP__TLS_HANDSHAKE_TIMEOUT_S",
                "0",
                "http.tls_handshake_timeout_s",
            ),
            ("VIGIL_MQTT__MAX_CONNECTIONS", "0", "mqtt.max_connections"),
        ] {
            let e = load("", &[(var, value)]).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_both() {
        let c = load(
            "[mqtt]\nmax_inflight = 10\n[http]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("VIGIL_MQTT__MAX_INFLIGHT", "20"),
                ("VIGIL_HTTP__LISTEN", "127.0.0.1:2"),
                ("VIGIL_BOOTSTRAP_TOKEN", "ignored"),
                ("VIGIL_DASHBOARD_DIR", "/srv/dashboard"),
                ("VIGIL_BIN", "/usr/bin/vigil"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(c.mqtt.max_inflight, 20);
        assert_eq!(c.http.listen, "127.0.0.1:2");

        let flags = Overrides {
            http_listen: Some("127.0.0.1:3".into()),
            ..Overrides::default()
        };
        let c = Config::load(
            None,
            vec![("VIGIL_HTTP__LISTEN".into(), "127.0.0.1:2".into())],
            &flags,
        )
        .unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:3");
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("[mqtt]\nlisten = \"nowhere\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("mqtt.listen"), "{e}");
        let e = load("[mqtt]\nlistn = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn"), "{e}");
        let e = load("", &[("VIGIL_MQTT__MAX_INFLIGHT", "lots")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_inflight"), "{e}");
        let e = load("[log]\nformat = \"xml\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("xml"), "{e}");
    }

    #[test]
    fn a_log_level_must_be_a_level_or_target_level_pairs() {
        for good in [
            "info",
            "WARN",
            "off",
            "vigil=debug,info",
            "vigil::ingest=trace, warn",
        ] {
            let c = load("", &[("VIGIL_LOG__LEVEL", good)]).unwrap();
            assert_eq!(c.log.level, good);
        }
        for bad in [
            "verbose",
            "",
            " , ",
            "vigil=loud",
            "=info",
            "info,debug",
            "vigil",
        ] {
            let e = load("", &[("VIGIL_LOG__LEVEL", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("config: log.level: "), "{bad:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let e = load("[log]\nlevel = \"verbose\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.level") && e.contains("\"verbose\""), "{e}");
        // RUST_LOG wins over log.level, and is held to the same rule.
        let c = load("[log]\nlevel = \"warn\"\n", &[("RUST_LOG", "debug")]).unwrap();
        assert_eq!(c.log.level, "debug");
        let e = load("", &[("RUST_LOG", "verbose")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("RUST_LOG"), "{e}");
    }

    #[test]
    fn counts_names_and_credentials_that_cannot_work_are_refused() {
        let refused = |file: &str, env: &[(&str, &str)], key: &str| {
            let e = load(file, env).unwrap_err().to_string();
            assert!(e.contains(&format!("config: {key}: ")), "{key}: {e}");
        };
        for (var, key) in [
            ("VIGIL_HTTP__MAX_BODY_BYTES", "http.max_body_bytes"),
            ("VIGIL_MQTT__MAX_CONNECTIONS", "mqtt.max_connections"),
            (
                "VIGIL_MQTT__DEVICE_CONNECTS_PER_MINUTE",
                "mqtt.device_connects_per_minute",
            ),
            ("VIGIL_STORE__BATCH_MAX", "store.batch_max"),
            ("VIGIL_STORE__QUEUE_CAPACITY", "store.queue_capacity"),
        ] {
            refused("", &[(var, "0")], key);
        }
        refused("", &[("VIGIL_DATA_DIR", "")], "data_dir");
        let influx = "[influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\n";
        assert!(load(influx, &[]).is_ok());
        refused(
            influx,
            &[("VIGIL_INFLUXDB__BUCKET", " ")],
            "influxdb.bucket",
        );
        refused(
            influx,
            &[("VIGIL_INFLUXDB__TIMEOUT_S", "0")],
            "influxdb.timeout_s",
        );
        refused(
            influx,
            &[("VIGIL_INFLUXDB__FLUSH_INTERVAL_MS", "0")],
            "influxdb.flush_interval_ms",
        );
        let fhir = "[fhir]\nbase_url = \"https://fhir.example.org/r4\"\n";
        refused(
            fhir,
            &[("VIGIL_FHIR__RETRY_MAX_S", "0")],
            "fhir.retry_max_s",
        );
        refused(
            fhir,
            &[("VIGIL_FHIR__GIVE_UP_AFTER_S", "0")],
            "fhir.give_up_after_s",
        );
        refused(fhir, &[("VIGIL_FHIR__TOKEN", "")], "fhir.token");
        let smart = format!(
            "{fhir}token = \"t\"\n[fhir.smart]\ntoken_url = \"https://a.example/token\"\n\
             client_id = \"vigil\"\nkey_file = \"/k.pem\"\nkid = \"k1\"\n"
        );
        refused(&smart, &[], "fhir.token");
        let smart = smart.replace("token = \"t\"\n", "");
        assert!(load(&smart, &[]).is_ok());
        refused(&smart, &[("VIGIL_FHIR__SMART__KID", "")], "fhir.smart.kid");
        for bad in [
            "mrn",
            "urn:",
            "urn:oid:1.2 3",
            "https://x.example/a|b",
            "1urn:x",
        ] {
            refused(
                fhir,
                &[("VIGIL_FHIR__PATIENT_IDENTIFIER_SYSTEM", bad)],
                "fhir.patient_identifier_system",
            );
        }
        refused(
            fhir,
            &[("VIGIL_FHIR__READINGS_BATCH_MAX", "0")],
            "fhir.readings_batch_max",
        );
        refused(
            fhir,
            &[("VIGIL_FHIR__READINGS_PER_S", "0")],
            "fhir.readings_per_s",
        );
    }

    #[test]
    fn the_fhir_matching_keys_have_their_contract_names_and_defaults() {
        let c = load("[fhir]\nbase_url = \"https://fhir.example.org/r4\"\n", &[]).unwrap();
        let f = c.fhir.unwrap();
        assert_eq!(f.patient_identifier_system, "");
        assert!(!f.create_patients && !f.all_readings && f.create_devices);
        assert_eq!((f.readings_batch_max, f.readings_per_s), (100, 50));
        let c = load(
            r#"
            [fhir]
            base_url = "https://fhir.example.org/r4"
            patient_identifier_system = "urn:oid:2.16.840.1.113883.3.0000"
            create_patients = true
            all_readings = true
            create_devices = false
            "#,
            &[("VIGIL_FHIR__READINGS_PER_S", "5")],
        )
        .unwrap();
        let f = c.fhir.unwrap();
        assert_eq!(
            f.patient_identifier_system,
            "urn:oid:2.16.840.1.113883.3.0000"
        );
        assert!(f.create_patients && f.all_readings && !f.create_devices);
        assert_eq!(f.readings_per_s, 5);
    }

    #[test]
    fn nested_sections_take_environment_overrides() {
        let c = load(
            "[mqtt.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
            &[("VIGIL_MQTT__TLS__LISTEN", "127.0.0.1:8884")],
        )
        .unwrap();
        let tls = c.mqtt.tls.unwrap();
        assert_eq!(tls.listen, "127.0.0.1:8884");
        assert_eq!(tls.cert, PathBuf::from("/c.pem"));
        assert!(tls.client_ca.is_none());
        assert!(
            tls.only,
            "with [mqtt.tls], MQTTS only unless said otherwise"
        );
        let both = load(
            "[mqtt.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
            &[("VIGIL_MQTT__TLS__ONLY", "false")],
        )
        .unwrap();
        assert!(!both.mqtt.tls.unwrap().only);
    }

    #[test]
    fn the_contract_sections_are_accepted() {
        let c = load(
            r#"
            [influxdb]
            url = "http://127.0.0.1:8086"
            org = "clinic"
            bucket = "vitals"
            token = "t"
            [fhir]
            base_url = "https://fhir.example.org/r4"
            token = "t"
            [webhook]
            url = "https://crm.example.org/hooks/vigil"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(c.influxdb.unwrap().bucket, "vitals");
    }

    #[test]
    fn the_public_url_is_an_origin_and_links_fall_back_to_the_bound_address() {
        for ok in [
            "https://vigil.clinic.example",
            "https://vigil.clinic.example/",
            "http://192.0.2.7:8080",
            "https://[2001:db8::1]:8443",
            "http://localhost",
        ] {
            let c = load(&format!("[http]\npublic_url = \"{ok}\"\n"), &[])
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(
                c.http.public_origin("127.0.0.1:1".parse().unwrap()),
                ok.trim_end_matches('/')
            );
        }
        for bad in [
            "vigil.clinic.example",
            "ftp://vigil.clinic.example",
            "https://",
            "https://vigil.clinic.example/vigil",
            "https://vigil.clinic.example?x=1",
            "https://vigil.clinic.example#x",
            "https://user@vigil.clinic.example",
            "https://vigil.clinic.example:0",
            "https://vigil.clinic.example:99999",
            "https://vigil clinic",
            "https://[::1",
        ] {
            let e = load("", &[("VIGIL_HTTP__PUBLIC_URL", bad)])
                .expect_err(bad)
                .to_string();
            assert!(e.contains("http.public_url"), "{bad}: {e}");
        }

        let mut http = HttpConfig::default();
        assert_eq!(
            http.public_origin("127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            http.public_origin("0.0.0.0:8080".parse().unwrap()),
            "http://localhost:8080"
        );
        assert_eq!(
            http.public_origin("[::1]:8080".parse().unwrap()),
            "http://[::1]:8080"
        );
        http.tls = Some(HttpTlsConfig {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        });
        assert_eq!(
            http.public_origin("192.0.2.7:443".parse().unwrap()),
            "https://192.0.2.7:443"
        );
    }

    #[test]
    fn email_and_sms_are_off_unless_configured_and_the_contract_sections_are_accepted() {
        let c = load("", &[]).unwrap();
        assert!(c.smtp.is_none() && c.sms.is_none());
        assert!(!c.notify.include_details);
        assert_eq!(c.notify.patient_label, PatientLabel::Initials);
        let c = load(
            r#"
            [smtp]
            url = "smtp://127.0.0.1:2525"
            from = "Vigil <vigil@clinic.example>"
            [sms]
            url = "https://sms.example/send"
            token = "sms-s3cret"
            [notify]
            include_details = true
            patient_label = "id"
            "#,
            &[
                ("VIGIL_SMTP__PASSWORD", "mail-s3cret"),
                ("VIGIL_SMTP__USERNAME", "vigil"),
            ],
        )
        .unwrap();
        let m = c.smtp.as_ref().unwrap();
        assert_eq!(
            parse_smtp_url(&m.url).unwrap(),
            SmtpEndpoint {
                host: "127.0.0.1".into(),
                port: 2525,
                security: SmtpSecurity::Plain
            }
        );
        assert_eq!(
            (m.timeout_s, m.password.as_deref()),
            (10, Some("mail-s3cret"))
        );
        assert_eq!(c.sms.as_ref().unwrap().token, "sms-s3cret");
        assert!(c.notify.include_details);
        assert_eq!(c.notify.patient_label, PatientLabel::Id);
        let shown = format!("{c:?}");
        assert!(shown.contains("smtp://127.0.0.1:2525"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn smtp_urls_name_the_server_its_port_and_its_tls() {
        let ok = |url: &str, host: &str, port: u16, security: SmtpSecurity| {
            assert_eq!(
                parse_smtp_url(url).unwrap_or_else(|e| panic!("{url}: {e}")),
                SmtpEndpoint {
                    host: host.into(),
                    port,
                    security
                },
                "{url}"
            );
        };
        ok(
            "smtp://mail.clinic.example",
            "mail.clinic.example",
            25,
            SmtpSecurity::Plain,
        );
        ok(
            "smtp://127.0.0.1:2525/",
            "127.0.0.1",
            2525,
            SmtpSecurity::Plain,
        );
        ok(
            "smtp://mail.clinic.example?starttls=required",
            "mail.clinic.example",
            587,
            SmtpSecurity::StartTlsRequired,
        );
        ok(
            "smtp://[::1]:2525?starttls=opportunistic",
            "::1",
            2525,
            SmtpSecurity::StartTlsOpportunistic,
        );
        ok(
            "smtps://mail.clinic.example",
            "mail.clinic.example",
            465,
            SmtpSecurity::Implicit,
        );
        for bad in [
            "mail.clinic.example",
            "http://mail.clinic.example",
            "smtp://",
            "smtp://user:pw@mail.clinic.example",
            "smtp://mail.clinic.example/x",
            "smtp://mail.clinic.example:0",
            "smtp://mail.clinic.example:99999",
            "smtp://mail.clinic.example?tls=required",
            "smtp://mail.clinic.example?starttls=yes",
            "smtps://mail.clinic.example?starttls=required",
            "smtp://mail clinic",
            "smtp://[::1",
        ] {
            assert!(parse_smtp_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_email_and_sms_settings_name_the_key() {
        let refused = |file: &str, env: &[(&str, &str)], key: &str| {
            let e = load(file, env).unwrap_err().to_string();
            assert!(e.contains(&format!("config: {key}")), "{key}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        };
        let smtp =
            "[smtp]\nurl = \"smtp://127.0.0.1:2525\"\nfrom = \"Vigil <vigil@clinic.example>\"\n";
        assert!(load(smtp, &[]).is_ok());
        refused(
            smtp,
            &[("VIGIL_SMTP__URL", "mail.clinic.example")],
            "smtp.url",
        );
        refused(
            smtp,
            &[("VIGIL_SMTP__URL", "imap://mail.clinic.example")],
            "smtp.url",
        );
        refused(
            "[smtp]\nurl = \"smtp://127.0.0.1:2525\"\n",
            &[],
            "smtp.from",
        );
        refused(smtp, &[("VIGIL_SMTP__FROM", "Vigil")], "smtp.from");
        refused(smtp, &[("VIGIL_SMTP__FROM", "vigil@@clinic")], "smtp.from");
        refused(smtp, &[("VIGIL_SMTP__USERNAME", "vigil")], "smtp.password");
        refused(smtp, &[("VIGIL_SMTP__PASSWORD", "pw")], "smtp.username");
        refused(smtp, &[("VIGIL_SMTP__TIMEOUT_S", "0")], "smtp.timeout_s");
        refused(
            smtp,
            &[("VIGIL_SMTP__HELLO_NAME", "my host")],
            "smtp.hello_name",
        );
        refused(smtp, &[("VIGIL_SMTP__FRM", "x")], "smtp.frm");
        // A password crosses the network only inside TLS (to this machine, as it likes).
        let remote = [
            ("VIGIL_SMTP__URL", "smtp://mail.clinic.example"),
            ("VIGIL_SMTP__USERNAME", "vigil"),
            ("VIGIL_SMTP__PASSWORD", "pw"),
        ];
        refused(smtp, &remote, "smtp.url");
        let opportunistic = [
            (
                "VIGIL_SMTP__URL",
                "smtp://mail.clinic.example?starttls=opportunistic",
            ),
            remote[1],
            remote[2],
        ];
        refused(smtp, &opportunistic, "smtp.url");
        for url in [
            "smtps://mail.clinic.example",
            "smtp://mail.clinic.example?starttls=required",
        ] {
            assert!(load(smtp, &[("VIGIL_SMTP__URL", url), remote[1], remote[2]]).is_ok());
        }
        assert!(load(smtp, &remote[1..]).is_ok(), "plain to 127.0.0.1");

        let sms = "[sms]\nurl = \"https://sms.example/send\"\ntoken = \"t\"\n";
        assert!(load(sms, &[]).is_ok());
        assert!(load(sms, &[("VIGIL_SMS__URL", "http://127.0.0.1:9/send")]).is_ok());
        refused(
            sms,
            &[("VIGIL_SMS__URL", "http://sms.example/send")],
            "sms.url",
        );
        refused(
            sms,
            &[("VIGIL_SMS__URL", "ftp://sms.example/send")],
            "sms.url",
        );
        refused(
            sms,
            &[("VIGIL_SMS__URL", "https://u:p@sms.example/send")],
            "sms.url",
        );
        refused(sms, &[("VIGIL_SMS__TOKEN", " ")], "sms.token");
        refused(sms, &[("VIGIL_SMS__TIMEOUT_S", "0")], "sms.timeout_s");
        refused("[sms]\nurl = \"https://sms.example/send\"\n", &[], "sms");
        refused(
            "",
            &[("VIGIL_NOTIFY__PATIENT_LABEL", "name")],
            "notify.patient_label",
        );
    }

    #[test]
    fn every_key_is_in_the_readme_reference() {
        let readme = include_str!("../README.md");
        let value = toml::Value::try_from(Config::default()).unwrap();
        let mut missing = Vec::new();
        let toml::Value::Table(t) = value else {
            unreachable!()
        };
        for (k, v) in t {
            match v {
                toml::Value::Table(inner) => {
                    for key in inner.keys() {
                        let full = format!("{k}.{key}");
                        if !readme.contains(&format!("`{full}`")) {
                            missing.push(full);
                        }
                    }
                }
                _ => {
                    if !readme.contains(&format!("`{k}`")) {
                        missing.push(k);
                    }
                }
            }
        }
        assert!(missing.is_empty(), "README lacks {missing:?}");
    }
}
