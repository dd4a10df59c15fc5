//! Email through the clinic's SMTP server (`[smtp]`), with `lettre` over tokio and rustls.
//!
//! One connection per message (alerts are few, and a pooled connection a relay has dropped
//! would only fail the next alert). Each message carries a `Message-ID` made from the
//! notification's id, so every attempt at one notification carries the same one and a
//! recipient (or a relay's duplicate filter) can tell a retry from a new alert, and
//! `Auto-Submitted: auto-generated` (RFC 3834), so that out-of-office replies are not sent back.
//!
//! It owns the transport and the classification of its failures ([`classify`]); it never
//! logs a message's text or the server's password.

use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sha2::{Digest, Sha256};

use super::message::{Notice, email};
use super::outcome::{Channel, SendError, Sent, SetupError};
use crate::config::{SmtpConfig, SmtpSecurity, parse_smtp_url};

/// Sends notices as email.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `host:port`, for error messages (never the credentials).
    server: String,
}

impl Mailer {
    /// A mailer for `[smtp]` (checked at load); reads `smtp.ca_file`.
    pub fn new(cfg: &SmtpConfig) -> Result<Mailer, SetupError> {
        let endpoint = parse_smtp_url(&cfg.url).map_err(|reason| SetupError {
            key: "smtp.url",
            reason,
        })?;
        let from: Mailbox = cfg.from.parse().map_err(|e| SetupError {
            key: "smtp.from",
            reason: format!("{:?} is not an address: {e}", cfg.from),
        })?;
        let tls = match endpoint.security {
            SmtpSecurity::Plain => Tls::None,
            SmtpSecurity::StartTlsRequired => Tls::Required(tls_parameters(cfg, &endpoint.host)?),
            SmtpSecurity::StartTlsOpportunistic => {
                Tls::Opportunistic(tls_parameters(cfg, &endpoint.host)?)
            }
            SmtpSecurity::Implicit => Tls::Wrapper(tls_parameters(cfg, &endpoint.host)?),
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(endpoint.host.clone())
                .port(endpoint.port)
                .tls(tls)
                .timeout(Some(Duration::from_secs(cfg.timeout_s)));
        if !cfg.hello_name.is_empty() {
            builder = builder.hello_name(ClientId::Domain(cfg.hello_name.clone()));
        }
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let server = if endpoint.host.contains(':') {
            format!("[{}]:{}", endpoint.host, endpoint.port)
        } else {
            format!("{}:{}", endpoint.host, endpoint.port)
        };
        Ok(Mailer {
            transport: builder.build(),
            from,
            server,
        })
    }

    /// Sends `notice` to the address `to`.
    pub async fn send(&self, to: &str, notice: &Notice) -> Result<Sent, SendError> {
        let to = parse_address(to)?;
        let message_id = message_id(&notice.id, self.from.email.domain());
        let text = email(notice);
        let message = Message::builder()
            .message_id(Some(message_id.clone()))
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(text.subject)
            .header(ContentType::TEXT_PLAIN)
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ))
            .body(text.body)
            .map_err(|e| SendError::Permanent(format!("the email could not be built: {e}")))?;
        match self.transport.send(message).await {
            Ok(reply) => Ok(Sent {
                channel: Channel::Email,
                message_id: Some(message_id),
                receipt: Some(reply.message().collect::<Vec<_>>().join(" "))
                    .filter(|r| !r.is_empty()),
            }),
            Err(e) => Err(classify(&self.server, &e)),
        }
    }
}

/// The TLS parameters for `host`: the CA in `smtp.ca_file` alone, or the system's roots.
fn tls_parameters(cfg: &SmtpConfig, host: &str) -> Result<TlsParameters, SetupError> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|e| SetupError {
            key: "smtp.ca_file",
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        let ca = Certificate::from_pem(&pem).map_err(|e| SetupError {
            key: "smtp.ca_file",
            reason: format!("{} is not a PEM certificate: {e}", path.display()),
        })?;
        builder = builder
            .certificate_store(CertificateStore::None)
            .add_root_certificate(ca);
    }
    builder.build_rustls().map_err(|e| SetupError {
        key: "smtp.url",
        reason: format!("TLS for {host}: {e}"),
    })
}

/// An email address (`nina@clinic.example`), or why it is not one (a permanent failure).
pub fn parse_address(s: &str) -> Result<Address, SendError> {
    s.trim()
        .parse::<Address>()
        .map_err(|e| SendError::Permanent(format!("{s:?} is not an email address: {e}")))
}

/// The `Message-ID` of notification `id` from a sender at `domain`: `<vigil.{id}@{domain}>`
/// when the id is made of letters, digits, `_`, `-` and inner dots; else a hash of it (the
/// same for the same id).
pub fn message_id(id: &str, domain: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !id.starts_with('.')
        && !id.ends_with('.')
        && !id.contains("..");
    if plain {
        format!("<vigil.{id}@{domain}>")
    } else {
        let digest = Sha256::digest(id.as_bytes());
        format!("<vigil.h{}@{domain}>", hex::encode(&digest[..16]))
    }
}

/// Retryable: the server could not be reached, timed out, failed TLS, answered 4xx or broke
/// off. Permanent: a 5xx reply (an unknown recipient, a refused sender or login), or what the
/// client itself refuses (no STARTTLS where it is required, no common login mechanism).
pub fn classify(server: &str, e: &lettre::transport::smtp::Error) -> SendError {
    if e.is_permanent() {
        SendError::Permanent(format!("the SMTP server {server} refused it: {e}"))
    } else if e.is_transient() {
        SendError::Retryable(format!("the SMTP server {server} deferred it: {e}"))
    } else if e.is_timeout() {
        SendError::Retryable(format!("the SMTP server {server} timed out: {e}"))
    } else if e.is_client() {
        SendError::Permanent(format!(
            "the SMTP server {server} cannot take it as configured: {e}"
        ))
    } else {
        SendError::Retryable(format!(
            "the SMTP server {server} could not be reached: {e}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_keeps_its_message_id_and_odd_ids_are_hashed() {
        assert_eq!(
            message_id("ntf_0011.2", "clinic.example"),
            "<vigil.ntf_0011.2@clinic.example>"
        );
        let odd = message_id("a b<c>@d", "clinic.example");
        assert_eq!(odd, message_id("a b<c>@d", "clinic.example"));
        assert!(odd.starts_with("<vigil.h") && odd.len() == "<vigil.h@clinic.example>".len() + 32);
        assert_ne!(message_id("a..b", "c"), "<vigil.a..b@c>");
        assert_ne!(message_id("", "c"), "<vigil.@c>");
    }

    #[test]
    fn addresses_are_checked_before_anything_is_sent() {
        assert!(parse_address(" nina@clinic.example ").is_ok());
        for bad in ["nina", "nina@", "@clinic.example", "a b@c.example", ""] {
            assert!(
                matches!(parse_address(bad), Err(SendError::Permanent(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_mailer_needs_a_readable_ca_file() {
        let cfg = SmtpConfig {
            url: "smtp://127.0.0.1:2525?starttls=required".into(),
            username: None,
            password: None,
            from: "Vigil <vigil@clinic.example>".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            hello_name: String::new(),
            timeout_s: 10,
        };
        let e = Mailer::new(&cfg).err().unwrap();
        assert_eq!(e.key, "smtp.ca_file");
        let plain = SmtpConfig {
            url: "smtp://127.0.0.1:2525".into(),
            ..cfg
        };
        assert!(
            Mailer::new(&plain).is_ok(),
            "no TLS: the CA file is not read"
        );
    }
}
