//! MQTT 3.1.1 and 5 packets as the embedded endpoint needs them, on top of rumqttc's
//! maintained packet codecs (`rumqttc::mqttbytes::v4` and `rumqttc::v5::mqttbytes::v5`).
//!
//! The two protocol versions are folded into one small vocabulary ([`Inbound`] and the
//! encoders below), so the connection logic is written once. The size limit is checked on
//! the fixed header, before the body of a packet is read or buffered, and so are the flags
//! MQTT fixes for each packet type (rumqttc does not check them): a packet with wrong ones is
//! malformed, whatever its body.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self as m4b, v4};
use rumqttc::v5::mqttbytes::{self as m5b, v5};

/// The protocol version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

/// A CONNECT, either version.
#[derive(Debug, Clone)]
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    pub keep_alive_s: u16,
    pub clean: bool,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub will: Option<Will>,
    /// MQTT 5: the largest packet the client accepts.
    pub client_max_packet: Option<u32>,
}

/// A Last Will.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    /// Will Retain: the will should be kept as a retained message.
    pub retain: bool,
}

/// A packet from a connected client.
#[derive(Debug, Clone)]
pub enum Inbound {
    Publish {
        topic: String,
        pkid: u16,
        qos: u8,
        /// RETAIN: keep this message for future subscribers (not offered by the endpoint).
        retain: bool,
        payload: Bytes,
        content_type: Option<String>,
        uses_topic_alias: bool,
    },
    Subscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    Unsubscribe {
        pkid: u16,
        count: usize,
    },
    PubRel {
        pkid: u16,
    },
    PingReq,
    Disconnect {
        with_will: bool,
    },
    /// Acks for what we sent (we only send QoS 0) and anything else a client should not send.
    Ignored,
    /// A second CONNECT, AUTH, or a server-to-client packet: a protocol error.
    Violation(&'static str),
}

/// Why bytes could not be turned into a packet.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("packet of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("unsupported protocol version {0} (MQTT 3.1.1 and 5 are supported)")]
    Version(u8),
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// Whether the buffer starts with a whole packet; `Ok(None)` asks for more bytes. Checks the
/// declared size against `max` as soon as the fixed header is there.
fn frame(buf: &BytesMut, max: usize) -> Result<Option<()>, CodecError> {
    match m4b::check(buf.iter(), max) {
        Ok(_) => Ok(Some(())),
        Err(m4b::Error::InsufficientBytes(_)) => Ok(None),
        Err(m4b::Error::PayloadSizeLimitExceeded(size)) => Err(CodecError::TooLarge { size, max }),
        Err(e) => Err(CodecError::Malformed(e.to_string())),
    }
}

/// The names of the packet types, by their number (the high four bits of the first byte).
const PACKET_NAMES: [&str; 16] = [
    "reserved packet type 0",
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "AUTH",
];

/// Checks the flags of a packet's first byte, which MQTT fixes for every type but PUBLISH
/// (3.1.1 section 2.2.2, 5 section 2.1.3): 0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE, 0000
/// for the rest; PUBLISH's are DUP, QoS and RETAIN, where QoS 3 is malformed and so is DUP on a
/// QoS 0 message (MQTT-3.3.1-2). Any other value is a malformed packet, which closes the
/// connection (MQTT-2.2.2-2 in 3.1.1, MQTT-2.1.3-1 in 5).
fn check_flags(first: u8) -> Result<(), CodecError> {
    let (kind, flags) = (usize::from(first >> 4), first & 0x0f);
    let name = PACKET_NAMES[kind];
    let required = match kind {
        3 => {
            let (dup, qos) = (flags & 0b1000 != 0, (flags >> 1) & 0b11);
            return match (dup, qos) {
                (_, 3) => Err(CodecError::Malformed("PUBLISH with QoS 3".into())),
                (true, 0) => Err(CodecError::Malformed(
                    "PUBLISH at QoS 0 with DUP set".into(),
                )),
                _ => Ok(()),
            };
        }
        6 | 8 | 10 => 0b0010,
        _ => 0b0000,
    };
    if flags == required {
        Ok(())
    } else {
        Err(CodecError::Malformed(format!(
            "{name} with fixed-header flags {flags:04b} (must be {required:04b})"
        )))
    }
}

/// Reads the protocol level of a framed CONNECT without decoding it.
fn connect_level(buf: &[u8]) -> Result<u8, CodecError> {
    match buf.first() {
        Some(&first) if first >> 4 == 1 => check_flags(first)?,
        _ => {
            return Err(CodecError::Malformed(
                "the first packet must be CONNECT".into(),
            ));
        }
    }
    // Skip the remaining-length varint (1 to 4 bytes).
    let mut i = 1;
    while i < 5 && buf.get(i).is_some_and(|b| b & 0x80 != 0) {
        i += 1;
    }
    i += 1;
    let name_len = match (buf.get(i), buf.get(i + 1)) {
        (Some(&hi), Some(&lo)) => usize::from(u16::from_be_bytes([hi, lo])),
        _ => return Err(CodecError::Malformed("CONNECT too short".into())),
    };
    buf.get(i + 2 + name_len)
        .copied()
        .ok_or_else(|| CodecError::Malformed("CONNECT too short".into()))
}

/// Decodes the first packet of a connection, which must be CONNECT.
pub fn read_connect(buf: &mut BytesMut, max: usize) -> Result<Option<Connect>, CodecError> {
    if frame(buf, max)?.is_none() {
        return Ok(None);
    }
    let malformed = |e: &dyn std::fmt::Display| CodecError::Malformed(e.to_string());
    match connect_level(buf)? {
        4 => match v4::Packet::read(buf, max).map_err(|e| malformed(&e))? {
            v4::Packet::Connect(c) => Ok(Some(Connect {
                version: Version::V311,
                client_id: c.client_id,
                keep_alive_s: c.keep_alive,
                clean: c.clean_session,
                username: c.login.as_ref().map(|l| l.username.clone()),
                password: c.login.map(|l| Bytes::from(l.password.into_bytes())),
                will: c.last_will.map(|w| Will {
                    topic: w.topic,
                    payload: w.message,
                    retain: w.retain,
                }),
                client_max_packet: None,
            })),
            _ => Err(CodecError::Malformed(
                "the first packet must be CONNECT".into(),
            )),
        },
        5 => match v5::Packet::read(buf, Some(max as u32)).map_err(|e| malformed(&e))? {
            v5::Packet::Connect(c, will, login) => Ok(Some(Connect {
                version: Version::V5,
                client_id: c.client_id,
                keep_alive_s: c.keep_alive,
                clean: c.clean_start,
                username: login.as_ref().map(|l| l.username.clone()),
                password: login.map(|l| Bytes::from(l.password.into_bytes())),
                will: match will {
                    Some(w) => Some(Will {
                        topic: String::from_utf8(w.topic.to_vec())
                            .map_err(|_| CodecError::Malformed("will topic is not UTF-8".into()))?,
                        payload: w.message,
                        retain: w.retain,
                    }),
                    None => None,
                },
                client_max_packet: c.properties.and_then(|p| p.max_packet_size),
            })),
            _ => Err(CodecError::Malformed(
                "the first packet must be CONNECT".into(),
            )),
        },
        level => Err(CodecError::Version(level)),
    }
}

/// Decodes the next packet after CONNECT; `Ok(None)` asks for more bytes.
pub fn read(
    version: Version,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Inbound>, CodecError> {
    if frame(buf, max)?.is_none() {
        return Ok(None);
    }
    if let Some(&first) = buf.first() {
        check_flags(first)?;
    }
    if version == Version::V5 && buf.starts_with(&[0xe0, 0x00]) {
        // MQTT 5 DISCONNECT without a body: reason 0x00, normal disconnection. rumqttc asks
        // for a body there, and would turn a clean goodbye into a malformed packet.
        let _ = buf.split_to(2);
        return Ok(Some(Inbound::Disconnect { with_will: false }));
    }
    let malformed = |e: &dyn std::fmt::Display| CodecError::Malformed(e.to_string());
    let p = match version {
        Version::V311 => match v4::Packet::read(buf, max).map_err(|e| malformed(&e))? {
            v4::Packet::Publish(p) => Inbound::Publish {
                topic: p.topic,
                pkid: p.pkid,
                qos: p.qos as u8,
                retain: p.retain,
                payload: p.payload,
                content_type: None,
                uses_topic_alias: false,
            },
            v4::Packet::Subscribe(s) => Inbound::Subscribe {
                pkid: s.pkid,
                filters: s.filters.into_iter().map(|f| f.path).collect(),
            },
            v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
                pkid: u.pkid,
                count: u.topics.len(),
            },
            v4::Packet::PubRel(r) => Inbound::PubRel { pkid: r.pkid },
            v4::Packet::PingReq => Inbound::PingReq,
            v4::Packet::Disconnect => Inbound::Disconnect { with_will: false },
            v4::Packet::PubAck(_) | v4::Packet::PubRec(_) | v4::Packet::PubComp(_) => {
                Inbound::Ignored
            }
            v4::Packet::Connect(_) => Inbound::Violation("second CONNECT"),
            _ => Inbound::Violation("server-to-client packet from a client"),
        },
        Version::V5 => match v5::Packet::read(buf, Some(max as u32)).map_err(|e| malformed(&e))? {
            v5::Packet::Publish(p) => {
                let topic = String::from_utf8(p.topic.to_vec())
                    .map_err(|_| CodecError::Malformed("topic is not UTF-8".into()))?;
                let (content_type, alias) = match p.properties {
                    Some(props) => (props.content_type, props.topic_alias.is_some()),
                    None => (None, false),
                };
                Inbound::Publish {
                    topic,
                    pkid: p.pkid,
                    qos: p.qos as u8,
                    retain: p.retain,
                    payload: p.payload,
                    content_type,
                    uses_topic_alias: alias,
                }
            }
            v5::Packet::Subscribe(s) => Inbound::Subscribe {
                pkid: s.pkid,
                filters: s.filters.into_iter().map(|f| f.path).collect(),
            },
            v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
                pkid: u.pkid,
                count: u.filters.len(),
            },
            v5::Packet::PubRel(r) => Inbound::PubRel { pkid: r.pkid },
            v5::Packet::PingReq(_) => Inbound::PingReq,
            v5::Packet::Disconnect(d) => Inbound::Disconnect {
                with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
            },
            v5::Packet::PubAck(_) | v5::Packet::PubRec(_) | v5::Packet::PubComp(_) => {
                Inbound::Ignored
            }
            v5::Packet::Connect(..) => Inbound::Violation("second CONNECT"),
            v5::Packet::Auth(_) => Inbound::Violation("AUTH is not supported"),
            _ => Inbound::Violation("server-to-client packet from a client"),
        },
    };
    Ok(Some(p))
}

