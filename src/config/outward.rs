//! The systems Vigil writes to: `[influxdb]` (readings for dashboards), `[fhir]` with
//! `[fhir.smart]` (the patient's record) and `[webhook]` (the CRM), and the retry settings the
//! two outbox connectors share; with the checks of a FHIR identifier system's form and of a
//! webhook's signing secret.
//!
//! Like every section file it never uses the rest of `config`: a check here returns a reason,
//! and `Config::validate` names the key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

/// An identifier system as FHIR wants it: an absolute URI (`urn:oid:…`, `https://…`), and
/// nothing FHIR token search would read as a separator.
pub(super) fn check_identifier_system(s: &str) -> Result<(), String> {
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

/// The signing key a `whsec_<base64>` webhook secret encodes (24 to 64 bytes), if it is one.
pub fn webhook_signing_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let b64 = secret.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}
