//! Decode and validate: from a device's publish to checked observations or a rejection with
//! a reason. Pure — the caller passes `now` — so every rule is testable without sockets.

use crate::decode::{self, RawReading};
use crate::domain::{DeviceId, Observation, PatientId};
use crate::registry::{PayloadFormat, Profile};

use super::topic::TopicKind;

/// How far ahead of Vigil's clock a reading's time may be (device clocks drift).
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
/// Times before 2000-01-01 come from devices whose clock was never set.
pub const EARLIEST_MS: i64 = 946_684_800_000;

/// The MQTT 5 content type that selects SenML.
pub const SENML_CONTENT_TYPE: &str = "application/senml+json";

/// What a publish turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    Readings(Vec<Observation>),
    Status(DeviceStatus),
}

/// A device's report about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceStatus {
    pub battery: Option<u8>,
    pub online: Option<bool>,
}

/// Why a publish was refused: a short label for metrics and a sentence for the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub label: &'static str,
    pub reason: String,
}

fn reject(label: &'static str, reason: impl Into<String>) -> Rejection {
    Rejection {
        label,
        reason: reason.into(),
    }
}

/// The device a publish came from, as the registry knows it.
pub struct Source<'a> {
    pub device_id: &'a DeviceId,
    pub patient_id: &'a PatientId,
    pub profile: &'a Profile,
}

/// Decodes and checks one publish.
pub fn process(
    src: &Source<'_>,
    kind: TopicKind,
    payload: &[u8],
    content_type: Option<&str>,
    now_ms: i64,
) -> Result<Accepted, Rejection> {
    let raw = match kind {
        TopicKind::Status => return parse_status(payload).map(Accepted::Status),
        TopicKind::Errors => {
            return Err(reject(
                "topic",
                "devices may not publish on their errors topic",
            ));
        }
        TopicKind::Gatt(uuid) => {
            if !src.profile.accepts_gatt(uuid) {
                return Err(reject(
                    "gatt_not_in_profile",
                    format!(
                        "GATT characteristic {uuid:04x} is not one a {} has",
                        src.profile.id
                    ),
                ));
            }
            decode::decode_gatt(uuid, payload)
        }
        TopicKind::Readings => {
            let senml = match content_type {
                Some(ct) => ct.eq_ignore_ascii_case(SENML_CONTENT_TYPE),
                // Every profile accepts vigil-json; a SenML profile's payload is SenML unless it
                // looks like vigil-json (records with a "metric" key).
                None => {
                    src.profile.format == PayloadFormat::SenmlJson
                        && !looks_like_vigil_json(payload)
                }
            };
            if senml {
                decode::decode_senml(payload, now_ms)
            } else {
                decode::decode_vigil_json(payload)
            }
        }
    }
    .map_err(|e| reject("decode", e.to_string()))?;
    if raw.is_empty() {
        return Err(reject("decode", "the payload holds no reading"));
    }
    let many = raw.len() > 1;
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let o = validate(src, r, now_ms).map_err(|mut e| {
            if many {
                e.reason = format!("reading {i}: {}", e.reason);
            }
            e
        })?;
        out.push(o);
    }
    Ok(Accepted::Readings(out))
}

fn looks_like_vigil_json(payload: &[u8]) -> bool {
    // Cheap sniff: a vigil-json record always has this key; SenML records never do.
    payload.windows(8).any(|w| w == b"\"metric\"")
}