/// The outcome of a CONNECT, in the terms both versions share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCode {
    Accepted,
    BadCredentials,
    NotAuthorized,
    ServerBusy,
    BadClientId,
    UnsupportedVersion,
    /// Too many connects (3.1.1: server unavailable; 5: 0x9F connection rate exceeded).
    RateExceeded,
    /// A Will with Will Retain set, which the endpoint does not offer (3.1.1, which has no
    /// such code: not authorized; 5: 0x9A retain not supported).
    RetainNotSupported,
}

/// Limits the server announces in an MQTT 5 CONNACK.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub receive_max: u16,
    pub max_packet: u32,
}

fn finish(buf: BytesMut) -> Bytes {
    buf.freeze()
}

/// Encodes CONNACK.
pub fn connack(version: Version, code: ConnectCode, limits: ServerLimits) -> Bytes {
    let mut buf = BytesMut::with_capacity(32);
    match version {
        Version::V311 => {
            let c = match code {
                ConnectCode::Accepted => v4::ConnectReturnCode::Success,
                ConnectCode::BadCredentials => v4::ConnectReturnCode::BadUserNamePassword,
                ConnectCode::NotAuthorized | ConnectCode::RetainNotSupported => {
                    v4::ConnectReturnCode::NotAuthorized
                }
                ConnectCode::ServerBusy | ConnectCode::RateExceeded => {
                    v4::ConnectReturnCode::ServiceUnavailable
                }
                ConnectCode::BadClientId => v4::ConnectReturnCode::BadClientId,
                ConnectCode::UnsupportedVersion => v4::ConnectReturnCode::RefusedProtocolVersion,
            };
            let _ = v4::ConnAck::new(c, false).write(&mut buf);
        }
        Version::V5 => {
            let c = match code {
                ConnectCode::Accepted => v5::ConnectReturnCode::Success,
                ConnectCode::BadCredentials => v5::ConnectReturnCode::BadUserNamePassword,
                ConnectCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
                ConnectCode::ServerBusy => v5::ConnectReturnCode::ServerBusy,
                ConnectCode::RateExceeded => v5::ConnectReturnCode::ConnectionRateExceeded,
                ConnectCode::RetainNotSupported => v5::ConnectReturnCode::RetainNotSupported,
                ConnectCode::BadClientId => v5::ConnectReturnCode::ClientIdentifierNotValid,
                ConnectCode::UnsupportedVersion => {
                    v5::ConnectReturnCode::UnsupportedProtocolVersion
                }
            };
            let properties = (code == ConnectCode::Accepted).then(|| v5::ConnAckProperties {
                session_expiry_interval: None,
                receive_max: Some(limits.receive_max),
                max_qos: None,
                retain_available: Some(0),
                max_packet_size: Some(limits.max_packet),
                assigned_client_identifier: None,
                topic_alias_max: Some(0),
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: Some(0),
                subscription_identifiers_available: Some(0),
                shared_subscription_available: Some(0),
                server_keep_alive: None,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            });
            let _ = v5::ConnAck {
                session_present: false,
                code: c,
                properties,
            }
            .write(&mut buf);
        }
    }
    finish(buf)
}

