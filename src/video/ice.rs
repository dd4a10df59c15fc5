//! The ICE servers handed to a participant's browser: STUN as configured, and TURN with
//! time-limited credentials in coturn's REST scheme (`use-auth-secret`): the username is
//! `<expiry unix seconds>:<participant>`, the credential base64(HMAC-SHA1(secret, username)).
//! Pure: the caller passes the time.

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Value, json};

use crate::config::VideoConfig;

/// A TURN REST credential for `who`, valid until `exp_s`.
pub fn turn_credential(secret: &str, who: &str, exp_s: i64) -> (String, String) {
    let username = format!("{exp_s}:{who}");
    let mut mac = <Hmac<sha1::Sha1>>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

/// `RTCConfiguration.iceServers` for a participant, as JSON.
pub fn ice_servers(cfg: &VideoConfig, who: &str, now_s: i64) -> Value {
    let mut servers = Vec::new();
    if !cfg.stun_urls.is_empty() {
        servers.push(json!({"urls": cfg.stun_urls}));
    }
    if !cfg.turn_urls.is_empty() && !cfg.turn_secret.is_empty() {
        let exp = now_s + i64::try_from(cfg.turn_ttl_minutes * 60).unwrap_or(3600);
        let (username, credential) = turn_credential(&cfg.turn_secret, who, exp);
        servers
            .push(json!({"urls": cfg.turn_urls, "username": username, "credential": credential}));
    }
    Value::Array(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_follow_the_coturn_rest_scheme() {
        // Known answer, computed independently:
        // printf '%s' '1700000000:vis_x-p1' | openssl dgst -sha1 -hmac 'north-secret' -binary | base64
        let (u, c) = turn_credential("north-secret", "vis_x-p1", 1_700_000_000);
        assert_eq!(u, "1700000000:vis_x-p1");
        assert_eq!(c, KNOWN);
    }

    const KNOWN: &str = "kLkrAXKyT8LSiTTJodxN8adh1Xo=";

    #[test]
    fn ice_servers_carry_stun_and_expiring_turn() {
        let cfg = VideoConfig {
            stun_urls: vec!["stun:stun.example.org:3478".into()],
            turn_urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
            turn_secret: "s3cret".into(),
            turn_ttl_minutes: 10,
            ..VideoConfig::default()
        };
        let v = ice_servers(&cfg, "p2", 1_000);
        assert_eq!(v[0]["urls"][0], "stun:stun.example.org:3478");
        assert_eq!(v[1]["username"], "1600:p2");
        assert_eq!(v[1]["credential"], turn_credential("s3cret", "p2", 1600).1);
        assert_eq!(ice_servers(&VideoConfig::default(), "p1", 0), json!([]));
    }
}