/// Checks one raw reading against the device's profile and the metric table.
pub fn validate(src: &Source<'_>, r: RawReading, now_ms: i64) -> Result<Observation, Rejection> {
    let Some(metric) = src.profile.metric(&r.metric) else {
        let allowed: Vec<&str> = src.profile.metrics.iter().map(|m| m.name()).collect();
        return Err(reject(
            "unknown_metric",
            format!(
                "unknown metric {:?} for a {} (accepted: {})",
                r.metric,
                src.profile.id,
                allowed.join(", ")
            ),
        ));
    };
    let value = metric
        .to_canonical(r.value, r.unit.as_deref())
        .map_err(|e| reject("unit", e.to_string()))?;
    if !value.is_finite() {
        return Err(reject(
            "range",
            format!("{metric} value is not a finite number"),
        ));
    }
    let (lo, hi) = metric.plausible_range();
    if value < lo || value > hi {
        return Err(reject(
            "range",
            format!(
                "{metric} {value} {} is outside the plausible range {lo} to {hi}",
                metric.unit()
            ),
        ));
    }
    if metric.is_integral() && value.fract() != 0.0 {
        return Err(reject(
            "range",
            format!("{metric} must be a whole number, got {value}"),
        ));
    }
    let time_ms = r.time_ms.unwrap_or(now_ms);
    if time_ms > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(reject(
            "future",
            format!(
                "time {} is more than 5 minutes ahead of the gateway's clock ({})",
                crate::domain::format_rfc3339(time_ms),
                crate::domain::format_rfc3339(now_ms)
            ),
        ));
    }
    if time_ms < EARLIEST_MS {
        return Err(reject(
            "past",
            format!(
                "time {} is before 2000-01-01: the device's clock is not set",
                crate::domain::format_rfc3339(time_ms)
            ),
        ));
    }
    Ok(Observation {
        patient_id: src.patient_id.clone(),
        device_id: src.device_id.clone(),
        metric,
        value,
        time_ms,
    })
}

