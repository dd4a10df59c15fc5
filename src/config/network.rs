//! `[http]` and `[mqtt]`: the API's and the device endpoint's listeners, their limits and TLS,
//! and how Vigil reaches an external broker; with their defaults, the origins links and other
//! instances use, and the check of a public URL's form.
//!
//! Like every section file it never uses the rest of `config`: a check here returns a reason,
//! and `Config::validate` names the key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

/// The HTTPS listener's certificate (reloaded when the files change).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `http(s)://host[:port]`, with at most a trailing `/`: Vigil serves its pages at the root, and
/// a user name, query or fragment in a link is never meant.
pub(super) fn check_public_url(url: &str) -> Result<(), String> {
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
