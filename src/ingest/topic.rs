//! The device topics of the contract: `vigil/v1/devices/{device_id}/{readings|gatt/{uuid16}|status|errors}`.

use crate::domain::{DeviceId, IdError};

/// What a device topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Readings,
    Gatt(u16),
    Status,
    Errors,
}

/// A parsed device topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub device_id: DeviceId,
    pub kind: TopicKind,
}

/// Why a topic is not a device topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic must start with vigil/v1/devices/")]
    Prefix,
    #[error("topic's device id: {0}")]
    DeviceId(IdError),
    #[error("unknown topic suffix {0:?} (expected readings, gatt/<uuid16>, status or errors)")]
    Suffix(String),
    #[error("GATT characteristic {0:?} must be 4 lowercase hex digits")]
    Uuid(String),
}

const PREFIX: &str = "vigil/v1/devices/";

impl Topic {
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let rest = topic.strip_prefix(PREFIX).ok_or(TopicError::Prefix)?;
        let (id, suffix) = rest.split_once('/').unwrap_or((rest, ""));
        let device_id = DeviceId::parse(id).map_err(TopicError::DeviceId)?;
        let kind = match suffix {
            "readings" => TopicKind::Readings,
            "status" => TopicKind::Status,
            "errors" => TopicKind::Errors,
            _ => match suffix.strip_prefix("gatt/") {
                Some(u) => {
                    let ok = u.len() == 4
                        && u.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                    let n = u16::from_str_radix(u, 16)
                        .ok()
                        .filter(|_| ok)
                        .ok_or_else(|| TopicError::Uuid(u.to_owned()))?;
                    TopicKind::Gatt(n)
                }
                None => return Err(TopicError::Suffix(suffix.to_owned())),
            },
        };
        Ok(Topic { device_id, kind })
    }

    /// The topic a device's errors are published on.
    pub fn errors_of(device: &DeviceId) -> String {
        format!("{PREFIX}{device}/errors")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_every_contract_topic() {
        let t = Topic::parse("vigil/v1/devices/ox-1/readings").unwrap();
        assert_eq!(t.device_id.as_str(), "ox-1");
        assert_eq!(t.kind, TopicKind::Readings);
        assert_eq!(
            Topic::parse("vigil/v1/devices/ox-1/gatt/2a5e")
                .unwrap()
                .kind,
            TopicKind::Gatt(0x2a5e)
        );
        assert_eq!(
            Topic::parse("vigil/v1/devices/ox-1/status").unwrap().kind,
            TopicKind::Status
        );
        assert_eq!(
            Topic::parse(&Topic::errors_of(&t.device_id)).unwrap().kind,
            TopicKind::Errors
        );
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "vigil/v1/devices/",
            "vigil/v1/devices/ox-1",
            "vigil/v1/devices/ox-1/readings/extra",
            "vigil/v1/devices/+/readings",
            "vigil/v1/devices/#",
            "vigil/v2/devices/ox-1/readings",
            "vigil/v1/devices/ox-1/gatt/2A5E",
            "vigil/v1/devices/ox-1/gatt/2a5",
            "vigil/v1/devices/ox-1/gatt/+2a5",
            "vigil/v1/devices/ox 1/readings",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,80}") {
            let _ = Topic::parse(&s);
        }
    }
}
