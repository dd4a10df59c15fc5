//! `[video]`: how long join links work, the relay's UDP ports and addresses, and the STUN and
//! TURN servers handed to browsers, with the check of the port range.

use serde::{Deserialize, Serialize};

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