/// How a publish ended, for the acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubOutcome {
    Stored,
    /// Kept as a dead letter (MQTT 5: reason "payload format invalid").
    Rejected,
    /// Not the device's own topic (MQTT 5: reason "not authorized").
    Denied,
}

/// Encodes PUBACK (QoS 1) or PUBREC (QoS 2); `None` for QoS 0.
pub fn publish_ack(version: Version, qos: u8, pkid: u16, outcome: PubOutcome) -> Option<Bytes> {
    let mut buf = BytesMut::with_capacity(8);
    match (version, qos) {
        (_, 0) => return None,
        (Version::V311, 1) => {
            let _ = v4::PubAck::new(pkid).write(&mut buf);
        }
        (Version::V311, _) => {
            let _ = v4::PubRec::new(pkid).write(&mut buf);
        }
        (Version::V5, 1) => {
            let mut ack = v5::PubAck::new(pkid, None);
            ack.reason = match outcome {
                PubOutcome::Stored => v5::PubAckReason::Success,
                PubOutcome::Rejected => v5::PubAckReason::PayloadFormatInvalid,
                PubOutcome::Denied => v5::PubAckReason::NotAuthorized,
            };
            let _ = ack.write(&mut buf);
        }
        (Version::V5, _) => {
            let mut rec = v5::PubRec::new(pkid, None);
            rec.reason = match outcome {
                PubOutcome::Stored => v5::PubRecReason::Success,
                PubOutcome::Rejected => v5::PubRecReason::PayloadFormatInvalid,
                PubOutcome::Denied => v5::PubRecReason::NotAuthorized,
            };
            let _ = rec.write(&mut buf);
        }
    }
    Some(finish(buf))
}