/// Parses a status payload: `{"battery": 0..100, "online": bool, ...}` (other keys ignored).
pub fn parse_status(payload: &[u8]) -> Result<DeviceStatus, Rejection> {
    let v: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| reject("decode", format!("status is not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| reject("decode", "status must be a JSON object"))?;
    let battery = match obj.get("battery") {
        None | Some(serde_json::Value::Null) => None,
        Some(b) => Some(
            b.as_u64()
                .filter(|n| *n <= 100)
                .map(|n| n as u8)
                .ok_or_else(|| reject("range", "battery must be a whole number from 0 to 100"))?,
        ),
    };
    let online = match obj.get("online") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Bool(b)) => Some(*b),
        Some(_) => return Err(reject("decode", "online must be true or false")),
    };
    Ok(DeviceStatus { battery, online })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Metric;
    use crate::registry::Profiles;

    const NOW: i64 = 1_795_611_600_000; // 2026-11-25T13:00:00Z

    fn run(
        profile: &str,
        kind: TopicKind,
        payload: &[u8],
        ct: Option<&str>,
    ) -> Result<Accepted, Rejection> {
        let profiles = Profiles::built_in().unwrap();
        let d = DeviceId::parse("d1").unwrap();
        let p = PatientId::parse("p1").unwrap();
        let src = Source {
            device_id: &d,
            patient_id: &p,
            profile: profiles.get(profile).unwrap(),
        };
        process(&src, kind, payload, ct, NOW)
    }

    fn readings(a: Result<Accepted, Rejection>) -> Vec<(Metric, f64, i64)> {
        match a {
            Ok(Accepted::Readings(v)) => v
                .into_iter()
                .map(|o| (o.metric, o.value, o.time_ms))
                .collect(),
            other => panic!("expected readings, got {other:?}"),
        }
    }

    #[test]
    fn vigil_json_is_converted_to_the_canonical_unit_and_stamped() {
        let r = readings(run(
            "thermometer",
            TopicKind::Readings,
            br#"{"metric":"body_temperature","value":98.6,"unit":"[degF]"}"#,
            None,
        ));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, Metric::BodyTemperature);
        assert!((r[0].1 - 37.0).abs() < 1e-9);
        assert_eq!(r[0].2, NOW, "no time: receipt time");
    }

    #[test]
    fn profile_aliases_resolve() {
        let r = readings(run(
            "bp-cuff",
            TopicKind::Readings,
            br#"[{"metric":"systolic","value":16,"unit":"kPa","time":1795611500}]"#,
            None,
        ));
        assert_eq!(r[0].0, Metric::BpSystolic);
        assert!((r[0].1 - 120.009_92).abs() < 1e-6);
        assert_eq!(r[0].2, 1_795_611_500_000);
    }

    #[test]
    fn rejections_say_why() {
        let cases: &[(&str, &[u8], &str, &str)] = &[
            ("scale", b"{not json", "decode", ""),
            (
                "scale",
                br#"{"metric":"glucose","value":100}"#,
                "unknown_metric",
                "unknown metric \"glucose\"",
            ),
            (
                "scale",
                br#"{"metric":"body_weight","value":70,"unit":"mm[Hg]"}"#,
                "unit",
                "not accepted",
            ),
            (
                "pulse-oximeter",
                br#"{"metric":"spo2","value":140}"#,
                "range",
                "outside the plausible range",
            ),
            (
                "pulse-oximeter",
                br#"{"metric":"heart_rate","value":70,"time":"2026-11-25T13:06:00Z"}"#,
                "future",
                "ahead",
            ),
            (
                "pulse-oximeter",
                br#"{"metric":"heart_rate","value":70,"time":0}"#,
                "past",
                "clock is not set",
            ),
            (
                "smartwatch",
                br#"{"metric":"steps","value":10.5}"#,
                "range",
                "whole number",
            ),
        ];
        for (profile, payload, label, needle) in cases {
            let e = run(profile, TopicKind::Readings, payload, None).unwrap_err();
            assert_eq!(e.label, *label, "{}", String::from_utf8_lossy(payload));
            assert!(e.reason.contains(needle), "{}", e.reason);
        }
    }

    #[test]
    fn one_bad_reading_rejects_the_whole_publish() {
        let e = run(
            "pulse-oximeter",
            TopicKind::Readings,
            br#"[{"metric":"spo2","value":97},{"metric":"spo2","value":400}]"#,
            None,
        )
        .unwrap_err();
        assert!(e.reason.starts_with("reading 1:"), "{}", e.reason);
    }

    #[test]
    fn senml_is_selected_by_profile_or_content_type() {
        let senml = br#"[{"bn":"urn:dev:mac:0024befffe804ff1:","bt":1795611590,"n":"heart_rate","u":"beat/min","v":64}]"#;
        let r = readings(run("smartwatch", TopicKind::Readings, senml, None));
        assert_eq!(r, vec![(Metric::HeartRate, 64.0, 1_795_611_590_000)]);
        let r = readings(run(
            "pulse-oximeter",
            TopicKind::Readings,
            senml,
            Some(SENML_CONTENT_TYPE),
        ));
        assert_eq!(r[0].0, Metric::HeartRate);
        // A SenML profile still accepts vigil-json.
        let r = readings(run(
            "smartwatch",
            TopicKind::Readings,
            br#"{"metric":"hr","value":60}"#,
            None,
        ));
        assert_eq!(r[0].0, Metric::HeartRate);
    }

    #[test]
    fn gatt_only_for_the_profile_s_characteristics() {
        // 2a37 flags 0x00 (u8 HR, no contact feature), HR 72: built from gatt.md's layout.
        let r = readings(run(
            "smartwatch",
            TopicKind::Gatt(0x2a37),
            &[0x00, 72],
            None,
        ));
        assert_eq!(r, vec![(Metric::HeartRate, 72.0, NOW)]);
        let e = run("scale", TopicKind::Gatt(0x2a37), &[0x00, 72], None).unwrap_err();
        assert_eq!(e.label, "gatt_not_in_profile");
    }

    #[test]
    fn status_reports_battery() {
        assert_eq!(
            run(
                "scale",
                TopicKind::Status,
                br#"{"battery":57,"fw":"1.2"}"#,
                None
            )
            .unwrap(),
            Accepted::Status(DeviceStatus {
                battery: Some(57),
                online: None
            })
        );
        assert_eq!(
            run("scale", TopicKind::Status, br#"{"battery":101}"#, None)
                .unwrap_err()
                .label,
            "range"
        );
        assert_eq!(
            run("scale", TopicKind::Errors, b"x", None)
                .unwrap_err()
                .label,
            "topic"
        );
    }
}
