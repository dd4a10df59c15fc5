//! How devices reach Vigil, as the API tells the admin who provisions one (`POST /devices`
//! answers it beside the device's credentials): the host, the port and whether it is TLS.
//!
//! It is derived from what is actually running, not from defaults: the embedded endpoint's
//! bound listeners (MQTTS when it listens, since a device should not send its secret in the
//! clear when it need not), or in external-broker mode the broker's URL. It must never name a
//! host it does not know devices can use: a listener on every interface, or a broker Vigil
//! reaches over loopback or by a name without a dot (a container's or a service's, such as
//! `mosquitto` in the compose deployment), gives no host, and the dashboard then uses the name
//! the browser reached Vigil at.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::external::BrokerAddress;

/// Where a device connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceAccess {
    /// `None`: the host name Vigil's API was reached at.
    pub host: Option<String>,
    pub port: u16,
    /// MQTTS: the device needs the CA that signed the endpoint's certificate.
    pub tls: bool,
}

impl DeviceAccess {
    /// The embedded endpoint, from its bound listeners: the MQTTS one when there is one (with
    /// `mqtt.tls.only` there is no plain one). `None` when neither listens.
    pub fn embedded(plain: Option<SocketAddr>, tls: Option<SocketAddr>) -> Option<DeviceAccess> {
        let (addr, is_tls) = match (plain, tls) {
            (_, Some(t)) => (t, true),
            (Some(p), None) => (p, false),
            (None, None) => return None,
        };
        Some(DeviceAccess {
            host: (!addr.ip().is_unspecified()).then(|| addr.ip().to_string()),
            port: addr.port(),
            tls: is_tls,
        })
    }

    /// An external broker, from the URL Vigil connects to it at (`mqtt.url`).
    pub fn external(broker: &BrokerAddress) -> DeviceAccess {
        let usable = match broker.host.parse::<IpAddr>() {
            Ok(ip) => !ip.is_loopback() && !ip.is_unspecified(),
            Err(_) => broker.host.contains('.') && broker.host != "localhost",
        };
        DeviceAccess {
            host: usable.then(|| broker.host.clone()),
            port: broker.port,
            tls: broker.tls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external(url: &str) -> DeviceAccess {
        DeviceAccess::external(&BrokerAddress::parse(url).unwrap())
    }

    fn at(host: Option<&str>, port: u16, tls: bool) -> DeviceAccess {
        DeviceAccess {
            host: host.map(str::to_owned),
            port,
            tls,
        }
    }

    #[test]
    fn the_embedded_endpoint_is_reached_at_its_bound_listener_preferring_tls() {
        let plain: SocketAddr = "127.0.0.1:41883".parse().unwrap();
        assert_eq!(
            DeviceAccess::embedded(Some(plain), None),
            Some(at(Some("127.0.0.1"), 41883, false))
        );
        let tls: SocketAddr = "0.0.0.0:48883".parse().unwrap();
        assert_eq!(
            DeviceAccess::embedded(Some(plain), Some(tls)),
            Some(at(None, 48883, true))
        );
        assert_eq!(
            DeviceAccess::embedded(None, Some(tls)),
            Some(at(None, 48883, true)),
            "MQTTS only"
        );
        assert_eq!(DeviceAccess::embedded(None, None), None);
        let any6: SocketAddr = "[::]:1883".parse().unwrap();
        assert_eq!(
            DeviceAccess::embedded(Some(any6), None),
            Some(at(None, 1883, false))
        );
    }

    #[test]
    fn an_external_broker_is_named_only_by_a_host_devices_can_use() {
        // The compose deployment: Vigil reaches Mosquitto by its service name.
        assert_eq!(external("mqtts://mosquitto:8883"), at(None, 8883, true));
        assert_eq!(external("mqtt://127.0.0.1:1883"), at(None, 1883, false));
        assert_eq!(external("mqtt://localhost"), at(None, 1883, false));
        assert_eq!(
            external("mqtts://broker.clinic.example"),
            at(Some("broker.clinic.example"), 8883, true)
        );
        assert_eq!(
            external("mqtt://192.0.2.7:11883"),
            at(Some("192.0.2.7"), 11883, false)
        );
    }
}