/// Encodes PUBCOMP.
pub fn pubcomp(version: Version, pkid: u16) -> Bytes {
    let mut buf = BytesMut::with_capacity(8);
    match version {
        Version::V311 => {
            let _ = v4::PubComp::new(pkid).write(&mut buf);
        }
        Version::V5 => {
            let _ = v5::PubComp::new(pkid, None).write(&mut buf);
        }
    }
    finish(buf)
}

/// Encodes SUBACK: each filter granted at QoS 0 or refused.
pub fn suback(version: Version, pkid: u16, granted: &[bool]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + granted.len());
    match version {
        Version::V311 => {
            let codes = granted
                .iter()
                .map(|ok| {
                    if *ok {
                        v4::SubscribeReasonCode::Success(m4b::QoS::AtMostOnce)
                    } else {
                        v4::SubscribeReasonCode::Failure
                    }
                })
                .collect();
            let _ = v4::SubAck::new(pkid, codes).write(&mut buf);
        }
        Version::V5 => {
            let codes = granted
                .iter()
                .map(|ok| {
                    if *ok {
                        v5::SubscribeReasonCode::Success(m5b::QoS::AtMostOnce)
                    } else {
                        v5::SubscribeReasonCode::NotAuthorized
                    }
                })
                .collect();
            let _ = v5::SubAck {
                pkid,
                return_codes: codes,
                properties: None,
            }
            .write(&mut buf);
        }
    }
    finish(buf)
}

