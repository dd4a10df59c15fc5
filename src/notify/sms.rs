//! SMS through the clinic's provider (`[sms]`): one HTTPS form POST per message.
//!
//! The request, which a provider (or a small adapter in front of one) must take:
//! `POST {sms.url}` with `Authorization: Bearer {sms.token}`,
//! `Content-Type: application/x-www-form-urlencoded`, fields `to` (the number, E.164:
//! `+` and 8 to 15 digits) and `body` (the text), and `Idempotency-Key: {notification id}`
//! (the same on every attempt at one notification, for providers that deduplicate). A 2xx
//! answer means the provider took it; a JSON answer's `id` or `sid` is kept as the receipt.
//! Redirects are not followed (a redirected POST would lose its body or its token).
//!
//! It never logs the token or the text.

use std::time::Duration;

use super::message::{Notice, sms};
use super::outcome::{Channel, SendError, Sent, SetupError};
use crate::config::SmsConfig;

/// Sends notices as SMS.
pub struct SmsSender {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl SmsSender {
    /// A sender for `[sms]` (checked at load).
    pub fn new(cfg: &SmsConfig) -> Result<SmsSender, SetupError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_s))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SetupError {
                key: "sms.url",
                reason: format!("HTTP client: {e}"),
            })?;
        Ok(SmsSender {
            http,
            url: cfg.url.clone(),
            token: cfg.token.clone(),
        })
    }

    /// Sends `notice` to the phone number `to`.
    pub async fn send(&self, to: &str, notice: &Notice) -> Result<Sent, SendError> {
        let to = parse_phone(to)?;
        let text = sms(notice);
        let sent = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("idempotency-key", &notice.id)
            .form(&[("to", to.as_str()), ("body", text.as_str())])
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(SendError::Retryable(format!(
                    "the SMS provider timed out: {}",
                    causes(e)
                )));
            }
            Err(e) => {
                return Err(SendError::Retryable(format!(
                    "the SMS provider could not be reached: {}",
                    causes(e)
                )));
            }
        };
        let status = resp.status().as_u16();
        // The answer is small; one that cannot be read leaves only the status to go by.
        let body = resp.bytes().await.unwrap_or_default();
        match classify_status(status, &body) {
            None => Ok(Sent {
                channel: Channel::Sms,
                message_id: None,
                receipt: provider_id(&body),
            }),
            Some(e) => Err(e),
        }
    }
}

/// `None` for a 2xx; retryable for 408, 425, 429 and 5xx; permanent for the rest (another 4xx,
/// a redirect). The reason quotes the start of the provider's answer, on one line.
pub fn classify_status(status: u16, body: &[u8]) -> Option<SendError> {
    let said = snippet(body);
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    match status {
        200..=299 => None,
        408 | 425 | 429 | 500..=599 => Some(SendError::Retryable(format!(
            "the SMS provider answered {status}{said}"
        ))),
        _ => Some(SendError::Permanent(format!(
            "the SMS provider refused it with {status}{said}"
        ))),
    }
}

/// The provider's id of the message: a JSON answer's `id`, else its `sid` (a string or a
/// number).
pub fn provider_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["id", "sid"].iter().find_map(|k| match v.get(*k)? {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(one_line(s, 128)),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// A phone number in E.164 (`+4915112345678`), spaces, dots, hyphens and brackets dropped;
/// or why it is not one (a permanent failure).
pub fn parse_phone(s: &str) -> Result<String, SendError> {
    let kept: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')'))
        .collect();
    let ok = kept
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
        && !kept.starts_with("+0");
    if ok {
        Ok(kept)
    } else {
        Err(SendError::Permanent(format!(
            "{s:?} is not a phone number in international form (+ country code and number, such as +4915112345678)"
        )))
    }
}

/// A request's error and its causes ("… : tcp connect error: Connection refused"), without the
/// URL (whose query may hold a provider's key).
fn causes(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

fn snippet(body: &[u8]) -> String {
    one_line(&String::from_utf8_lossy(body), 200)
}

/// At most `max` characters of `s`, control characters as spaces.
fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .trim()
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.trim().chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(200, b""), None);
        assert_eq!(classify_status(202, b"{}"), None);
        for retry in [408, 425, 429, 500, 502, 503] {
            assert!(
                matches!(classify_status(retry, b""), Some(SendError::Retryable(_))),
                "{retry}"
            );
        }
        for refused in [301, 400, 401, 403, 404, 422] {
            assert!(
                matches!(classify_status(refused, b""), Some(SendError::Permanent(_))),
                "{refused}"
            );
        }
        assert_eq!(
            classify_status(400, b"{\"error\":\"bad\nnumber\"}"),
            Some(SendError::Permanent(
                "the SMS provider refused it with 400: {\"error\":\"bad number\"}".into()
            ))
        );
        let long = classify_status(503, "x".repeat(500).as_bytes()).unwrap();
        assert!(long.to_string().len() < 260, "{long}");
    }

    #[test]
    fn the_provider_id_comes_from_id_or_sid() {
        assert_eq!(provider_id(br#"{"id":"msg-1"}"#).as_deref(), Some("msg-1"));
        assert_eq!(
            provider_id(br#"{"sid":"SM42","x":1}"#).as_deref(),
            Some("SM42")
        );
        assert_eq!(provider_id(br#"{"id":7}"#).as_deref(), Some("7"));
        assert_eq!(
            provider_id(br#"{"id":"","sid":"SM1"}"#).as_deref(),
            Some("SM1")
        );
        assert_eq!(provider_id(b"queued"), None);
        assert_eq!(provider_id(br#"{"status":"queued"}"#), None);
    }

    #[test]
    fn phone_numbers_are_e164() {
        assert_eq!(parse_phone("+49 151 1234-5678").unwrap(), "+4915112345678");
        assert_eq!(parse_phone("+1 (555) 010.0199").unwrap(), "+15550100199");
        for bad in [
            "015112345678",
            "+0151123456",
            "+1234567",
            "+1234567890123456",
            "+49 15x",
            "",
        ] {
            assert!(
                matches!(parse_phone(bad), Err(SendError::Permanent(_))),
                "{bad:?}"
            );
        }
    }
}
