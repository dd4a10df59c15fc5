//! Notifications: `[smtp]` (email), `[sms]` and `[notify]` (what a message may say about the
//! patient), with the reading of `smtp.url` and the host checks used for both servers (a host
//! name; this machine, the one place a secret may travel without TLS).
//!
//! The SMTP password and the SMS token never show in `Debug` output, and `smtp.url`, which is
//! logged, never holds credentials: `parse_smtp_url` refuses them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// How long a notification's acknowledgement link works, in hours (1 to 168). It needs
    /// a sign-in and works once, whatever this says.
    pub ack_link_hours: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            include_details: false,
            patient_label: PatientLabel::Initials,
            ack_link_hours: 24,
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
pub(super) fn host_and_port(authority: &str) -> Result<(String, Option<u16>), String> {
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
pub(super) fn is_host_name(h: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