/// Encodes UNSUBACK.
pub fn unsuback(version: Version, pkid: u16, count: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + count);
    match version {
        Version::V311 => {
            let _ = v4::UnsubAck::new(pkid).write(&mut buf);
        }
        Version::V5 => {
            let _ = v5::UnsubAck {
                pkid,
                reasons: vec![v5::UnsubAckReason::Success; count],
                properties: None,
            }
            .write(&mut buf);
        }
    }
    finish(buf)
}

/// Encodes PINGRESP.
pub fn pingresp(version: Version) -> Bytes {
    let mut buf = BytesMut::with_capacity(2);
    match version {
        Version::V311 => {
            let _ = v4::PingResp.write(&mut buf);
        }
        Version::V5 => {
            let _ = v5::PingResp::write(&mut buf);
        }
    }
    finish(buf)
}

/// Encodes a QoS 0 PUBLISH to the client.
pub fn publish(version: Version, topic: &str, payload: Bytes) -> Bytes {
    let mut buf = BytesMut::with_capacity(topic.len() + payload.len() + 8);
    match version {
        Version::V311 => {
            let _ = v4::Publish::from_bytes(topic, m4b::QoS::AtMostOnce, payload).write(&mut buf);
        }
        Version::V5 => {
            let _ = v5::Publish::new(topic, m5b::QoS::AtMostOnce, payload, None).write(&mut buf);
        }
    }
    finish(buf)
}

/// Encodes an MQTT 5 server DISCONNECT (MQTT 3.1.1 has none: the server just closes).
pub fn disconnect(version: Version, reason: DisconnectReason) -> Option<Bytes> {
    if version == Version::V311 {
        return None;
    }
    let code = match reason {
        DisconnectReason::Shutdown => v5::DisconnectReasonCode::ServerShuttingDown,
        DisconnectReason::KeepAlive => v5::DisconnectReasonCode::KeepAliveTimeout,
        DisconnectReason::TooLarge => v5::DisconnectReasonCode::PacketTooLarge,
        DisconnectReason::Malformed => v5::DisconnectReasonCode::MalformedPacket,
        DisconnectReason::Protocol => v5::DisconnectReasonCode::ProtocolError,
        DisconnectReason::NotAuthorized => v5::DisconnectReasonCode::NotAuthorized,
        DisconnectReason::TakenOver => v5::DisconnectReasonCode::SessionTakenOver,
        DisconnectReason::StoreFailed => v5::DisconnectReasonCode::UnspecifiedError,
        DisconnectReason::DiskFull => v5::DisconnectReasonCode::QuotaExceeded,
        DisconnectReason::TopicAlias => v5::DisconnectReasonCode::TopicAliasInvalid,
        DisconnectReason::Retain => v5::DisconnectReasonCode::RetainNotSupported,
    };
    let mut d = v5::Disconnect::new(code);
    if reason == DisconnectReason::DiskFull {
        // Said in words too: a device's log is often all a field technician has.
        d.properties = Some(v5::DisconnectProperties {
            reason_string: Some(
                "the gateway's disk is full; the unacknowledged reading was not stored, send it again later"
                    .into(),
            ),
            session_expiry_interval: None,
            user_properties: Vec::new(),
            server_reference: None,
        });
    }
    let mut buf = BytesMut::with_capacity(128);
    let _ = d.write(&mut buf);
    Some(finish(buf))
}

