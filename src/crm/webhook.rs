//! Webhook delivery, signed per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com/>): every request carries `webhook-id` (the event's id,
//! the same on every retry so the receiver can deduplicate), `webhook-timestamp` (Unix
//! seconds of this attempt) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"` with the key that the `whsec_` secret encodes.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::retry::Attempt;
use crate::registry::OutboxRow;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The signing key a `whsec_<base64>` secret encodes; defined with the settings, which check
/// the secret at start-up and must not depend on the delivery side.
pub use crate::config::webhook_signing_key as signing_key;

/// The `webhook-signature` header value for one attempt.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Posts events to one URL.
pub struct WebhookSink {
    pub http: reqwest::Client,
    pub url: String,
    pub key: Vec<u8>,
}

impl WebhookSink {
    /// Sends one event; `now_s` stamps and signs this attempt.
    pub async fn deliver(&self, row: &OutboxRow, now_s: i64) -> Attempt {
        let body = row.payload.as_bytes().to_vec();
        let sig = signature(&self.key, &row.event_id, now_s, &body);
        let sent = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", &row.event_id)
            .header("webhook-timestamp", now_s.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) => Attempt::from_status(resp.status().as_u16(), "the webhook receiver"),
            Err(e) => Attempt::Retry(format!("the webhook receiver could not be reached: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signature_matches_the_reference_example() {
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn only_whsec_secrets_are_keys() {
        assert!(signing_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
        assert!(signing_key("whsec_x").is_none());
        assert!(signing_key("whsec_!!!").is_none());
    }
}
