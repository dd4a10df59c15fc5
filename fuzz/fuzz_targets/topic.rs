//! `vigil::ingest::topic::Topic::parse` on arbitrary UTF-8 (MQTT topic names are UTF-8; the
//! codec refuses anything else before a topic is parsed).
//!
//! Besides not panicking: a topic that parses is exactly the contract's spelling of what it
//! parsed to (so two spellings never name one device topic), and the errors topic built for
//! its device parses back to that device.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::ingest::topic::{Topic, TopicKind};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Topic::parse(text) {
        Ok(topic) => {
            let suffix = match topic.kind {
                TopicKind::Readings => "readings".to_owned(),
                TopicKind::Status => "status".to_owned(),
                TopicKind::Errors => "errors".to_owned(),
                TopicKind::Gatt(uuid) => format!("gatt/{uuid:04x}"),
            };
            let spelled = format!("vigil/v1/devices/{}/{suffix}", topic.device_id);
            assert_eq!(spelled, text, "parsed to {topic:?}");
            let errors = Topic::errors_of(&topic.device_id);
            assert_eq!(
                Topic::parse(&errors),
                Ok(Topic {
                    device_id: topic.device_id.clone(),
                    kind: TopicKind::Errors,
                })
            );
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
        }
    }
});