/// Why the server ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    Shutdown,
    KeepAlive,
    TooLarge,
    Malformed,
    Protocol,
    NotAuthorized,
    TakenOver,
    StoreFailed,
    /// The store's disk is full (MQTT 5: 0x97 quota exceeded, with a reason string).
    DiskFull,
    TopicAlias,
    /// A retained PUBLISH, after CONNACK said retain is not available (MQTT 5: 0x9A).
    Retain,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_connect(user: &str, pass: &str) -> BytesMut {
        let mut c = v4::Connect::new("client-1");
        c.set_login(user, pass);
        let mut buf = BytesMut::new();
        c.write(&mut buf).unwrap();
        buf
    }

    #[test]
    fn reads_a_311_connect_and_asks_for_more_when_cut() {
        let whole = v4_connect("d1", "secret");
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert!(
                read_connect(&mut part, 1024).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        let mut buf = whole.clone();
        let c = read_connect(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(c.version, Version::V311);
        assert_eq!(c.username.as_deref(), Some("d1"));
        assert_eq!(c.password.as_deref(), Some(&b"secret"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn reads_a_v5_connect() {
        let c = v5::Connect {
            keep_alive: 30,
            client_id: "c".into(),
            clean_start: true,
            properties: None,
        };
        let mut buf = BytesMut::new();
        c.write(&None, &Some(v5::Login::new("d1", "s")), &mut buf)
            .unwrap();
        let got = read_connect(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(got.version, Version::V5);
        assert_eq!(got.keep_alive_s, 30);
        assert_eq!(got.username.as_deref(), Some("d1"));
    }

    #[test]
    fn refuses_an_oversized_packet_from_its_header_alone() {
        // A PUBLISH header declaring 200 MB, with none of the body sent.
        let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x60][..]);
        assert!(matches!(
            read(Version::V311, &mut buf, 1024),
            Err(CodecError::TooLarge { max: 1024, .. })
        ));
    }

    #[test]
    fn refuses_other_protocol_levels() {
        // MQTT 3.1 ("MQIsdp", level 3).
        let mut buf = BytesMut::from(
            &[
                0x10, 0x0e, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0, 0, 10, 0, 0,
            ][..],
        );
        assert!(matches!(
            read_connect(&mut buf, 1024),
            Err(CodecError::Version(3))
        ));
        let mut buf = BytesMut::from(&[0x30, 0x02, 0, 0][..]);
        assert!(read_connect(&mut buf, 1024).is_err());
    }

    /// `first` and a body with a one-byte remaining length.
    fn packet(first: u8, body: &[u8]) -> BytesMut {
        let mut p = BytesMut::from(&[first, body.len() as u8][..]);
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn refuses_packets_whose_fixed_header_flags_are_wrong() {
        // SUBSCRIBE to "t" (packet id 1, QoS 0); MQTT 5 has a property length after the id.
        let sub4: &[u8] = &[0, 1, 0, 1, b't', 0];
        let sub5: &[u8] = &[0, 1, 0, 0, 1, b't', 0];
        let unsub4: &[u8] = &[0, 2, 0, 1, b't'];
        let unsub5: &[u8] = &[0, 2, 0, 0, 1, b't'];
        let cases: &[(u8, &[u8], &[u8], &str)] = &[
            (
                0x80,
                sub4,
                sub5,
                "SUBSCRIBE with fixed-header flags 0000 (must be 0010)",
            ),
            (
                0x8a,
                sub4,
                sub5,
                "SUBSCRIBE with fixed-header flags 1010 (must be 0010)",
            ),
            (
                0xa0,
                unsub4,
                unsub5,
                "UNSUBSCRIBE with fixed-header flags 0000 (must be 0010)",
            ),
            (
                0x62,
                &[0, 3],
                &[0, 3],
                "PUBREL with fixed-header flags 0010",
            ),
            (
                0x63,
                &[0, 3],
                &[0, 3],
                "PUBREL with fixed-header flags 0011 (must be 0010)",
            ),
            (
                0x60,
                &[0, 3],
                &[0, 3],
                "PUBREL with fixed-header flags 0000 (must be 0010)",
            ),
            (
                0x41,
                &[0, 3],
                &[0, 3],
                "PUBACK with fixed-header flags 0001 (must be 0000)",
            ),
            (
                0x58,
                &[0, 3],
                &[0, 3],
                "PUBREC with fixed-header flags 1000 (must be 0000)",
            ),
            (
                0x72,
                &[0, 3],
                &[0, 3],
                "PUBCOMP with fixed-header flags 0010 (must be 0000)",
            ),
            (
                0xc2,
                &[],
                &[],
                "PINGREQ with fixed-header flags 0010 (must be 0000)",
            ),
            (
                0xe1,
                &[],
                &[0],
                "DISCONNECT with fixed-header flags 0001 (must be 0000)",
            ),
            (
                0x1f,
                &[],
                &[],
                "CONNECT with fixed-header flags 1111 (must be 0000)",
            ),
            (
                0x36,
                &[0, 1, b't', 0, 1],
                &[0, 1, b't', 0, 1, 0],
                "PUBLISH with QoS 3",
            ),
            (
                0x38,
                &[0, 1, b't'],
                &[0, 1, b't', 0],
                "PUBLISH at QoS 0 with DUP set",
            ),
        ];
        for &(first, v4_body, v5_body, why) in cases {
            for (version, body) in [(Version::V311, v4_body), (Version::V5, v5_body)] {
                let got = read(version, &mut packet(first, body), 1024);
                if first == 0x62 {
                    assert!(
                        matches!(got, Ok(Some(Inbound::PubRel { pkid: 3 }))),
                        "{got:?}"
                    );
                    continue;
                }
                match got {
                    Err(CodecError::Malformed(m)) => assert_eq!(m, why, "{version:?}"),
                    other => panic!("{version:?} {first:#04x}: {other:?}"),
                }
            }
        }
        // The right flags: SUBSCRIBE 0010, and PUBLISH with DUP at QoS 1 and RETAIN.
        assert!(matches!(
            read(Version::V311, &mut packet(0x82, sub4), 1024),
            Ok(Some(Inbound::Subscribe { pkid: 1, .. }))
        ));
        assert!(matches!(
            read(Version::V5, &mut packet(0x82, sub5), 1024),
            Ok(Some(Inbound::Subscribe { pkid: 1, .. }))
        ));
        assert!(matches!(
            read(
                Version::V311,
                &mut packet(0x3b, &[0, 1, b't', 0, 7, b'x']),
                1024
            ),
            Ok(Some(Inbound::Publish {
                pkid: 7,
                qos: 1,
                retain: true,
                ..
            }))
        ));
        // A CONNECT with flags is malformed before its protocol level is looked at.
        let mut c = v4_connect("d1", "secret");
        c[0] = 0x12;
        assert!(matches!(
            read_connect(&mut c, 1024),
            Err(CodecError::Malformed(m)) if m.contains("CONNECT with fixed-header flags 0010")
        ));
    }

    #[test]
    fn a_v5_disconnect_without_a_body_is_a_normal_one() {
        let mut buf = BytesMut::from(&[0xe0, 0x00, 0xc0, 0x00][..]);
        assert!(matches!(
            read(Version::V5, &mut buf, 1024),
            Ok(Some(Inbound::Disconnect { with_will: false }))
        ));
        assert!(matches!(
            read(Version::V5, &mut buf, 1024),
            Ok(Some(Inbound::PingReq))
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn reads_the_retain_flags_of_a_publish_and_a_will() {
        let mut p = v5::Publish::new("t", m5b::QoS::AtLeastOnce, "x", None);
        p.pkid = 9;
        p.retain = true;
        let mut buf = BytesMut::new();
        p.write(&mut buf).unwrap();
        assert!(matches!(
            read(Version::V5, &mut buf, 1024),
            Ok(Some(Inbound::Publish { retain: true, .. }))
        ));
        let mut c = v4::Connect::new("client-1");
        c.set_login("d1", "s");
        c.last_will = Some(v4::LastWill::new("t", "bye", m4b::QoS::AtMostOnce, true));
        let mut buf = BytesMut::new();
        c.write(&mut buf).unwrap();
        let got = read_connect(&mut buf, 1024).unwrap().unwrap();
        assert!(got.will.is_some_and(|w| w.retain));
    }

    #[test]
    fn encodes_what_a_client_decodes() {
        let mut b =
            BytesMut::from(&publish_ack(Version::V311, 1, 7, PubOutcome::Stored).unwrap()[..]);
        assert_eq!(
            v4::Packet::read(&mut b, 64).unwrap(),
            v4::Packet::PubAck(v4::PubAck::new(7))
        );
        let mut b =
            BytesMut::from(&publish_ack(Version::V5, 1, 7, PubOutcome::Denied).unwrap()[..]);
        match v5::Packet::read(&mut b, None).unwrap() {
            v5::Packet::PubAck(a) => assert_eq!(a.reason, v5::PubAckReason::NotAuthorized),
            other => panic!("{other:?}"),
        }
        assert!(publish_ack(Version::V5, 0, 0, PubOutcome::Stored).is_none());
    }
}
